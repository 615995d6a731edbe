//! The SMTP client against scripted peers on 127.0.0.1 whose STARTTLS is broken (RFC 3207,
//! RFC 7435 opportunistic security, Postfix's `smtp_tls_security_level = may`):
//!
//! - the peer answers 220 to STARTTLS, then sends garbage or closes instead of a handshake:
//!   opportunistic opens a second connection without STARTTLS and delivers there; `require`
//!   and `verify` fail with a transient TLS error, on one connection, and never send MAIL;
//! - the peer refuses STARTTLS (454, RFC 3207 4): opportunistic carries on in clear text on the
//!   same connection; `require` fails, transiently.
//!
//! The peers answer at once and the client's timeouts are minutes long: nothing here waits for
//! time to pass.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use yizhan_delivery::mx::Target;
use yizhan_delivery::route::TlsPolicy;
use yizhan_delivery::smtp::{Connection, SmtpError, SmtpSettings, TlsClient};
use yizhan_proto::client::{ClientError, Transaction};
use yizhan_proto::{ForwardPath, ReversePath};

const BODY: &[u8] = b"Subject: broken TLS\r\n\r\nHello.\r\n";

/// What the peer does after STARTTLS.
#[derive(Debug, Clone, Copy)]
enum AfterStartTls {
    /// 220, then bytes that are no TLS record in answer to the ClientHello, then close.
    Garbage,
    /// 220, then close at once.
    Close,
    /// 454 4.7.0: TLS not available; the session goes on in clear text.
    Refuse,
}

/// A scripted peer that offers STARTTLS; it keeps the command lines it got, per connection.
struct Peer {
    address: SocketAddr,
    connections: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Peer {
    async fn start(after: AfterStartTls) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let seen = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(Vec::new());
                    seen.len() - 1
                };
                tokio::spawn(session(stream, after, seen.clone(), n));
            }
        });
        Peer {
            address,
            connections,
        }
    }

    fn target(&self) -> Target {
        Target {
            host: "mx.peer.example".into(),
            address: self.address,
        }
    }

    /// The command verbs of every connection so far (`DATA` stands for the whole body).
    fn verbs(&self) -> Vec<Vec<String>> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .map(|c| {
                c.iter()
                    .map(|l| l.split([' ', ':']).next().unwrap_or("").to_owned())
                    .collect()
            })
            .collect()
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    after: AfterStartTls,
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    n: usize,
) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let _ = write.write_all(b"220 mx.peer.example ESMTP\r\n").await;
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_ascii_uppercase();
        seen.lock().unwrap()[n].push(line.clone());
        let reply: &[u8] = match line.split([' ', ':']).next().unwrap_or("") {
            "EHLO" => b"250-mx.peer.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
            "STARTTLS" => match after {
                AfterStartTls::Refuse => b"454 4.7.0 TLS not available\r\n",
                AfterStartTls::Close => {
                    let _ = write.write_all(b"220 2.0.0 Ready to start TLS\r\n").await;
                    return;
                }
                AfterStartTls::Garbage => {
                    let _ = write.write_all(b"220 2.0.0 Ready to start TLS\r\n").await;
                    let mut hello = [0u8; 512];
                    let _ = read.read(&mut hello).await;
                    let _ = write.write_all(b"this is not TLS\r\n").await;
                    return;
                }
            },
            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 ok\r\n",
            "DATA" => {
                let _ = write.write_all(b"354 go ahead\r\n").await;
                loop {
                    let mut l = Vec::new();
                    if read.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if l == b".\r\n" {
                        break;
                    }
                }
                b"250 2.0.0 queued\r\n"
            }
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                return;
            }
            _ => b"500 5.5.2 what?\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

fn tls_client() -> TlsClient {
    TlsClient::new(rustls::RootCertStore::empty()).unwrap()
}

async fn open(peer: &Peer, policy: TlsPolicy) -> Result<Connection, SmtpError> {
    let settings = SmtpSettings {
        helo_name: "client.example".into(),
        ..SmtpSettings::default()
    };
    Connection::open(&peer.target(), policy, None, &settings, Some(&tls_client())).await
}

