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
    /// This server is the best host for the domain (RFC 5321 5.1): delivering would send the
    /// mail back to ourselves.
    #[error("mail for {0} loops back to myself")]
    LoopsBack(String),
}

impl MxError {
    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        match self {
            MxError::NullMx(_) | MxError::LoopsBack(_) => true,
            MxError::Dns(e) => e.is_permanent(),
        }
    }

    /// The RFC 3463 status code for a report.
    pub fn status(&self) -> &'static str {
        match self {
            MxError::NullMx(_) => "5.1.10",
            // RFC 3463 5.4.6: routing loop detected.
            MxError::LoopsBack(_) => "5.4.6",
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
    let mut hosts: Vec<String> = rank_hosts(answer, domain, seed)?
        .into_iter()
        .map(|(_, host)| host)
        .collect();
    hosts.truncate(cap.max(1));
    Ok(hosts)
}

/// Every host of `domain` with its preference, in the order to try them: by preference, equal
/// preferences shuffled (a seeded `fastrand` generator), each host once, lower-cased. An
/// implicit MX (no records) is the domain itself at preference 0.
fn rank_hosts(answer: &MxAnswer, domain: &str, seed: u64) -> Result<Vec<(u16, String)>, MxError> {
    let records = match answer {
        MxAnswer::Null => return Err(MxError::NullMx(domain.to_owned())),
        MxAnswer::NoRecords => return Ok(vec![(0, domain.to_ascii_lowercase())]),
        MxAnswer::Records(records) => records,
    };
    let mut records: Vec<&MxRecord> = records.iter().filter(|r| !r.exchange.is_empty()).collect();
    if records.is_empty() {
        // Only "." targets: a null MX, even if not quite in the RFC 7505 form.
        return Err(MxError::NullMx(domain.to_owned()));
    }
    records.sort_by_key(|r| r.preference);
    let mut rng = fastrand::Rng::with_seed(seed);
    for group in records.chunk_by_mut(|a, b| a.preference == b.preference) {
        rng.shuffle(group);
    }
    let mut ranked: Vec<(u16, String)> = Vec::new();
    for r in records {
        let host = r.exchange.to_ascii_lowercase();
        if !ranked.iter().any(|(_, h)| *h == host) {
            ranked.push((r.preference, host));
        }
    }
    Ok(ranked)
}

/// How this server recognises itself in an MX list (RFC 5321 5.1: "if the SMTP client's own
/// host name is found among the MX records, all records with a preference equal to or
/// greater than its own are discarded"): by name, or by the address and port it listens on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ourselves {
    /// Our host names (the host name and `local_names`); case and a trailing dot do not matter.
    pub names: Vec<String>,
    /// The sockets our SMTP listeners are bound to (an unspecified address stands for every
    /// address of this machine).
    pub listeners: Vec<SocketAddr>,
}

impl Ourselves {
    /// Whether connecting to `host` at `address` would reach this server: `host` is one of our
    /// names (case and a trailing dot aside), or `address` is a listener's socket. A listener
    /// on `0.0.0.0` stands for every IPv4 address of this machine, one on `[::]` for every
    /// address (a dual-stack socket, Linux's default); an IPv4-mapped IPv6 address is its IPv4
    /// address.
    pub fn is_self(&self, host: &str, address: Option<SocketAddr>) -> bool {
        let host = host.trim_end_matches('.');
        if self
            .names
            .iter()
            .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(host))
        {
            return true;
        }
        let Some(address) = address else {
            return false;
        };
        let ip = address.ip().to_canonical();
        self.listeners.iter().any(|l| {
            l.port() == address.port()
                && match l.ip().to_canonical() {
                    IpAddr::V4(any) if any.is_unspecified() => ip.is_ipv4() && is_local(ip),
                    IpAddr::V6(any) if any.is_unspecified() => is_local(ip),
                    listening => listening == ip,
                }
        })
    }
}

