//! Recorded sessions (issue #16, `[record]` and a listener's `record = true`): the dialogue
//! of a session as the protocol core saw it (`yizhan_proto::transcript`: AUTH answers masked,
//! the message text summarised unless `bodies = true`), with times and the TLS note, appended
//! when the session ends to a segment file in `<data_dir>/sessions/` (0600, as everything the
//! server writes; see [`store`]), for `yizhan sessions` and `yizhan explain --session`.
//!
//! Format, one JSON object per line: a header `{"id","started","client","local","listener"}`,
//! then `{"t": ms since the start, "d": "c"|"s"|"n", "x": text}` per line (client, server,
//! note). A session past `max_session_bytes` is cut with a note saying so.

mod store;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
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

    /// Hands the recording to the writer of `data_dir` (appended to the current segment in
    /// the background: a session never waits for the disk).
    pub fn save(self, data_dir: &Path, settings: &RecordSettings) {
        store::append(data_dir, settings, self.bytes);
    }
}

pub use store::{Recorded, flush, list, read};
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_and_cut() {
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
        let text = String::from_utf8(r.bytes.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].contains("\"client\":\"192.0.2.1:5000\""));
        assert!(lines[4].contains("recording cut here"), "{text}");
        assert!(RecordSettings::default().wants(true, client.ip()));
        assert!(!RecordSettings::default().wants(false, client.ip()));
    }
}
