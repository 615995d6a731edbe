//! The golden dialogues of `tests/dialogs/` run in memory on the real server: the real
//! session code (`conn::serve` over a `tokio::io::duplex` pipe), the real policy, directory
//! and a temporary spool with its queue runner, configured as the end-to-end tests configure
//! the binary (`tests/e2e/conftest.py`, `sample_config`: `mx.test.example`, the domain
//! `test.example` with `user`, `user2`, `jösé`, the alias `list`, the relocated `moved`).
//!
//! Every dialogue that is not `! memory-only` runs here; the memory-only ones (which change the
//! configuration with directives the binary's sample does not have) still run on the testkit's
//! in-memory session. The transcripts are parsed by the testkit's one parser.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use yizhan_server::directory::Directory;
use yizhan_server::listener::Server;
use yizhan_server::settings::{ListenerKind, ListenerSettings, Settings};
use yizhan_testkit::dialog::{Dialog, LineMatch, StepKind, parse_dialog};

/// How long the runner waits for one server line, or for silence at the end.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(200);

fn dialog_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/dialogs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/dialogs exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dialog"))
        .collect();
    files.sort();
    files
}

/// The end-to-end tests' sample configuration, as settings.
fn sample_settings(data_dir: PathBuf) -> Settings {
    let mut directory = Directory::builder();
    directory
        .domain("test.example")
        .mailbox("user@test.example", Some("Test User".into()))
        .mailbox("user2@test.example", None)
        .mailbox("jösé@test.example", None)
        .alias(
            "list@test.example",
            ["user@test.example", "user2@test.example"],
        )
        .relocated("moved@test.example", "moved@elsewhere.example");
    Settings {
        hostname: "mx.test.example".into(),
        data_dir,
        listeners: vec![ListenerSettings::new(
            "127.0.0.1:0".parse().unwrap(),
            ListenerKind::Smtp,
        )],
        directory: directory.build().unwrap(),
        ..Settings::default()
    }
}

/// Runs one dialogue over `stream`; an error says where it went wrong, with the transcript.
async fn run(dialog: &Dialog, stream: tokio::io::DuplexStream) -> Result<(), String> {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read);
    let mut transcript = String::new();
    let fail = |line: usize, what: String, transcript: &str| {
        Err(format!(
            "line {line}: {what}\n--- transcript ---\n{transcript}"
        ))
    };
    for step in &dialog.steps {
        match &step.kind {
            StepKind::Client(bytes) => {
                transcript.push_str(&format!(
                    "C: {}\n",
                    String::from_utf8_lossy(bytes).trim_end()
                ));
                if write.write_all(bytes).await.is_err() {
                    return fail(
                        step.line,
                        "the server closed the connection".into(),
                        &transcript,
                    );
                }
            }
            StepKind::Server(expect) => loop {
                let mut line = String::new();
                let read = tokio::time::timeout(LINE_TIMEOUT, lines.read_line(&mut line)).await;
                let line = match read {
                    Ok(Ok(n)) if n > 0 => line.trim_end_matches(['\r', '\n']).to_owned(),
                    _ => {
                        return fail(
                            step.line,
                            format!("expected `{expect}`, got nothing"),
                            &transcript,
                        );
                    }
                };
                transcript.push_str(&format!("S: {line}\n"));
                match expect.matches(&line) {
                    LineMatch::Done => break,
                    LineMatch::Continue => {}
                    LineMatch::Mismatch => {
                        return fail(
                            step.line,
                            format!("expected `{expect}`, got `{line}`"),
                            &transcript,
                        );
                    }
                }
            },
        }
    }
    // After the last step nothing more may arrive.
    let mut rest = String::new();
    if let Ok(Ok(n)) = tokio::time::timeout(QUIET, lines.read_line(&mut rest)).await
        && n > 0
    {
        return fail(
            0,
            format!("unexpected `{}` after the last step", rest.trim_end()),
            &transcript,
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_golden_dialogue_runs_on_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::bind(sample_settings(dir.path().join("data")))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let (connect, connections) = mpsc::channel(1);
    let task = tokio::spawn(server.run_with(shutdown.clone(), Some(connections)));
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();

    let mut ran = 0;
    let mut failures = Vec::new();
    for path in dialog_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let dialog = parse_dialog(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if dialog.memory_only {
            continue;
        }
        let (client, server_end) = tokio::io::duplex(64 * 1024);
        connect.send((server_end, peer)).await.unwrap();
        if let Err(e) = run(&dialog, client).await {
            failures.push(format!("{name}: {e}"));
        }
        ran += 1;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(ran >= 30, "only {ran} dialogues ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
