//! The `yizhan` binary driven as a process: version, check-config, serve and its signals.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SAMPLE: &str = r#"hostname = "mx.test.example"
data_dir = "/var/lib/yizhan"

[[listener]]
address = "127.0.0.1:2525"
kind = "smtp"                 # later also "submission" and "submissions"

[smtp]
max_message_size = 10485760   # advertised with SIZE
max_recipients = 1000

[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"

[[mailbox]]
address = "user2@test.example"

[[alias]]
address = "list@test.example"
members = ["user@test.example", "user2@test.example"]

[[relocated]]
address = "moved@test.example"
new_address = "moved@elsewhere.example"
"#;

/// The binary with a clean environment for configuration and logging.
fn yizhan() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_yizhan"));
    cmd.env_remove("YIZHAN_CONFIG").env_remove("RUST_LOG");
    cmd
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (status.code(), text(&stdout), text(&stderr))
}

#[test]
fn version() {
    let (code, out, _) = run(yizhan().arg("--version"));
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("yizhan {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_accepts_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "yizhan.toml", SAMPLE);
    let (code, out, err) = run(yizhan().arg("check-config").arg("--config").arg(&file));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("configuration OK\n"), "{out}");
    assert!(out.contains("hostname: mx.test.example"), "{out}");
    assert!(out.contains("listener: 127.0.0.1:2525 (smtp)"), "{out}");
    assert!(
        err.contains(&format!(
            "configuration: {} (from --config)",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn check_config_reports_every_problem_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = SAMPLE
        .replace("kind = \"smtp\"", "kind = \"lmtp\"")
        .replace(
            "user2@test.example\"\n\n[[alias]]",
            "USER@test.example\"\n\n[[alias]]",
        );
    let file = write(dir.path(), "bad.toml", &bad);
    let (code, out, err) = run(yizhan().arg("check-config").arg("-c").arg(&file));
    assert_eq!(code, Some(1));
    assert!(!out.contains("configuration OK"), "{out}");
    let name = file.display().to_string();
    assert!(
        err.contains(&format!(
            "{name}:6:8: listener[0].kind: unknown listener kind \"lmtp\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:19:11: mailbox[1].address: user@test.example is already defined as mailbox[0].address"
        )),
        "{err}"
    );
    // The alias member user2 no longer exists in the strict domain.
    assert!(
        err.contains(&format!("{name}:23:33: alias[0].members[1]:")),
        "{err}"
    );
    assert!(err.contains("configuration has 3 problems"), "{err}");
}

/// Issue #13: check-config refuses what serve would refuse at start: a data directory that is
/// a file, an address another program holds, a key that does not belong to the certificate.
#[test]
fn check_config_checks_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = write(dir.path(), "data", "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let one = rcgen::generate_simple_self_signed(vec!["mx.test.example".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["mx.test.example".into()]).unwrap();
    let cert = write(dir.path(), "cert.pem", &one.cert.pem());
    let key = write(dir.path(), "key.pem", &other.signing_key.serialize_pem());
    let text = format!(
        "data_dir = {:?}\n[[listener]]\naddress = \"{address}\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
        not_a_dir.display().to_string(),
        cert.display().to_string(),
        key.display().to_string()
    );
    let file = write(dir.path(), "c.toml", &text);
    let (code, out, err) = run(yizhan().arg("check-config").arg("-c").arg(&file));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(!out.contains("configuration OK"), "{out}");
    assert!(err.contains("tls: "), "{err}");
    assert!(
        err.contains(&format!(
            "data_dir {}: not a directory",
            not_a_dir.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("listener {address}: the address is in use")),
        "{err}"
    );
    assert!(err.contains("configuration has 3 problems"), "{err}");

    // Fixed, all three: OK.
    drop(taken);
    let key = write(dir.path(), "key.pem", &one.signing_key.serialize_pem());
    let data = dir.path().join("new-data");
    let text = format!(
        "data_dir = {:?}\n[[listener]]\naddress = \"{address}\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
        data.display().to_string(),
        cert.display().to_string(),
        key.display().to_string()
    );
    let file = write(dir.path(), "c.toml", &text);
    let (code, out, err) = run(yizhan().arg("check-config").arg("-c").arg(&file));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.ends_with("configuration OK\n"), "{out}");
    assert!(!data.exists(), "check-config creates nothing");
}

#[test]
fn check_config_rejects_unknown_keys_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "u.toml",
        &format!("{SAMPLE}\n[queue]\nworkers = 3\n"),
    );
    let (code, _, err) = run(yizhan().arg("check-config").arg("--config").arg(&file));
    assert_eq!(code, Some(1));
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("unknown field `workers`"), "{err}");
    assert!(err.contains("line 30"), "{err}");

    let missing = dir.path().join("missing.toml");
    let (code, _, err) = run(yizhan().arg("check-config").arg("--config").arg(&missing));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("{}: cannot read", missing.display())),
        "{err}"
    );
}

