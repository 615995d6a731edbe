//! Tiers T1 and T2: the golden dialogues of `tests/dialogs/` on the real server, configured by
//! the file beside them (`tests/dialogs/yizhan.toml`) and read by the binary's own loader
//! (`yizhan::config`).
//!
//! - In memory (T1): every dialogue, each on a server of its own (`Server::bind` and
//!   `Server::start`, as `yizhan serve` builds it) over a `tokio::io::duplex` pipe handed to
//!   the listener's `Connector`: the real session code, policy, directory, a temporary spool
//!   and the queue runner. A dialogue's `!` directives are edits of the configuration file
//!   ([`apply`]) before it is loaded, so each is a configuration an operator can write.
//! - Over TCP (T2): every dialogue without directives, against one `yizhan serve` process (the
//!   binary under test) on 127.0.0.1:0 with the same file.
//!
//! One runner ([`converse`]) for both, generic over the stream. After a `220` that is not the
//! greeting (RFC 3207 4: ready to start TLS) it does a real TLS handshake. At the end it closes
//! its side and reads until the server closes: anything the server wrote that the dialogue does
//! not expect is a failure, and no timer decides that nothing more is coming. Transcripts are
//! parsed by the testkit's parser, the only one.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader as StdBufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use toml::{Table, Value};
use yizhan_delivery::smtp::TlsClient;
use yizhan_server::auth::hash_password;
use yizhan_server::listener::Server;
use yizhan_testkit::dialog::{Dialog, DialogError, Expect, LineMatch, StepKind, read_dialog};

/// The configuration every dialogue starts from.
const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/dialogs/yizhan.toml"
);

/// The client of the in-memory connections.
const PEER: &str = "127.0.0.1:40000";

/// A bound on the wait for one server line (and for the close at the end): it fails a broken
/// dialogue instead of hanging; it never decides that a dialogue passed.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `! auth` user's password.
const PASSWORD: &str = "secret";

/// The `[smtp]` switches a directive names (`! chunking off`, `! dsn on`).
const SWITCHES: [(&str, &str); 11] = [
    ("help", "help"),
    ("send-soml-saml", "send_soml_saml"),
    ("turn", "turn"),
    ("etrn", "etrn"),
    ("pipelining", "pipelining"),
    ("8bitmime", "eight_bit_mime"),
    ("enhancedstatuscodes", "enhanced_status_codes"),
    ("smtputf8", "smtputf8"),
    ("chunking", "chunking"),
    ("binarymime", "binarymime"),
    ("dsn", "dsn"),
];

/// Every `tests/dialogs/*.dialog`, parsed, with its file name.
fn dialogs() -> Vec<(String, Dialog)> {
    let dir = Path::new(CONFIG).parent().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/dialogs exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dialog"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let dialog = read_dialog(&path).unwrap_or_else(|e| panic!("{e}"));
            (name, dialog)
        })
        .collect()
}

/// The configuration file with the dialogue's directives applied; `files` holds the TLS
/// certificate.
fn configuration(dialog: &Dialog, files: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(CONFIG).map_err(|e| format!("{CONFIG}: {e}"))?;
    let mut doc: Table = text.parse().map_err(|e| format!("{CONFIG}: {e}"))?;
    for (line, directive) in &dialog.directives {
        apply(&mut doc, directive, files).map_err(|e| format!("line {line}: {e}"))?;
    }
    toml::to_string(&doc).map_err(|e| e.to_string())
}

