//! The file as written: one type per table, every table `deny_unknown_fields`. Every value
//! that can be wrong is `Spanned`, so that problems name a line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::check::RawList;
use super::values::{DurationValue, SizeValue};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) hostname: Option<Spanned<String>>,
    pub(super) data_dir: Option<Spanned<String>>,
    pub(super) postmaster: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<Spanned<DurationValue>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) listener: Option<Spanned<Vec<RawListener>>>,
    #[serde(default)]
    pub(super) smtp: RawSmtp,
    #[serde(default)]
    pub(super) queue: RawQueue,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) domain: Vec<RawDomain>,
    #[serde(default)]
    pub(super) mailbox: Vec<RawMailbox>,
    #[serde(default)]
    pub(super) alias: Vec<RawAlias>,
    #[serde(default)]
    pub(super) relocated: Vec<RawRelocated>,
    #[serde(default)]
    pub(super) delivery: RawDelivery,
    #[serde(default)]
    pub(super) smarthost: Vec<RawSmarthost>,
    #[serde(default)]
    pub(super) dkim: Vec<RawDkim>,
    #[serde(default)]
    pub(super) checks: RawChecks,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) record: RawRecord,
    #[serde(default)]
    pub(super) store: RawStore,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) kind: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) pool_size: Option<Spanned<i64>>,
    pub(super) statement_timeout: Option<Spanned<DurationValue>>,
    pub(super) node: Option<Spanned<String>>,
    pub(super) lease: Option<Spanned<DurationValue>>,
    pub(super) scan_interval: Option<Spanned<DurationValue>>,
    pub(super) ca_file: Option<Spanned<String>>,
}

/// `[record]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecord {
    pub(super) networks: Option<RawList>,
    pub(super) max_session_bytes: Option<Spanned<SizeValue>>,
    pub(super) keep: Option<Spanned<i64>>,
    pub(super) keep_for: Option<Spanned<DurationValue>>,
    pub(super) bodies: Option<bool>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) enabled: Option<bool>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
}

/// `[checks]`, and a listener's `checks` table (without `exempt`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChecks {
    pub(super) spf: Option<Spanned<String>>,
    pub(super) dkim: Option<Spanned<String>>,
    pub(super) arc: Option<Spanned<String>>,
    pub(super) dmarc: Option<Spanned<String>>,
    pub(super) exempt: Option<RawList>,
}

