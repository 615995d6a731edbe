//! The SMTP client driver: a tokio socket around [`ClientSession`].
//!
//! The session decides what to say; this module only moves bytes, runs the TLS handshake,
//! streams the body (dot-stuffed through [`DotStuffer`], or raw after `BDAT`), and keeps time.
//!
//! | RFC | what |
//! | --- | --- |
//! | 5321 4.5.3.2 | timeouts: connect, greeting, each command, each body write, the reply after the body |
//! | 5321 3.2, 4.1.1.1 | EHLO with HELO fallback (in the session) |
//! | 3207 | STARTTLS per [`TlsPolicy`]: opportunistic (unverified, RFC 7435), required, required and verified |
//! | 2920 | PIPELINING (in the session) |
//! | 1870, 6152, 6531 | SIZE checked, 8BITMIME and SMTPUTF8 required when the message needs them: no downgrade, a permanent failure |
//! | 5321 4.5.2 | dot-stuffing of the body |
//! | 5321 3.3, 4.2.5 | one outcome per recipient; the remote reply is kept with it ([`Outcome`]) |
//!
//! One [`Connection`] carries any number of messages ([`Connection::send`]) until it is
//! closed with [`Connection::quit`]; the queue runner keeps idle connections for reuse.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use yizhan_proto::client::{
    ClientConfig, ClientError, ClientEvent, ClientSession, Credentials, TlsMode, Transaction,
    TransactionResult, bdat_command,
};
use yizhan_proto::data::DotStuffer;
use yizhan_proto::{Host, Reply};

use crate::mx::Target;
use crate::route::TlsPolicy;

/// Timeouts and limits of the SMTP client (RFC 5321 4.5.3.2 gives the minimums used as
/// defaults, except connect, which the RFC leaves open).
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The name given in EHLO/HELO.
    pub helo_name: String,
    /// The TCP port of remote MX hosts (25; tests use another).
    pub port: u16,
    /// Connecting (default 30 s).
    pub connect_timeout: Duration,
    /// The 220 greeting (RFC 5321 4.5.3.2.1: 5 minutes).
    pub greeting_timeout: Duration,
    /// Each reply to EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, RSET, QUIT (5 minutes; DATA's
    /// is 2 minutes in the RFC, the longer one is harmless).
    pub command_timeout: Duration,
    /// Each write of the body (RFC 5321 4.5.3.2.5: 3 minutes).
    pub data_block_timeout: Duration,
    /// The reply after the end of the body (RFC 5321 4.5.3.2.6: 10 minutes).
    pub data_end_timeout: Duration,
    /// How many hosts of an MX list are tried (default 5).
    pub max_hosts: usize,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            helo_name: "localhost".into(),
            port: 25,
            connect_timeout: Duration::from_secs(30),
            greeting_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            data_block_timeout: Duration::from_secs(180),
            data_end_timeout: Duration::from_secs(600),
            max_hosts: crate::mx::MAX_HOSTS,
        }
    }
}

/// TLS client configurations: one that verifies certificates against the given roots, one
/// that does not (for opportunistic TLS, where a bad certificate is still better than plain
/// text, RFC 7435).
#[derive(Clone)]
pub struct TlsClient {
    verified: Arc<rustls::ClientConfig>,
    unverified: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// The client configuration that checks the certificate against the roots (`verify`), or
    /// the one that accepts any certificate but still checks the handshake's signatures.
    pub fn config(&self, verify: bool) -> Arc<rustls::ClientConfig> {
        if verify {
            self.verified.clone()
        } else {
            self.unverified.clone()
        }
    }

    /// Verifies certificates against `roots` (for [`TlsPolicy::Verify`]); the lead wires in the
    /// system roots (e.g. rustls-platform-verifier or webpki-roots) in production.
    pub fn new(roots: RootCertStore) -> Result<TlsClient, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verified = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        Ok(TlsClient {
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
        })
    }
}