/// Applies one `!` directive to the configuration document: each is a key of
/// docs/configuration.md.
///
/// | directive | configuration |
/// | --- | --- |
/// | `starttls` | `[tls]` with a certificate for mx.test.example made for the test |
/// | `auth MECH...` | `[auth] mechanisms`, no failure delay; `user@test.example` gets the password `secret` |
/// | `insecure-auth` | `[auth] require_tls = false` |
/// | `max_recipients N`, `max_errors N`, `max_message_size N`, `max_line_length N` | `[smtp]` limits |
/// | `vrfy enabled\|disabled\|cannot-verify`, `expn ...` | `[smtp] vrfy`, `expn` |
/// | `help`, `send-soml-saml`, `turn`, `etrn`, `pipelining`, `8bitmime`, `enhancedstatuscodes`, `smtputf8`, `chunking`, `binarymime`, `dsn` with `on` or `off` | the `[smtp]` switch |
fn apply(doc: &mut Table, directive: &str, files: &Path) -> Result<(), String> {
    let mut words = directive.split_whitespace();
    let name = words.next().unwrap_or_default().to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    match (name.as_str(), args.as_slice()) {
        ("starttls", []) => {
            let (cert, key) = certificate(files);
            set(doc, "tls", "cert", cert.display().to_string().into());
            set(doc, "tls", "key", key.display().to_string().into());
        }
        ("auth", [_, ..]) => {
            let mechanisms = args.iter().map(|m| Value::from(*m)).collect();
            set(doc, "auth", "mechanisms", Value::Array(mechanisms));
            set(doc, "auth", "failure_delay", "0s".into());
            let hash = hash_password(PASSWORD.as_bytes()).map_err(|e| e.to_string())?;
            let mailboxes = doc.get_mut("mailbox").and_then(Value::as_array_mut);
            let user = mailboxes
                .into_iter()
                .flatten()
                .filter_map(Value::as_table_mut)
                .find(|m| m.get("address").and_then(Value::as_str) == Some("user@test.example"))
                .ok_or("no mailbox user@test.example")?;
            user.insert("password".into(), hash.into());
        }
        ("insecure-auth", []) => set(doc, "auth", "require_tls", false.into()),
        ("relay-networks", [net]) => {
            set(
                doc,
                "smtp",
                "relay_networks",
                Value::Array(vec![(*net).into()]),
            );
        }
        ("max_recipients" | "max_errors" | "max_message_size" | "max_line_length", [n]) => {
            let n: i64 = n
                .parse()
                .map_err(|_| format!("{name}: not a number: {n}"))?;
            set(doc, "smtp", &name, n.into());
        }
        ("vrfy" | "expn", [policy @ ("enabled" | "disabled" | "cannot-verify")]) => {
            set(doc, "smtp", &name, (*policy).into());
        }
        (switch, [] | ["on" | "off"]) if SWITCHES.iter().any(|(d, _)| *d == switch) => {
            let key = SWITCHES.iter().find(|(d, _)| *d == switch).unwrap().1;
            set(doc, "smtp", key, (args.first() != Some(&"off")).into());
        }
        _ => return Err(format!("unknown directive `{directive}`")),
    }
    Ok(())
}

/// Sets `[table] key = value`.
fn set(doc: &mut Table, table: &str, key: &str, value: Value) {
    let table = doc
        .entry(table)
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(table) = table {
        table.insert(key.to_owned(), value);
    }
}

/// A self-signed certificate for mx.test.example under `files`, made once.
fn certificate(files: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (files.join("cert.pem"), files.join("key.pem"));
    if !cert.exists() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["mx.test.example".to_owned()]).unwrap();
        let made = params.self_signed(&pair).unwrap();
        std::fs::write(&cert, made.pem()).unwrap();
        std::fs::write(&key, pair.serialize_pem()).unwrap();
    }
    (cert, key)
}

/// A stream the runner reads and writes, plain or TLS.
trait Pipe: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Pipe for T {}

/// Runs `dialog` (from the file `name`) as the client over `stream`.
async fn converse<S>(name: &str, dialog: &Dialog, stream: S) -> Result<(), DialogError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut client = Client {
        file: name,
        io: BufReader::new(Box::new(stream)),
        transcript: String::new(),
        greeted: false,
    };
    for step in &dialog.steps {
        match &step.kind {
            StepKind::Client(bytes) => client.send(step.line, bytes).await?,
            StepKind::Server(expect) => {
                if client.expect(step.line, expect).await? {
                    client = client.starttls(step.line).await?;
                }
            }
        }
    }
    client.finish().await
}