/// Whether `ip` is an address of this machine: the kernel lets a socket bind to it.
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
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
/// none is left the error is transient if any lookup was, else permanent. If this server is
/// among the hosts (`ourselves`), it and every host of equal or lower preference are dropped;
/// when nothing is left, the mail loops back to us ([`MxError::LoopsBack`]).
pub async fn targets(
    resolver: &dyn Resolver,
    domain: &str,
    port: u16,
    cap: usize,
    seed: u64,
    ourselves: &Ourselves,
) -> Result<Vec<Target>, MxError> {
    if let Some(ip) = literal_address(domain) {
        let address = SocketAddr::new(ip, port);
        if ourselves.is_self(domain, Some(address)) {
            return Err(MxError::LoopsBack(domain.to_owned()));
        }
        return Ok(vec![Target {
            host: domain.to_owned(),
            address,
        }]);
    }
    let answer = resolver.mx(domain).await?;
    let mut ranked = rank_hosts(&answer, domain, seed)?;
    ranked.truncate(cap.max(1));
    let mut resolved = Vec::with_capacity(ranked.len());
    for (preference, host) in ranked {
        let addresses = host_addresses(resolver, &host).await;
        resolved.push((preference, host, addresses));
    }
    let own = resolved
        .iter()
        .filter(|(_, host, addresses)| {
            let mut sockets = addresses
                .iter()
                .flatten()
                .map(|ip| SocketAddr::new(*ip, port));
            ourselves.is_self(host, None) || sockets.any(|s| ourselves.is_self(host, Some(s)))
        })
        .map(|(preference, _, _)| *preference)
        .min();
    if let Some(own) = own {
        resolved.retain(|(preference, _, _)| *preference < own);
        if resolved.is_empty() {
            return Err(MxError::LoopsBack(domain.to_owned()));
        }
    }
    collect_targets(
        resolved.into_iter().map(|(_, host, addrs)| (host, addrs)),
        port,
    )
}

/// The addresses of `hosts`, in order (for smarthosts and MX hosts alike).
pub async fn host_targets(
    resolver: &dyn Resolver,
    hosts: &[String],
    port: u16,
) -> Result<Vec<Target>, MxError> {
    let mut resolved = Vec::with_capacity(hosts.len());
    for host in hosts {
        resolved.push((host.clone(), host_addresses(resolver, host).await));
    }
    collect_targets(resolved.into_iter(), port)
}

/// The addresses of one host: itself if it is an IP address, else its A/AAAA records.
async fn host_addresses(resolver: &dyn Resolver, host: &str) -> Result<Vec<IpAddr>, DnsError> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![ip]),
        Err(_) => resolver.addresses(host).await,
    }
}

/// Targets from hosts and their lookups, in order; when none has an address, the error is
/// transient if any lookup was, else permanent.
fn collect_targets(
    resolved: impl Iterator<Item = (String, Result<Vec<IpAddr>, DnsError>)>,
    port: u16,
) -> Result<Vec<Target>, MxError> {
    let mut out = Vec::new();
    let mut last_error = None;
    let mut transient = None;
    let mut names = Vec::new();
    for (host, addresses) in resolved {
        match addresses {
            Ok(ips) => out.extend(ips.into_iter().map(|ip| Target {
                host: host.clone(),
                address: SocketAddr::new(ip, port),
            })),
            Err(e) if !e.is_permanent() => transient = Some(e),
            Err(e) => last_error = Some(e),
        }
        names.push(host);
    }
    if out.is_empty() {
        let e = transient
            .or(last_error)
            .unwrap_or_else(|| DnsError::NoRecords(names.join(", ")));
        return Err(MxError::Dns(e));
    }
    Ok(out)
}

