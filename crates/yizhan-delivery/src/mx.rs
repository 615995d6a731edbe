//! MX resolution: the [`Resolver`] trait, its hickory implementation, and the pure ordering of
//! the hosts to try.
//!
//! | RFC | what |
//! | --- | --- |
//! | 5321 5.1 | MX records by preference, random order among equal preferences; no MX: the domain itself ("implicit MX", A/AAAA) |
//! | 5321 5.1 | a host without addresses is skipped; an MX list that yields no address at all fails |
//! | 7505 | null MX (`0 .`): the domain accepts no mail, a permanent failure |
//! | 1035, 2308 | NXDOMAIN is permanent; SERVFAIL, timeouts and other errors are transient |
//!
//! The number of hosts tried is capped ([`MAX_HOSTS`] by default, as chasquid does). Nothing
//! here reads the system configuration unless asked ([`HickoryResolver::from_system`]):
//! [`HickoryResolver::with_servers`] points it at any address and port, e.g. a test DNS
//! server on 127.0.0.1.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver as HickoryInner, TokioResolver};

use crate::route::literal_address;

/// The default cap on MX hosts tried for one domain.
pub const MAX_HOSTS: usize = 5;

/// A boxed, sendable future (so that [`Resolver`] can be used as `dyn Resolver`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is preferred.
    pub preference: u16,
    /// The exchange host name, without the trailing dot; `""` for the null MX target `.`.
    pub exchange: String,
}

/// The answer to an MX query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX records (never empty).
    Records(Vec<MxRecord>),
    /// The domain exists but has no MX records: the domain itself is the only host
    /// (implicit MX, RFC 5321 5.1).
    NoRecords,
    /// The domain says it accepts no mail (RFC 7505).
    Null,
}

/// A DNS failure, classified (DESIGN.md invariant 5: could not decide = transient).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN): permanent.
    #[error("{0}: no such domain (NXDOMAIN)")]
    NxDomain(String),
    /// The name exists but has no record of the type asked for (NODATA).
    #[error("{0}: no address records")]
    NoRecords(String),
    /// SERVFAIL, a timeout, a network error: try again later.
    #[error("{name}: DNS lookup failed: {reason}")]
    Transient {
        /// The name looked up.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

impl DnsError {
    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Transient { .. })
    }
}

/// The DNS lookups delivery needs.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// The MX records of `domain`.
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, DnsError>>;
    /// The A and AAAA addresses of `host` (never empty on success).
    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
}

/// Why a domain has no host to deliver to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// RFC 7505 null MX.
    #[error("{0} does not accept mail (null MX, RFC 7505)")]
    NullMx(String),
    /// A DNS failure (permanent or not, see [`DnsError::is_permanent`]).
    #[error(transparent)]
    Dns(#[from] DnsError),
}

impl MxError {
    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        match self {
            MxError::NullMx(_) => true,
            MxError::Dns(e) => e.is_permanent(),
        }
    }

    /// The RFC 3463 status code for a report.
    pub fn status(&self) -> &'static str {
        match self {
            MxError::NullMx(_) => "5.1.10",
            MxError::Dns(DnsError::NxDomain(_) | DnsError::NoRecords(_)) => "5.4.4",
            MxError::Dns(DnsError::Transient { .. }) => "4.4.3",
        }
    }
}