/// The client side of one dialogue: the stream (plain, then TLS after STARTTLS) and what was
/// said so far.
struct Client<'a> {
    file: &'a str,
    io: BufReader<Box<dyn Pipe>>,
    transcript: String,
    /// The greeting has been read (any later 220 is the answer to STARTTLS).
    greeted: bool,
}

impl Client<'_> {
    fn mismatch(&self, line: usize, expected: impl ToString, got: impl ToString) -> DialogError {
        DialogError::Mismatch {
            file: self.file.to_owned(),
            line,
            expected: expected.to_string(),
            got: got.to_string(),
            transcript: self.transcript.clone(),
        }
    }

    /// A client step: these bytes go out as they are.
    async fn send(&mut self, line: usize, bytes: &[u8]) -> Result<(), DialogError> {
        let shown = String::from_utf8_lossy(bytes);
        let _ = writeln!(self.transcript, "C: {}", shown.escape_debug());
        let io = self.io.get_mut();
        if io.write_all(bytes).await.is_err() || io.flush().await.is_err() {
            let got = "a closed one (the client step cannot be sent)";
            return Err(self.mismatch(line, "an open connection", got));
        }
        Ok(())
    }

    /// A server step: reads lines until `expect` is met. True when the line met is a `220`
    /// after the greeting: the server is ready to start TLS (RFC 3207 4).
    async fn expect(&mut self, line: usize, expect: &Expect) -> Result<bool, DialogError> {
        loop {
            let got = match read_line(&mut self.io).await {
                Ok(got) => got,
                Err(what) => return Err(self.mismatch(line, expect, what)),
            };
            let _ = writeln!(self.transcript, "S: {got}");
            match expect.matches(&got) {
                LineMatch::Continue => {}
                LineMatch::Mismatch => return Err(self.mismatch(line, expect, format!("`{got}`"))),
                LineMatch::Done => {
                    let ready = self.greeted && got.starts_with("220 ");
                    self.greeted = true;
                    return Ok(ready);
                }
            }
        }
    }

    /// The client side of the TLS handshake, on the same stream.
    async fn starttls(mut self, line: usize) -> Result<Self, DialogError> {
        // Nothing may follow the 220 before the handshake (RFC 3207 4).
        if !self.io.buffer().is_empty() {
            return Err(self.mismatch(line, "the TLS handshake", "more plaintext after 220"));
        }
        let failed = |got| DialogError::Mismatch {
            file: self.file.to_owned(),
            line,
            expected: "a TLS handshake".to_owned(),
            got,
            transcript: self.transcript.clone(),
        };
        let tls = handshake(self.io.into_inner()).await.map_err(failed)?;
        self.io = BufReader::new(tls);
        self.transcript.push_str("(TLS handshake)\n");
        Ok(self)
    }

    /// The end: closes the client's side; the server answers what it still has to, then
    /// closes. Anything it wrote is more than the dialogue expects.
    async fn finish(mut self) -> Result<(), DialogError> {
        let _ = self.io.get_mut().shutdown().await;
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(LINE_TIMEOUT, self.io.read_to_end(&mut rest)).await;
        let got = if closed.is_err() {
            "the connection still open after the client closed its side".to_owned()
        } else if !rest.is_empty() {
            // (A read error is a TLS peer closing without close_notify: the end all the same.)
            format!("`{}`", String::from_utf8_lossy(&rest).escape_debug())
        } else {
            return Ok(());
        };
        Err(DialogError::Unexpected {
            file: self.file.to_owned(),
            got,
            transcript: self.transcript,
        })
    }
}