#[test]
fn config_from_the_environment_and_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "env.toml", SAMPLE);
    let (code, out, err) = run(yizhan().arg("check-config").env("YIZHAN_CONFIG", &file));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("mx.test.example"), "{out}");
    assert!(err.contains("(from $YIZHAN_CONFIG)"), "{err}");

    if !Path::new("/etc/yizhan/yizhan.toml").exists() {
        let (code, out, err) = run(yizhan().arg("check-config"));
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("the embedded default"), "{err}");
        assert!(out.contains("domains: localhost (catch-all)"), "{out}");
        assert!(out.contains("listener: 127.0.0.1:2525 (smtp)"), "{out}");
    }
}

#[test]
fn serve_applies_overrides_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "yizhan.toml", SAMPLE);
    let data = dir.path().join("data");
    // Started with a low soft limit on open files, which serve raises for max_connections.
    let mut child = Command::new("sh");
    child
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_yizhan"))
        .env_remove("YIZHAN_CONFIG")
        .env_remove("RUST_LOG");
    let mut child = child
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--listen", "[::1]:0"])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog bounds the test: if the server never says "ready" (or never exits), it is
    // killed after 60 s and the read loops below end on EOF.
    let pid = child.id().to_string();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        if !watched.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.contains("ready; waiting for SIGTERM");
        log.push(line);
        if ready {
            break;
        }
    }
    let log = log.join("\n");
    assert!(log.contains("listener: 127.0.0.1:0 (smtp)"), "{log}");
    assert!(log.contains("listener: [::1]:0 (smtp)"), "{log}");
    assert!(!log.contains("127.0.0.1:2525"), "{log}");
    assert!(
        log.contains("open files: soft limit raised from 256 to"),
        "{log}"
    );
    assert!(
        log.contains(&format!("data_dir: {}", data.display())),
        "{log}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:?}"
    );
}

#[test]
fn serve_refuses_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.toml", "[smtp]\nmax_line_length = 80\n");
    let (code, _, err) = run(yizhan().arg("serve").arg("--config").arg(&file));
    assert_eq!(code, Some(1));
    assert!(err.contains("smtp.max_line_length"), "{err}");
}

/// Issue #12: a user's world with no configuration file: a HOME (and maybe an
/// XDG_DATA_HOME) in a temp dir, and directories to start commands from. When the tests run
/// as root the commands run as `nobody` (the default for root is /var/lib/yizhan, which a test
/// must not touch), so the per-user default is what is tested either way.
struct User {
    base: tempfile::TempDir,
    uid: Option<u32>,
}

/// The uid and gid the commands run as when the tests run as root.
const NOBODY: u32 = 65534;

impl User {
    fn new() -> Option<User> {
        if Path::new("/etc/yizhan/yizhan.toml").exists() {
            return None; // a system configuration would be found first
        }
        let uid = rustix::process::getuid().is_root().then_some(NOBODY);
        let user = User {
            base: tempfile::tempdir().unwrap(),
            uid,
        };
        user.chown(user.base.path());
        // As root: the binary must be reachable by `nobody` (a target directory under a
        // private home is not); if not, there is no unprivileged user to test with.
        let home = user.base.path();
        match user.yizhan(home, home, None).arg("--version").output() {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!("skipped: uid {NOBODY} cannot run the binary: {e}");
                None
            }
            _ => Some(user),
        }
    }

    fn chown(&self, path: &Path) {
        if let Some(uid) = self.uid {
            std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
        }
    }

    /// A directory of this user's, made now.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.base.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        self.chown(&dir);
        dir
    }

    /// `yizhan` as this user, started in `cwd`, with `HOME` and `xdg` as XDG_DATA_HOME.
    fn yizhan(&self, cwd: &Path, home: &Path, xdg: Option<&Path>) -> Command {
        self.program(Path::new(env!("CARGO_BIN_EXE_yizhan")), cwd, home, xdg)
    }

    /// [`User::yizhan`] under another name (a `mailq` link).
    fn program(&self, program: &Path, cwd: &Path, home: &Path, xdg: Option<&Path>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(program);
        cmd.env_remove("YIZHAN_CONFIG").env_remove("RUST_LOG");
        cmd.current_dir(cwd).env("HOME", home);
        match xdg {
            Some(xdg) => cmd.env("XDG_DATA_HOME", xdg),
            None => cmd.env_remove("XDG_DATA_HOME"),
        };
        if let Some(uid) = self.uid {
            cmd.uid(uid).gid(uid);
        }
        cmd
    }
}

/// A child process killed when dropped, so that a failed assertion leaves no server behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Every file and directory under `dir`, recursively, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(tree(&path));
        }
        all.push(path);
    }
    all.sort();
    all
}

