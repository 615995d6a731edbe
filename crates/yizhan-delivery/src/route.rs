//! Routing: where a recipient's copy goes. Pure: plain data in, a [`Route`] out.
//!
//! | RFC | what |
//! | --- | --- |
//! | 5321 3.4, 3.9 | an alias member in a foreign domain is relayed like any remote recipient ("forwarded") |
//! | 5321 5.1 | a remote domain is delivered by MX ([`Route::Mx`]) unless a smarthost is configured |
//! | 5321 4.1.3 | an address literal (`user@[192.0.2.1]`) goes to that address, without DNS |
//! | 821 3.6, 5321 3.6.1, C | source routes: ignored by default; when honoured, the copy goes to the route's first host and the paths are rewritten ([`rewrite_source_route`]) |
//! | 3207, 8314 | per-destination TLS policy: none, opportunistic, required, required and verified |
//!
//! A recipient that the spool marks as local (`mailbox: Some`) is delivered into its Maildir.
//! Everything else is remote: a forwarded alias member looks exactly like a relayed recipient,
//! so it follows the same rules (smarthost for its domain, else the default smarthost, else MX).

use std::collections::HashMap;

use yizhan_proto::address::{Domain, ForwardPath, Host, Path, ReversePath};
use yizhan_proto::client::Credentials;
use yizhan_spool::{LocalMailbox, Recipient};

/// How a connection to the next hop must be protected (RFC 3207 STARTTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsPolicy {
    /// Never send STARTTLS.
    None,
    /// STARTTLS when offered, without verifying the certificate (RFC 7435 opportunistic
    /// security); plain text when not offered.
    #[default]
    Opportunistic,
    /// STARTTLS is required (a transient failure without it); the certificate is not verified.
    Require,
    /// STARTTLS is required and the certificate must be valid for the host name.
    Verify,
}

impl TlsPolicy {
    /// The policy's configuration name: `none`, `opportunistic`, `require`, `verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::None => "none",
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Require => "require",
            TlsPolicy::Verify => "verify",
        }
    }

    /// Parses a configuration name (see [`TlsPolicy::as_str`]).
    pub fn from_name(name: &str) -> Option<TlsPolicy> {
        [
            TlsPolicy::None,
            TlsPolicy::Opportunistic,
            TlsPolicy::Require,
            TlsPolicy::Verify,
        ]
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }
}

/// A relay host that takes mail for some (or all) remote domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smarthost {
    /// Host name or IP address to connect to (no MX lookup: A/AAAA only).
    pub host: String,
    /// TCP port (usually 25 or 587).
    pub port: u16,
    /// TLS policy towards it.
    pub tls: TlsPolicy,
    /// AUTH PLAIN/LOGIN credentials (RFC 4954), if the smarthost wants them.
    pub auth: Option<Credentials>,
}

/// The routing configuration. Domain keys are compared case-insensitively (store them
/// lower-cased).
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    /// The names this server answers to, lower-cased; stripped from the head of a source
    /// route (RFC 821 3.6: "this host" removes itself from the route).
    pub local_names: Vec<String>,
    /// Smarthosts per recipient domain.
    pub smarthosts: HashMap<String, Smarthost>,
    /// The smarthost for every other remote domain; `None` means delivery by MX.
    pub default_smarthost: Option<Smarthost>,
    /// TLS policy per recipient domain for MX delivery.
    pub tls: HashMap<String, TlsPolicy>,
    /// TLS policy for MX delivery to other domains (default opportunistic).
    pub default_tls: TlsPolicy,
    /// Honour RFC 821 source routes (off by default, RFC 5321 3.6.1 and appendix C).
    pub honour_source_routes: bool,
    /// Local domains whose mail goes to a mail store over LMTP (`[[domain]] deliver =
    /// "lmtp"`), not into Maildirs here.
    pub lmtp: HashMap<String, crate::lmtp::LmtpEndpoint>,
}

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Into this local Maildir.
    Local(LocalMailbox),
    /// A local mailbox of a domain kept in a mail store: over LMTP to it (RFC 2033).
    Lmtp(crate::lmtp::LmtpEndpoint),
    /// To this relay host.
    Smarthost(Smarthost),
    /// To the mail exchangers of this domain (or the address of an address literal, written
    /// `[192.0.2.1]` / `[IPv6:2001:db8::1]`), with this TLS policy.
    Mx {
        /// The domain, lower-cased, or the address literal.
        domain: String,
        /// The TLS policy for this domain.
        tls: TlsPolicy,
    },
}

/// A routed recipient: where it goes and the forward-path to give the next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The next hop.
    pub route: Route,
    /// `RCPT TO:` for the next hop (for local recipients, the mailbox as a plain path).
    pub forward_path: ForwardPath,
    /// The forward-path kept a source route: the reverse-path must be rewritten too
    /// ([`prepend_hop`]), so this recipient needs a transaction of its own.
    pub source_routed: bool,
}