/// Accepts any certificate but still checks the handshake signatures, so the session is
/// encrypted to whoever holds the key: opportunistic TLS (RFC 7435).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a connection could not be opened or broke down. All transient except a permanent
/// refusal in the greeting or EHLO, see [`SmtpError::is_permanent`].
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// Connecting, reading or writing failed.
    #[error("{}: {source}", at(host, address))]
    Io {
        /// The host name.
        host: String,
        /// Its address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The peer did not answer (or take our data) in time (RFC 5321 4.5.3.2).
    #[error("{}: timed out {what}", at(host, address))]
    Timeout {
        /// The host name.
        host: String,
        /// Its address.
        address: SocketAddr,
        /// What we waited for.
        what: &'static str,
    },
    /// The TLS handshake failed (certificate, protocol).
    #[error("{}: TLS handshake failed: {reason}", at(host, address))]
    Tls {
        /// The host name.
        host: String,
        /// Its address.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The session failed (greeting refused, EHLO refused, TLS required but not offered,
    /// AUTH failed, 421, protocol error).
    #[error("{}: {error}", at(host, address))]
    Session {
        /// The host name.
        host: String,
        /// Its address.
        address: SocketAddr,
        /// The session's error.
        error: ClientError,
    },
    /// The peer closed the connection.
    #[error("{}: connection closed by the peer", at(host, address))]
    Closed {
        /// The host name.
        host: String,
        /// Its address.
        address: SocketAddr,
    },
}

/// `host [address]` as errors name a peer; a Unix socket's path alone (its target has no IP
/// address, [`crate::lmtp::UNIX_SOCKET_ADDRESS`]).
fn at(host: &str, address: &SocketAddr) -> String {
    if *address == crate::lmtp::UNIX_SOCKET_ADDRESS {
        host.to_owned()
    } else {
        format!("{host} [{address}]")
    }
}

impl SmtpError {
    /// Whether trying this host again is pointless (a 5xx greeting or EHLO/HELO refusal, or
    /// failed authentication with a 5xx). Callers still try the next MX host.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SmtpError::Session { error, .. } if error.is_permanent())
    }

    /// The reply the server itself sent, when the error is one (a refused greeting, HELO or
    /// AUTH, a 421, a refused STARTTLS); `None` when it never answered (connect, TLS, timeout).
    pub fn server_reply(&self) -> Option<&Reply> {
        match self {
            SmtpError::Session { error, .. } => match error {
                ClientError::Greeting(r)
                | ClientError::HeloRejected(r)
                | ClientError::AuthFailed(r)
                | ClientError::ServiceClosing(r) => Some(r),
                ClientError::TlsRequired(Some(r)) => Some(r),
                _ => None,
            },
            _ => None,
        }
    }

    /// The reply that stands for this error in a recipient's outcome: the server's own reply
    /// when there was one, else a made-up 4xx/5xx.
    pub fn reply(&self) -> Reply {
        if let Some(reply) = self.server_reply() {
            return reply.clone();
        }
        let (code, enhanced) = match self {
            SmtpError::Tls { .. } | SmtpError::Session { .. } => {
                (if self.is_permanent() { 554 } else { 454 }, (4, 7, 5))
            }
            _ => (421, (4, 4, 1)),
        };
        let enhanced = if code >= 500 {
            yizhan_proto::EnhancedCode::new(5, enhanced.1, enhanced.2)
        } else {
            yizhan_proto::EnhancedCode::new(enhanced.0, enhanced.1, enhanced.2)
        };
        Reply::new(code, Some(enhanced), format!("(client) {self}"))
    }
}

/// What one delivery attempt to one recipient came to. Data, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered or relayed.
    Delivered(Reason),
    /// Try again later.
    Transient(Reason),
    /// Give up; a report is owed.
    Permanent(Reason),
}

impl Outcome {
    /// The reason, whatever the outcome.
    pub fn reason(&self) -> &Reason {
        match self {
            Outcome::Delivered(r) | Outcome::Transient(r) | Outcome::Permanent(r) => r,
        }
    }
}

