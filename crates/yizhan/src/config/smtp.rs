//! The validators of `[smtp]`, `[[listener]]` (with its overrides of `[smtp]` and `[auth]`)
//! and `[queue]`.

use std::collections::HashMap;
use std::net::SocketAddr;

use toml::Spanned;
use yizhan_server::settings::{
    ListenerKind, ListenerOverrides, ListenerSettings, MIN_LINE_LENGTH, MaildirSync, Settings,
    VerifyPolicy,
};

use super::check::Validator;
use super::raw::{RawConfig, RawListener};

/// RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients per message.
const MIN_RECIPIENTS: i64 = 100;

impl RawConfig {
    pub(super) fn listeners(
        &self,
        v: &mut Validator<'_>,
        listeners: &Spanned<Vec<RawListener>>,
    ) -> Vec<ListenerSettings> {
        if listeners.get_ref().is_empty() {
            v.problem(
                "listener",
                Some(listeners.span().start),
                "at least one listener is needed",
            );
        }
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, l) in listeners.get_ref().iter().enumerate() {
            let key = format!("listener[{i}].address");
            let at = Some(l.address.span().start);
            let address = match l.address.get_ref().parse::<SocketAddr>() {
                Ok(address) => {
                    // Port 0 asks the system for a free port: never a clash.
                    if address.port() != 0
                        && let Some(first) = seen.insert(address, i)
                    {
                        let why = format!("{address} is already used by listener[{first}]");
                        v.problem(key, at, why);
                    }
                    Some(address)
                }
                Err(_) => {
                    let why = format!(
                        "invalid listener address {:?}: expected IP:port, e.g. \"127.0.0.1:2525\" or \"[::1]:2525\"",
                        l.address.get_ref()
                    );
                    v.problem(key, at, why);
                    None
                }
            };
            let kind = match &l.kind {
                None => Some(ListenerKind::Smtp),
                Some(kind) => {
                    let found = ListenerKind::from_name(kind.get_ref());
                    if found.is_none() {
                        v.problem(
                            format!("listener[{i}].kind"),
                            Some(kind.span().start),
                            format!(
                                "unknown listener kind {:?} (expected \"smtp\", \"submission\" or \"submissions\")",
                                kind.get_ref()
                            ),
                        );
                    }
                    found
                }
            };
            let overrides = overrides(v, i, l);
            let proxy_networks = proxy_networks(v, i, l);
            if let (Some(address), Some(kind)) = (address, kind) {
                out.push(ListenerSettings {
                    address,
                    kind,
                    overrides,
                    proxy_networks,
                });
            }
        }
        out
    }

    pub(super) fn smtp(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.smtp;
        let s = &mut settings.smtp;
        let d = s.clone();
        s.max_message_size = v.size(
            "smtp.max_message_size",
            &raw.max_message_size,
            1,
            d.max_message_size,
        );
        s.max_recipients = v.integer(
            "smtp.max_recipients",
            &raw.max_recipients,
            MIN_RECIPIENTS,
            " (RFC 5321 4.5.3.1.8)",
            d.max_recipients,
        );
        s.max_line_length = v.integer(
            "smtp.max_line_length",
            &raw.max_line_length,
            i64::try_from(MIN_LINE_LENGTH).unwrap_or(512),
            " (RFC 5321 4.5.3.1.4)",
            d.max_line_length,
        );
        self.error_limits(v, s, &d);
        s.max_connections = v.integer(
            "smtp.max_connections",
            &raw.max_connections,
            1,
            "",
            d.max_connections,
        );
        s.max_connections_per_ip = v.integer(
            "smtp.max_connections_per_ip",
            &raw.max_connections_per_ip,
            1,
            "",
            d.max_connections_per_ip,
        );
        if s.max_connections_per_ip > s.max_connections
            && let Some(value) = &raw.max_connections_per_ip
        {
            v.problem(
                "smtp.max_connections_per_ip",
                Some(value.span().start),
                format!(
                    "{} is more than smtp.max_connections ({})",
                    s.max_connections_per_ip, s.max_connections
                ),
            );
        }
        let timeout = |v: &mut Validator<'_>, key: &str, value, default| {
            v.duration(&format!("smtp.{key}"), value, true, default)
        };
        let t = &mut s.timeouts;
        t.command = timeout(v, "command_timeout", &raw.command_timeout, t.command);
        t.data_block = timeout(
            v,
            "data_block_timeout",
            &raw.data_block_timeout,
            t.data_block,
        );
        t.data_termination = timeout(
            v,
            "data_termination_timeout",
            &raw.data_termination_timeout,
            t.data_termination,
        );
        s.session_lifetime = timeout(
            v,
            "session_lifetime",
            &raw.session_lifetime,
            s.session_lifetime,
        );
        s.max_session_bytes = v.size(
            "smtp.max_session_bytes",
            &raw.max_session_bytes,
            1,
            d.max_session_bytes,
        );
        s.max_held_bytes = v.size(
            "smtp.max_held_bytes",
            &raw.max_held_bytes,
            1,
            d.max_held_bytes,
        );
        self.commands_and_extensions(v, s);
        if let Some(networks) = v.networks("smtp.relay_networks", raw.relay_networks.as_ref()) {
            s.relay_networks = networks;
        }
        if let Some(networks) = v.networks("smtp.limit_exceptions", raw.limit_exceptions.as_ref()) {
            s.limit_exceptions = Some(networks);
        }
        self.rate_limits(v, s);
    }

    /// The error-counting model (Postfix's): hard and soft error limits, junk commands,
    /// recipient overshoot, hops.
    fn error_limits(
        &self,
        v: &mut Validator<'_>,
        s: &mut yizhan_server::settings::SmtpSettings,
        d: &yizhan_server::settings::SmtpSettings,
    ) {
        let raw = &self.smtp;
        s.max_errors = v.integer("smtp.max_errors", &raw.max_errors, 1, "", d.max_errors);
        s.max_hops = v.integer("smtp.max_hops", &raw.max_hops, 1, "", d.max_hops);
        s.soft_error_limit = v.integer(
            "smtp.soft_error_limit",
            &raw.soft_error_limit,
            1,
            "",
            d.soft_error_limit,
        );
        s.error_sleep = v.duration("smtp.error_sleep", &raw.error_sleep, false, d.error_sleep);
        s.junk_command_limit = v.integer(
            "smtp.junk_command_limit",
            &raw.junk_command_limit,
            0,
            "",
            d.junk_command_limit,
        );
        s.recipient_overshoot_limit = v.integer(
            "smtp.recipient_overshoot_limit",
            &raw.recipient_overshoot_limit,
            0,
            "",
            d.recipient_overshoot_limit,
        );
    }

    /// The optional commands and the extensions offered.
    fn commands_and_extensions(
        &self,
        v: &mut Validator<'_>,
        s: &mut yizhan_server::settings::SmtpSettings,
    ) {
        let raw = &self.smtp;
        s.vrfy = v.policy("smtp.vrfy", &raw.vrfy, s.vrfy);
        s.expn = v.policy("smtp.expn", &raw.expn, s.expn);
        for (value, flag) in [
            (raw.send_soml_saml, &mut s.send_soml_saml),
            (raw.help, &mut s.help),
            (raw.pipelining, &mut s.pipelining),
            (raw.eight_bit_mime, &mut s.eight_bit_mime),
            (raw.smtputf8, &mut s.smtputf8),
            (raw.chunking, &mut s.chunking),
            (raw.enhanced_status_codes, &mut s.enhanced_status_codes),
            (raw.dsn, &mut s.dsn),
            (raw.turn, &mut s.turn),
            (raw.etrn, &mut s.etrn),
        ] {
            if let Some(value) = value {
                *flag = value;
            }
        }
        if let Some(binarymime) = &raw.binarymime {
            s.binarymime = *binarymime.get_ref();
            if s.binarymime && !s.chunking {
                v.problem(
                    "smtp.binarymime",
                    Some(binarymime.span().start),
                    "needs smtp.chunking (RFC 3030 3: a BINARYMIME body is sent with BDAT)",
                );
            }
        }
    }

    /// Events per minute per client address (0: off).
    fn rate_limits(&self, v: &mut Validator<'_>, s: &mut yizhan_server::settings::SmtpSettings) {
        let raw = &self.smtp;
        let r = &mut s.rate_limits;
        for (key, raw, value) in [
            (
                "smtp.connection_rate_limit",
                &raw.connection_rate_limit,
                &mut r.connections_per_minute,
            ),
            (
                "smtp.auth_failure_rate_limit",
                &raw.auth_failure_rate_limit,
                &mut r.auth_failures_per_minute,
            ),
            (
                "smtp.verify_rate_limit",
                &raw.verify_rate_limit,
                &mut r.verify_per_minute,
            ),
            (
                "smtp.etrn_rate_limit",
                &raw.etrn_rate_limit,
                &mut r.etrn_per_minute,
            ),
        ] {
            *value = v.integer(key, raw, 0, " (per minute; 0: off)", *value);
        }
    }

    pub(super) fn queue(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.queue;
        let q = &mut settings.queue;
        let d = *q;
        q.concurrency = v.integer("queue.concurrency", &raw.concurrency, 1, "", d.concurrency);
        let wait = |v: &mut Validator<'_>, key: &str, value, default| {
            v.duration(&format!("queue.{key}"), value, true, default)
        };
        q.retry.initial = wait(v, "retry_initial", &raw.retry_initial, d.retry.initial);
        q.retry.max_backoff = wait(
            v,
            "retry_max_backoff",
            &raw.retry_max_backoff,
            d.retry.max_backoff,
        );
        q.retry.give_up_after = wait(
            v,
            "give_up_after",
            &raw.give_up_after,
            d.retry.give_up_after,
        );
        if let Some(value) = &raw.maildir_sync {
            match value.get_ref().as_str() {
                "batch" => q.maildir_sync = MaildirSync::Batch,
                "file" => q.maildir_sync = MaildirSync::File,
                other => v.problem(
                    "queue.maildir_sync",
                    Some(value.span().start),
                    format!("unknown mode {other:?} (expected \"batch\" or \"file\")"),
                ),
            }
        }
        if q.retry.max_backoff < q.retry.initial {
            let span = raw
                .retry_max_backoff
                .as_ref()
                .or(raw.retry_initial.as_ref())
                .map(|s| s.span().start);
            v.problem(
                "queue.retry_max_backoff",
                span,
                format!(
                    "{}s is shorter than queue.retry_initial ({}s)",
                    q.retry.max_backoff.as_secs(),
                    q.retry.initial.as_secs()
                ),
            );
        }
    }
}