fn transaction() -> Transaction {
    Transaction::new(
        ReversePath::parse("<sender@client.example>").unwrap(),
        vec![ForwardPath::parse("<someone@peer.example>").unwrap()],
        BODY.len() as u64,
    )
}

fn verbs(lists: &[&[&str]]) -> Vec<Vec<String>> {
    lists
        .iter()
        .map(|l| l.iter().map(|v| (*v).to_owned()).collect())
        .collect()
}

/// RFC 7435: a failed handshake is followed at once by a new connection without STARTTLS, and
/// the message goes there.
#[tokio::test]
async fn opportunistic_delivers_in_clear_text_on_a_second_connection() {
    for after in [AfterStartTls::Garbage, AfterStartTls::Close] {
        let peer = Peer::start(after).await;
        let mut conn = open(&peer, TlsPolicy::Opportunistic)
            .await
            .unwrap_or_else(|e| panic!("{after:?}: {e}"));
        assert!(!conn.tls_active(), "{after:?}");
        let reason = conn.tls_fallback().expect("the fallback says why");
        assert!(!reason.is_empty(), "{after:?}");
        let result = conn.send(transaction(), &mut &BODY[..]).await.unwrap();
        assert!(result.delivered(), "{after:?}: {result:?}");
        conn.quit().await;
        assert_eq!(
            peer.verbs(),
            verbs(&[
                &["EHLO", "STARTTLS"],
                &["EHLO", "MAIL", "RCPT", "DATA", "QUIT"],
            ]),
            "{after:?}"
        );
    }
}

/// `require` and `verify` never fall back: the attempt fails with a transient TLS error (the
/// mail is deferred) on the one connection, and no MAIL is ever sent in clear text.
#[tokio::test]
async fn require_and_verify_defer_and_never_send_mail_in_clear_text() {
    for policy in [TlsPolicy::Require, TlsPolicy::Verify] {
        for after in [AfterStartTls::Garbage, AfterStartTls::Close] {
            let peer = Peer::start(after).await;
            let e = open(&peer, policy).await.unwrap_err();
            let case = format!("{policy:?} {after:?}: {e}");
            assert!(matches!(e, SmtpError::Tls { .. }), "{case}");
            assert!(e.to_string().contains("TLS handshake failed"), "{case}");
            assert!(!e.is_permanent(), "{case}");
            let reply = e.reply();
            assert_eq!(reply.code, 454, "{case}");
            assert!(!reply.is_permanent(), "{case}");
            assert_eq!(peer.verbs(), verbs(&[&["EHLO", "STARTTLS"]]), "{case}");
        }
    }
}

/// RFC 3207 4: a refused STARTTLS (454) is no handshake failure. Opportunistic goes on in clear
/// text on the same connection (no second one, no fallback reason); `require` defers.
#[tokio::test]
async fn a_refused_starttls_goes_on_in_clear_text_only_when_opportunistic() {
    let peer = Peer::start(AfterStartTls::Refuse).await;
    let mut conn = open(&peer, TlsPolicy::Opportunistic).await.unwrap();
    assert!(!conn.tls_active());
    assert_eq!(conn.tls_fallback(), None);
    let result = conn.send(transaction(), &mut &BODY[..]).await.unwrap();
    assert!(result.delivered(), "{result:?}");
    conn.quit().await;
    assert_eq!(
        peer.verbs(),
        verbs(&[&["EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "QUIT"]])
    );

    let peer = Peer::start(AfterStartTls::Refuse).await;
    let e = open(&peer, TlsPolicy::Require).await.unwrap_err();
    assert!(
        matches!(&e, SmtpError::Session { error: ClientError::TlsRequired(Some(r)), .. } if r.code == 454),
        "{e}"
    );
    assert!(!e.is_permanent(), "{e}");
    assert_eq!(peer.verbs(), verbs(&[&["EHLO", "STARTTLS"]]));
}