/// Why an outcome is what it is, in the terms of a delivery status notification (RFC 3464 2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// The host that answered (`Remote-MTA`), if a remote one did.
    pub remote_mta: Option<String>,
    /// The remote reply (`Diagnostic-Code: smtp; ...`), one line, if there was one.
    pub reply: Option<String>,
    /// A human sentence for logs, `last_error` and the report's text part.
    pub text: String,
    /// The next hop offered DSN (RFC 3461): it takes over success and delay notifications.
    pub dsn_relayed: bool,
}

impl Reason {
    /// A reason without a remote reply.
    pub fn local(status: &str, text: impl Into<String>) -> Reason {
        Reason {
            status: status.to_owned(),
            remote_mta: None,
            reply: None,
            text: text.into(),
            dsn_relayed: false,
        }
    }

    /// A host that could not be talked to (`error`, which names the host and address tried:
    /// refused connection, timeout, TLS failure): said as ours, never as the host's reply.
    pub fn not_reached(error: &SmtpError) -> Reason {
        Reason {
            status: status_of(&error.reply()),
            remote_mta: None,
            reply: None,
            text: format!("cannot talk to {error}"),
            dsn_relayed: false,
        }
    }

    /// A reason from a remote reply.
    pub fn remote(host: &str, reply: &Reply) -> Reason {
        let line = reply_line(reply);
        Reason {
            status: status_of(reply),
            remote_mta: Some(host.to_owned()),
            text: format!("{host} said: {line}"),
            reply: Some(line),
            dsn_relayed: false,
        }
    }
}

/// A reply on one line: `550 5.1.1 text text`.
pub fn reply_line(reply: &Reply) -> String {
    let mut line = reply.code.to_string();
    if let Some(e) = reply.enhanced {
        line.push_str(&format!(" {}.{}.{}", e.class, e.subject, e.detail));
    }
    for l in &reply.lines {
        line.push(' ');
        line.push_str(l.trim());
    }
    line.chars().filter(|c| !c.is_control()).collect()
}

/// The RFC 3463 status of a reply: its enhanced code, else one from the reply code's class.
pub fn status_of(reply: &Reply) -> String {
    match reply.enhanced {
        Some(e) => format!("{}.{}.{}", e.class, e.subject, e.detail),
        None => match reply.code / 100 {
            2 => "2.0.0".into(),
            4 => "4.0.0".into(),
            _ => "5.0.0".into(),
        },
    }
}

/// One outcome per recipient of a transaction, in order (RFC 5321 3.3): accepted by RCPT and
/// the message accepted after the body: delivered; refused by RCPT, or the message refused:
/// transient or permanent by the reply's class. `host` is the remote host's name.
pub fn outcomes(host: &str, result: &TransactionResult, dsn_relayed: bool) -> Vec<Outcome> {
    result
        .recipients
        .iter()
        .enumerate()
        .map(|(i, (_, rcpt))| {
            let reply = match (rcpt, result.after_body(i)) {
                (Err(refused), _) => refused,
                (Ok(_), Some(data)) => data,
                // Accepted, but the body never got its reply (connection lost).
                (Ok(accepted), None) => {
                    let lost = Reply::new(
                        451,
                        Some(yizhan_proto::EnhancedCode::new(4, 4, 2)),
                        match &result.error {
                            Some(e) => format!("(client) transaction aborted: {e}"),
                            None => "(client) no reply after the message".into(),
                        },
                    );
                    let _ = accepted;
                    return Outcome::Transient(Reason::remote(host, &lost));
                }
            };
            let mut reason = Reason::remote(host, reply);
            if reply.code / 100 == 2 {
                reason.dsn_relayed = dsn_relayed;
                Outcome::Delivered(reason)
            } else if reply.is_permanent() {
                Outcome::Permanent(reason)
            } else {
                Outcome::Transient(reason)
            }
        })
        .collect()
}

