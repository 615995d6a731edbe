//! The probe's side of the connection: one command line out, one reply in, each step bounded
//! by the timeout, every line written down for the explainer as it crossed the wire (secrets
//! masked before they are written down, never after).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use yizhan_explain::{Direction, Line};
use yizhan_proto::client::DEFAULT_MAX_REPLY_LINE;
use yizhan_proto::reply::{Reply, ReplyParser};

/// A reply line longer than this ends the probe (a server that never sends a line end).
const MAX_LINE: u64 = DEFAULT_MAX_REPLY_LINE as u64;

/// How many lines one reply may have before the probe gives up on it.
const MAX_REPLY_LINES: usize = 512;

/// A line longer than this is written down shortened (the over-long line test sends 4 KiB).
const SHOWN_LINE: usize = 120;

/// What the connection runs on: a TCP stream, or TLS over one.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why the conversation stopped.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server did not answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent something that is no SMTP reply.
    #[error("not an SMTP reply: {0}")]
    BadReply(String),
    /// Bytes arrived after the 220 to STARTTLS and before the handshake (RFC 3207 6).
    #[error("the server sent data after its 220 to STARTTLS, before the handshake (RFC 3207 6)")]
    Injected,
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// What the TLS handshake gave.
#[derive(Debug, Clone)]
pub struct TlsFacts {
    /// `TLS 1.3`, ...
    pub version: String,
    /// The cipher suite.
    pub cipher: String,
    /// The server's certificates, leaf first.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// The connection and what was said on it.
pub struct Wire {
    reader: BufReader<Box<dyn Io>>,
    parser: ReplyParser,
    timeout: Duration,
    tls: bool,
    /// Every line, in order.
    pub lines: Vec<Line>,
}

impl Wire {
    /// Connects to `address` within the timeout.
    pub async fn connect(address: SocketAddr, timeout: Duration) -> Result<Wire, WireError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| WireError::Timeout(timeout))??;
        let _ = stream.set_nodelay(true);
        Ok(Wire {
            reader: BufReader::new(Box::new(stream)),
            parser: ReplyParser::new(DEFAULT_MAX_REPLY_LINE),
            timeout,
            tls: false,
            lines: Vec::new(),
        })
    }

    /// Whether the conversation is encrypted.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The TLS handshake (implicit TLS, or after the 220 to STARTTLS). The certificate is not
    /// judged here: the handshake goes on whatever it is, and the probe reports on it.
    pub async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        how: &str,
    ) -> Result<TlsFacts, WireError> {
        if !self.reader.buffer().is_empty() || self.parser.has_buffered() {
            return Err(WireError::Injected);
        }
        let placeholder: Box<dyn Io> =
            Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink()));
        let plain = std::mem::replace(&mut self.reader, BufReader::new(placeholder)).into_inner();
        let handshake = TlsConnector::from(config).connect(name, plain);
        let stream = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| WireError::Timeout(self.timeout))?
            .map_err(WireError::Handshake)?;
        let connection = stream.get_ref().1;
        let facts = TlsFacts {
            version: connection.protocol_version().map_or_else(
                || "?".into(),
                |v| format!("{v:?}").replace("TLSv1_", "TLS 1."),
            ),
            cipher: connection
                .negotiated_cipher_suite()
                .map_or_else(|| "?".into(), |c| format!("{:?}", c.suite())),
            chain: connection
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        };
        self.reader = BufReader::new(Box::new(stream));
        self.parser.reset_buffer();
        self.tls = true;
        self.note(format!(
            "TLS established ({how}): {} {}",
            facts.version, facts.cipher
        ));
        Ok(facts)
    }

    /// A remark between lines.
    pub fn note(&mut self, text: String) {
        self.push(Direction::Note, text);
    }

    fn push(&mut self, direction: Direction, text: String) {
        self.lines.push(Line {
            direction,
            text,
            tls: self.tls,
            bare_lf: false,
        });
    }

    /// Sends one command line (CRLF added) and writes it down as it is, shortened when long.
    pub async fn send(&mut self, line: &str) -> Result<(), WireError> {
        self.push(Direction::Client, shown(line));
        self.write(format!("{line}\r\n").as_bytes()).await
    }

    /// Sends a line that carries a secret, written down as `masked`.
    pub async fn send_secret(&mut self, line: &str, masked: String) -> Result<(), WireError> {
        self.push(Direction::Client, masked);
        self.write(format!("{line}\r\n").as_bytes()).await
    }

    /// Sends several command lines in one write (RFC 2920 pipelining).
    pub async fn send_together(&mut self, lines: &[String]) -> Result<(), WireError> {
        let mut bytes = Vec::new();
        for line in lines {
            self.push(Direction::Client, shown(line));
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        self.write(&bytes).await
    }

    /// Sends a message text (already dot-stuffed and ended with `.`), written down as a
    /// summary.
    pub async fn send_text(&mut self, text: &[u8], summary: String) -> Result<(), WireError> {
        self.note(summary);
        self.push(Direction::Client, ".".into());
        self.write(text).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let stream = self.reader.get_mut();
        tokio::time::timeout(self.timeout, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| WireError::Timeout(self.timeout))?
        .map_err(WireError::from)
    }

    /// Reads one whole reply (every line of a multi-line one) within the timeout.
    pub async fn reply(&mut self) -> Result<Reply, WireError> {
        for _ in 0..MAX_REPLY_LINES {
            let mut line = Vec::new();
            let mut limited = (&mut self.reader).take(MAX_LINE);
            let read = limited.read_until(b'\n', &mut line);
            let n = tokio::time::timeout(self.timeout, read)
                .await
                .map_err(|_| WireError::Timeout(self.timeout))??;
            if n == 0 {
                return Err(WireError::Closed);
            }
            let text = String::from_utf8_lossy(&line);
            self.push(
                Direction::Server,
                text.trim_end_matches(['\r', '\n']).to_owned(),
            );
            if !line.ends_with(b"\n") {
                return Err(WireError::BadReply(format!(
                    "a line over {MAX_LINE} octets"
                )));
            }
            self.parser.push(&line);
            match self.parser.next_reply() {
                Some(Ok(reply)) => return Ok(reply),
                Some(Err(e)) => return Err(WireError::BadReply(e.to_string())),
                None => {}
            }
        }
        Err(WireError::BadReply(format!(
            "a reply of over {MAX_REPLY_LINES} lines"
        )))
    }

    /// Sends a command and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, WireError> {
        self.send(line).await?;
        self.reply().await
    }

    /// Whether the server sent anything unasked within `wait` (a reply too many).
    pub async fn unasked(&mut self, wait: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        matches!(
            tokio::time::timeout(wait, self.reader.fill_buf()).await,
            Ok(Ok(bytes)) if !bytes.is_empty()
        )
    }
}

/// A line as written down: long ones shortened, with their length.
fn shown(line: &str) -> String {
    if line.len() <= SHOWN_LINE {
        return line.to_owned();
    }
    let mut cut = SHOWN_LINE;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} octets)", &line[..cut], line.len() + 2)
}

/// The reply as one line for the report card: `250 2.0.0 ok`.
pub fn one_line(reply: &Reply) -> String {
    let text = reply.text();
    let enhanced = reply
        .enhanced
        .map(|e| format!("{}.{}.{} ", e.class, e.subject, e.detail))
        .unwrap_or_default();
    format!("{} {enhanced}{text}", reply.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_shortened_with_their_length() {
        assert_eq!(shown("NOOP"), "NOOP");
        let long = format!("NOOP {}", "x".repeat(4000));
        let s = shown(&long);
        assert!(
            s.starts_with("NOOP xxx") && s.ends_with("... (4007 octets)"),
            "{s}"
        );
        assert!(s.len() < 150);
        let wide = "é".repeat(100);
        assert!(shown(&wide).ends_with("(202 octets)"));
    }
}