/// `proxy_protocol = true` with the `proxy_networks` that may send the header; each without
/// the other is a mistake (a header from anyone, or networks that mean nothing).
fn proxy_networks(v: &mut Validator<'_>, i: usize, l: &RawListener) -> Option<Vec<ipnet::IpNet>> {
    let key = |name: &str| format!("listener[{i}].{name}");
    let networks = v.networks(&key("proxy_networks"), l.proxy_networks.as_ref());
    let given = l
        .proxy_networks
        .as_ref()
        .map_or(0, |list| list.get_ref().len());
    let taken = networks.as_ref().map_or(0, Vec::len);
    match (&l.proxy_protocol, networks) {
        // A wrong network was reported by itself: said once.
        _ if taken < given => None,
        (Some(on), Some(networks)) if *on.get_ref() && !networks.is_empty() => Some(networks),
        (Some(on), _) if *on.get_ref() => {
            v.problem(
                key("proxy_protocol"),
                Some(on.span().start),
                "needs proxy_networks: the addresses of the load balancers that may send the PROXY header (from anyone else it would let a client claim any address)",
            );
            None
        }
        (_, Some(_)) => {
            let at = l.proxy_networks.as_ref().map(|list| list.span().start);
            v.problem(
                key("proxy_networks"),
                at,
                "has no effect without proxy_protocol = true",
            );
            None
        }
        _ => None,
    }
}

