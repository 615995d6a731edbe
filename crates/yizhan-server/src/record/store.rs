//! Where recordings live: segment files `<data_dir>/sessions/<first ms>.jsonl`, each holding
//! whole sessions one after another (a header line starts each). One writer thread per data
//! directory appends them: a session hands its bytes over and goes on, and no file is created
//! per session (a file per session cost as much as a Maildir delivery per message). A segment
//! past [`SEGMENT_BYTES`] is closed and a new one begun; then the oldest segments go while more
//! than `keep` sessions are kept, or when their last session is older than `keep_for`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock, PoisonError};

use serde::Serialize;
use tracing::warn;

use super::{DIR, Entry, Header, RecordSettings};

/// A segment is closed past this size.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Recordings waiting for the writer, at most; past that one is dropped (said in the log)
/// rather than a session waiting for the disk.
const BACKLOG: usize = 4096;

/// The old segments are pruned when the writer starts, at every new segment, and after this
/// many recordings.
const PRUNE_EVERY: u64 = 256;

/// A recording on its way to the writer, with the settings in force.
type Job = (Vec<u8>, RecordSettings);

/// The writer of each data directory's recordings, and its thread.
type Writers = Mutex<HashMap<PathBuf, (SyncSender<Job>, Option<std::thread::JoinHandle<()>>)>>;

fn writers() -> &'static Writers {
    static WRITERS: OnceLock<Writers> = OnceLock::new();
    WRITERS.get_or_init(Default::default)
}

/// Appends one session's recording (in the background).
pub(super) fn append(data_dir: &Path, settings: &RecordSettings, bytes: Vec<u8>) {
    let mut writers = writers().lock().unwrap_or_else(PoisonError::into_inner);
    let dir = data_dir.join(DIR);
    let writer = writers
        .entry(dir.clone())
        .or_insert_with(|| spawn(dir.clone(), settings.clone()));
    match writer.0.try_send((bytes, settings.clone())) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            warn!("a session recording was dropped: the recording writer is behind");
        }
        Err(TrySendError::Disconnected(job)) => {
            // The thread died (it only does on a panic): start another.
            let writer = spawn(dir.clone(), settings.clone());
            let _ = writer.0.try_send(job);
            writers.insert(dir, writer);
        }
    }
}

/// Writes every recording still waiting and stops the writers (at shutdown).
pub fn flush() {
    let writers: Vec<_> = writers()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    for (_, (sender, thread)) in writers {
        drop(sender);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn spawn(
    dir: PathBuf,
    settings: RecordSettings,
) -> (SyncSender<Job>, Option<std::thread::JoinHandle<()>>) {
    let (sender, receiver) = sync_channel::<Job>(BACKLOG);
    let spawned = std::thread::Builder::new()
        .name("yizhan-record".into())
        .spawn(move || {
            pruned(&dir, &settings);
            let mut segment: Option<(std::fs::File, u64)> = None;
            let mut written: u64 = 0;
            while let Ok((bytes, settings)) = receiver.recv() {
                if let Err(error) = write(&dir, &mut segment, &bytes, &settings) {
                    warn!(%error, dir = %dir.display(), "cannot write a session recording");
                    segment = None;
                }
                written += 1;
                if written.is_multiple_of(PRUNE_EVERY) {
                    pruned(&dir, &settings);
                }
            }
        });
    match spawned {
        Ok(thread) => (sender, Some(thread)),
        Err(error) => {
            warn!(%error, "cannot start the session recording writer");
            (sender, None)
        }
    }
}

/// [`prune`], its failure logged (it never costs a recording).
fn pruned(dir: &Path, settings: &RecordSettings) {
    if let Err(error) = prune(dir, settings) {
        warn!(%error, dir = %dir.display(), "cannot prune the session recordings");
    }
}

fn write(
    dir: &Path,
    segment: &mut Option<(std::fs::File, u64)>,
    bytes: &[u8],
    settings: &RecordSettings,
) -> std::io::Result<()> {
    if segment
        .as_ref()
        .is_none_or(|(_, size)| *size > SEGMENT_BYTES)
    {
        let rotated = segment.take().is_some();
        std::fs::create_dir_all(dir)?;
        let name = format!("{}.jsonl", jiff::Timestamp::now().as_millisecond());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))?;
        *segment = Some((file, 0));
        if rotated {
            pruned(dir, settings);
        }
    }
    if let Some((file, size)) = segment.as_mut() {
        file.write_all(bytes)?;
        *size += bytes.len() as u64;
    }
    Ok(())
}

