//! The validator of the top-level keys, `[tls]` and `[auth]`, and the order in which the
//! sections are validated (the directory before what refers to its domains).

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use yizhan_server::auth::Mechanism;
use yizhan_server::settings::{ListenerKind, Settings, TlsSettings};

use super::check::Validator;
use super::raw::RawConfig;
use super::values::DomainName;

impl RawConfig {
    /// The settings this file gives: [`Settings::default`] with every key that is present
    /// (and right) replacing its default.
    pub(super) fn validate(&self, v: &mut Validator<'_>) -> Settings {
        let defaults = Settings::default();
        let mut settings = defaults.clone();
        self.top_level(v, &mut settings);
        if let Some(listeners) = &self.listener {
            settings.listeners = self.listeners(v, listeners);
        }
        self.smtp(v, &mut settings);
        self.queue(v, &mut settings);
        self.tls(v, &mut settings);
        self.auth(v, &mut settings);
        if let Some(directory) = self.directory(v) {
            settings.directory = directory;
        }
        settings.credentials = self.credentials(v);
        self.delivery(v, &mut settings);
        self.smarthosts(v, &mut settings);
        self.turn_domains(v, &mut settings);
        self.lmtp_domains(v, &mut settings);
        self.dkim(v, &mut settings);
        self.checks(v, &mut settings);
        self.admin(v, &mut settings);
        self.record(v, &mut settings);
        self.store(v, &mut settings);
        if settings.tls.is_none() {
            self.submissions_need_tls(v);
        }
        settings
    }

    fn top_level(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        if let Some(hostname) = &self.hostname {
            if hostname.get_ref().is_empty() {
                v.problem("hostname", Some(hostname.span().start), "must not be empty");
            } else if v.parse::<DomainName>("hostname", Some(hostname)).is_some() {
                // As written: the greeting and Received: lines say what the operator wrote.
                settings.hostname.clone_from(hostname.get_ref());
            }
        }
        if let Some(dir) = &self.data_dir {
            if dir.get_ref().is_empty() {
                v.problem("data_dir", Some(dir.span().start), "must not be empty");
            } else {
                settings.data_dir = PathBuf::from(dir.get_ref());
            }
        }
        settings.shutdown_grace = v.duration(
            "shutdown_grace",
            &self.shutdown_grace,
            false,
            settings.shutdown_grace,
        );
        if let Some(user) = account_name(v, "user", self.user.as_ref()) {
            settings.user = user;
        }
        if let Some(group) = account_name(v, "group", self.group.as_ref()) {
            settings.group = Some(group);
        }
    }

    /// A `submissions` listener speaks TLS from the first byte: it needs `[tls]`.
    fn submissions_need_tls(&self, v: &mut Validator<'_>) {
        let Some(listeners) = &self.listener else {
            return;
        };
        for (i, l) in listeners.get_ref().iter().enumerate() {
            if let Some(kind) = &l.kind
                && kind.get_ref() == ListenerKind::Submissions.as_str()
            {
                v.problem(
                    format!("listener[{i}].kind"),
                    Some(kind.span().start),
                    "a \"submissions\" listener speaks implicit TLS (RFC 8314) and needs a [tls] section with cert and key",
                );
            }
        }
    }

    fn tls(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let Some(raw) = &self.tls else { return };
        let mut path = |key: &str, value: &Spanned<String>| {
            if value.get_ref().is_empty() {
                v.problem(key, Some(value.span().start), "must not be empty");
            }
            PathBuf::from(value.get_ref())
        };
        let cert = path("tls.cert", &raw.cert);
        let key = path("tls.key", &raw.key);
        let reload_interval = v.duration(
            "tls.reload_interval",
            &raw.reload_interval,
            true,
            TlsSettings::DEFAULT_RELOAD_INTERVAL,
        );
        settings.tls = Some(TlsSettings {
            cert,
            key,
            reload_interval,
        });
    }

    fn auth(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.auth;
        let a = &mut settings.auth;
        let d = a.clone();
        if let Some(list) = &raw.mechanisms {
            let mut mechanisms = Vec::new();
            for (i, name) in list.get_ref().iter().enumerate() {
                let key = format!("auth.mechanisms[{i}]");
                let at = Some(name.span().start);
                match Mechanism::from_name(name.get_ref()) {
                    Some(m) if !mechanisms.contains(&m) => mechanisms.push(m),
                    Some(_) => v.problem(key, at, format!("{:?} is listed twice", name.get_ref())),
                    None => v.problem(
                        key,
                        at,
                        format!(
                            "unknown mechanism {:?} (expected \"PLAIN\" or \"LOGIN\")",
                            name.get_ref()
                        ),
                    ),
                }
            }
            a.mechanisms = mechanisms;
        }
        a.require_tls = raw.require_tls.unwrap_or(d.require_tls);
        let delay = |v: &mut Validator<'_>, key, value, default: Duration| {
            v.duration(key, value, false, default)
        };
        a.failure_delay = delay(v, "auth.failure_delay", &raw.failure_delay, d.failure_delay);
        a.failure_delay_max = delay(
            v,
            "auth.failure_delay_max",
            &raw.failure_delay_max,
            d.failure_delay_max,
        );
        a.max_failures = v.integer(
            "auth.max_failures",
            &raw.max_failures,
            1,
            "",
            d.max_failures,
        );
        a.sender_must_match = raw.sender_must_match.unwrap_or(d.sender_must_match);
        if a.failure_delay_max < a.failure_delay
            && let Some(value) = raw
                .failure_delay_max
                .as_ref()
                .or(raw.failure_delay.as_ref())
        {
            v.problem(
                "auth.failure_delay_max",
                Some(value.span().start),
                "is shorter than auth.failure_delay",
            );
        }
    }
}

/// `user` or `group`: a name that is neither empty nor root.
fn account_name(
    v: &mut Validator<'_>,
    key: &str,
    value: Option<&Spanned<String>>,
) -> Option<String> {
    let value = value?;
    let at = Some(value.span().start);
    match value.get_ref().as_str() {
        "" => v.problem(key, at, "must not be empty"),
        "root" | "0" if key == "user" => v.problem(
            key,
            at,
            "must not be root: the server would keep every privilege (create an account for \
             it, see the default)",
        ),
        "root" | "0" => v.problem(key, at, "must not be root"),
        name => return Some(name.to_owned()),
    }
    None
}
