//! ClientSession against ServerSession, end to end and in memory: the two state machines must
//! agree on everything they say to each other (RFC 5321 3, RFC 2920, RFC 3030, RFC 3207, RFC 4954).
//! The server side is a `ServerSession` answered by a few fixed rules ([`Server`]); what the
//! real server answers is tested on the real server (`crates/yizhan/tests/dialogs.rs`).

use yizhan_proto::client::{
    ClientConfig, ClientEvent, ClientSession, Credentials, TlsMode, Transaction, TransactionResult,
    bdat_command,
};
use yizhan_proto::data::DotStuffer;
use yizhan_proto::reply::Reply;
use yizhan_proto::server::{Decision, Event, Question, ServerConfig, ServerSession};
use yizhan_proto::{ForwardPath, Host, ReversePath};

/// A message the server accepted: its recipients and its data (dot-unstuffed).
struct Message {
    recipients: usize,
    body: Vec<u8>,
}

/// A `ServerSession` for mx.test.example with fixed answers: `user@` and `user2@test.example`
/// and `postmaster` are accepted, `moved@test.example` is relocated (551), other local parts
/// are unknown (550) and other domains refused (550); AUTH PLAIN takes `user@test.example` with
/// the password `secret`. A STARTTLS "handshake" is done at once.
struct Server {
    session: ServerSession,
    body: Vec<u8>,
    messages: Vec<Message>,
    tls_handshakes: usize,
    closed: bool,
}

impl Server {
    /// Offers STARTTLS and AUTH PLAIN (after TLS) when `tls_and_auth`.
    fn new(tls_and_auth: bool) -> Server {
        let mut config = ServerConfig {
            hostname: "mx.test.example".to_owned(),
            ..ServerConfig::default()
        };
        config.extensions.starttls = tls_and_auth;
        if tls_and_auth {
            config.extensions.auth_mechanisms = vec!["PLAIN".to_owned()];
        }
        Server {
            session: ServerSession::new(config),
            body: Vec::new(),
            messages: Vec::new(),
            tls_handshakes: 0,
            closed: false,
        }
    }

    /// Feeds the client's bytes; returns what the server wrote.
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.session.receive(bytes);
        self.drive()
    }

    /// Runs the session until it needs input; returns what it wrote.
    fn drive(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(event) = self.session.next_event() {
            match event {
                Event::Send(bytes) => out.extend_from_slice(&bytes),
                Event::Ask(question) => {
                    let decision = self.answer(question);
                    self.session.decide(decision);
                }
                Event::Body(chunk) => self.body.extend_from_slice(&chunk),
                Event::DataAborted => self.body.clear(),
                Event::StartTls => {
                    self.tls_handshakes += 1;
                    self.session.tls_established();
                }
                Event::Turn | Event::Close => self.closed = true,
            }
        }
        out
    }

    fn answer(&mut self, question: Question) -> Decision {
        match question {
            Question::Rcpt { to, .. } => rcpt(&to),
            Question::Data => {
                self.body.clear();
                Decision::Accept
            }
            Question::EndOfData { transaction, .. } => {
                self.messages.push(Message {
                    recipients: transaction.recipients.len(),
                    body: std::mem::take(&mut self.body),
                });
                Decision::Reply(Reply::queued(&format!("TEST{}", self.messages.len())))
            }
            Question::Auth {
                initial: Some(response),
                ..
            }
            | Question::AuthResponse(response) => plain(&response),
            Question::Auth { initial: None, .. } => Decision::Reply(Reply::auth_challenge("")),
            _ => Decision::Accept,
        }
    }
}