/// The hosts to try for `domain`, in order (RFC 5321 5.1): by preference, equal preferences
/// shuffled with `seed`, at most `cap`. Pure: the same seed gives the same order.
pub fn order_hosts(
    answer: &MxAnswer,
    domain: &str,
    cap: usize,
    seed: u64,
) -> Result<Vec<String>, MxError> {
    let records = match answer {
        MxAnswer::Null => return Err(MxError::NullMx(domain.to_owned())),
        MxAnswer::NoRecords => return Ok(vec![domain.to_owned()]),
        MxAnswer::Records(records) => records,
    };
    let mut records: Vec<&MxRecord> = records.iter().filter(|r| !r.exchange.is_empty()).collect();
    if records.is_empty() {
        // Only "." targets: a null MX, even if not quite in the RFC 7505 form.
        return Err(MxError::NullMx(domain.to_owned()));
    }
    records.sort_by_key(|r| r.preference);
    let mut rng = SplitMix64(seed);
    let mut start = 0;
    while start < records.len() {
        let pref = records[start].preference;
        let end = records[start..]
            .iter()
            .position(|r| r.preference != pref)
            .map_or(records.len(), |k| start + k);
        // Fisher-Yates within the group of equal preference.
        for i in (start + 1..end).rev() {
            let span = (i - start + 1) as u64;
            let j = start + (rng.next() % span) as usize;
            records.swap(i, j);
        }
        start = end;
    }
    let mut hosts: Vec<String> = Vec::new();
    for r in records {
        let host = r.exchange.to_ascii_lowercase();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts.truncate(cap.max(1));
    Ok(hosts)
}

/// A tiny seedable generator (SplitMix64); shuffling MX hosts needs no more.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One host to connect to: its name (for TLS and logs) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name (the MX exchange, the domain, or the address literal).
    pub host: String,
    /// Where to connect.
    pub address: SocketAddr,
}

/// Resolves `domain` into the addresses to try, in order: MX (or implicit MX, or the address
/// of an address literal), then A/AAAA of each host. Hosts without addresses are skipped; when
/// none is left the error is transient if any lookup was, else permanent.
pub async fn targets(
    resolver: &dyn Resolver,
    domain: &str,
    port: u16,
    cap: usize,
    seed: u64,
) -> Result<Vec<Target>, MxError> {
    if let Some(ip) = literal_address(domain) {
        return Ok(vec![Target {
            host: domain.to_owned(),
            address: SocketAddr::new(ip, port),
        }]);
    }
    let answer = resolver.mx(domain).await?;
    let hosts = order_hosts(&answer, domain, cap, seed)?;
    host_targets(resolver, &hosts, port).await
}

/// The addresses of `hosts`, in order (for smarthosts and MX hosts alike).
pub async fn host_targets(
    resolver: &dyn Resolver,
    hosts: &[String],
    port: u16,
) -> Result<Vec<Target>, MxError> {
    let mut out = Vec::new();
    let mut last_error = None;
    let mut transient = None;
    for host in hosts {
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(Target {
                host: host.clone(),
                address: SocketAddr::new(ip, port),
            });
            continue;
        }
        match resolver.addresses(host).await {
            Ok(ips) => out.extend(ips.into_iter().map(|ip| Target {
                host: host.clone(),
                address: SocketAddr::new(ip, port),
            })),
            Err(e) if !e.is_permanent() => transient = Some(e),
            Err(e) => last_error = Some(e),
        }
    }
    if out.is_empty() {
        let e = transient
            .or(last_error)
            .unwrap_or_else(|| DnsError::NoRecords(hosts.join(", ")));
        return Err(MxError::Dns(e));
    }
    Ok(out)
}

/// A [`Resolver`] backed by hickory-resolver (caching stub resolver, UDP with TCP fallback).
#[derive(Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
}

impl fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HickoryResolver").finish_non_exhaustive()
    }
}

impl HickoryResolver {
    /// Uses the system configuration (`/etc/resolv.conf`).
    pub fn from_system() -> Result<HickoryResolver, DnsError> {
        let inner = HickoryInner::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| DnsError::Transient {
                name: "resolv.conf".into(),
                reason: e.to_string(),
            })?;
        Ok(HickoryResolver { inner })
    }

    /// Uses these name servers (UDP, with TCP for truncated answers), each with its own port,
    /// with `timeout` per query and no hosts file.
    pub fn with_servers(
        servers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<HickoryResolver, DnsError> {
        let name_servers = servers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        let config = ResolverConfig::from_name_servers(name_servers);
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = HickoryInner::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| DnsError::Transient {
                name: "resolver".into(),
                reason: e.to_string(),
            })?;
        Ok(HickoryResolver { inner })
    }
}