/// Why a recipient cannot be routed. Always permanent: the address is what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// An address literal of a kind we cannot connect to (`[tag:content]`).
    #[error("cannot deliver to the address literal {0}")]
    UnsupportedLiteral(String),
}

/// Routes one spool recipient (RFC 5321 5.1; source routes per RFC 821 3.6 when enabled).
pub fn route(recipient: &Recipient, table: &RoutingTable) -> Result<Routed, RouteError> {
    let mailbox = recipient.address.clone();
    if let Some(local) = &recipient.mailbox {
        let (route, mailbox) = match table.lmtp.get(&local.domain) {
            // The store is given the canonical mailbox (lower-cased, aliases resolved).
            Some(endpoint) => {
                let canonical = format!("{}@{}", local.local, local.domain).parse().ok();
                (Route::Lmtp(endpoint.clone()), canonical.unwrap_or(mailbox))
            }
            None => (Route::Local(local.clone()), mailbox),
        };
        return Ok(Routed {
            route,
            forward_path: ForwardPath::Path(Path::new(mailbox)),
            source_routed: false,
        });
    }
    // A source route is only honoured for the path the client gave for this very mailbox (an
    // alias expansion replaces the address, and with it any route).
    if table.honour_source_routes
        && let ForwardPath::Path(original) = &recipient.original
        && original.mailbox == mailbox
    {
        let route: Vec<Domain> = original
            .route
            .iter()
            .skip_while(|hop| is_local_name(table, hop))
            .cloned()
            .collect();
        if let Some(next) = route.first() {
            let next = next.as_str().to_ascii_lowercase();
            return Ok(Routed {
                route: remote_route(&next, table),
                forward_path: ForwardPath::Path(Path { route, mailbox }),
                source_routed: true,
            });
        }
    }
    let destination = match mailbox.host() {
        Host::Domain(d) => d.as_str().to_ascii_lowercase(),
        Host::Literal(lit) => {
            let text = lit.to_string();
            if literal_address(&text).is_none() {
                return Err(RouteError::UnsupportedLiteral(text));
            }
            text
        }
    };
    Ok(Routed {
        route: remote_route(&destination, table),
        forward_path: ForwardPath::Path(Path::new(mailbox)),
        source_routed: false,
    })
}

/// The route for a remote destination domain: its smarthost, the default smarthost, or MX.
fn remote_route(domain: &str, table: &RoutingTable) -> Route {
    if let Some(host) = table.smarthosts.get(domain) {
        return Route::Smarthost(host.clone());
    }
    if let Some(host) = &table.default_smarthost {
        return Route::Smarthost(host.clone());
    }
    Route::Mx {
        domain: domain.to_owned(),
        tls: table.tls.get(domain).copied().unwrap_or(table.default_tls),
    }
}

fn is_local_name(table: &RoutingTable, hop: &Domain) -> bool {
    table
        .local_names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(hop.as_str()))
}

/// The IP address of an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), if it is one.
pub fn literal_address(text: &str) -> Option<std::net::IpAddr> {
    use yizhan_proto::address::AddressLiteral;
    match AddressLiteral::parse(text).ok()? {
        AddressLiteral::V4(a) => Some(a.into()),
        AddressLiteral::V6(a) => Some(a.into()),
        AddressLiteral::General { .. } => None,
    }
}

/// The reverse-path as this hop passes it on when relaying along a source route: `us` is
/// prepended to its route (RFC 821 3.6). The null path stays null.
pub fn prepend_hop(from: &ReversePath, us: &Domain) -> ReversePath {
    match from {
        ReversePath::Null => ReversePath::Null,
        ReversePath::Path(path) => {
            let mut route = Vec::with_capacity(path.route.len() + 1);
            route.push(us.clone());
            route.extend(path.route.iter().cloned());
            ReversePath::Path(Path {
                route,
                mailbox: path.mailbox.clone(),
            })
        }
    }
}