/// Issue #12: with no configuration file and no server ever started, `sendmail` from another
/// directory refuses (exit 75) before reading its input, names the data directory
/// (`~/.local/share/yizhan`, from HOME) and writes nothing anywhere.
#[test]
fn sendmail_refuses_a_data_dir_no_server_uses() {
    let Some(user) = User::new() else { return };
    let home = user.dir("home");
    let elsewhere = user.dir("elsewhere");
    let want = home.join(".local/share/yizhan");

    let (code, out, err) = run(user.yizhan(&elsewhere, &home, None).arg("check-config"));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("data_dir: {}\n", want.display())),
        "{out}"
    );
    let (code, out, _) = run(user
        .yizhan(&elsewhere, &home, None)
        .args(["sendmail", "--help"]));
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&format!("Without one: {} for you", want.display())),
        "{out}"
    );

    let mut child = user
        .yizhan(&elsewhere, &home, None)
        .args(["sendmail", "anyone@localhost"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Refused before the input is read: the pipe may be closed already.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: lost?\n\nno\n");
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!(
            "no yizhan server uses the data directory {}",
            want.display()
        )),
        "{err}"
    );
    assert!(err.contains("nothing was queued"), "{err}");
    assert!(
        err.contains("yizhan serve") && err.contains("-C FILE"),
        "{err}"
    );
    assert_eq!(tree(user.base.path()), [elsewhere, home], "nothing written");
}

/// Issue #12: `serve`, `check-config`, `sendmail`, `queue` and `mailq`, each started from a
/// different directory with no configuration file, use one data directory
/// (`$XDG_DATA_HOME/yizhan`): the message sent is delivered there, the queue is listed through
/// the server's control socket there.
#[test]
fn serve_sendmail_and_queue_agree_from_anywhere() {
    let Some(user) = User::new() else { return };
    let home = user.dir("home");
    let xdg = user.dir("xdg");
    let want = xdg.join("yizhan");
    let mut server = Running(
        user.yizhan(&user.dir("a"), &home, Some(&xdg))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = server.0.stderr.take().unwrap();
    let (lines, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let ready = loop {
        match log.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) if line.contains(" ready listen=") => break line,
            Ok(_) => {}
            Err(e) => panic!("no ready line from serve: {e}"),
        }
    };
    assert!(
        ready.contains(&format!("data_dir={} admin=", want.display())),
        "{ready}"
    );
    // The maildrop exists once the server says ready (sendmail relies on it).
    assert!(want.join("maildrop/new").is_dir());

    let (code, out, err) = run(user
        .yizhan(&user.dir("b"), &home, Some(&xdg))
        .arg("check-config"));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("data_dir: {}\n", want.display())),
        "{out}"
    );

    let c = user.dir("c");
    let mut child = user
        .yizhan(&c, &home, Some(&xdg))
        .args(["sendmail", "anyone@localhost"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: found\n\nhere\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mailbox = want.join("mail/localhost/anyone/new");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&mailbox).map_or(true, |mut d| d.next().is_none()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the message never reached {}",
            mailbox.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let (code, out, err) = run(user.yizhan(&c, &home, Some(&xdg)).args(["queue", "list"]));
    assert_eq!(code, Some(0), "queue list: {out}{err}");
    let mailq = c.join("mailq");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_yizhan"), &mailq).unwrap();
    let (code, out, err) = run(&mut user.program(&mailq, &c, &home, Some(&xdg)));
    assert_eq!(code, Some(0), "mailq: {out}{err}");
    // Nothing of yizhan's in the directories the commands were started from.
    assert_eq!(tree(&c), [mailq]);

    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(server.0.wait().unwrap().success());
}

#[test]
fn man_pages_and_completions_come_from_the_cli_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(yizhan().arg("manpages").arg(dir.path()));
    assert_eq!(code, Some(0), "{err}");
    for page in [
        "yizhan.1",
        "yizhan-serve.1",
        "yizhan-queue.1",
        "sendmail.1",
        "mailq.1",
    ] {
        let path = dir.path().join(page);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
        assert!(out.contains(page), "{out}");
    }
    assert!(!dir.path().join("yizhan-help.1").exists());
    let queue = std::fs::read_to_string(dir.path().join("yizhan-queue.1")).unwrap();
    assert!(queue.contains("flush"), "{queue}");
    for (shell, marker) in [
        ("bash", "_yizhan()"),
        ("zsh", "#compdef yizhan"),
        ("fish", "complete -c yizhan"),
    ] {
        let (code, out, err) = run(yizhan().arg("completions").arg(shell));
        assert_eq!(code, Some(0), "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(
            out.contains("queue") && out.contains("check-config"),
            "{shell}"
        );
    }
    let (code, _, err) = run(yizhan().arg("completions").arg("tcsh"));
    assert_eq!(code, Some(2), "{err}");
}