/// The `[smtp]` / `[auth]` values a `[[listener]]` replaces.
fn overrides(v: &mut Validator<'_>, i: usize, l: &RawListener) -> ListenerOverrides {
    let key = |name: &str| format!("listener[{i}].{name}");
    let integer = |v: &mut Validator<'_>, name: &str, value: &Option<Spanned<i64>>, min: i64| {
        value.as_ref()?;
        let n: i64 = v.integer(&key(name), value, min, "", -1);
        u64::try_from(n).ok()
    };
    let max_message_size = l.max_message_size.as_ref().and_then(|_| {
        let n = v.size(&key("max_message_size"), &l.max_message_size, 1, 0);
        (n > 0).then_some(n)
    });
    let max_recipients = integer(v, "max_recipients", &l.max_recipients, MIN_RECIPIENTS);
    let max_connections_per_ip = integer(v, "max_connections_per_ip", &l.max_connections_per_ip, 1);
    let auth_max_failures = integer(v, "auth_max_failures", &l.auth_max_failures, 1);
    let policy = |v: &mut Validator<'_>, name: &str, value: &Option<Spanned<String>>| {
        value.as_ref()?;
        Some(v.policy(&key(name), value, VerifyPolicy::Disabled))
    };
    ListenerOverrides {
        max_message_size,
        max_recipients: max_recipients.and_then(|n| usize::try_from(n).ok()),
        max_connections_per_ip: max_connections_per_ip.and_then(|n| usize::try_from(n).ok()),
        vrfy: policy(v, "vrfy", &l.vrfy),
        expn: policy(v, "expn", &l.expn),
        send_soml_saml: l.send_soml_saml,
        turn: l.turn,
        etrn: l.etrn,
        relay_networks: v.networks(&key("relay_networks"), l.relay_networks.as_ref()),
        auth_max_failures: auth_max_failures.and_then(|n| u32::try_from(n).ok()),
        auth_require_tls: l.auth_require_tls,
        checks: super::checks::listener_checks(v, i, l.checks.as_ref()),
        record: l.record.unwrap_or(false),
    }
}
