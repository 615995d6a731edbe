//! The human summary of the settings, one line each (for `check-config` and the start-up log).

use std::time::Duration;

use crate::settings::{ListenerOverrides, MaildirSync, Settings};

/// A human summary of the settings, one line each (for `check-config` and the start-up log).
pub fn summary(settings: &Settings) -> Vec<String> {
    let d = &settings.directory;
    let s = &settings.smtp;
    let secs = |d: Duration| d.as_secs();
    let mut lines = vec![
        format!("hostname: {}", settings.hostname),
        format!("data_dir: {}", settings.data_dir.display()),
        format!(
            "user: {}, group {} (when started as root)",
            settings.user,
            settings.group.as_deref().unwrap_or("the user's own")
        ),
    ];
    for l in &settings.listeners {
        let proxy = match &l.proxy_networks {
            Some(networks) => {
                let networks: Vec<String> = networks.iter().map(ToString::to_string).collect();
                format!(", PROXY protocol from {}", networks.join(", "))
            }
            None => String::new(),
        };
        if l.overrides == ListenerOverrides::default() {
            lines.push(format!("listener: {} ({}){proxy}", l.address, l.kind));
        } else {
            lines.push(format!(
                "listener: {} ({}){proxy} with overrides {:?}",
                l.address, l.kind, l.overrides
            ));
        }
    }
    match &settings.tls {
        Some(tls) => lines.push(format!(
            "tls: cert {}, key {}, checked for changes every {}s (SIGHUP reloads at once)",
            tls.cert.display(),
            tls.key.display(),
            tls.reload_interval.as_secs()
        )),
        None => lines.push("tls: off (no [tls] section)".to_owned()),
    }
    let a = &settings.auth;
    let mechanisms: Vec<&str> = a.mechanisms.iter().map(|m| m.as_str()).collect();
    lines.push(format!(
        "auth: {} ({} with a password), require_tls {}, max_failures {}, failure delay {}ms doubling up to {}ms, sender_must_match {}",
        if mechanisms.is_empty() { "off".to_owned() } else { mechanisms.join(" ") },
        count(settings.credentials.users().count(), "user", "users"),
        a.require_tls,
        a.max_failures,
        a.failure_delay.as_millis(),
        a.failure_delay_max.as_millis(),
        a.sender_must_match
    ));
    let networks: Vec<String> = s.relay_networks.iter().map(ToString::to_string).collect();
    lines.push(format!(
        "relay: authenticated users{}",
        if networks.is_empty() {
            String::new()
        } else {
            format!(" and networks {}", networks.join(", "))
        }
    ));
    let domains: Vec<String> = d
        .domains()
        .iter()
        .map(|name| {
            if d.is_catch_all(name) {
                format!("{name} (catch-all)")
            } else {
                let n = d
                    .mailboxes()
                    .filter(|(a, _)| a.ends_with(&format!("@{name}")))
                    .count();
                format!("{name} ({})", count(n, "mailbox", "mailboxes"))
            }
        })
        .collect();
    lines.push(format!("domains: {}", domains.join(", ")));
    lines.push(format!(
        "directory: {}, {}, {} relocated; postmaster {}",
        count(d.mailboxes().count(), "mailbox", "mailboxes"),
        count(d.aliases().count(), "alias", "aliases"),
        d.relocated().count(),
        d.postmaster()
    ));
    lines.push(format!(
        "smtp: max_message_size {} bytes, max_recipients {}, max_line_length {}, max_errors {}",
        s.max_message_size, s.max_recipients, s.max_line_length, s.max_errors
    ));
    lines.push(format!(
        "connections: max {} (max {} per IP); timeouts: command {}s, data block {}s, data termination {}s",
        s.max_connections,
        s.max_connections_per_ip,
        secs(s.timeouts.command),
        secs(s.timeouts.data_block),
        secs(s.timeouts.data_termination)
    ));
    let on = |b: bool| if b { "on" } else { "off" };
    lines.push(format!(
        "commands: VRFY {}, EXPN {}, SEND/SOML/SAML {}, HELP {}, TURN {}, ETRN {}",
        s.vrfy,
        s.expn,
        on(s.send_soml_saml),
        on(s.help),
        on(s.turn),
        on(s.etrn)
    ));
    lines.push(format!(
        "extensions: PIPELINING {}, 8BITMIME {}, SMTPUTF8 {}, CHUNKING {}, ENHANCEDSTATUSCODES {}, DSN {}, BINARYMIME {}",
        on(s.pipelining),
        on(s.eight_bit_mime),
        on(s.smtputf8),
        on(s.chunking),
        on(s.enhanced_status_codes),
        on(s.dsn),
        on(s.binarymime)
    ));
    let q = &settings.queue;
    lines.push(format!(
        "queue: concurrency {}, retry after {}s doubling up to {}s, give up after {}s, maildir sync {}; shutdown grace {}s",
        q.concurrency,
        secs(q.retry.initial),
        secs(q.retry.max_backoff),
        secs(q.retry.give_up_after),
        match q.maildir_sync {
            MaildirSync::Batch => "batch",
            MaildirSync::File => "file",
        },
        secs(settings.shutdown_grace)
    ));
    let dl = &settings.delivery;
    lines.push(format!(
        "delivery: port {}, DNS {}, TLS {}{}, max_mx_hosts {}, per_destination {}, delay warning {}, source routes {}",
        dl.remote_port,
        if dl.dns_servers.is_empty() {
            "system".to_owned()
        } else {
            dl.dns_servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
        },
        dl.tls.as_str(),
        if dl.domain_tls.is_empty() {
            String::new()
        } else {
            format!(" ({} per-domain policies)", dl.domain_tls.len())
        },
        dl.max_mx_hosts,
        dl.per_destination,
        dl.delay_warning.map_or("never".to_owned(), |d| format!("{}s", d.as_secs())),
        if dl.honour_source_routes { "honoured" } else { "ignored" },
    ));
    let relays: Vec<String> = dl
        .smarthosts
        .iter()
        .map(|(domain, h)| format!("{domain} via {}:{}", h.host, h.port))
        .chain(
            dl.default_smarthost
                .iter()
                .map(|h| format!("everything else via {}:{}", h.host, h.port)),
        )
        .collect();
    lines.push(format!(
        "smarthosts: {}",
        if relays.is_empty() {
            "none (MX)".to_owned()
        } else {
            relays.join(", ")
        }
    ));
    match &settings.store {
        crate::settings::StoreSettings::Embedded => {
            lines.push("store: embedded (data_dir/spool)".to_owned());
        }
        crate::settings::StoreSettings::Postgres(pg) => lines.push(format!(
            "store: postgres {} (node {}, pool {}, lease {}s, statement timeout {}s, {}, password {})",
            yizhan_spool::postgres::redacted(&pg.url),
            pg.node,
            pg.pool_size,
            pg.lease.as_secs(),
            pg.statement_timeout.as_secs(),
            yizhan_spool::postgres::describe_tls(&pg.url, pg.ca_certificates.len()),
            if pg.password.is_some() || yizhan_spool::postgres::redacted(&pg.url) != pg.url {
                "set (redacted)"
            } else {
                "none (trust or peer authentication)"
            },
        )),
    }
    if !dl.lmtp.is_empty() {
        let stores: Vec<String> = dl.lmtp.iter().map(|(d, e)| format!("{d} to {e}")).collect();
        lines.push(format!("lmtp: {}", stores.join(", ")));
    }
    if !settings.dkim.is_empty() {
        let keys: Vec<String> = settings
            .dkim
            .0
            .iter()
            .map(|k| format!("{} (selector {}, {})", k.domain, k.selector, k.algorithm))
            .collect();
        lines.push(format!("dkim: signs mail from {}", keys.join(", ")));
    }
    lines.push(checks_line(settings));
    lines.push(record_line(settings));
    if !settings.turn_domains.is_empty() {
        let turn: Vec<String> = settings
            .turn_domains
            .iter()
            .map(|(user, domains)| format!("{user} owns {}", domains.join(" ")))
            .collect();
        lines.push(format!("turn: {}", turn.join("; ")));
    }
    lines
}