/// One `[[dkim]]` key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkim {
    pub(super) domain: Spanned<String>,
    pub(super) selector: Spanned<String>,
    pub(super) key: Spanned<String>,
    pub(super) algorithm: Option<Spanned<String>>,
    pub(super) headers: Option<RawList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub(super) remote_port: Option<Spanned<i64>>,
    pub(super) dns_servers: Option<RawList>,
    pub(super) dns_timeout: Option<Spanned<DurationValue>>,
    pub(super) connect_timeout: Option<Spanned<DurationValue>>,
    pub(super) greeting_timeout: Option<Spanned<DurationValue>>,
    pub(super) command_timeout: Option<Spanned<DurationValue>>,
    pub(super) data_block_timeout: Option<Spanned<DurationValue>>,
    pub(super) data_end_timeout: Option<Spanned<DurationValue>>,
    pub(super) max_mx_hosts: Option<Spanned<i64>>,
    pub(super) per_destination: Option<Spanned<i64>>,
    pub(super) connection_idle: Option<Spanned<DurationValue>>,
    pub(super) delay_warning: Option<Spanned<DurationValue>>,
    pub(super) honour_source_routes: Option<bool>,
    pub(super) local_names: Option<RawList>,
    pub(super) tls: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) domain_tls: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmarthost {
    pub(super) domain: Option<Spanned<String>>,
    pub(super) host: Spanned<String>,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) tls: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) address: Spanned<String>,
    pub(super) kind: Option<Spanned<String>>,
    // Per-listener overrides of [smtp] and [auth].
    pub(super) max_message_size: Option<Spanned<SizeValue>>,
    pub(super) max_recipients: Option<Spanned<i64>>,
    pub(super) max_connections_per_ip: Option<Spanned<i64>>,
    pub(super) vrfy: Option<Spanned<String>>,
    pub(super) expn: Option<Spanned<String>>,
    pub(super) send_soml_saml: Option<bool>,
    pub(super) turn: Option<bool>,
    pub(super) etrn: Option<bool>,
    pub(super) relay_networks: Option<RawList>,
    pub(super) auth_max_failures: Option<Spanned<i64>>,
    pub(super) auth_require_tls: Option<bool>,
    pub(super) checks: Option<Spanned<RawChecks>>,
    pub(super) record: Option<bool>,
    pub(super) proxy_protocol: Option<Spanned<bool>>,
    pub(super) proxy_networks: Option<RawList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<String>,
    pub(super) reload_interval: Option<Spanned<DurationValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) mechanisms: Option<RawList>,
    pub(super) require_tls: Option<bool>,
    pub(super) failure_delay: Option<Spanned<DurationValue>>,
    pub(super) failure_delay_max: Option<Spanned<DurationValue>>,
    pub(super) max_failures: Option<Spanned<i64>>,
    pub(super) sender_must_match: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub(super) max_message_size: Option<Spanned<SizeValue>>,
    pub(super) max_recipients: Option<Spanned<i64>>,
    pub(super) max_line_length: Option<Spanned<i64>>,
    pub(super) max_errors: Option<Spanned<i64>>,
    pub(super) max_hops: Option<Spanned<i64>>,
    pub(super) soft_error_limit: Option<Spanned<i64>>,
    pub(super) error_sleep: Option<Spanned<DurationValue>>,
    pub(super) junk_command_limit: Option<Spanned<i64>>,
    pub(super) recipient_overshoot_limit: Option<Spanned<i64>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_connections_per_ip: Option<Spanned<i64>>,
    pub(super) command_timeout: Option<Spanned<DurationValue>>,
    pub(super) data_block_timeout: Option<Spanned<DurationValue>>,
    pub(super) data_termination_timeout: Option<Spanned<DurationValue>>,
    pub(super) vrfy: Option<Spanned<String>>,
    pub(super) expn: Option<Spanned<String>>,
    pub(super) send_soml_saml: Option<bool>,
    pub(super) help: Option<bool>,
    pub(super) pipelining: Option<bool>,
    pub(super) eight_bit_mime: Option<bool>,
    pub(super) smtputf8: Option<bool>,
    pub(super) chunking: Option<bool>,
    pub(super) enhanced_status_codes: Option<bool>,
    pub(super) dsn: Option<bool>,
    pub(super) binarymime: Option<Spanned<bool>>,
    pub(super) turn: Option<bool>,
    pub(super) etrn: Option<bool>,
    pub(super) relay_networks: Option<RawList>,
    pub(super) limit_exceptions: Option<RawList>,
    pub(super) connection_rate_limit: Option<Spanned<i64>>,
    pub(super) session_lifetime: Option<Spanned<DurationValue>>,
    pub(super) max_session_bytes: Option<Spanned<SizeValue>>,
    pub(super) max_held_bytes: Option<Spanned<SizeValue>>,
    pub(super) auth_failure_rate_limit: Option<Spanned<i64>>,
    pub(super) verify_rate_limit: Option<Spanned<i64>>,
    pub(super) etrn_rate_limit: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub(super) concurrency: Option<Spanned<i64>>,
    pub(super) retry_initial: Option<Spanned<DurationValue>>,
    pub(super) retry_max_backoff: Option<Spanned<DurationValue>>,
    pub(super) give_up_after: Option<Spanned<DurationValue>>,
    pub(super) maildir_sync: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomain {
    pub(super) name: Spanned<String>,
    /// `"maildir"` (the default) or `"lmtp"`.
    pub(super) deliver: Option<Spanned<String>>,
    /// The LMTP server of a `deliver = "lmtp"` domain.
    pub(super) lmtp: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMailbox {
    pub(super) address: Spanned<String>,
    pub(super) full_name: Option<Spanned<String>>,
    /// An argon2 PHC string (`yizhan hash-password`), never a plain password.
    pub(super) password: Option<Spanned<String>>,
    /// Domains whose queued mail this user collects with TURN.
    pub(super) turn_domains: Option<RawList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlias {
    pub(super) address: Spanned<String>,
    pub(super) members: RawList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelocated {
    pub(super) address: Spanned<String>,
    pub(super) new_address: Spanned<String>,
}
