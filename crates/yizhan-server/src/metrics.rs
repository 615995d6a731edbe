//! Metrics (issue #15): every name and label here once, recorded through the `metrics` facade
//! (a no-op until a recorder is installed, so tests and the in-memory dialogues pay nothing),
//! exposed in the Prometheus text format by the admin listener ([`crate::admin`]).
//!
//! The functions below are the only places a metric is named; callers say what happened
//! ([`connection_opened`], [`message_accepted`], ...), never which counter moves.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const CONNECTIONS: &str = "yizhan_connections_total";
const CONNECTIONS_OPEN: &str = "yizhan_connections_open";
const CONNECTIONS_REFUSED: &str = "yizhan_connections_refused_total";
const REPLIES: &str = "yizhan_smtp_replies_total";
const COMMANDS: &str = "yizhan_smtp_commands_total";
const MESSAGES_ACCEPTED: &str = "yizhan_messages_accepted_total";
const MESSAGE_BYTES: &str = "yizhan_message_bytes_total";
const MESSAGES_REJECTED: &str = "yizhan_messages_rejected_total";
const DELIVERIES: &str = "yizhan_deliveries_total";
const DELIVERY_LATENCY: &str = "yizhan_delivery_latency_seconds";
const TLS_HANDSHAKES: &str = "yizhan_tls_handshakes_total";
const AUTH: &str = "yizhan_auth_total";
const CHECKS: &str = "yizhan_checks_total";
const QUEUE_MESSAGES: &str = "yizhan_queue_messages";
const QUEUE_RECIPIENTS: &str = "yizhan_queue_recipients";
const QUEUE_OLDEST: &str = "yizhan_queue_oldest_message_age_seconds";

/// The recorder's handle, once [`install`] ran.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handle that renders the metrics (`None` until [`install`]).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

/// Installs the process-wide Prometheus recorder (once; `serve` does it before listening) and
/// describes every metric. False if a recorder was already installed.
pub fn install() -> bool {
    if HANDLE.get().is_some() {
        return true;
    }
    let latency = [
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
        86400.0,
    ];
    let commit = [
        0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ];
    let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    let full = |name: &str| metrics_exporter_prometheus::Matcher::Full(name.into());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(full(DELIVERY_LATENCY), &latency)
        .and_then(|b| {
            b.set_buckets_for_metric(full(yizhan_spool::metrics::COMMIT_SECONDS), &commit)
        })
        .and_then(|b| b.set_buckets_for_metric(full(yizhan_spool::metrics::COMMIT_BATCH), &batch))
        .ok()
        .and_then(|builder| builder.install_recorder().ok());
    let Some(handle) = handle else {
        return false;
    };
    describe();
    HANDLE.set(handle).is_ok()
}

fn describe() {
    describe_counter!(CONNECTIONS, "SMTP connections accepted, by listener kind");
    describe_gauge!(
        CONNECTIONS_OPEN,
        "SMTP connections open now, by listener kind"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "SMTP connections refused before the greeting, by reason"
    );
    describe_counter!(
        REPLIES,
        "SMTP replies sent, by code class (2xx, 3xx, 4xx, 5xx)"
    );
    describe_counter!(COMMANDS, "SMTP commands that reached a decision, by verb");
    describe_counter!(
        MESSAGES_ACCEPTED,
        "messages queued (a 250 after DATA), by origin"
    );
    describe_counter!(MESSAGE_BYTES, "bytes of the messages queued");
    describe_counter!(
        MESSAGES_REJECTED,
        "messages refused at the end of data, by reason"
    );
    describe_counter!(
        DELIVERIES,
        "delivery attempts per recipient, by outcome, kind and destination (local, the domain for the first 100 remote ones, then other)"
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        metrics::Unit::Seconds,
        "from the 250 after DATA to final delivery, per recipient"
    );
    describe_counter!(
        TLS_HANDSHAKES,
        "TLS handshakes, by result and protocol version"
    );
    describe_counter!(AUTH, "AUTH attempts, by result");
    describe_counter!(CHECKS, "inbound check verdicts, by check and result");
    describe_gauge!(QUEUE_MESSAGES, "messages in the queue, by state");
    describe_gauge!(
        QUEUE_RECIPIENTS,
        "pending recipients in the queue, by destination"
    );
    describe_gauge!(QUEUE_OLDEST, "age of the oldest message in the queue");
    describe_histogram!(
        yizhan_spool::metrics::COMMIT_BATCH,
        "changes per spool group commit"
    );
    describe_histogram!(
        yizhan_spool::metrics::COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "time of one spool group commit (fsync and WAL sync included when durable)"
    );
}

/// A connection was accepted on a listener of `kind`.
pub fn connection_opened(kind: &'static str) {
    counter!(CONNECTIONS, "listener" => kind).increment(1);
    gauge!(CONNECTIONS_OPEN, "listener" => kind).increment(1.0);
}

