//! The golden dialogues of `tests/dialogs/` run in memory on the real server: the real
//! session code (a `tokio::io::duplex` pipe handed to the listener's `Connector`), the real policy, directory
//! and a temporary spool with its queue runner, configured as the end-to-end tests configure
//! the binary (`tests/e2e/conftest.py`, `sample_config`: `mx.test.example`, the domain
//! `test.example` with `user`, `user2`, `jösé`, the alias `list`, the relocated `moved`).
//!
//! A dialogue's `!` directives change that configuration (limits, verbs, extensions, STARTTLS
//! with a certificate made for the test, AUTH with `user@test.example` / `secret`); the runner
//! does a real TLS handshake after `220 2.0.0 Ready to start TLS`. A dialogue whose directive
//! asks for something the server does not have yet (`dsn`, `binarymime`) is listed and left
//! to the testkit's session. The transcripts are parsed by the testkit's one parser.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;
use yizhan_delivery::smtp::TlsClient;
use yizhan_server::auth::{Mechanism, hash_password};
use yizhan_server::directory::Directory;
use yizhan_server::listener::Server;
use yizhan_server::settings::{
    ListenerKind, ListenerSettings, Settings, TlsSettings, VerifyPolicy,
};
use yizhan_testkit::dialog::{Dialog, LineMatch, StepKind, parse_dialog};

/// A stream the runner reads and writes, plain or TLS.
trait Pipe: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Pipe for T {}

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

/// Applies one `!` directive to the settings; `Err` for one the server does not have.
fn apply(settings: &mut Settings, directive: &str, files: &Path) -> Result<(), String> {
    let mut words = directive.split_whitespace();
    let name = words.next().unwrap_or_default().to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    let on = args.first().is_none_or(|a| *a == "on");
    let number = || {
        args.first()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or("a number")
    };
    let smtp = &mut settings.smtp;
    match name.as_str() {
        "starttls" => settings.tls = Some(certificate(files)),
        "auth" => {
            settings.auth.mechanisms = args
                .iter()
                .filter_map(|m| Mechanism::from_name(m))
                .collect();
            let hash = hash_password(b"secret").map_err(|e| e.to_string())?;
            settings
                .credentials
                .insert("user@test.example", &hash)
                .map_err(|e| e.to_string())?;
        }
        "insecure-auth" => settings.auth.require_tls = false,
        "max_recipients" => smtp.max_recipients = number()? as usize,
        "max_errors" => smtp.max_errors = number()? as u32,
        "max_message_size" => smtp.max_message_size = number()?,
        "vrfy" | "expn" => {
            let policy = match args.as_slice() {
                ["enabled"] => VerifyPolicy::Enabled,
                ["disabled"] => VerifyPolicy::Disabled,
                _ => VerifyPolicy::CannotVerify,
            };
            if name == "vrfy" {
                smtp.vrfy = policy;
            } else {
                smtp.expn = policy;
            }
        }
        "help" => smtp.help = on,
        "send-soml-saml" => smtp.send_soml_saml = on,
        "etrn" => smtp.etrn = on,
        "chunking" => smtp.chunking = on,
        "enhancedstatuscodes" => smtp.enhanced_status_codes = on,
        other => return Err(format!("`{other}` is not in the server yet")),
    }
    Ok(())
}

/// A self-signed certificate for mx.test.example, written under `files` once.
fn certificate(files: &Path) -> TlsSettings {
    let settings = TlsSettings {
        cert: files.join("cert.pem"),
        key: files.join("key.pem"),
        reload_interval: Duration::from_secs(3600),
    };
    if !settings.cert.exists() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["mx.test.example".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(&settings.cert, cert.pem()).unwrap();
        std::fs::write(&settings.key, key.serialize_pem()).unwrap();
    }
    settings
}

/// Runs one dialogue over `stream`; an error says where it went wrong, with the transcript.
async fn run(dialog: &Dialog, stream: Box<dyn Pipe>) -> Result<(), String> {
    let mut io = BufReader::new(stream);
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
                if io.get_mut().write_all(bytes).await.is_err() {
                    return fail(
                        step.line,
                        "the server closed the connection".into(),
                        &transcript,
                    );
                }
            }
            StepKind::Server(expect) => loop {
                let mut line = String::new();
                let read = tokio::time::timeout(LINE_TIMEOUT, io.read_line(&mut line)).await;
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
                    LineMatch::Done if line.starts_with("220 2.0.0 Ready to start TLS") => {
                        io = BufReader::new(handshake(io.into_inner()).await?);
                        transcript.push_str("(TLS handshake)\n");
                        break;
                    }
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
    if let Ok(Ok(n)) = tokio::time::timeout(QUIET, io.read_line(&mut rest)).await
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

/// The client side of STARTTLS (any certificate; the handshake's signatures are checked).
async fn handshake(stream: Box<dyn Pipe>) -> Result<Box<dyn Pipe>, String> {
    let client = TlsClient::new(rustls::RootCertStore::empty()).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(client.config(false));
    let name = rustls::pki_types::ServerName::try_from("mx.test.example").unwrap();
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(Box::new(tls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_golden_dialogue_runs_on_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut ran = 0;
    let mut failures = Vec::new();
    let mut left = Vec::new();
    for (n, path) in dialog_files().into_iter().enumerate() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let dialog = parse_dialog(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        // A server of its own for each dialogue, configured by its directives.
        let mut settings = sample_settings(dir.path().join(format!("data{n}")));
        settings.auth.failure_delay = Duration::ZERO;
        let applied: Result<(), String> = dialog
            .directives
            .iter()
            .try_for_each(|(_, d)| apply(&mut settings, d, dir.path()));
        if let Err(why) = applied {
            left.push(format!("{name} ({why})"));
            continue;
        }
        let server = Server::bind(settings).await.unwrap();
        let shutdown = CancellationToken::new();
        let running = server.start(shutdown.clone()).unwrap();
        let (client, server_end) = tokio::io::duplex(64 * 1024);
        running.connectors()[0].serve(server_end, peer);
        if let Err(e) = run(&dialog, Box::new(client)).await {
            failures.push(format!("{name}: {e}"));
        }
        shutdown.cancel();
        running.wait().await.unwrap();
        ran += 1;
    }
    assert!(
        ran >= 45,
        "only {ran} dialogues ran (left to the testkit: {left:?})"
    );
    assert!(
        failures.is_empty(),
        "{} of {ran} failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // What the server does not have yet is named here, so that it cannot go unnoticed.
    assert_eq!(
        left,
        [
            "binarymime.dialog (`binarymime` is not in the server yet)",
            "dsn_parameters.dialog (`dsn` is not in the server yet)"
        ]
    );
}