/// Any byte stream a [`Connection`] can run over (for TURN: the socket a client connected on,
/// plain or TLS).
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// A stream that was already open (TURN); never upgraded.
    Other(Box<dyn Duplex>),
    /// Only while the TLS handshake owns the socket, or after a failed one.
    Gone,
}

/// An open SMTP connection, ready for transactions.
pub struct Connection {
    stream: Stream,
    session: ClientSession,
    target: Target,
    settings: SmtpSettings,
    tls: TlsPolicy,
    tls_client: Option<TlsClient>,
    buf: Vec<u8>,
    usable: bool,
    messages: usize,
    /// Why TLS was given up before this clear-text connection was opened (opportunistic).
    tls_fallback: Option<String>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .field("tls", &self.session.tls_active())
            .field("tls_fallback", &self.tls_fallback)
            .field("usable", &self.usable)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

/// What the driver loop waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The session is ready (after the greeting and EHLO, or after a transaction).
    Ready,
    /// QUIT answered.
    Closed,
}

impl Connection {
    /// Connects to `target`, reads the greeting, says EHLO, upgrades to TLS per `tls` and
    /// authenticates with `auth`, until the session is ready for a transaction.
    ///
    /// With the opportunistic policy, a TLS handshake that fails (no common protocol or cipher,
    /// a broken peer, a handshake that never ends) is followed at once by a new connection in
    /// clear text (RFC 7435; Postfix's `smtp_tls_security_level = may` does the same): a peer
    /// whose TLS is broken is still reached, as it would be if it offered no TLS at all. The
    /// fallback is logged at warn with the reason, which [`Connection::tls_fallback`] keeps.
    /// With `require` or `verify` the failure stands: [`SmtpError::Tls`], transient (the mail
    /// is deferred), and nothing is sent in clear text.
    pub async fn open(
        target: &Target,
        tls: TlsPolicy,
        auth: Option<Credentials>,
        settings: &SmtpSettings,
        tls_client: Option<&TlsClient>,
    ) -> Result<Connection, SmtpError> {
        match Self::open_once(target, tls, auth.clone(), settings, tls_client).await {
            Err(SmtpError::Tls { reason, .. }) if tls == TlsPolicy::Opportunistic => {
                tracing::warn!(host = %target.host, address = %target.address, reason = %reason, "TLS failed; delivering without TLS (opportunistic policy)");
                let mut conn =
                    Self::open_once(target, TlsPolicy::None, auth, settings, tls_client).await?;
                conn.tls_fallback = Some(reason);
                Ok(conn)
            }
            other => other,
        }
    }

