//! lettre, an SMTP client nobody here wrote, submits mail to the real `yizhan` binary over
//! STARTTLS (RFC 3207, port "587") and implicit TLS (RFC 8314, port "465") with AUTH LOGIN and
//! PLAIN (RFC 4954). The certificate is made at test time with rcgen.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lettre::message::Message;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

const USER: &str = "user@test.example";
const PASSWORD: &str = "lettre password";
const OTHER: &str = "user2@test.example";

/// The server process; killed when dropped.
struct Server {
    child: Child,
    data: PathBuf,
    /// Ports in listener order: smtp, submission, submissions.
    ports: Vec<u16>,
    log: PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hash_password(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_yizhan"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn start(dir: &Path) -> Server {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["mx.test.example".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let data = dir.join("data");
    let config = format!(
        r#"hostname = "mx.test.example"
data_dir = "{data}"

[[listener]]
address = "127.0.0.1:0"
kind = "smtp"
[[listener]]
address = "127.0.0.1:0"
kind = "submission"
[[listener]]
address = "127.0.0.1:0"
kind = "submissions"

[tls]
cert = "{dir}/cert.pem"
key = "{dir}/key.pem"

[[domain]]
name = "test.example"
[[mailbox]]
address = "{USER}"
password = "{phc}"
[[mailbox]]
address = "{OTHER}"
"#,
        data = data.display(),
        dir = dir.display(),
        phc = hash_password(PASSWORD),
    );
    let file = dir.join("yizhan.toml");
    std::fs::write(&file, config).unwrap();
    let log = dir.join("server.log");
    let child = Command::new(env!("CARGO_BIN_EXE_yizhan"))
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut ports = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ports.is_empty() && Instant::now() < deadline {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("ready listen=").nth(1) {
            let list = rest.split(" data_dir=").next().unwrap_or("");
            ports = list
                .split_whitespace()
                .map(|a| a.rsplit(':').next().unwrap().parse().unwrap())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ports.len(), 3, "the server did not report its ports");
    Server {
        child,
        data,
        ports,
        log,
    }
}

fn wait_mail(server: &Server, count: usize) -> Vec<Vec<u8>> {
    let dir = server.data.join("mail/test.example/user2/new");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        if files.len() >= count {
            files.sort();
            return files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        }
        assert!(
            Instant::now() < deadline,
            "no delivery in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mailer(port: u16, implicit: bool, mechanism: Mechanism) -> AsyncSmtpTransport<Tokio1Executor> {
    let tls = TlsParameters::builder("mx.test.example".to_owned())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .hello_name(ClientId::Domain("client.test.example".to_owned()))
        .tls(if implicit {
            Tls::Wrapper(tls)
        } else {
            Tls::Required(tls)
        })
        .credentials(Credentials::new(USER.to_owned(), PASSWORD.to_owned()))
        .authentication(vec![mechanism])
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

#[tokio::test]
async fn lettre_submits_over_starttls_and_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let cases = [
        (server.ports[1], false, Mechanism::Login, "starttls login"),
        (server.ports[1], false, Mechanism::Plain, "starttls plain"),
        (server.ports[2], true, Mechanism::Plain, "implicit plain"),
        (server.ports[2], true, Mechanism::Login, "implicit login"),
    ];
    for (port, implicit, mechanism, name) in cases {
        let message = Message::builder()
            .from(USER.parse().unwrap())
            .to(OTHER.parse().unwrap())
            .subject(name)
            .body(format!("Body of {name}.\r\n"))
            .unwrap();
        let response = mailer(port, implicit, mechanism)
            .send(message)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", server.log()));
        assert!(response.is_positive(), "{name}: {response:?}");
    }
    let delivered = wait_mail(&server, cases.len());
    for (_, _, _, name) in cases {
        let found = delivered.iter().find(|m| {
            let text = String::from_utf8_lossy(m);
            text.contains(&format!("Subject: {name}\n"))
                && text.contains(&format!("Body of {name}.\n"))
        });
        let text = String::from_utf8_lossy(found.unwrap_or_else(|| panic!("{name} missing")));
        assert!(text.contains("with ESMTPSA id"), "{text}");
        assert!(text.contains("(using TLSv1.3 with cipher"), "{text}");
    }
}

#[tokio::test]
async fn lettre_without_credentials_is_refused_on_submission() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let tls = TlsParameters::builder("mx.test.example".to_owned())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.ports[1])
        .tls(Tls::Required(tls))
        .build();
    let message = Message::builder()
        .from(USER.parse().unwrap())
        .to(OTHER.parse().unwrap())
        .subject("no auth")
        .body("x\r\n".to_owned())
        .unwrap();
    let error = mailer.send(message).await.unwrap_err();
    // RFC 4954 6 / RFC 6409 4.3: 530 5.7.0 before AUTH.
    assert_eq!(error.status().map(u16::from), Some(530), "{error}");
}
