//! The runner's settings and its clock.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use yizhan_delivery::mx::Ourselves;
use yizhan_delivery::route::RoutingTable;
use yizhan_delivery::smtp::SmtpSettings;
use yizhan_spool::RetryPolicy;

/// The current time in Unix seconds. Injected so that tests can drive it.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix seconds.
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// How the runner works.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// How many deliveries run at once (default 8).
    pub concurrency: usize,
    /// When to retry and when to give up.
    pub retry: RetryPolicy,
    /// The name this server uses for itself (for reports and logs).
    pub hostname: String,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            concurrency: 8,
            retry: RetryPolicy::default(),
            hostname: yizhan_proto::server::ServerConfig::default().hostname,
        }
    }
}

/// How remote delivery and reports work (set with [`QueueRunner::with_outbound`]).
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// Smarthosts, TLS policies, source routes.
    pub routing: RoutingTable,
    /// The SMTP client: remote port, timeouts, MX host cap. `helo_name` defaults to the
    /// runner's hostname when left empty.
    pub smtp: SmtpSettings,
    /// Deliveries at once to one destination (an MX domain or a smarthost; default 4).
    pub per_destination: usize,
    /// How long an idle connection is kept for the next message to the same host (default 5 s).
    pub connection_idle: Duration,
    /// Messages per connection before it is closed (default 100).
    pub messages_per_connection: usize,
    /// After how long a still-undelivered recipient gets a delay warning (default 4 hours;
    /// RFC 3464 "delayed"). `None`: never.
    pub delay_warning: Option<Duration>,
    /// The largest original returned whole in a failure report; larger ones (and every delay
    /// or success report) get the headers only (default 1 MiB).
    pub report_original_limit: u64,
    /// Recipient domains (lower-case) whose mail waits for their client to collect it with
    /// `TURN` ([`RunnerHandle::deliver_turn`], ATRN semantics of RFC 2645): never sent by MX
    /// or smarthost; retried (so they expire and get delay warnings) like any deferred mail.
    pub held_domains: HashSet<String>,
    /// How this server recognises itself among MX hosts and smarthosts (RFC 5321 5.1): mail
    /// that would go back to us fails with "loops back to myself".
    pub ourselves: Ourselves,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            routing: RoutingTable::default(),
            smtp: SmtpSettings {
                helo_name: String::new(),
                ..SmtpSettings::default()
            },
            per_destination: 4,
            connection_idle: Duration::from_secs(5),
            messages_per_connection: 100,
            delay_warning: Some(Duration::from_secs(4 * 3600)),
            report_original_limit: 1024 * 1024,
            held_domains: HashSet::new(),
            ourselves: Ourselves::default(),
        }
    }
}