/// The segments, newest first.
fn segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<(i64, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let first = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<i64>().ok());
        if let (Some(first), Some("jsonl")) = (first, path.extension().and_then(|e| e.to_str())) {
            found.push((first, path));
        }
    }
    found.sort_by_key(|(first, _)| std::cmp::Reverse(*first));
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// Removes the oldest segments beyond `keep` sessions or older than `keep_for`.
pub(super) fn prune(dir: &Path, settings: &RecordSettings) -> std::io::Result<()> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let max_age = i64::try_from(settings.keep_for.as_millis()).unwrap_or(i64::MAX);
    let mut kept = 0;
    for path in segments(dir)? {
        let sessions = sessions_in(&path);
        let newest = sessions.iter().map(|s| s.header.started * 1000).max();
        let too_old = newest.is_some_and(|ms| now_ms.saturating_sub(ms) > max_age);
        if kept >= settings.keep || too_old {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        kept += sessions.len();
    }
    Ok(())
}

/// A recording read back.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// Its first line.
    pub header: Header,
    /// Its lines.
    pub entries: Vec<Entry>,
}

/// The sessions of one segment, in order (none when it cannot be read: one bad segment never
/// hides the others).
fn sessions_in(path: &Path) -> Vec<Recorded> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut sessions: Vec<Recorded> = Vec::new();
    for line in text.lines() {
        if let Ok(header) = serde_json::from_str::<Header>(line) {
            sessions.push(Recorded {
                header,
                entries: Vec::new(),
            });
        } else if let (Ok(entry), Some(last)) =
            (serde_json::from_str::<Entry>(line), sessions.last_mut())
        {
            last.entries.push(entry);
        }
    }
    sessions
}

/// The recordings of the server with this data directory, newest first (headers only).
pub fn list(data_dir: &Path) -> std::io::Result<Vec<Header>> {
    let mut headers = Vec::new();
    for path in segments(&data_dir.join(DIR))? {
        let mut these: Vec<Header> = sessions_in(&path).into_iter().map(|s| s.header).collect();
        these.reverse();
        headers.extend(these);
    }
    Ok(headers)
}

/// One recording by id (or a unique prefix).
pub fn read(data_dir: &Path, id: &str) -> std::io::Result<Recorded> {
    let dir = data_dir.join(DIR);
    let mut matching = Vec::new();
    for path in segments(&dir)? {
        matching.extend(
            sessions_in(&path)
                .into_iter()
                .filter(|s| s.header.id.starts_with(id)),
        );
    }
    // The id in full wins over the longer ids it is a prefix of (`X-1` and `X-12`).
    if let Some(exact) = matching.iter().position(|s| s.header.id == id) {
        return Ok(matching.swap_remove(exact));
    }
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no recorded session {id} in {}", dir.display()),
        )),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{id} names several recorded sessions; give more of the id"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use yizhan_proto::transcript::Said;

    use super::super::Recording;
    use super::*;

    fn session(n: u64) -> Recording {
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let mut r = Recording::start(n, client, local, "smtp", 100_000);
        r.add(vec![Said::Server(format!("220 mx {n}"))]);
        r
    }

    #[test]
    fn sessions_are_appended_read_back_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let settings = RecordSettings {
            keep: 2,
            ..RecordSettings::default()
        };
        let ids: Vec<String> = (1..=3)
            .map(|n| {
                let r = session(n);
                let id = r.id().to_owned();
                r.save(dir.path(), &settings);
                id
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while list(dir.path()).unwrap().len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer wrote nothing"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let listed: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(listed, [ids[2].clone(), ids[1].clone(), ids[0].clone()]);
        let back = read(dir.path(), &ids[1]).unwrap();
        assert_eq!(back.entries[0].x, "220 mx 2");
        // One segment of three sessions, keep = 2: the segment is the newest, it stays.
        prune(&dir.path().join(DIR), &settings).unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 3);
        // An older segment beyond keep goes.
        std::fs::write(
            dir.path().join(DIR).join("1000.jsonl"),
            "{\"id\":\"1000-9\",\"started\":1,\"client\":\"c\",\"local\":\"l\",\"listener\":\"smtp\"}\n",
        )
        .unwrap();
        prune(&dir.path().join(DIR), &settings).unwrap();
        assert!(!dir.path().join(DIR).join("1000.jsonl").exists());
    }
}