/// The next server line without its CRLF, or what came instead.
async fn read_line(io: &mut BufReader<Box<dyn Pipe>>) -> Result<String, String> {
    let mut bytes = Vec::new();
    match tokio::time::timeout(LINE_TIMEOUT, io.read_until(b'\n', &mut bytes)).await {
        Err(_) => return Err(format!("nothing within {LINE_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("a read error: {e}")),
        Ok(Ok(0)) => return Err("the end of the connection".to_owned()),
        Ok(Ok(_)) => {}
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match text.strip_suffix("\r\n") {
        Some(line) => Ok(line.to_owned()),
        None => Err(format!("`{}` (not ended by CRLF)", text.escape_debug())),
    }
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

/// One dialogue on a server of its own, over an in-memory pipe. Errors name the file.
async fn in_memory(
    name: &str,
    dialog: &Dialog,
    data_dir: PathBuf,
    files: &Path,
) -> Result<(), String> {
    let fail = |e: String| format!("{name}: {e}");
    let text = configuration(dialog, files).map_err(fail)?;
    let mut settings = yizhan::config::parse(name, &text).map_err(|e| e.to_string())?;
    settings.data_dir = data_dir;
    let server = Server::bind(settings)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let shutdown = CancellationToken::new();
    let running = server
        .start(shutdown.clone())
        .map_err(|e| fail(e.to_string()))?;
    let (client, server_end) = tokio::io::duplex(64 * 1024);
    running.connectors()[0].serve(server_end, PEER.parse().unwrap());
    let result = converse(name, dialog, client).await;
    shutdown.cancel();
    running.wait().await.map_err(|e| fail(e.to_string()))?;
    result.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialogue_in_memory_on_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let dialogs = dialogs();
    assert!(dialogs.len() >= 50, "only {} dialogues", dialogs.len());
    let mut failures = Vec::new();
    for (n, (name, dialog)) in dialogs.iter().enumerate() {
        let data_dir = dir.path().join(format!("data{n}"));
        if let Err(e) = in_memory(name, dialog, data_dir, dir.path()).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dialogues failed in memory:\n\n{}",
        failures.len(),
        dialogs.len(),
        failures.join("\n\n")
    );
}

/// `yizhan serve` as a child process; killed when dropped.
struct Binary {
    child: Child,
    address: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Binary {
    /// Starts the binary with the dialogues' configuration and waits for its `ready` line.
    fn start(data_dir: &Path) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_yizhan"))
            .arg("serve")
            .arg("--config")
            .arg(CONFIG)
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("RUST_LOG")
            .env_remove("YIZHAN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The log goes line by line into a channel, so the pipe never fills up.
        let (send, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in StdBufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + LINE_TIMEOUT;
        let mut seen = Vec::new();
        let address = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = log.recv_timeout(left) else {
                panic!("yizhan serve did not say ready:\n{}", seen.join("\n"));
            };
            if let Some(rest) = line.split("ready listen=").nth(1) {
                let address = rest.split_whitespace().next().unwrap_or_default();
                break address.parse().unwrap();
            }
            seen.push(line);
        };
        Binary {
            child,
            address,
            log,
        }
    }

    /// The last lines the server logged.
    fn log(&self) -> String {
        let lines: Vec<String> = self.log.try_iter().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialogue_without_directives_over_tcp_on_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start(&dir.path().join("data"));
    let mut ran = 0;
    let mut failures = Vec::new();
    for (name, dialog) in dialogs().iter().filter(|(_, d)| !d.memory_only) {
        let stream = TcpStream::connect(server.address).await.unwrap();
        if let Err(e) = converse(name, dialog, stream).await {
            failures.push(e.to_string());
        }
        ran += 1;
    }
    assert!(ran >= 35, "only {ran} dialogues ran over TCP");
    assert!(
        failures.is_empty(),
        "{} of {ran} dialogues failed over TCP:\n\n{}\n--- server log ---\n{}",
        failures.len(),
        failures.join("\n\n"),
        server.log()
    );
}
