//! LMTP (RFC 2033) to a mail store such as Dovecot: where a local domain's mail is handed
//! over instead of being written into Maildirs here. The same client session as SMTP
//! (`LHLO`, one reply per recipient after the body), over a Unix socket or TCP.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use tokio::net::{TcpStream, UnixStream};

use crate::mx::Target;
use crate::smtp::{Connection, Duplex, SmtpError, SmtpSettings};

/// Where the LMTP server listens: `unix:/run/dovecot/lmtp` or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LmtpEndpoint {
    /// A Unix socket (Dovecot's default, `/run/dovecot/lmtp`).
    Unix(PathBuf),
    /// A TCP address: a host name or IP address, and a port (24 by custom).
    Tcp {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
}

/// The address [`Target`] holds for a Unix socket (a target has an IP address; this one
/// has a path, shown in its `host`).
pub const UNIX_SOCKET_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl fmt::Display for LmtpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpEndpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            LmtpEndpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            LmtpEndpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for LmtpEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<LmtpEndpoint, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{s:?}: the socket path must be absolute (unix:/run/dovecot/lmtp)"
                ));
            }
            return Ok(LmtpEndpoint::Unix(PathBuf::from(path)));
        }
        if let Ok(address) = s.parse::<SocketAddr>() {
            return Ok(LmtpEndpoint::Tcp {
                host: address.ip().to_string(),
                port: address.port(),
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected \"unix:/path/to/socket\" or \"host:port\""))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(format!("{s:?}: {host:?} is not a host name"));
        }
        Ok(LmtpEndpoint::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl LmtpEndpoint {
    /// The host name and port to resolve for a TCP endpoint; `None` for a Unix socket.
    pub fn tcp(&self) -> Option<(&str, u16)> {
        match self {
            LmtpEndpoint::Tcp { host, port } => Some((host, *port)),
            LmtpEndpoint::Unix(_) => None,
        }
    }

    /// The target of a Unix socket (its path as the host, [`UNIX_SOCKET_ADDRESS`]).
    pub fn unix_target(&self) -> Option<Target> {
        match self {
            LmtpEndpoint::Unix(_) => Some(Target {
                host: self.to_string(),
                address: UNIX_SOCKET_ADDRESS,
            }),
            LmtpEndpoint::Tcp { .. } => None,
        }
    }
}

/// Opens an LMTP connection to `target` (a TCP address resolved from `endpoint`, or its Unix
/// socket) and runs it to the point where it takes a transaction (greeting, LHLO).
pub async fn connect(
    endpoint: &LmtpEndpoint,
    target: &Target,
    settings: &SmtpSettings,
) -> Result<Connection, SmtpError> {
    let io = |source| SmtpError::Io {
        host: target.host.clone(),
        address: target.address,
        source,
    };
    let connecting = async {
        let stream: Box<dyn Duplex> = match endpoint {
            LmtpEndpoint::Unix(path) => Box::new(UnixStream::connect(path).await.map_err(io)?),
            LmtpEndpoint::Tcp { .. } => {
                let stream = TcpStream::connect(target.address).await.map_err(io)?;
                let _ = stream.set_nodelay(true);
                Box::new(stream)
            }
        };
        Ok(stream)
    };
    let stream = tokio::time::timeout(settings.connect_timeout, connecting)
        .await
        .map_err(|_| SmtpError::Timeout {
            host: target.host.clone(),
            address: target.address,
            what: "connecting",
        })??;
    Connection::over_lmtp(stream, target.clone(), settings).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_and_written_back() {
        for text in [
            "unix:/run/dovecot/lmtp",
            "127.0.0.1:24",
            "[::1]:24",
            "store.example:2424",
        ] {
            let e: LmtpEndpoint = text.parse().unwrap();
            assert_eq!(e.to_string(), text);
        }
        assert_eq!(
            "store.example:24".parse::<LmtpEndpoint>().unwrap().tcp(),
            Some(("store.example", 24))
        );
        for bad in [
            "unix:run/lmtp",
            "store.example",
            "store.example:lmtp",
            ":24",
            "/run/x:24",
        ] {
            assert!(bad.parse::<LmtpEndpoint>().is_err(), "{bad}");
        }
        let unix: LmtpEndpoint = "unix:/run/dovecot/lmtp".parse().unwrap();
        assert_eq!(unix.unix_target().unwrap().host, "unix:/run/dovecot/lmtp");
    }
}