/// RFC 821 3.6 relaying at host `us`: when the forward-path's route starts with `us`, `us` is
/// removed from it and prepended to the reverse-path's route, and the copy goes to the next
/// host of the route (returned). `None` when `to` has no route or does not start with `us`.
///
/// RFC 821's example: `FROM:<USERX@HOSTY.ARPA> TO:<@HOSTA.ARPA,@HOSTB.ARPA:USERC@HOSTD.ARPA>`
/// at HOSTA becomes `FROM:<@HOSTA.ARPA:USERX@HOSTY.ARPA> TO:<@HOSTB.ARPA:USERC@HOSTD.ARPA>`,
/// sent to HOSTB.ARPA (and with the route used up, to USERC's own host HOSTD.ARPA).
pub fn rewrite_source_route(
    from: &ReversePath,
    to: &ForwardPath,
    us: &Domain,
) -> Option<(ReversePath, ForwardPath, Host)> {
    let ForwardPath::Path(path) = to else {
        return None;
    };
    let (first, rest) = path.route.split_first()?;
    if first != us {
        return None;
    }
    let next = match rest.first() {
        Some(hop) => Host::Domain(hop.clone()),
        None => path.mailbox.host().clone(),
    };
    let to = ForwardPath::Path(Path {
        route: rest.to_vec(),
        mailbox: path.mailbox.clone(),
    });
    Some((prepend_hop(from, us), to, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(address: &str, original: &str) -> Recipient {
        let address: yizhan_proto::address::Mailbox = address.parse().unwrap();
        match original {
            "" => Recipient::to(address, None, 0),
            given => Recipient::pending(address, given.parse().unwrap(), None, 0),
        }
    }

    fn smarthost(host: &str) -> Smarthost {
        Smarthost {
            host: host.into(),
            port: 587,
            tls: TlsPolicy::Verify,
            auth: Some(Credentials::new("u", "p")),
        }
    }

    fn mx(domain: &str, tls: TlsPolicy) -> Route {
        Route::Mx {
            domain: domain.into(),
            tls,
        }
    }

    #[test]
    fn routes_by_table() {
        let mut table = RoutingTable::default();
        table
            .smarthosts
            .insert("relay.example".into(), smarthost("smart.example"));
        table
            .tls
            .insert("secure.example".into(), TlsPolicy::Require);
        let local = LocalMailbox {
            domain: "here.example".into(),
            local: "alice".into(),
        };
        let mut alice = remote("alice@here.example", "<alice@here.example>");
        alice.mailbox = Some(local.clone());
        // (recipient, expected route)
        let cases = [
            (alice, Route::Local(local)),
            // RFC 5321 5.1: plain MX delivery, domain lower-cased.
            (
                remote("bob@Other.EXAMPLE", "<bob@Other.EXAMPLE>"),
                mx("other.example", TlsPolicy::Opportunistic),
            ),
            // A forwarded alias member: the original is the alias, routed by the member.
            (
                remote("carol@relay.example", "<list@here.example>"),
                Route::Smarthost(smarthost("smart.example")),
            ),
            (
                remote("dave@secure.example", "<dave@secure.example>"),
                mx("secure.example", TlsPolicy::Require),
            ),
            // RFC 5321 4.1.3: address literals go straight to the address.
            (
                remote("eve@[192.0.2.1]", "<eve@[192.0.2.1]>"),
                mx("[192.0.2.1]", TlsPolicy::Opportunistic),
            ),
        ];
        for (rcpt, want) in cases {
            let routed = route(&rcpt, &table).unwrap();
            assert_eq!(routed.route, want, "{}", rcpt.address);
            assert!(!routed.source_routed);
            assert_eq!(
                routed.forward_path.to_string(),
                format!("<{}>", rcpt.address)
            );
        }
        // The default smarthost takes every remote domain without its own entry.
        table.default_smarthost = Some(smarthost("default.example"));
        let routed = route(&remote("bob@other.example", "<bob@other.example>"), &table).unwrap();
        assert_eq!(routed.route, Route::Smarthost(smarthost("default.example")));
        let routed = route(&remote("c@relay.example", "<c@relay.example>"), &table).unwrap();
        assert_eq!(routed.route, Route::Smarthost(smarthost("smart.example")));
    }

    #[test]
    fn a_domain_in_a_mail_store_goes_over_lmtp() {
        let store: crate::lmtp::LmtpEndpoint = "unix:/run/dovecot/lmtp".parse().unwrap();
        let table = RoutingTable {
            lmtp: HashMap::from([("store.example".to_owned(), store.clone())]),
            ..RoutingTable::default()
        };
        let local = |domain: &str| {
            let address: yizhan_proto::address::Mailbox = format!("Ann@{domain}").parse().unwrap();
            let mailbox = LocalMailbox {
                domain: domain.into(),
                local: "ann".into(),
            };
            Recipient::to(address, Some(mailbox), 0)
        };
        let routed = route(&local("store.example"), &table).unwrap();
        assert_eq!(routed.route, Route::Lmtp(store));
        assert_eq!(routed.forward_path.to_string(), "<ann@store.example>");
        let routed = route(&local("test.example"), &table).unwrap();
        assert!(matches!(routed.route, Route::Local(_)));
    }

    #[test]
    fn unsupported_literals_are_permanent_errors() {
        let table = RoutingTable::default();
        let want = RouteError::UnsupportedLiteral("[tag:stuff]".into());
        assert_eq!(route(&remote("x@[tag:stuff]", ""), &table), Err(want));
    }

    #[test]
    fn source_routes_ignored_by_default() {
        // RFC 5321 3.6.1: "SMTP servers MAY decline to act as mail relays ... and MAY ignore
        // the route"; appendix C: the mailbox is what matters.
        let table = RoutingTable {
            local_names: vec!["hosta.arpa".into()],
            ..RoutingTable::default()
        };
        let rcpt = remote(
            "USERC@HOSTD.ARPA",
            "<@HOSTA.ARPA,@HOSTB.ARPA:USERC@HOSTD.ARPA>",
        );
        let routed = route(&rcpt, &table).unwrap();
        assert_eq!(routed.route, mx("hostd.arpa", TlsPolicy::Opportunistic));
        assert_eq!(routed.forward_path.to_string(), "<USERC@HOSTD.ARPA>");
        assert!(!routed.source_routed);
    }

    #[test]
    fn honoured_source_route_goes_to_the_next_hop() {
        // RFC 821 3.6 at HOSTA: strip ourselves, relay to HOSTB with the rest of the route.
        let table = RoutingTable {
            local_names: vec!["hosta.arpa".into()],
            honour_source_routes: true,
            ..RoutingTable::default()
        };
        let rcpt = remote(
            "USERC@HOSTD.ARPA",
            "<@HOSTA.ARPA,@HOSTB.ARPA:USERC@HOSTD.ARPA>",
        );
        let routed = route(&rcpt, &table).unwrap();
        assert_eq!(routed.route, mx("hostb.arpa", TlsPolicy::Opportunistic));
        assert_eq!(
            routed.forward_path.to_string(),
            "<@HOSTB.ARPA:USERC@HOSTD.ARPA>"
        );
        assert!(routed.source_routed);
        // A route that only names us is used up: plain delivery to the mailbox's domain.
        let rcpt = remote("u@d.example", "<@hosta.arpa:u@d.example>");
        let routed = route(&rcpt, &table).unwrap();
        assert_eq!(routed.route, mx("d.example", TlsPolicy::Opportunistic));
        assert!(!routed.source_routed);
        // After alias expansion the route of the alias's path does not apply.
        let rcpt = remote("member@far.example", "<@hostb.arpa:list@hosta.arpa>");
        let routed = route(&rcpt, &table).unwrap();
        assert_eq!(routed.route, mx("far.example", TlsPolicy::Opportunistic));
    }

    #[test]
    fn rfc821_seed_example_rewrites_both_paths() {
        // RFC 821 3.6, the seed's example, at HOSTA.ARPA.
        let from = ReversePath::parse("<USERX@HOSTY.ARPA>").unwrap();
        let to = ForwardPath::parse("<@HOSTA.ARPA,@HOSTB.ARPA:USERC@HOSTD.ARPA>").unwrap();
        let us = Domain::parse("HOSTA.ARPA").unwrap();
        let (from, to, next) = rewrite_source_route(&from, &to, &us).unwrap();
        assert_eq!(from.to_string(), "<@HOSTA.ARPA:USERX@HOSTY.ARPA>");
        assert_eq!(to.to_string(), "<@HOSTB.ARPA:USERC@HOSTD.ARPA>");
        assert_eq!(next.to_string(), "HOSTB.ARPA");
        // At HOSTB the same again; the route is then used up and HOSTD is next.
        let us = Domain::parse("hostb.arpa").unwrap();
        let (from, to, next) = rewrite_source_route(&from, &to, &us).unwrap();
        assert_eq!(
            from.to_string(),
            "<@hostb.arpa,@HOSTA.ARPA:USERX@HOSTY.ARPA>"
        );
        assert_eq!(to.to_string(), "<USERC@HOSTD.ARPA>");
        assert_eq!(next.to_string(), "HOSTD.ARPA");
        // Not for us, or no route: nothing to rewrite.
        assert_eq!(rewrite_source_route(&from, &to, &us), None);
        let other = ForwardPath::parse("<@HOSTC.ARPA:USERC@HOSTD.ARPA>").unwrap();
        assert_eq!(rewrite_source_route(&from, &other, &us), None);
        // The null reverse-path stays null (RFC 5321 4.5.5).
        assert_eq!(prepend_hop(&ReversePath::Null, &us), ReversePath::Null);
    }

    #[test]
    fn tls_policy_names() {
        for p in [
            TlsPolicy::None,
            TlsPolicy::Opportunistic,
            TlsPolicy::Require,
            TlsPolicy::Verify,
        ] {
            assert_eq!(TlsPolicy::from_name(p.as_str()), Some(p));
        }
        assert_eq!(TlsPolicy::from_name("sometimes"), None);
    }
}