/// `checks: spf=tag dkim=tag arc=tag dmarc=enforce on smtp listeners (not 127.0.0.0/8, ::1/128)`,
/// with each listener that differs.
/// `[record]` and the listeners that record every session.
fn record_line(settings: &Settings) -> String {
    let r = &settings.record;
    let listeners: Vec<String> = settings
        .listeners
        .iter()
        .filter(|l| l.overrides.record)
        .map(|l| l.address.to_string())
        .collect();
    if listeners.is_empty() && r.networks.is_empty() {
        return "record: off".to_owned();
    }
    let networks: Vec<String> = r.networks.iter().map(ToString::to_string).collect();
    format!(
        "record: listeners [{}], clients [{}]; at most {} bytes a session, the last {} kept for {}s, message text {}",
        listeners.join(", "),
        networks.join(", "),
        r.max_session_bytes,
        r.keep,
        r.keep_for.as_secs(),
        if r.bodies { "kept" } else { "summarised" }
    )
}

fn checks_line(settings: &Settings) -> String {
    let show = |c: crate::checks::Checks| {
        if c.any() {
            format!(
                "spf={} dkim={} arc={} dmarc={}",
                c.spf, c.dkim, c.arc, c.dmarc
            )
        } else {
            "off".to_owned()
        }
    };
    let base = settings.checks.checks;
    let mut line = format!("checks: {} on smtp listeners", show(base));
    let exempt: Vec<String> = settings
        .checks
        .exempt
        .iter()
        .map(ToString::to_string)
        .collect();
    if base.any() && !exempt.is_empty() {
        line.push_str(&format!(" (not {})", exempt.join(", ")));
    }
    for listener in &settings.listeners {
        let own = settings.checks_for(listener);
        let usual = match listener.kind {
            crate::settings::ListenerKind::Smtp => base,
            _ => crate::checks::Checks::OFF,
        };
        if own != usual {
            line.push_str(&format!(
                "; {} ({}): {}",
                listener.address,
                listener.kind,
                show(own)
            ));
        }
    }
    line
}

/// `n` and the noun in the number it takes: `1 mailbox`, `2 mailboxes`, `0 mailboxes`.
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
