//! The value types of the file, each parsed from its text in one place: durations
//! (`humantime`), sizes (`bytesize`), networks, ports, DNS servers and domain names. The
//! validator turns a failure into a problem that names the key, line and column.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// A duration as written: whole seconds (`300`) or text with units (`"90s"`, `"5m"`,
/// `"1h30m"`, `"5d"`, `"250ms"`, as `humantime` reads them).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum DurationValue {
    Seconds(i64),
    Text(String),
}

impl DurationValue {
    /// The longest duration accepted: ten years. Longer ones mean "never" to a person but
    /// would overflow a deadline (`Instant + duration`) in the program.
    pub(super) const MAX: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

    /// The duration, or why the value is not one.
    pub(super) fn to_duration(&self) -> Result<Duration, String> {
        const HINT: &str = "expected seconds (e.g. 300) or a number with units (e.g. \"90s\", \
                            \"5m\", \"1h30m\", \"5d\", \"250ms\")";
        let duration = match self {
            Self::Seconds(n) => u64::try_from(*n)
                .map(Duration::from_secs)
                .map_err(|_| format!("{n} is negative"))?,
            Self::Text(text) => humantime::parse_duration(text.trim())
                .map_err(|e| format!("{text:?} is not a duration ({e}); {HINT}"))?,
        };
        if duration > Self::MAX {
            return Err(format!(
                "{} is longer than the longest accepted, {}",
                humantime::format_duration(duration),
                humantime::format_duration(Self::MAX)
            ));
        }
        Ok(duration)
    }
}

/// A size in bytes as written: a whole number (`10485760`) or text with a unit (`"10MiB"`,
/// `"64 KiB"`, `"1GB"`, as `bytesize` reads them).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum SizeValue {
    Bytes(i64),
    Text(String),
}

impl SizeValue {
    /// The number of bytes, or why the value is not a size.
    pub(super) fn to_bytes(&self) -> Result<u64, String> {
        match self {
            Self::Bytes(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
            Self::Text(text) => bytesize::ByteSize::from_str(text.trim())
                .map(|size| size.as_u64())
                .map_err(|e| {
                    format!(
                        "{text:?} is not a size ({e}); expected bytes (e.g. 10485760) or a \
                         number with a unit (e.g. \"10MiB\", \"64KiB\")"
                    )
                }),
        }
    }
}

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare address is one host. Host
/// bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Network(pub(super) IpNet);

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(|net| Network(net.trunc()))
            .map_err(|_| {
                format!("{text:?} is not a network in CIDR notation (e.g. \"10.0.0.0/8\")")
            })
    }
}

/// A DNS server: an IP address with an optional port (53 when not given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DnsServer(pub(super) SocketAddr);

impl FromStr for DnsServer {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<SocketAddr>()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map(DnsServer)
            .map_err(|_| {
                format!(
                    "{text:?} is not an IP address with an optional port (e.g. \"192.0.2.53\" or \
                     \"127.0.0.1:5353\")"
                )
            })
    }
}

/// A domain name in the form it is compared in (lower-case, IDNA A-labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DomainName(pub(super) String);

impl FromStr for DomainName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        yizhan_server::directory::canonical_domain(text)
            .map(DomainName)
            .map_err(|e| format!("{text:?} is not a domain name: {e}"))
    }
}

/// A host to connect to: a domain name or an IP address (kept as written, trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostName(pub(super) String);

impl FromStr for HostName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let host = text.trim();
        if host.parse::<IpAddr>().is_ok()
            || yizhan_server::directory::canonical_domain(host).is_ok()
        {
            Ok(HostName(host.to_owned()))
        } else {
            Err(format!("{host:?} is not a host name or IP address"))
        }
    }
}

/// A TCP port, 1 to 65535.
pub(super) fn port(n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{n} is not a TCP port (1 to 65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use DurationValue::{Seconds, Text};
        let cases: &[(DurationValue, Result<u64, &str>)] = &[
            (Seconds(0), Ok(0)),
            (Seconds(300), Ok(300_000)),
            (Seconds(-1), Err("negative")),
            (Text("90s".into()), Ok(90_000)),
            (Text("5m".into()), Ok(300_000)),
            (Text(" 2h ".into()), Ok(7_200_000)),
            (Text("1h30m".into()), Ok(5_400_000)),
            (Text("1h 30m".into()), Ok(5_400_000)),
            (Text("5d".into()), Ok(432_000_000)),
            (Text("250ms".into()), Ok(250)),
            (Text("5".into()), Err("not a duration")),
            (Text("m".into()), Err("not a duration")),
            (Text("1.5h".into()), Ok(5_400_000)),
            (Text("99999999999999999999d".into()), Err("not a duration")),
        ];
        for (raw, want) in cases {
            match (raw.to_duration(), want) {
                (Ok(d), Ok(ms)) => assert_eq!(d.as_millis(), u128::from(*ms), "{raw:?}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{raw:?}: {e}"),
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn sizes() {
        use SizeValue::{Bytes, Text};
        assert_eq!(Bytes(10_485_760).to_bytes(), Ok(10_485_760));
        assert_eq!(Text("10MiB".into()).to_bytes(), Ok(10_485_760));
        assert_eq!(Text("64 KiB".into()).to_bytes(), Ok(65_536));
        assert_eq!(Text("1GB".into()).to_bytes(), Ok(1_000_000_000));
        assert!(Bytes(-1).to_bytes().unwrap_err().contains("negative"));
        assert!(
            Text("lots".into())
                .to_bytes()
                .unwrap_err()
                .contains("not a size")
        );
    }

    #[test]
    fn networks_servers_domains_hosts_ports() {
        assert_eq!(
            "10.1.2.3/8".parse::<Network>().unwrap().0.to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(" ::1 ".parse::<Network>().unwrap().0.to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert_eq!(
            "192.0.2.53".parse::<DnsServer>().unwrap().0.to_string(),
            "192.0.2.53:53"
        );
        assert_eq!(
            "[::1]:5353".parse::<DnsServer>().unwrap().0.to_string(),
            "[::1]:5353"
        );
        assert!("dns.example".parse::<DnsServer>().is_err());
        assert_eq!("MX.Example".parse::<DomainName>().unwrap().0, "mx.example");
        assert!("a..b".parse::<DomainName>().is_err());
        assert!("192.0.2.1".parse::<HostName>().is_ok());
        assert!("smart host".parse::<HostName>().is_err());
        assert_eq!(port(587), Ok(587));
        assert!(port(0).is_err());
        assert!(port(65536).is_err());
    }
}
