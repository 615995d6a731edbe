//! `watch` on the control socket (`yizhan watch`): the server's events, or one user's
//! terminal, as JSON lines until the client goes away or the server stops.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{Control, IDLE_TIMEOUT, Response};
use crate::events::{Event, TERMINAL_ACK_WAIT};

/// What a watcher asked for.
pub(super) struct Watch {
    /// Only events about this address.
    pub(super) address: Option<String>,
    /// This user's terminal instead of the events.
    pub(super) user: Option<String>,
}

impl Watch {
    /// Streams until the client closes its end, a write stalls, or `shutdown`.
    pub(super) async fn serve<R, W>(
        self,
        control: &Control,
        reader: &mut R,
        write: &mut W,
        shutdown: &CancellationToken,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let events = control.runner.events().clone();
        if !send(write, &Response::Watching).await {
            return;
        }
        let mut byte = [0u8; 1];
        if let Some(user) = self.user {
            let mut terminal = events.open_terminal(&user);
            info!(%user, "terminal opened (control socket)");
            loop {
                let shown = tokio::select! {
                    m = terminal.next() => m,
                    _ = reader.read(&mut byte) => break,
                    _ = shutdown.cancelled() => break,
                };
                let Some(shown) = shown else { break };
                let message = shown.message.clone();
                if !send(write, &Response::Terminal { message }).await {
                    break;
                }
                // The client says it printed the message (a line back); a client that is
                // stopped does not, and the message goes to the mailbox instead.
                let waited = tokio::time::timeout(TERMINAL_ACK_WAIT, reader.read(&mut byte)).await;
                match waited {
                    Ok(Ok(1..)) => shown.written(),
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
            return;
        }
        let mut stream = events.subscribe();
        loop {
            let received = tokio::select! {
                r = stream.recv() => r,
                _ = reader.read(&mut byte) => return,
                _ = shutdown.cancelled() => return,
            };
            let response = match received {
                Ok(event) if self.address.as_deref().is_none_or(|a| event.concerns(a)) => {
                    event_line(&event)
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(count)) => Response::Missed { count },
                Err(RecvError::Closed) => return,
            };
            if !send(write, &response).await {
                return;
            }
        }
    }
}

fn event_line(event: &Arc<Event>) -> Response {
    Response::Event {
        event: serde_json::to_value(&**event).unwrap_or_default(),
    }
}

/// Writes one line; `false` when the client is gone or does not read.
async fn send<W: AsyncWrite + Unpin>(write: &mut W, response: &Response) -> bool {
    let mut bytes = match serde_json::to_vec(response) {
        Ok(bytes) => bytes,
        Err(e) => {
            error!(error = %e, "cannot encode a watch line");
            return false;
        }
    };
    bytes.push(b'\n');
    matches!(
        tokio::time::timeout(IDLE_TIMEOUT, write.write_all(&bytes)).await,
        Ok(Ok(()))
    )
}