/// A connection on a listener of `kind` ended.
pub fn connection_closed(kind: &'static str) {
    gauge!(CONNECTIONS_OPEN, "listener" => kind).decrement(1.0);
}

/// A connection was refused before its session began (`reason`: `rate`, `per_ip`).
pub fn connection_refused(reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// Counts the replies in `bytes` as written to a client (the last line of each reply: a
/// digit, two more, then a space).
pub fn replies_sent(bytes: &[u8]) {
    for line in bytes.split(|&b| b == b'\n') {
        if let [class @ b'2'..=b'5', b'0'..=b'9', b'0'..=b'9', b' ', ..] = line {
            let class = match class {
                b'2' => "2xx",
                b'3' => "3xx",
                b'4' => "4xx",
                _ => "5xx",
            };
            counter!(REPLIES, "class" => class).increment(1);
        }
    }
}

/// A command was read (`verb`, upper case; a line that is no command counts as `unknown`).
pub fn command(verb: &'static str) {
    let verb = if verb == yizhan_proto::server::UNKNOWN_VERB {
        "unknown"
    } else {
        verb
    };
    counter!(COMMANDS, "verb" => verb).increment(1);
}

/// A message of `size` bytes was queued (`origin`: `smtp`, `local`).
pub fn message_accepted(origin: &'static str, size: u64) {
    counter!(MESSAGES_ACCEPTED, "origin" => origin).increment(1);
    counter!(MESSAGE_BYTES).increment(size);
}

/// A message was refused at the end of data (`reason`: `hops`, `checks`, `spool`, ...).
pub fn message_rejected(reason: &'static str) {
    counter!(MESSAGES_REJECTED, "reason" => reason).increment(1);
}

/// Remote destinations that get a `destination` label of their own on the delivery counter;
/// any further one counts as `other` (a million domains must not make a million series).
const MAX_DESTINATION_LABELS: usize = 100;

/// The `destination` label for a recipient: `local`, its domain (lower-case) while fewer than
/// [`MAX_DESTINATION_LABELS`] have been seen, else `other`.
fn destination_label(local: bool, domain: Option<&str>) -> String {
    static SEEN: OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let Some(domain) = domain.filter(|_| !local) else {
        return "local".into();
    };
    let domain = domain.to_ascii_lowercase();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.contains(&domain) || seen.len() < MAX_DESTINATION_LABELS {
        seen.insert(domain.clone());
        domain
    } else {
        "other".into()
    }
}

/// One recipient's attempt ended (`outcome`: `delivered`, `deferred`, `bounced`; `kind`:
/// `local`, `remote`; `domain`: the recipient's); a final delivery `after` the message was
/// accepted.
pub fn delivery(
    outcome: &'static str,
    kind: &'static str,
    domain: Option<&str>,
    after: Option<Duration>,
) {
    if HANDLE.get().is_none() {
        return;
    }
    let destination = destination_label(kind == "local", domain);
    counter!(DELIVERIES, "outcome" => outcome, "kind" => kind, "destination" => destination)
        .increment(1);
    if let Some(after) = after {
        histogram!(DELIVERY_LATENCY, "kind" => kind).record(after.as_secs_f64());
    }
}

/// A TLS handshake ended (`version`: `TLSv1_3`, ... or `failed`).
pub fn tls_handshake(version: String) {
    counter!(TLS_HANDSHAKES, "version" => version).increment(1);
}

/// An AUTH attempt ended (`result`: `success`, `failure`).
pub fn auth(result: &'static str) {
    counter!(AUTH, "result" => result).increment(1);
}

/// An inbound check gave `result` (`check`: `spf`, `dkim`, `arc`, `dmarc`).
pub fn check(check: &'static str, result: &'static str) {
    counter!(CHECKS, "check" => check, "result" => result).increment(1);
}

/// The queue as last counted: messages by state, pending recipients by destination, the
/// oldest message's age.
pub fn queue(by_state: &[(&'static str, usize)], by_destination: &[(String, usize)], oldest: u64) {
    for (state, n) in by_state {
        gauge!(QUEUE_MESSAGES, "state" => *state).set(*n as f64);
    }
    for (destination, n) in by_destination {
        gauge!(QUEUE_RECIPIENTS, "destination" => destination.clone()).set(*n as f64);
    }
    gauge!(QUEUE_OLDEST).set(oldest as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_bounded() {
        assert_eq!(destination_label(true, Some("x.example")), "local");
        let first = destination_label(false, Some("First.Example"));
        assert_eq!(first, "first.example");
        for i in 0..MAX_DESTINATION_LABELS + 10 {
            destination_label(false, Some(&format!("d{i}.example")));
        }
        assert_eq!(destination_label(false, Some("late.example")), "other");
        assert_eq!(
            destination_label(false, Some("FIRST.example")),
            "first.example"
        );
    }
}
