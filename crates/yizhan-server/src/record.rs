//! Recorded sessions (issue #16, `[record]` and a listener's `record = true`): the dialogue
//! of a session as the protocol core saw it (`yizhan_proto::transcript`: AUTH answers masked,
//! the message text summarised unless `bodies = true`), with times and the TLS note, written
//! when the session ends to `<data_dir>/sessions/<id>.jsonl` (0600, as everything the server
//! writes), for `yizhan sessions` and `yizhan explain --session`.
//!
//! Format, one JSON object per line: a header `{"id","started","client","local","listener"}`,
//! then `{"t": ms since the start, "d": "c"|"s"|"n", "x": text}` per line (client, server,
//! note). A session past `max_session_bytes` is cut with a note saying so. The oldest
//! recordings beyond `keep` files or `keep_for` are removed as new ones are written.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::warn;
use yizhan_proto::transcript::Said;

/// The directory of the recordings in the data directory.
pub const DIR: &str = "sessions";

/// `[record]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSettings {
    /// Clients whose sessions are recorded on every listener.
    pub networks: Vec<IpNet>,
    /// The most of one session kept (bytes of the recording).
    pub max_session_bytes: u64,
    /// Recordings kept, at most.
    pub keep: usize,
    /// Recordings kept for at most this long.
    pub keep_for: Duration,
    /// Keep the message text, not only its summary.
    pub bodies: bool,
}

impl Default for RecordSettings {
    fn default() -> Self {
        RecordSettings {
            networks: Vec::new(),
            max_session_bytes: 1024 * 1024,
            keep: 1000,
            keep_for: Duration::from_secs(7 * 24 * 3600),
            bodies: false,
        }
    }
}

impl RecordSettings {
    /// Whether a session of `client` on a listener with `listener_record` is recorded.
    pub fn wants(&self, listener_record: bool, client: IpAddr) -> bool {
        listener_record || self.networks.iter().any(|n| n.contains(&client))
    }
}

/// A recording's first line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// The recording's id (`<start in ms>-<session id>`).
    pub id: String,
    /// Unix seconds.
    pub started: i64,
    /// The client's address and port.
    pub client: String,
    /// The listener's address.
    pub local: String,
    /// `smtp`, `submission` or `submissions`.
    pub listener: String,
}

/// One recorded line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Milliseconds since the session started.
    pub t: u64,
    /// `c` (client), `s` (server) or `n` (note).
    pub d: String,
    /// The line.
    pub x: String,
}

/// A session being recorded.
#[derive(Debug)]
pub struct Recording {
    header: Header,
    started: std::time::Instant,
    bytes: Vec<u8>,
    max: u64,
    cut: bool,
}

impl Recording {
    /// Starts recording session `session` of `client` on `local` (`listener` kind).
    pub fn start(
        session: u64,
        client: SocketAddr,
        local: SocketAddr,
        listener: &str,
        max: u64,
    ) -> Self {
        let now = jiff::Timestamp::now();
        let header = Header {
            id: format!("{}-{session}", now.as_millisecond()),
            started: now.as_second(),
            client: client.to_string(),
            local: local.to_string(),
            listener: listener.to_owned(),
        };
        let mut bytes = serde_json::to_vec(&header).unwrap_or_default();
        bytes.push(b'\n');
        Recording {
            header,
            started: std::time::Instant::now(),
            bytes,
            max,
            cut: false,
        }
    }

    /// The recording's id.
    pub fn id(&self) -> &str {
        &self.header.id
    }

    /// Adds what the session recorded since the last call.
    pub fn add(&mut self, said: Vec<Said>) {
        let t = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        for s in said {
            if self.cut {
                return;
            }
            let (d, x) = match s {
                Said::Client(x) => ("c", x),
                Said::Server(x) => ("s", x),
                Said::Note(x) => ("n", x),
            };
            self.push(t, d, x);
        }
    }

    fn push(&mut self, t: u64, d: &str, x: String) {
        let entry = Entry {
            t,
            d: d.to_owned(),
            x,
        };
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        if self.bytes.len() as u64 + line.len() as u64 > self.max {
            self.cut = true;
            let note = format!("recording cut here: the session passed {} bytes", self.max);
            let mut line = serde_json::to_vec(&Entry {
                t,
                d: "n".into(),
                x: note,
            })
            .unwrap_or_default();
            line.push(b'\n');
            self.bytes.extend_from_slice(&line);
            return;
        }
        self.bytes.extend_from_slice(&line);
    }

