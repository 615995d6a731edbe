//! The validator of `[store]`: the embedded spool (the default), or the queue shared by
//! several nodes on PostgreSQL. The password comes from `password_file` or
//! `$YIZHAN_STORE_PASSWORD`, never from the file itself (a URL with one is accepted, and
//! never logged).

use std::time::Duration;

use yizhan_server::settings::{Settings, StoreSettings};
use yizhan_spool::postgres::PgSettings;

use super::check::Validator;
use super::raw::RawConfig;

/// The environment variable that may hold the database password.
pub const PASSWORD_ENV: &str = "YIZHAN_STORE_PASSWORD";

/// Defaults of the shared queue, written once.
const DEFAULT_POOL_SIZE: usize = 16;
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_LEASE: Duration = Duration::from_secs(300);
const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(30);

impl RawConfig {
    pub(super) fn store(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.store;
        let kind = raw.kind.as_ref().map(|k| (k, k.get_ref().as_str()));
        match kind {
            None | Some((_, "embedded")) => {
                for (key, given) in [
                    ("url", raw.url.as_ref().map(|s| s.span().start)),
                    (
                        "password_file",
                        raw.password_file.as_ref().map(|s| s.span().start),
                    ),
                    ("node", raw.node.as_ref().map(|s| s.span().start)),
                    ("ca_file", raw.ca_file.as_ref().map(|s| s.span().start)),
                ] {
                    if let Some(at) = given {
                        v.problem(
                            format!("store.{key}"),
                            Some(at),
                            "only for kind = \"postgres\"",
                        );
                    }
                }
            }
            Some((_, "postgres")) => {
                if let Some(pg) = self.postgres(v, &settings.hostname) {
                    settings.store = StoreSettings::Postgres(pg);
                }
            }
            Some((k, other)) => v.problem(
                "store.kind",
                Some(k.span().start),
                format!("unknown store {other:?} (expected \"embedded\" or \"postgres\")"),
            ),
        }
    }

    fn postgres(&self, v: &mut Validator<'_>, hostname: &str) -> Option<PgSettings> {
        let raw = &self.store;
        let Some(url) = &raw.url else {
            let at = raw.kind.as_ref().map(|k| k.span().start);
            v.problem(
                "store.url",
                at,
                "required with kind = \"postgres\" (postgres://user@host/db)",
            );
            return None;
        };
        if let Err(reason) = yizhan_spool::postgres::check_url(url.get_ref()) {
            v.problem("store.url", Some(url.span().start), reason);
            return None;
        }
        let password = match &raw.password_file {
            Some(path) => match std::fs::read_to_string(path.get_ref()) {
                Ok(text) => Some(text.lines().next().unwrap_or_default().to_owned()),
                Err(e) => {
                    let reason = format!("cannot read {}: {e}", path.get_ref());
                    v.problem("store.password_file", Some(path.span().start), reason);
                    return None;
                }
            },
            None => std::env::var(PASSWORD_ENV).ok(),
        };
        let pool_size = v.integer("store.pool_size", &raw.pool_size, 1, "", DEFAULT_POOL_SIZE);
        let statement_timeout = v.duration(
            "store.statement_timeout",
            &raw.statement_timeout,
            false,
            DEFAULT_STATEMENT_TIMEOUT,
        );
        let lease = v.duration("store.lease", &raw.lease, false, DEFAULT_LEASE);
        if lease < Duration::from_secs(10) {
            let at = raw.lease.as_ref().map(|l| l.span().start);
            v.problem(
                "store.lease",
                at,
                "below the minimum 10s (a claim must outlast a delivery attempt's first steps)",
            );
        }
        let scan_interval = v.duration(
            "store.scan_interval",
            &raw.scan_interval,
            true,
            DEFAULT_SCAN_INTERVAL,
        );
        let ca_certificates = match &raw.ca_file {
            Some(path) => match crate::ca_file::load(std::path::Path::new(path.get_ref())) {
                Ok(certs) => certs,
                Err(reason) => {
                    v.problem("store.ca_file", Some(path.span().start), reason);
                    return None;
                }
            },
            None => Vec::new(),
        };
        let node = raw
            .node
            .as_ref()
            .map_or_else(|| hostname.to_owned(), |n| n.get_ref().clone());
        Some(PgSettings {
            url: url.get_ref().clone(),
            password,
            pool_size,
            statement_timeout,
            node,
            lease,
            scan_interval,
            ca_certificates,
        })
    }
}