/// The hickory configuration for these name servers (UDP, with TCP for truncated answers),
/// each with its own port, `timeout` per query, one attempt, no hosts file: the one place
/// that says how yizhan asks DNS (MX lookups here, the inbound checks in the server).
pub fn resolver_config(
    servers: &[SocketAddr],
    timeout: Duration,
) -> (ResolverConfig, ResolverOpts) {
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
    (config, opts)
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
        let (config, opts) = resolver_config(servers, timeout);
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

impl HickoryResolver {
    /// The TXT records of `name`, each with its character-strings joined (RFC 6376 3.6.2.2);
    /// empty when there are none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let lookup = match self.inner.txt_lookup(fqdn(name)).await {
            Ok(lookup) => lookup,
            Err(e) => {
                return match classify(name, &e) {
                    DnsError::NoRecords(_) => Ok(Vec::new()),
                    other => Err(other),
                };
            }
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect())
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

    fn dns(records: &[(u16, &str, [u8; 4])]) -> FakeResolver {
        let mut dns = FakeResolver::default();
        let mx = records.iter().map(|(p, h, _)| rec(*p, h)).collect();
        dns.mx.insert("d.example".into(), Ok(MxAnswer::Records(mx)));
        for (_, host, ip) in records {
            dns.hosts.insert((*host).into(), vec![IpAddr::from(*ip)]);
        }
        dns
    }

    /// RFC 5321 5.1: this host and every MX of equal or lower preference (higher number) are
    /// dropped; if none is left, the mail loops back (5.4.6, as Postfix says it).
    #[tokio::test]
    async fn an_mx_list_that_points_back_to_us_is_cut_before_us() {
        let us = Ourselves {
            names: vec!["mx.us.example".into()],
            listeners: vec!["127.0.0.9:25".parse().unwrap()],
        };
        let hosts = |t: Result<Vec<Target>, MxError>| {
            t.map(|t| t.into_iter().map(|t| t.host).collect::<Vec<_>>())
        };
        // By address: the better host stays, we and the worse one go.
        let r = dns(&[
            (10, "backup.example", [127, 0, 0, 2]),
            (20, "alias-of-us.example", [127, 0, 0, 9]),
            (30, "worse.example", [127, 0, 0, 3]),
        ]);
        let t = targets(&r, "d.example", 25, 5, 1, &us).await;
        assert_eq!(hosts(t), Ok(vec!["backup.example".to_owned()]));
        // The same address on another port is somebody else.
        let t = targets(&r, "d.example", 2525, 5, 1, &us).await;
        assert_eq!(hosts(t).unwrap().len(), 3);
        // By name, and equal preferences go with us.
        let r = dns(&[
            (10, "MX.us.example.", [192, 0, 2, 1]),
            (10, "peer.example", [127, 0, 0, 2]),
        ]);
        let e = targets(&r, "d.example", 25, 5, 1, &us).await.unwrap_err();
        assert_eq!(e, MxError::LoopsBack("d.example".into()));
        assert!(e.is_permanent());
        assert_eq!(e.status(), "5.4.6");
        assert_eq!(e.to_string(), "mail for d.example loops back to myself");
        // An address literal of ours.
        let e = targets(&r, "[127.0.0.9]", 25, 5, 1, &us).await.unwrap_err();
        assert_eq!(e, MxError::LoopsBack("[127.0.0.9]".into()));
    }

    #[test]
    fn a_listener_on_every_address_is_every_local_address() {
        let us = Ourselves {
            names: vec![],
            listeners: vec!["0.0.0.0:25".parse().unwrap()],
        };
        assert!(us.is_self("x", Some("127.0.0.1:25".parse().unwrap())));
        assert!(!us.is_self("x", Some("127.0.0.1:26".parse().unwrap())));
        // TEST-NET-1 is no address of this machine.
        assert!(!us.is_self("x", Some("192.0.2.1:25".parse().unwrap())));
        // 0.0.0.0 takes no IPv6 connection; an IPv4-mapped address is the IPv4 one.
        assert!(!us.is_self("x", Some("[::1]:25".parse().unwrap())));
        assert!(us.is_self("x", Some("[::ffff:127.0.0.1]:25".parse().unwrap())));
        // [::] is dual-stack: IPv4 too.
        let us = Ourselves {
            names: vec![],
            listeners: vec!["[::]:25".parse().unwrap()],
        };
        assert!(us.is_self("x", Some("127.0.0.1:25".parse().unwrap())));
        assert!(!us.is_self("x", Some("127.0.0.1:26".parse().unwrap())));
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            assert!(us.is_self("x", Some("[::1]:25".parse().unwrap())));
        }
        assert!(!us.is_self("x", Some("[2001:db8::1]:25".parse().unwrap())));
    }

    #[test]
    fn a_name_or_a_listener_of_ours() {
        let us = Ourselves {
            names: vec!["mx.us.example.".into()],
            listeners: vec!["127.0.0.9:25".parse().unwrap()],
        };
        // Names: case and a trailing dot (on either side) aside; no address needed.
        assert!(us.is_self("MX.Us.Example", None));
        assert!(us.is_self("mx.us.example.", Some("192.0.2.1:25".parse().unwrap())));
        assert!(!us.is_self("mx2.us.example", None));
        // A specific listener: that address and port only.
        assert!(us.is_self("other", Some("127.0.0.9:25".parse().unwrap())));
        assert!(us.is_self("other", Some("[::ffff:127.0.0.9]:25".parse().unwrap())));
        assert!(!us.is_self("other", Some("127.0.0.8:25".parse().unwrap())));
        assert!(!us.is_self("other", Some("127.0.0.9:2525".parse().unwrap())));
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
        let t = targets(&fake, "mx.example", 2525, 5, 0, &Ourselves::default())
            .await
            .unwrap();
        let addrs: Vec<String> = t.iter().map(|t| t.address.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.2:2525", "127.0.0.3:2525"]);
        let t = targets(&fake, "implicit.example", 25, 5, 0, &Ourselves::default())
            .await
            .unwrap();
        assert_eq!(t[0].host, "implicit.example");
        let t = targets(&fake, "[127.0.0.9]", 25, 5, 0, &Ourselves::default())
            .await
            .unwrap();
        assert_eq!(t[0].address.to_string(), "127.0.0.9:25");
        let e = targets(&fake, "nowhere.example", 25, 5, 0, &Ourselves::default())
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
        let e = targets(&fake, "broken.example", 25, 5, 0, &Ourselves::default())
            .await
            .unwrap_err();
        assert!(!e.is_permanent());
    }
}