/// `domain.` so that no search domain is ever appended.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn classify(name: &str, e: &NetError) -> DnsError {
    if e.is_nx_domain() {
        return DnsError::NxDomain(name.to_owned());
    }
    if let NetError::Dns(HickoryDnsError::NoRecordsFound(nr)) = e
        && nr.response_code == ResponseCode::NoError
    {
        return DnsError::NoRecords(name.to_owned());
    }
    DnsError::Transient {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

impl Resolver for HickoryResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, DnsError>> {
        Box::pin(async move {
            let lookup = match self.inner.mx_lookup(fqdn(domain)).await {
                Ok(lookup) => lookup,
                Err(e) => {
                    return match classify(domain, &e) {
                        DnsError::NoRecords(_) => Ok(MxAnswer::NoRecords),
                        other => Err(other),
                    };
                }
            };
            let records: Vec<MxRecord> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some(MxRecord {
                        preference: mx.preference,
                        exchange: mx.exchange.to_ascii().trim_end_matches('.').to_owned(),
                    }),
                    _ => None,
                })
                .collect();
            Ok(match records.as_slice() {
                [] => MxAnswer::NoRecords,
                [only] if only.exchange.is_empty() => MxAnswer::Null,
                _ => MxAnswer::Records(records),
            })
        })
    }

    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            match self.inner.lookup_ip(fqdn(host)).await {
                Ok(lookup) => {
                    let ips: Vec<IpAddr> = lookup.iter().collect();
                    if ips.is_empty() {
                        Err(DnsError::NoRecords(host.to_owned()))
                    } else {
                        Ok(ips)
                    }
                }
                Err(e) => Err(classify(host, &e)),
            }
        })
    }
}

/// A resolver with canned answers, for tests: MX answers and addresses by name; a missing name
/// is NXDOMAIN.
#[derive(Debug, Clone, Default)]
pub struct FakeResolver {
    /// MX answers (or errors) by domain.
    pub mx: std::collections::HashMap<String, Result<MxAnswer, DnsError>>,
    /// Addresses by host.
    pub hosts: std::collections::HashMap<String, Vec<IpAddr>>,
}

