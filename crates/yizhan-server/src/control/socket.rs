//! The control socket itself: binding it private, serving connections, the blocking client
//! of `yizhan queue`, and the operations task (pickup, submission socket, control socket).

use std::fs;
use std::io::{self, BufRead as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use yizhan_spool::Intake;

use super::{
    Control, IDLE_TIMEOUT, MAX_CLIENTS, MAX_REQUEST, OpError, ReloadRequests, Request, Response,
    socket_path,
};
use crate::pickup::{self, Pickup};
use crate::queue::RunnerHandle;
use crate::settings::LiveSettings;

/// Serves the control socket at `path` until `shutdown` is cancelled, then removes it.
///
/// Call it only while holding the spool (after [`crate::listener::Server::bind`]): a socket
/// file left at `path` by a server that died is then stale and is replaced. The socket is
/// created under a temporary name, restricted to mode `0600`, then renamed into place, so it
/// is never reachable with wider permissions.
pub async fn serve_control(
    path: PathBuf,
    control: Control,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let listener = bind_private(&path)?;
    serve_control_on(listener, path, control, shutdown).await
}

/// Binds the control socket at `path` (see [`serve_control`]) without serving it yet: the
/// server binds it before it says it is ready, so that `yizhan queue` works from then on.
pub fn bind_control(path: &Path) -> io::Result<UnixListener> {
    bind_private(path)
}

/// Serves an already bound control socket ([`bind_control`]) until `shutdown`, then removes
/// `path`.
pub async fn serve_control_on(
    listener: UnixListener,
    path: PathBuf,
    control: Control,
    shutdown: CancellationToken,
) -> io::Result<()> {
    info!(path = %path.display(), "control socket listening");
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let watch_slots = Arc::new(Semaphore::new(super::MAX_WATCHERS));
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(5);
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    warn!("control connection refused: too many connections");
                    continue;
                };
                let slots = Slots {
                    client: slot,
                    watchers: watch_slots.clone(),
                };
                tracker.spawn(connection(stream, control.clone(), shutdown.clone(), slots));
            }
            Err(e) => {
                warn!(error = %e, "control accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    if let Err(e) = fs::remove_file(&path)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "cannot remove the control socket");
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".control.{}.tmp", std::process::id()));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&tmp)?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// A connection's place among the clients served at once, and the watchers' own limit (a
/// watch runs for hours: it moves from the first to the second, so watchers never keep
/// `yizhan queue` out).
struct Slots {
    client: OwnedSemaphorePermit,
    watchers: Arc<Semaphore>,
}

/// Serves one control connection: request lines in, response lines out.
async fn connection(
    stream: UnixStream,
    control: Control,
    shutdown: CancellationToken,
    slots: Slots,
) {
    let Slots {
        client: slot,
        watchers,
    } = slots;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX) + 1;
        let mut limited = (&mut reader).take(limit);
        let read = tokio::select! {
            read = tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line)) => read,
            _ = shutdown.cancelled() => return,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        let too_long = line.len() > MAX_REQUEST;
        let response = if too_long {
            OpError::BadRequest(format!("request longer than {MAX_REQUEST} bytes")).into_response()
        } else {
            match serde_json::from_slice::<Request>(line.trim_ascii()) {
                Ok(Request::Watch { address, user }) => {
                    match watchers.clone().try_acquire_owned() {
                        Ok(_watching) => {
                            // The client slot is given back: the watcher holds its own.
                            drop(slot);
                            let watch = super::watch::Watch { address, user };
                            return watch
                                .serve(&control, &mut reader, &mut write, &shutdown)
                                .await;
                        }
                        Err(_) => OpError::Unavailable("too many watchers at once").into_response(),
                    }
                }
                Ok(request) => control.handle(request).await,
                Err(e) => OpError::BadRequest(format!("bad request: {e}")).into_response(),
            }
        };
        let mut bytes = match serde_json::to_vec(&response) {
            Ok(bytes) => bytes,
            Err(e) => {
                error!(error = %e, "cannot encode a control response");
                return;
            }
        };
        bytes.push(b'\n');
        match tokio::time::timeout(IDLE_TIMEOUT, write.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        if too_long {
            // The rest of the oversized line cannot be told apart from the next request.
            return;
        }
    }
}

