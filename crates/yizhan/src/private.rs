//! Private files: nothing the server writes is readable by other local users (issue #13, like
//! Postfix's queue and OpenSMTPD's spool). The server runs with umask 077, so every file it
//! creates (Maildir messages, spool database and bodies, maildrop files) is 0600 and every
//! directory 0700; [`tighten`] fixes what an earlier release or another umask left open. Two
//! directories are 0711 (others may pass through, not list): the data directory and its
//! `public/`, where the submission socket lets other local users queue mail
//! ([`yizhan_server::submit`]).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The umask of the server process: no bits for group or others.
pub const UMASK: u32 = 0o077;

/// Sets the process umask to [`UMASK`] (before anything is created).
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(UMASK));
}

/// Takes the group and other bits off `data_dir`, the directories and files directly in it
/// and in its `spool/` (the SQLite database, its `-wal` and `-shm`, the lock, `bodies/`).
/// Mailboxes are not walked: they are made private as they are created. Returns the paths
/// changed, for the log.
pub fn tighten(data_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let public = data_dir.join(yizhan_server::submit::PUBLIC_DIR);
    restrict(data_dir, PASSAGE, &mut changed)?;
    for dir in [data_dir.to_path_buf(), data_dir.join("spool")] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            let others = if path == public { PASSAGE } else { 0 };
            restrict(&path, others, &mut changed)?;
        }
    }
    Ok(changed)
}

/// The bits a passage directory gives group and others: search, not read or write.
const PASSAGE: u32 = 0o011;

/// Gives the group and others of one regular file or directory exactly the bits `others`
/// (never follows a symbolic link; sockets and the like are left alone).
fn restrict(path: &Path, others: u32, changed: &mut Vec<PathBuf>) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !(meta.is_dir() || meta.is_file()) {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    let wanted = (mode & !UMASK) | (others & UMASK);
    if mode == wanted {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(wanted))?;
    changed.push(path.to_path_buf());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn open_files_and_directories_are_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("spool/bodies")).unwrap();
        fs::create_dir_all(data.join("mail/example.test/alice/new")).unwrap();
        fs::write(data.join("spool/index.sqlite"), b"").unwrap();
        fs::write(data.join("mail/example.test/alice/new/1"), b"").unwrap();
        for p in ["", "spool", "spool/bodies", "spool/index.sqlite", "mail"] {
            let p = data.join(p);
            let m = if p.is_dir() { 0o755 } else { 0o644 };
            fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", data.join("link")).unwrap();
        let changed = tighten(&data).unwrap();
        assert_eq!(changed.len(), 5, "{changed:?}");
        assert_eq!(mode(&data), 0o711, "others may pass to public/");
        assert_eq!(mode(&data.join("spool")), 0o700);
        assert_eq!(mode(&data.join("spool/bodies")), 0o700);
        assert_eq!(mode(&data.join("spool/index.sqlite")), 0o600);
        assert_eq!(mode(&data.join("mail")), 0o700);
        // The link's target is untouched; a second run changes nothing.
        assert_ne!(mode(Path::new("/etc/passwd")) & 0o044, 0);
        assert!(tighten(&data).unwrap().is_empty());
    }
}
