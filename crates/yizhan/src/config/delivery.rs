//! The validators of `[delivery]` and `[[smarthost]]`.

use std::time::Duration;

use toml::Spanned;
use yizhan_server::settings::{Settings, Smarthost, SmarthostCredentials, TlsPolicy};

use super::check::Validator;
use super::raw::{RawConfig, RawSmarthost};
use super::values::{DnsServer, DomainName, HostName, port};

/// The port of a smarthost that does not name one.
const SMARTHOST_PORT: u16 = 25;

impl RawConfig {
    pub(super) fn delivery(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.delivery;
        let d = &mut settings.delivery;
        if let Some(p) = &raw.remote_port
            && let Some(p) = v.convert_value("delivery.remote_port", p, |&n| port(n))
        {
            d.remote_port = p;
        }
        if let Some(servers) = v.list::<DnsServer>("delivery.dns_servers", raw.dns_servers.as_ref())
        {
            d.dns_servers = servers.into_iter().map(|s| s.0).collect();
        }
        let dur = |v: &mut Validator<'_>, key: &str, value, default| {
            v.duration(&format!("delivery.{key}"), value, true, default)
        };
        d.dns_timeout = dur(v, "dns_timeout", &raw.dns_timeout, d.dns_timeout);
        d.connect_timeout = dur(
            v,
            "connect_timeout",
            &raw.connect_timeout,
            d.connect_timeout,
        );
        d.greeting_timeout = dur(
            v,
            "greeting_timeout",
            &raw.greeting_timeout,
            d.greeting_timeout,
        );
        d.command_timeout = dur(
            v,
            "command_timeout",
            &raw.command_timeout,
            d.command_timeout,
        );
        d.data_block_timeout = dur(
            v,
            "data_block_timeout",
            &raw.data_block_timeout,
            d.data_block_timeout,
        );
        d.data_end_timeout = dur(
            v,
            "data_end_timeout",
            &raw.data_end_timeout,
            d.data_end_timeout,
        );
        d.max_mx_hosts = v.integer(
            "delivery.max_mx_hosts",
            &raw.max_mx_hosts,
            1,
            "",
            d.max_mx_hosts,
        );
        d.per_destination = v.integer(
            "delivery.per_destination",
            &raw.per_destination,
            1,
            "",
            d.per_destination,
        );
        d.connection_idle = v.duration(
            "delivery.connection_idle",
            &raw.connection_idle,
            false,
            d.connection_idle,
        );
        if raw.delay_warning.is_some() {
            let key = "delivery.delay_warning";
            let after = v.duration(key, &raw.delay_warning, false, Duration::ZERO);
            d.delay_warning = (!after.is_zero()).then_some(after);
        }
        d.honour_source_routes = raw.honour_source_routes.unwrap_or(d.honour_source_routes);
        if let Some(names) = v.list::<DomainName>("delivery.local_names", raw.local_names.as_ref())
        {
            d.local_names = names.into_iter().map(|n| n.0).collect();
        }
        if let Some(tls) = v.tls_policy("delivery.tls", raw.tls.as_ref()) {
            d.tls = tls;
        }
        for (domain, policy) in &raw.domain_tls {
            let key = format!("delivery.domain_tls.{domain:?}");
            let name = v.convert_value(&key, policy, |_| domain.parse::<DomainName>());
            let tls = v.tls_policy(&key, Some(policy));
            if let (Some(name), Some(tls)) = (name, tls)
                && d.domain_tls.insert(name.0, tls).is_some()
            {
                v.problem(key, Some(policy.span().start), "domain listed twice");
            }
        }
    }

    pub(super) fn smarthosts(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        for (i, raw) in self.smarthost.iter().enumerate() {
            let Some(smarthost) = smarthost(v, i, raw) else {
                continue;
            };
            let key = |k: &str| format!("smarthost[{i}].{k}");
            let d = &mut settings.delivery;
            let Some(domain) = &raw.domain else {
                if d.default_smarthost.is_some() {
                    v.problem(
                        key("host"),
                        Some(raw.host.span().start),
                        "a second default smarthost (one without domain)",
                    );
                }
                d.default_smarthost = Some(smarthost);
                continue;
            };
            let Some(DomainName(name)) = v.parse(&key("domain"), Some(domain)) else {
                continue;
            };
            let at = Some(domain.span().start);
            if settings.directory.is_local_domain(&name) {
                let why = format!("{name} is a local domain; its mail is delivered here");
                v.problem(key("domain"), at, why);
            } else if d.smarthosts.insert(name.clone(), smarthost).is_some() {
                v.problem(key("domain"), at, format!("{name} has a smarthost already"));
            }
        }
    }
}

/// One `[[smarthost]]`'s host, port, TLS policy and credentials; `None` when the host is
/// wrong (recorded).
fn smarthost(v: &mut Validator<'_>, i: usize, raw: &RawSmarthost) -> Option<Smarthost> {
    let key = |k: &str| format!("smarthost[{i}].{k}");
    let host: Option<HostName> = v.parse(&key("host"), Some(&raw.host));
    let port = raw
        .port
        .as_ref()
        .and_then(|p| v.convert_value(&key("port"), p, |&n| port(n)))
        .unwrap_or(SMARTHOST_PORT);
    let tls = v
        .tls_policy(&key("tls"), raw.tls.as_ref())
        .unwrap_or(TlsPolicy::Opportunistic);
    let auth = credentials(v, i, raw.user.as_ref(), raw.password.as_ref(), tls);
    Some(Smarthost {
        host: host?.0,
        port,
        tls,
        auth,
    })
}

/// A smarthost's `user` and `password`: both or neither, and only under TLS.
fn credentials(
    v: &mut Validator<'_>,
    i: usize,
    user: Option<&Spanned<String>>,
    password: Option<&Spanned<String>>,
    tls: TlsPolicy,
) -> Option<SmarthostCredentials> {
    let key = |k: &str| format!("smarthost[{i}].{k}");
    match (user, password) {
        (None, None) => None,
        (Some(user), Some(password)) => {
            if !matches!(tls, TlsPolicy::Require | TlsPolicy::Verify) {
                v.problem(
                    key("user"),
                    Some(user.span().start),
                    "a password is only sent under TLS: set tls = \"require\" or \"verify\"",
                );
            }
            Some(SmarthostCredentials::new(
                user.get_ref().as_str(),
                password.get_ref().as_str(),
            ))
        }
        (Some(user), None) => {
            v.problem(
                key("password"),
                Some(user.span().start),
                "user without password",
            );
            None
        }
        (None, Some(password)) => {
            v.problem(
                key("user"),
                Some(password.span().start),
                "password without user",
            );
            None
        }
    }
}