fn rcpt(to: &ForwardPath) -> Decision {
    let ForwardPath::Path(path) = to else {
        return Decision::Accept;
    };
    let shown = to.to_string();
    let local = path.mailbox.local_part().as_str().to_ascii_lowercase();
    match path.mailbox.host() {
        Host::Domain(d) if d.as_str().eq_ignore_ascii_case("test.example") => {
            match local.as_str() {
                "user" | "user2" | "postmaster" => Decision::Accept,
                "moved" => Decision::Reply(Reply::user_not_local("<moved@elsewhere.example>")),
                _ => Decision::Reply(Reply::no_such_user(&shown)),
            }
        }
        _ => Decision::Reply(Reply::relay_denied(&shown)),
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`.
fn plain(response: &[u8]) -> Decision {
    if response == b"\0user@test.example\0secret" {
        Decision::Accept
    } else {
        Decision::Reply(Reply::auth_failed())
    }
}

struct Outcome {
    results: Vec<TransactionResult>,
    server: Server,
    wire_to_server: Vec<u8>,
}

/// Runs `messages` (sender, recipients, body) through one connection. Bounded: at most 1000
/// exchanges.
fn converse(
    mut server: Server,
    mut config: ClientConfig,
    messages: Vec<(&str, Vec<&str>, &[u8])>,
    prefer_bdat: bool,
) -> Outcome {
    config.prefer_chunking = prefer_bdat;
    let mut client = ClientSession::new(config);
    let mut to_client = server.drive();
    let mut wire_to_server = Vec::new();
    let mut queue = messages.into_iter();
    let mut current: Option<Vec<u8>> = None;
    let mut results = Vec::new();
    for _ in 0..1000 {
        client.receive(&to_client);
        to_client.clear();
        let mut to_server = Vec::new();
        let mut closed = false;
        while let Some(event) = client.next_event() {
            match event {
                ClientEvent::Send(bytes) | ClientEvent::SendSecret(bytes) => {
                    to_server.extend_from_slice(&bytes)
                }
                ClientEvent::SendBody { bdat } => {
                    let body = current.as_deref().unwrap_or_default();
                    if bdat {
                        to_server.extend_from_slice(&bdat_command(body.len() as u64));
                        to_server.extend_from_slice(body);
                    } else {
                        let mut stuffer = DotStuffer::new();
                        stuffer.stuff(body, &mut to_server);
                        stuffer.finish(&mut to_server);
                    }
                    client.body_sent();
                }
                ClientEvent::Ready => match queue.next() {
                    Some((from, rcpts, body)) => {
                        let tx = Transaction::new(
                            ReversePath::parse(from).unwrap(),
                            rcpts
                                .iter()
                                .map(|r| ForwardPath::parse(r).unwrap())
                                .collect(),
                            body.len() as u64,
                        );
                        current = Some(body.to_vec());
                        client.send(tx).unwrap();
                    }
                    None => client.quit(),
                },
                ClientEvent::Finished(result) => results.push(*result),
                ClientEvent::StartTls => {
                    // The in-memory server does its side of the handshake when it sees the
                    // STARTTLS; the client's side is this call.
                    to_server.extend(std::mem::take(&mut to_client));
                    client.tls_established();
                }
                ClientEvent::Failed(error) => panic!("client failed: {error}"),
                ClientEvent::Closed => closed = true,
            }
        }
        wire_to_server.extend_from_slice(&to_server);
        to_client = server.receive(&to_server);
        if closed {
            return Outcome {
                results,
                server,
                wire_to_server,
            };
        }
    }
    panic!("conversation did not end within 1000 exchanges");
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new(Host::parse("client.example").unwrap());
    config.tls = TlsMode::Never;
    config
}

#[test]
fn one_message_with_mixed_recipients_is_pipelined_and_stored() {
    let body = b"Subject: hi\r\n\r\n.leading dot\r\nline\r\n";
    let out = converse(
        Server::new(false),
        client_config(),
        vec![(
            "<sender@remote.example>",
            vec![
                "<user@test.example>",
                "<nobody@test.example>",
                "<user2@test.example>",
            ],
            body,
        )],
        false,
    );
    assert_eq!(out.results.len(), 1);
    let result = &out.results[0];
    let codes: Vec<_> = result
        .recipients
        .iter()
        .map(|(_, r)| match r {
            Ok(reply) | Err(reply) => reply.code,
        })
        .collect();
    assert_eq!(codes, [250, 550, 250]);
    assert_eq!(result.data.as_ref().map(|r| r.code), Some(250));
    assert!(result.delivered());
    // The server stored exactly the body (dot-unstuffed again) for the two good recipients.
    assert_eq!(out.server.messages.len(), 1);
    assert_eq!(out.server.messages[0].body, body);
    assert_eq!(out.server.messages[0].recipients, 2);
    // RFC 2920: MAIL, the RCPTs and DATA went out in one write, before any reply was read.
    let wire = String::from_utf8_lossy(&out.wire_to_server);
    let batch = format!(
        "MAIL FROM:<sender@remote.example> SIZE={}\r\nRCPT TO:<user@test.example>\r\n\
         RCPT TO:<nobody@test.example>\r\nRCPT TO:<user2@test.example>\r\nDATA\r\n",
        body.len()
    );
    assert!(wire.contains(&batch), "{wire}");
    assert!(out.server.closed);
}

#[test]
fn two_messages_reuse_one_connection() {
    let out = converse(
        Server::new(false),
        client_config(),
        vec![
            (
                "<a@remote.example>",
                vec!["<user@test.example>"],
                b"one\r\n",
            ),
            ("<>", vec!["<postmaster>"], b"two\r\n"),
        ],
        false,
    );
    assert_eq!(out.results.len(), 2);
    assert!(out.results.iter().all(|r| r.delivered()));
    let bodies: Vec<_> = out.server.messages.iter().map(|m| m.body.clone()).collect();
    assert_eq!(bodies, [b"one\r\n".to_vec(), b"two\r\n".to_vec()]);
}

#[test]
fn bdat_when_chunking_is_offered() {
    let body = b"binary-ish\r\n.\r\nnot the end\r\n";
    let out = converse(
        Server::new(false),
        client_config(),
        vec![("<a@remote.example>", vec!["<user@test.example>"], body)],
        true,
    );
    assert!(out.results[0].delivered());
    assert_eq!(out.server.messages[0].body, body);
    let bdat = format!("BDAT {} LAST\r\n", body.len());
    assert!(String::from_utf8_lossy(&out.wire_to_server).contains(&bdat));
}

#[test]
fn every_recipient_refused_means_no_message() {
    let out = converse(
        Server::new(false),
        client_config(),
        vec![(
            "<a@remote.example>",
            vec!["<x@elsewhere.example>", "<moved@test.example>"],
            b"x\r\n",
        )],
        false,
    );
    let result = &out.results[0];
    assert!(!result.delivered());
    let codes: Vec<_> = result
        .recipients
        .iter()
        .map(|(_, r)| match r {
            Ok(reply) | Err(reply) => reply.code,
        })
        .collect();
    assert_eq!(codes, [550, 551]);
    assert!(out.server.messages.is_empty());
}

#[test]
fn starttls_then_auth_plain_as_the_seed_client_does() {
    let mut config = client_config();
    config.tls = TlsMode::Required;
    config.credentials = Some(Credentials::new("user@test.example", "secret"));
    let out = converse(
        Server::new(true),
        config,
        vec![(
            "<user@test.example>",
            vec!["<user2@test.example>"],
            b"hello\r\n",
        )],
        false,
    );
    assert!(out.results[0].delivered());
    assert_eq!(out.server.tls_handshakes, 1);
    assert!(out.server.session.is_tls());
    let wire = String::from_utf8_lossy(&out.wire_to_server);
    // EHLO, STARTTLS, EHLO again (RFC 3207 4.2), then AUTH (offered only over TLS).
    let ehlo = wire.matches("EHLO client.example\r\n").count();
    assert_eq!(ehlo, 2, "{wire}");
    assert!(wire.find("STARTTLS").unwrap() < wire.find("AUTH PLAIN").unwrap());
}