/// Why a client could not get an answer from the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket, or nobody listening on it: the server is not running.
    #[error("the server is not running (no control socket at {})", path.display())]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "permission denied on the control socket {} (run as the server's user or root)",
        path.display()
    )]
    PermissionDenied {
        /// The socket path tried.
        path: PathBuf,
    },
    /// Talking to the server failed half way.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The server's answer does not parse.
    #[error("unexpected answer from the server: {0}")]
    BadResponse(String),
}

/// Starts a `watch` ([`Request::Watch`]) on the server at `socket`: once the server said
/// [`Response::Watching`], the returned reader gives one [`Response`] line per event, with no
/// timeout, until the server stops. Blocking; for `yizhan watch`.
pub fn watch(
    socket: &Path,
    request: &Request,
) -> Result<io::BufReader<std::os::unix::net::UnixStream>, ClientError> {
    let (stream, first) = exchange(socket, request, Duration::from_secs(60))?;
    match first {
        Response::Watching => {}
        Response::Error { message, .. } => return Err(ClientError::BadResponse(message)),
        other => return Err(ClientError::BadResponse(format!("{other:?}"))),
    }
    // The same reader: what it already read past the first line is the first events.
    stream
        .get_ref()
        .set_read_timeout(None)
        .map_err(|source| ClientError::Io {
            path: socket.to_path_buf(),
            source,
        })?;
    Ok(stream)
}

/// Sends one request to the server at `socket` and waits (at most `timeout` per read or
/// write) for its response. Blocking; for command-line tools.
pub fn request(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    exchange(socket, request, timeout).map(|(_, response)| response)
}

/// One request and its first answer line, and the connection (for `watch`).
fn exchange(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<(io::BufReader<std::os::unix::net::UnixStream>, Response), ClientError> {
    let io_error = |source: io::Error| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) => {
            return Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning {
                        path: socket.to_path_buf(),
                    }
                }
                io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                    path: socket.to_path_buf(),
                },
                _ => io_error(e),
            });
        }
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    let mut line =
        serde_json::to_vec(request).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_error)?;
    let mut answer = Vec::new();
    let mut reader = io::BufReader::new(stream);
    reader.read_until(b'\n', &mut answer).map_err(io_error)?;
    if answer.is_empty() {
        return Err(io_error(io::ErrorKind::UnexpectedEof.into()));
    }
    let response = serde_json::from_slice(answer.trim_ascii()).map_err(|e| {
        ClientError::BadResponse(format!(
            "{e}: {}",
            String::from_utf8_lossy(&answer).trim_end()
        ))
    })?;
    Ok((reader, response))
}

/// WIRING for `listener.rs`: runs the maildrop pickup and the control socket beside the queue
/// runner until `shutdown`, for the server whose data directory is `settings.data_dir`.
/// A control socket that cannot be bound is logged; mail service goes on without it.
pub async fn run_operations(
    settings: LiveSettings,
    intake: Intake,
    runner: RunnerHandle,
    bound: Option<UnixListener>,
    submit: Option<UnixListener>,
    reload: Option<ReloadRequests>,
    shutdown: CancellationToken,
) {
    let data_dir = settings.load().data_dir.clone();
    let spool = intake.queue_store();
    let pickup = Pickup::new(
        pickup::maildrop_dir(&data_dir),
        intake,
        runner.clone(),
        settings.clone(),
    );
    let mut control = Control::new(spool.clone(), runner, Some(pickup.handle()));
    if let Some(requests) = reload {
        control = control.with_reload(requests);
    }
    let path = socket_path(&data_dir);
    let submit_task = submit.map(|listener| {
        let serve =
            crate::submit::serve(listener, pickup.importer(), spool.clone(), shutdown.clone());
        tokio::spawn(serve)
    });
    let pickup_task = tokio::spawn(pickup.run(shutdown.clone()));
    let served = match bound {
        Some(listener) => serve_control_on(listener, path.clone(), control, shutdown.clone()).await,
        None => serve_control(path.clone(), control, shutdown.clone()).await,
    };
    if let Err(e) = served {
        error!(path = %path.display(), error = %e, "cannot serve the control socket; `yizhan queue` will not work");
        shutdown.cancelled().await;
    }
    if let Err(e) = pickup_task.await {
        error!(error = %e, "maildrop pickup task failed");
    }
    if let Some(task) = submit_task
        && let Err(e) = task.await
    {
        error!(error = %e, "submission socket task failed");
    }
}
