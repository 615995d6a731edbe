//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in front of yizhan opens
//! each connection with a header naming the real client, so that trace lines, relay
//! decisions, limits and logs use the client's address, not the balancer's.
//!
//! The header is read byte-exactly (what follows it is the client's SMTP and is left on the
//! stream), within [`HEADER_TIMEOUT`], and parsed by the `ppp` crate. A listener with
//! `proxy_protocol = true` takes it only from `proxy_networks`; a connection from anywhere else
//! is closed before a byte is read (anyone could otherwise claim any address).
//!
//! | header | the session's client |
//! | --- | --- |
//! | v1 `PROXY TCP4`/`TCP6`, v2 `PROXY` with IPv4/IPv6 | the source address and port in it |
//! | v1 `PROXY UNKNOWN`, v2 `LOCAL` (the balancer's health check), v2 UNSPEC/UNIX | the connection's own peer |

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// How long the balancer has to send the whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The version 2 signature (12 octets).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A version 1 header is at most 107 octets, CRLF included (the specification, 2.1).
const V1_MAX: usize = 107;

/// The largest version 2 header taken (16 octets and the addresses and TLVs after them): a
/// balancer's TLVs (ALPN, authority, TLS details) fit easily.
const V2_MAX: usize = 4096;

/// The two ends of the client's connection to the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The real client.
    pub client: SocketAddr,
    /// Where it connected (the balancer's frontend).
    pub server: SocketAddr,
}

/// Why a header was refused; the connection is then closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The header did not arrive in time.
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// Reading failed, or the connection closed before the header was whole.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    /// Not a PROXY protocol header (SMTP spoken directly to a proxied listener, say).
    #[error("not a PROXY protocol header: {0}")]
    Invalid(String),
}

/// Reads one header from `stream` within `timeout`. `Ok(None)`: a header that names no
/// client (a health check, UNKNOWN): the connection's own endpoints stand.
pub async fn read_header<S>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Option<Endpoints>, ProxyError>
where
    S: AsyncRead + Unpin,
{
    let bytes = tokio::time::timeout(timeout, header_bytes(stream))
        .await
        .map_err(|_| ProxyError::Timeout(timeout))??;
    parse(&bytes)
}

/// Exactly the header's bytes: 12 to tell the versions apart, then v2's announced length or
/// v1's line up to its LF.
async fn header_bytes<S>(stream: &mut S) -> Result<Vec<u8>, ProxyError>
where
    S: AsyncRead + Unpin,
{
    let mut bytes = vec![0u8; 12];
    stream.read_exact(&mut bytes).await?;
    if bytes == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        stream.read_exact(&mut rest).await?;
        bytes.extend_from_slice(&rest);
        let length = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if 16 + length > V2_MAX {
            return Err(ProxyError::Invalid(format!(
                "a version 2 header of {} octets",
                16 + length
            )));
        }
        let start = bytes.len();
        bytes.resize(start + length, 0);
        stream.read_exact(&mut bytes[start..]).await?;
        return Ok(bytes);
    }
    if !bytes.starts_with(b"PROXY ") {
        return Err(ProxyError::Invalid(shown(&bytes)));
    }
    while bytes.last() != Some(&b'\n') {
        if bytes.len() == V1_MAX {
            return Err(ProxyError::Invalid(format!(
                "a version 1 line over {V1_MAX} octets"
            )));
        }
        bytes.push(stream.read_u8().await?);
    }
    Ok(bytes)
}

/// The header's endpoints.
fn parse(bytes: &[u8]) -> Result<Option<Endpoints>, ProxyError> {
    use ppp::HeaderResult;
    let both = |client: SocketAddr, server: SocketAddr| Some(Endpoints { client, server });
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => both(
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            ppp::v1::Addresses::Tcp6(a) => both(
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            ppp::v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) if h.command == ppp::v2::Command::Local => Ok(None),
        HeaderResult::V2(Ok(h)) => Ok(match h.addresses {
            ppp::v2::Addresses::IPv4(a) => both(
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            ppp::v2::Addresses::IPv6(a) => both(
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
        }),
        HeaderResult::V1(Err(e)) => Err(ProxyError::Invalid(format!("{e:?}: {}", shown(bytes)))),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Invalid(format!("{e:?}"))),
    }
}

/// Bytes for a log line: printable ASCII as it is, the rest escaped, at most 60.
fn shown(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(60)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(input: &[u8]) -> (Result<Option<Endpoints>, ProxyError>, Vec<u8>) {
        let mut stream = input;
        let result = read_header(&mut stream, Duration::from_secs(1)).await;
        (result, stream.to_vec())
    }

    fn ends(client: &str, server: &str) -> Option<Endpoints> {
        Some(Endpoints {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
        })
    }

    #[tokio::test]
    async fn version_1_leaves_the_smtp_bytes_alone() {
        let (r, rest) = read(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n").await;
        assert_eq!(r.unwrap(), ends("192.0.2.7:40000", "198.51.100.1:25"));
        assert_eq!(rest, b"EHLO x\r\n");
        let (r, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 587\r\n").await;
        assert_eq!(r.unwrap(), ends("[2001:db8::7]:40000", "[2001:db8::1]:587"));
        let (r, rest) = read(b"PROXY UNKNOWN\r\nQUIT\r\n").await;
        assert_eq!(r.unwrap(), None);
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[tokio::test]
    async fn version_2_with_tlvs_and_local() {
        let mut header = V2_SIGNATURE.to_vec();
        // PROXY over TCP/IPv4, 12 octets of addresses and a 4-octet NOOP TLV.
        header.extend_from_slice(&[0x21, 0x11, 0, 16]);
        header.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 1]);
        header.extend_from_slice(&40000u16.to_be_bytes());
        header.extend_from_slice(&25u16.to_be_bytes());
        header.extend_from_slice(&[0x04, 0, 1, 42]);
        let mut input = header.clone();
        input.extend_from_slice(b"EHLO x\r\n");
        let (r, rest) = read(&input).await;
        assert_eq!(r.unwrap(), ends("192.0.2.7:40000", "198.51.100.1:25"));
        assert_eq!(rest, b"EHLO x\r\n");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.0.unwrap(), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"EHLO client.example\r\n"[..],
            b"PROXY TCP4 not-an-address 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25",
        ] {
            let (r, _) = read(bad).await;
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(
            read(long.as_bytes()).await.0,
            Err(ProxyError::Invalid(_))
        ));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(read(&huge).await.0, Err(ProxyError::Invalid(_))));
        // A balancer that says nothing.
        let (_client, mut server) = tokio::io::duplex(64);
        let r = read_header(&mut server, Duration::from_millis(50)).await;
        assert!(matches!(r, Err(ProxyError::Timeout(_))));
    }
}