    /// Writes the recording into `<data_dir>/sessions/` and prunes old ones now and then.
    pub async fn save(self, data_dir: PathBuf, settings: RecordSettings) {
        let written = tokio::task::spawn_blocking(move || {
            let dir = data_dir.join(DIR);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(format!("{}.jsonl", self.header.id)), &self.bytes)?;
            if WRITES
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(PRUNE_EVERY)
            {
                prune(&dir, &settings)?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "cannot write a session recording"),
            Err(error) => warn!(%error, "session recording task failed"),
        }
    }
}

/// Recordings written by this process (the pruning runs every [`PRUNE_EVERY`]).
static WRITES: AtomicU64 = AtomicU64::new(0);
const PRUNE_EVERY: u64 = 32;

/// Removes the recordings beyond `keep` (oldest first) and those older than `keep_for`.
fn prune(dir: &Path, settings: &RecordSettings) -> std::io::Result<()> {
    let mut files = list_files(dir)?;
    files.sort_by_key(|(started_ms, _)| std::cmp::Reverse(*started_ms));
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let max_age = i64::try_from(settings.keep_for.as_millis()).unwrap_or(i64::MAX);
    for (i, (started_ms, path)) in files.iter().enumerate() {
        if i >= settings.keep || now_ms.saturating_sub(*started_ms) > max_age {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// The recordings in `dir`, with their start (ms, from the name).
fn list_files(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let started = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.split('-').next())
            .and_then(|ms| ms.parse::<i64>().ok());
        if let (Some(started), Some("jsonl")) = (started, path.extension().and_then(|e| e.to_str()))
        {
            files.push((started, path));
        }
    }
    Ok(files)
}

/// A recording read back.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// Its first line.
    pub header: Header,
    /// Its lines.
    pub entries: Vec<Entry>,
}

/// The recordings of the server with this data directory, newest first (headers only).
pub fn list(data_dir: &Path) -> std::io::Result<Vec<Header>> {
    let dir = data_dir.join(DIR);
    let mut files = match list_files(&dir) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    files.sort_by_key(|(started, _)| std::cmp::Reverse(*started));
    let mut headers = Vec::new();
    for (_, path) in files {
        let text = std::fs::read_to_string(&path)?;
        if let Some(header) = text
            .lines()
            .next()
            .and_then(|l| serde_json::from_str(l).ok())
        {
            headers.push(header);
        }
    }
    Ok(headers)
}

/// One recording by id (or a unique prefix).
pub fn read(data_dir: &Path, id: &str) -> std::io::Result<Recorded> {
    let dir = data_dir.join(DIR);
    let matching: Vec<PathBuf> = list_files(&dir)?
        .into_iter()
        .map(|(_, path)| path)
        .filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.starts_with(id))
        })
        .collect();
    let path = match &matching[..] {
        [one] => one,
        [] => {
            let why = format!("no recorded session {id} in {}", dir.display());
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, why));
        }
        _ => {
            let why = format!("{id} names several recorded sessions; give more of the id");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
        }
    };
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header: Header = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no header"))?;
    let entries = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    Ok(Recorded { header, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recorded_saved_cut_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let mut r = Recording::start(7, client, local, "smtp", 400);
        r.add(vec![
            Said::Server("220 mx".into()),
            Said::Client("EHLO me".into()),
            Said::Note("TLS".into()),
        ]);
        r.add(vec![Said::Client("x".repeat(300))]);
        r.add(vec![Said::Client("never".into())]);
        let id = r.id().to_owned();
        let settings = RecordSettings {
            keep: 1,
            ..RecordSettings::default()
        };
        r.save(dir.path().to_path_buf(), settings.clone()).await;
        let back = read(dir.path(), &id[..6]).unwrap();
        assert_eq!(back.header.client, "192.0.2.1:5000");
        let texts: Vec<&str> = back.entries.iter().map(|e| e.x.as_str()).collect();
        assert_eq!(texts[..3], ["220 mx", "EHLO me", "TLS"]);
        assert!(texts[3].starts_with("recording cut here"), "{texts:?}");
        assert_eq!(texts.len(), 4);
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        // keep = 1: an older one goes at the next pruning.
        std::fs::write(dir.path().join(DIR).join("1000-1.jsonl"), "{}\n").unwrap();
        prune(&dir.path().join(DIR), &settings).unwrap();
        assert_eq!(list(dir.path()).unwrap()[0].id, id);
        assert!(!dir.path().join(DIR).join("1000-1.jsonl").exists());
        assert!(RecordSettings::default().wants(true, client.ip()));
        assert!(!RecordSettings::default().wants(false, client.ip()));
    }
}
