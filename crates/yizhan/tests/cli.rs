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

/// Issue #12: with no configuration file the data directory does not depend on the current
/// directory (root: /var/lib/yizhan; anyone else: $XDG_DATA_HOME/yizhan), and `sendmail`
/// refuses, with the directory in its message and nothing written, when no server uses it.
#[test]
fn the_default_data_dir_is_the_same_from_anywhere() {
    if Path::new("/etc/yizhan/yizhan.toml").exists() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let xdg = home.path().join("xdg");
    let root = rustix::process::getuid().is_root();
    let want = if root {
        PathBuf::from("/var/lib/yizhan")
    } else {
        xdg.join("yizhan")
    };
    let from = |cwd: &Path| {
        let (code, out, err) = run(yizhan()
            .arg("check-config")
            .current_dir(cwd)
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", &xdg));
        assert_eq!(code, Some(0), "{err}");
        out.lines()
            .find_map(|l| l.strip_prefix("data_dir: "))
            .map(PathBuf::from)
            .expect("a data_dir line")
    };
    assert_eq!(from(home.path()), want);
    assert_eq!(from(elsewhere.path()), want);

    // No server has used it (on a machine where none ever ran as root): refused, exit 75.
    if !want.join("maildrop").exists() {
        let mut child = yizhan()
            .args(["sendmail", "anyone@localhost"])
            .current_dir(elsewhere.path())
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", &xdg)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Subject: lost?\n\nno\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{err}");
        assert!(err.contains(&want.display().to_string()), "{err}");
        assert!(!want.join("maildrop").exists());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }
}