    /// One connection attempt of [`Connection::open`].
    async fn open_once(
        target: &Target,
        tls: TlsPolicy,
        auth: Option<Credentials>,
        settings: &SmtpSettings,
        tls_client: Option<&TlsClient>,
    ) -> Result<Connection, SmtpError> {
        let helo = Host::parse(&settings.helo_name)
            .or_else(|_| Host::parse("localhost"))
            .map_err(|_| SmtpError::Session {
                host: target.host.clone(),
                address: target.address,
                error: ClientError::Protocol("invalid helo name".into()),
            })?;
        let mut config = ClientConfig::new(helo);
        config.tls = match (tls, tls_client.is_some()) {
            (TlsPolicy::None, _) | (TlsPolicy::Opportunistic, false) => TlsMode::Never,
            (TlsPolicy::Opportunistic, true) => TlsMode::Opportunistic,
            (TlsPolicy::Require | TlsPolicy::Verify, _) => TlsMode::Required,
        };
        config.credentials = auth;
        let stream = match tokio::time::timeout(
            settings.connect_timeout,
            TcpStream::connect(target.address),
        )
        .await
        {
            Err(_) => {
                return Err(SmtpError::Timeout {
                    host: target.host.clone(),
                    address: target.address,
                    what: "connecting",
                });
            }
            Ok(Err(source)) => {
                return Err(SmtpError::Io {
                    host: target.host.clone(),
                    address: target.address,
                    source,
                });
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            stream: Stream::Plain(stream),
            session: ClientSession::new(config),
            target: target.clone(),
            settings: settings.clone(),
            tls,
            tls_client: tls_client.cloned(),
            buf: vec![0; 16 * 1024],
            usable: true,
            messages: 0,
            tls_fallback: None,
        };
        let mut no_body = tokio::io::empty();
        let mut result = None;
        conn.drive(Until::Ready, &mut no_body, &mut result).await?;
        Ok(conn)
    }

    /// Runs the client side over a stream that is already open, as after `TURN` (RFC 821
    /// 4.1.1, ATRN RFC 2645 4): the peer speaks first with its 220 greeting, then EHLO, without
    /// STARTTLS (the stream is whatever protection it already has) and without AUTH.
    pub async fn over(
        stream: Box<dyn Duplex>,
        target: Target,
        settings: &SmtpSettings,
    ) -> Result<Connection, SmtpError> {
        Self::over_stream(stream, target, settings, false).await
    }

    /// Runs LMTP (RFC 2033) over a stream just opened to an LMTP server
    /// ([`crate::lmtp::connect`]): greeting, LHLO, no STARTTLS, no AUTH.
    pub async fn over_lmtp(
        stream: Box<dyn Duplex>,
        target: Target,
        settings: &SmtpSettings,
    ) -> Result<Connection, SmtpError> {
        Self::over_stream(stream, target, settings, true).await
    }

    async fn over_stream(
        stream: Box<dyn Duplex>,
        target: Target,
        settings: &SmtpSettings,
        lmtp: bool,
    ) -> Result<Connection, SmtpError> {
        let helo = Host::parse(&settings.helo_name)
            .or_else(|_| Host::parse("localhost"))
            .map_err(|_| SmtpError::Session {
                host: target.host.clone(),
                address: target.address,
                error: ClientError::Protocol("invalid helo name".into()),
            })?;
        let mut config = ClientConfig::new(helo);
        config.tls = TlsMode::Never;
        config.lmtp = lmtp;
        let mut conn = Connection {
            stream: Stream::Other(stream),
            session: ClientSession::new(config),
            target,
            settings: settings.clone(),
            tls: TlsPolicy::None,
            tls_client: None,
            buf: vec![0; 16 * 1024],
            usable: true,
            messages: 0,
            tls_fallback: None,
        };
        let mut no_body = tokio::io::empty();
        let mut result = None;
        conn.drive(Until::Ready, &mut no_body, &mut result).await?;
        Ok(conn)
    }

    /// The host this connection goes to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the connection can take another transaction.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// Whether the session is over TLS.
    pub fn tls_active(&self) -> bool {
        self.session.tls_active()
    }

    /// Why TLS was given up for this connection, if it was: the opportunistic policy's TLS
    /// handshake failed on a first connection (the reason), and this one is its clear-text
    /// successor ([`Connection::open`]). `None` for a connection that never tried TLS, or
    /// whose STARTTLS the server refused (RFC 3207 4: it carries on in clear text itself).
    pub fn tls_fallback(&self) -> Option<&str> {
        self.tls_fallback.as_deref()
    }

    /// Whether the server offers DSN (RFC 3461), so NOTIFY/ORCPT/RET/ENVID are passed on.
    pub fn offers_dsn(&self) -> bool {
        self.session.capabilities().is_some_and(|c| c.dsn())
    }

    /// How many transactions this connection has carried.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Sends one message. The outcome is in the result (per recipient); an `Err` means the
    /// connection broke before the session could say anything about the message, and is then
    /// no longer usable. After a broken transaction ([`TransactionResult::error`] set with a
    /// lost connection) [`Connection::is_usable`] is false too.
    pub async fn send(
        &mut self,
        tx: Transaction,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<TransactionResult, SmtpError> {
        if !self.usable {
            return Err(SmtpError::Closed {
                host: self.target.host.clone(),
                address: self.target.address,
            });
        }
        let size = tx.size;
        let recipients: Vec<_> = tx.recipients.iter().map(|(fp, _)| fp.clone()).collect();
        if let Err(error) = self.session.send(tx) {
            return Err(self.session_error(error));
        }
        self.messages += 1;
        let mut result = None;
        let driven = self.drive_body(Until::Ready, body, size, &mut result).await;
        match (driven, result) {
            (_, Some(result)) => Ok(*result),
            (Err(e), None) => {
                self.usable = false;
                // The session said nothing: every recipient gets the connection's failure.
                let reply = e.reply();
                let reply = if reply.is_permanent() {
                    Reply::new(
                        451,
                        Some(yizhan_proto::EnhancedCode::new(4, 4, 2)),
                        reply.text(),
                    )
                } else {
                    reply
                };
                Ok(TransactionResult {
                    mail: reply.clone(),
                    recipients: recipients
                        .into_iter()
                        .map(|r| (r, Err(reply.clone())))
                        .collect(),
                    data: None,
                    per_recipient: Vec::new(),
                    error: None,
                })
            }
            (Ok(()), None) => Err(SmtpError::Closed {
                host: self.target.host.clone(),
                address: self.target.address,
            }),
        }
    }

    /// Says QUIT and closes (errors are ignored: the work is done).
    pub async fn quit(mut self) {
        if self.usable {
            self.session.quit();
            let mut no_body = tokio::io::empty();
            let mut result = None;
            let _ = self.drive(Until::Closed, &mut no_body, &mut result).await;
        }
        let _ = self.shutdown().await;
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Other(s) => s.shutdown().await,
            Stream::Gone => Ok(()),
        }
    }

    fn session_error(&self, error: ClientError) -> SmtpError {
        SmtpError::Session {
            host: self.target.host.clone(),
            address: self.target.address,
            error,
        }
    }

    fn io_error(&self, source: std::io::Error) -> SmtpError {
        SmtpError::Io {
            host: self.target.host.clone(),
            address: self.target.address,
            source,
        }
    }

    fn timeout(&self, what: &'static str) -> SmtpError {
        SmtpError::Timeout {
            host: self.target.host.clone(),
            address: self.target.address,
            what,
        }
    }

    async fn drive(
        &mut self,
        until: Until,
        body: &mut (dyn AsyncRead + Unpin + Send),
        result: &mut Option<Box<TransactionResult>>,
    ) -> Result<(), SmtpError> {
        self.drive_body(until, body, 0, result).await
    }

    /// Runs the session's events until `until`, reading replies with the right timeout.
    async fn drive_body(
        &mut self,
        until: Until,
        body: &mut (dyn AsyncRead + Unpin + Send),
        size: u64,
        result: &mut Option<Box<TransactionResult>>,
    ) -> Result<(), SmtpError> {
        let mut first_read = self.messages == 0 && result.is_none() && until == Until::Ready;
        let mut after_body = false;
        let outcome = async {
            loop {
                while let Some(event) = self.session.next_event() {
                    match event {
                        ClientEvent::Send(bytes) | ClientEvent::SendSecret(bytes) => {
                            self.write(&bytes, self.settings.command_timeout).await?;
                        }
                        ClientEvent::StartTls => self.start_tls().await?,
                        ClientEvent::SendBody { bdat } => {
                            self.write_body(bdat, body, size).await?;
                            self.session.body_sent();
                            after_body = true;
                        }
                        ClientEvent::Ready => {
                            if until == Until::Ready {
                                return Ok(());
                            }
                        }
                        ClientEvent::Finished(r) => *result = Some(r),
                        ClientEvent::Failed(error) => {
                            self.usable = false;
                            if result.is_some() {
                                return Ok(());
                            }
                            return Err(self.session_error(error));
                        }
                        ClientEvent::Closed => {
                            self.usable = false;
                            return Ok(());
                        }
                    }
                }
                let (limit, what) = if first_read {
                    (self.settings.greeting_timeout, "waiting for the greeting")
                } else if after_body {
                    (
                        self.settings.data_end_timeout,
                        "waiting for the reply to the message",
                    )
                } else {
                    (self.settings.command_timeout, "waiting for a reply")
                };
                first_read = false;
                let n = self.read(limit, what).await?;
                if n == 0 {
                    return Err(SmtpError::Closed {
                        host: self.target.host.clone(),
                        address: self.target.address,
                    });
                }
                after_body = false;
                let bytes = self.buf[..n].to_vec();
                self.session.receive(&bytes);
            }
        }
        .await;
        if outcome.is_err() {
            self.usable = false;
        }
        outcome
    }

    async fn read(&mut self, limit: Duration, what: &'static str) -> Result<usize, SmtpError> {
        let read = match &mut self.stream {
            Stream::Plain(s) => tokio::time::timeout(limit, s.read(&mut self.buf)).await,
            Stream::Tls(s) => tokio::time::timeout(limit, s.read(&mut self.buf)).await,
            Stream::Other(s) => tokio::time::timeout(limit, s.read(&mut self.buf)).await,
            Stream::Gone => return Ok(0),
        };
        match read {
            Err(_) => Err(self.timeout(what)),
            Ok(Err(e)) => Err(self.io_error(e)),
            Ok(Ok(n)) => Ok(n),
        }
    }

    async fn write(&mut self, bytes: &[u8], limit: Duration) -> Result<(), SmtpError> {
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
                Stream::Tls(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
                Stream::Other(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
                Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        match tokio::time::timeout(limit, write).await {
            Err(_) => Err(self.timeout("sending")),
            Ok(Err(e)) => Err(self.io_error(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Streams the body: through the dot-stuffer after DATA, or raw after `BDAT n LAST`.
    async fn write_body(
        &mut self,
        bdat: bool,
        body: &mut (dyn AsyncRead + Unpin + Send),
        size: u64,
    ) -> Result<(), SmtpError> {
        let limit = self.settings.data_block_timeout;
        if bdat {
            self.write(&bdat_command(size), limit).await?;
        }
        let mut stuffer = DotStuffer::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(66 * 1024);
        let mut sent = 0u64;
        loop {
            let n = body.read(&mut chunk).await.map_err(|e| self.io_error(e))?;
            if n == 0 {
                break;
            }
            if bdat {
                // BDAT announced `size` octets: never send more.
                let room = usize::try_from(size.saturating_sub(sent)).unwrap_or(usize::MAX);
                let n = n.min(room);
                sent += n as u64;
                self.write(&chunk[..n], limit).await?;
            } else {
                out.clear();
                stuffer.stuff(&chunk[..n], &mut out);
                let data = std::mem::take(&mut out);
                self.write(&data, limit).await?;
                out = data;
            }
        }
        if bdat {
            if sent < size {
                // The body file is shorter than announced: the chunk cannot be completed.
                return Err(self.io_error(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "message body shorter than its size",
                )));
            }
        } else {
            out.clear();
            stuffer.finish(&mut out);
            self.write(&out, limit).await?;
        }
        Ok(())
    }

    async fn start_tls(&mut self) -> Result<(), SmtpError> {
        let Some(client) = &self.tls_client else {
            return Err(self.tls_failed("no TLS client configured"));
        };
        let config = match self.tls {
            TlsPolicy::Verify => client.verified.clone(),
            _ => client.unverified.clone(),
        };
        let name = match self.target.address.ip() {
            ip if self.target.host.parse::<std::net::IpAddr>().is_ok()
                || self.target.host.starts_with('[') =>
            {
                ServerName::IpAddress(ip.into())
            }
            _ => match ServerName::try_from(self.target.host.clone()) {
                Ok(name) => name,
                Err(e) => return Err(self.tls_failed(&e.to_string())),
            },
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(self.tls_failed("TLS is already active"));
        };
        let connector = TlsConnector::from(config);
        match tokio::time::timeout(self.settings.command_timeout, connector.connect(name, tcp))
            .await
        {
            // The host answered (it offered STARTTLS): a handshake that does not end is a TLS
            // failure, not an unreachable host.
            Err(_) => Err(self.tls_failed("timed out in the handshake")),
            Ok(Err(e)) => Err(self.tls_failed(&e.to_string())),
            Ok(Ok(tls)) => {
                self.stream = Stream::Tls(Box::new(tls));
                self.session.tls_established();
                Ok(())
            }
        }
    }

    fn tls_failed(&self, reason: &str) -> SmtpError {
        SmtpError::Tls {
            host: self.target.host.clone(),
            address: self.target.address,
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use yizhan_proto::{EnhancedCode, ForwardPath};

    use super::*;

    fn fp(s: &str) -> ForwardPath {
        ForwardPath::parse(s).unwrap()
    }

    #[test]
    fn outcomes_per_recipient() {
        // RFC 5321 3.3: each RCPT has its own fate; the reply after the body decides for the
        // accepted ones.
        let ok = Reply::new(250, Some(EnhancedCode::new(2, 1, 5)), "ok");
        let unknown = Reply::new(550, Some(EnhancedCode::new(5, 1, 1)), "no such user");
        let busy = Reply::new(451, None, "try later");
        let result = TransactionResult {
            mail: ok.clone(),
            recipients: vec![
                (fp("<a@x>"), Ok(ok.clone())),
                (fp("<b@x>"), Err(unknown.clone())),
                (fp("<c@x>"), Err(busy.clone())),
            ],
            data: Some(Reply::new(250, None, "queued as 1")),
            per_recipient: Vec::new(),
            error: None,
        };
        let out = outcomes("mx.x", &result, true);
        assert!(
            matches!(&out[0], Outcome::Delivered(r) if r.dsn_relayed && r.reply.as_deref() == Some("250 queued as 1"))
        );
        match &out[1] {
            Outcome::Permanent(r) => {
                assert_eq!(r.status, "5.1.1");
                assert_eq!(r.remote_mta.as_deref(), Some("mx.x"));
                assert_eq!(r.reply.as_deref(), Some("550 5.1.1 no such user"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[2], Outcome::Transient(r) if r.status == "4.0.0"));
        // The message refused after DATA: every accepted recipient shares that fate.
        let refused = TransactionResult {
            data: Some(Reply::new(554, Some(EnhancedCode::new(5, 6, 0)), "spam")),
            ..result.clone()
        };
        assert!(
            matches!(&outcomes("mx.x", &refused, false)[0], Outcome::Permanent(r) if r.status == "5.6.0")
        );
        // No reply after the body (connection lost): transient.
        let lost = TransactionResult {
            data: None,
            ..result.clone()
        };
        assert!(
            matches!(&outcomes("mx.x", &lost, false)[0], Outcome::Transient(r) if r.status == "4.4.2")
        );
        // LMTP (RFC 2033 4.2): each accepted recipient has its own reply after the body.
        let lmtp = TransactionResult {
            recipients: vec![
                (fp("<a@x>"), Ok(ok.clone())),
                (fp("<b@x>"), Err(unknown)),
                (fp("<c@x>"), Ok(ok)),
            ],
            data: None,
            per_recipient: vec![
                Some(Reply::new(250, None, "saved")),
                None,
                Some(Reply::new(
                    452,
                    Some(EnhancedCode::new(4, 2, 2)),
                    "over quota",
                )),
            ],
            ..result
        };
        let out = outcomes("lmtp", &lmtp, false);
        assert!(matches!(&out[0], Outcome::Delivered(_)));
        assert!(matches!(&out[1], Outcome::Permanent(r) if r.status == "5.1.1"));
        assert!(matches!(&out[2], Outcome::Transient(r) if r.status == "4.2.2"));
    }

    #[test]
    fn reply_line_is_one_clean_line() {
        let r = Reply::multi(
            550,
            Some(EnhancedCode::new(5, 7, 1)),
            vec!["first".into(), "second\u{7}".into()],
        );
        assert_eq!(reply_line(&r), "550 5.7.1 first second");
        assert_eq!(status_of(&Reply::new(421, None, "x")), "4.0.0");
    }
}