impl Resolver for FakeResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxAnswer, DnsError>> {
        let answer = match self.mx.get(&domain.to_ascii_lowercase()) {
            Some(a) => a.clone(),
            None if self.hosts.contains_key(domain) => Ok(MxAnswer::NoRecords),
            None => Err(DnsError::NxDomain(domain.to_owned())),
        };
        Box::pin(async move { answer })
    }

    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        let answer = match self.hosts.get(&host.to_ascii_lowercase()) {
            Some(ips) if !ips.is_empty() => Ok(ips.clone()),
            Some(_) => Err(DnsError::NoRecords(host.to_owned())),
            None => Err(DnsError::NxDomain(host.to_owned())),
        };
        Box::pin(async move { answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(preference: u16, exchange: &str) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.into(),
        }
    }

    #[test]
    fn hosts_by_preference_then_shuffled_among_equals() {
        // RFC 5321 5.1: lowest preference first; equal preferences in random order.
        let answer = MxAnswer::Records(vec![
            rec(20, "c.example"),
            rec(10, "a1.example"),
            rec(10, "a2.example"),
            rec(10, "a3.example"),
            rec(30, "d.example"),
        ]);
        let mut firsts = std::collections::HashSet::new();
        for seed in 0..64 {
            let hosts = order_hosts(&answer, "x.example", 10, seed).unwrap();
            assert_eq!(hosts.len(), 5);
            let mut head: Vec<&str> = hosts[..3].iter().map(String::as_str).collect();
            firsts.insert(head[0].to_owned());
            head.sort();
            assert_eq!(head, ["a1.example", "a2.example", "a3.example"]);
            assert_eq!(&hosts[3..], ["c.example", "d.example"]);
            // Deterministic for a seed.
            assert_eq!(hosts, order_hosts(&answer, "x.example", 10, seed).unwrap());
        }
        assert_eq!(
            firsts.len(),
            3,
            "every equal host comes first for some seed"
        );
    }

    #[test]
    fn implicit_null_cap_and_duplicates() {
        type Case = (MxAnswer, usize, Result<Vec<&'static str>, MxError>);
        let cases: [Case; 5] = [
            // RFC 5321 5.1: no MX records: the domain itself.
            (MxAnswer::NoRecords, 5, Ok(vec!["x.example"])),
            // RFC 7505: null MX.
            (MxAnswer::Null, 5, Err(MxError::NullMx("x.example".into()))),
            (
                MxAnswer::Records(vec![rec(0, "")]),
                5,
                Err(MxError::NullMx("x.example".into())),
            ),
            // The cap (chasquid's 5; here 2).
            (
                MxAnswer::Records(vec![rec(1, "a"), rec(2, "b"), rec(3, "c")]),
                2,
                Ok(vec!["a", "b"]),
            ),
            // The same host twice is tried once; names are lower-cased.
            (
                MxAnswer::Records(vec![rec(1, "A.example"), rec(2, "a.example")]),
                5,
                Ok(vec!["a.example"]),
            ),
        ];
        for (answer, cap, want) in cases {
            let want = want.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(
                order_hosts(&answer, "x.example", cap, 7),
                want,
                "{answer:?}"
            );
        }
    }

    #[test]
    fn error_classes() {
        let nx = MxError::Dns(DnsError::NxDomain("x".into()));
        let fail = MxError::Dns(DnsError::Transient {
            name: "x".into(),
            reason: "SERVFAIL".into(),
        });
        assert!(nx.is_permanent());
        assert!(MxError::NullMx("x".into()).is_permanent());
        assert!(!fail.is_permanent());
        assert_eq!(MxError::NullMx("x".into()).status(), "5.1.10");
        assert_eq!(nx.status(), "5.4.4");
        assert_eq!(fail.status(), "4.4.3");
    }

    #[tokio::test]
    async fn targets_from_the_fake_resolver() {
        let mut fake = FakeResolver::default();
        let lo = |n: u8| IpAddr::from([127, 0, 0, n]);
        fake.mx.insert(
            "mx.example".into(),
            Ok(MxAnswer::Records(vec![
                rec(10, "gone.example"),
                rec(20, "mx2.example"),
            ])),
        );
        fake.hosts.insert("mx2.example".into(), vec![lo(2), lo(3)]);
        fake.hosts.insert("implicit.example".into(), vec![lo(4)]);
        let t = targets(&fake, "mx.example", 2525, 5, 0).await.unwrap();
        let addrs: Vec<String> = t.iter().map(|t| t.address.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.2:2525", "127.0.0.3:2525"]);
        let t = targets(&fake, "implicit.example", 25, 5, 0).await.unwrap();
        assert_eq!(t[0].host, "implicit.example");
        let t = targets(&fake, "[127.0.0.9]", 25, 5, 0).await.unwrap();
        assert_eq!(t[0].address.to_string(), "127.0.0.9:25");
        let e = targets(&fake, "nowhere.example", 25, 5, 0)
            .await
            .unwrap_err();
        assert!(e.is_permanent());
        fake.mx.insert(
            "broken.example".into(),
            Err(DnsError::Transient {
                name: "broken.example".into(),
                reason: "SERVFAIL".into(),
            }),
        );
        let e = targets(&fake, "broken.example", 25, 5, 0)
            .await
            .unwrap_err();
        assert!(!e.is_permanent());
    }
}
