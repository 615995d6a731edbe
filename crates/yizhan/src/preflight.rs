//! What `serve` would refuse at start, checked by `check-config` before it is tried: the
//! data directory, the listeners' addresses, the service account (see [`crate::privileges`]).
//! The TLS files are checked by loading them exactly as `serve` does.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use rustix::fs::Access;

/// Whether the data directory can be used: an existing one must be a directory this process
/// may write to (as root it is given to the service account at start, so only its kind
/// matters); a missing one must be creatable in its nearest existing parent.
pub fn data_dir(dir: &Path, root: bool) -> Result<(), String> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(format!("data_dir {shown}: not a directory")),
        Ok(_) if root => Ok(()),
        Ok(_) => writable(dir).map_err(|e| format!("data_dir {shown}: not writable by you: {e}")),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            let parent = absolute
                .ancestors()
                .skip(1)
                .find(|p| p.exists())
                .unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Err(format!(
                    "data_dir {shown}: cannot be created: {} is not a directory",
                    parent.display()
                ));
            }
            writable(parent).map_err(|e| {
                format!(
                    "data_dir {shown}: does not exist and cannot be created in {}: {e}",
                    parent.display()
                )
            })
        }
        Err(e) => Err(format!("data_dir {shown}: {e}")),
    }
}

/// Write and search permission for this process (the kernel's answer, ACLs included).
fn writable(dir: &Path) -> io::Result<()> {
    rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK).map_err(io::Error::from)
}

/// Whether each listener's address can be bound now. A port 0 is never a clash. When
/// `running` (a server answers on this data directory's control socket), an address in use
/// is taken to be that server's and is not a problem: `check-config` before a reload must
/// pass.
pub fn listeners(addresses: &[SocketAddr], running: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for &address in addresses.iter().filter(|a| a.port() != 0) {
        let Err(e) = TcpListener::bind(address) else {
            continue;
        };
        match e.kind() {
            io::ErrorKind::AddrInUse if running => {}
            io::ErrorKind::AddrInUse => problems.push(format!(
                "listener {address}: the address is in use by another program (ss -ltnp \
                 'sport = :{}' names it)",
                address.port()
            )),
            io::ErrorKind::PermissionDenied => problems.push(format!(
                "listener {address}: permission denied; ports below 1024 need root or \
                 CAP_NET_BIND_SERVICE (see dist/yizhan.service)"
            )),
            io::ErrorKind::AddrNotAvailable => problems.push(format!(
                "listener {address}: no interface of this host has that address"
            )),
            _ => problems.push(format!("listener {address}: cannot listen: {e}")),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_kinds() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(data_dir(tmp.path(), false), Ok(()));
        assert_eq!(data_dir(&tmp.path().join("new/deeper"), false), Ok(()));
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(
            data_dir(&file, false)
                .unwrap_err()
                .contains("not a directory")
        );
        let below_file = file.join("data");
        assert!(
            data_dir(&below_file, false)
                .unwrap_err()
                .contains("cannot be created")
        );
    }

    #[test]
    fn an_address_in_use_is_a_problem_unless_our_server_runs() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let problems = listeners(&[address], false);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("in use"), "{problems:?}");
        assert!(listeners(&[address], true).is_empty());
        drop(taken);
        assert!(listeners(&[address], false).is_empty());
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(listeners(&[any], false).is_empty());
    }
}
