//! Remote delivery: one SMTP transaction per destination group.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use yizhan_delivery::lmtp::{self, LmtpEndpoint};
use yizhan_delivery::mx::{self};
use yizhan_delivery::route::{self, Route, TlsPolicy};
use yizhan_delivery::smtp::{self, Connection, Outcome, Reason, SmtpError, SmtpSettings};
use yizhan_proto::address::{Domain, ForwardPath, Mailbox, ReversePath};
use yizhan_proto::client::{Credentials, Transaction};
use yizhan_proto::command::{Body, MailParams, RcptParams};
use yizhan_spool::Envelope;

use super::destination::Slot;
use super::settings::OutboundSettings;
use super::shared::Shared;

/// Whether `address` is in a domain whose mail waits for TURN.
pub(super) fn held_for_turn(outbound: &OutboundSettings, address: &Mailbox) -> bool {
    !outbound.held_domains.is_empty()
        && super::domain_of(address).is_some_and(|d| outbound.held_domains.contains(&d))
}

/// Recipients for one transaction: (destination key, route, source-routed, (index, RCPT path)).
pub(super) type Group = (String, Route, bool, Vec<(usize, ForwardPath)>);

/// The key that groups recipients into one transaction and bounds per-destination concurrency.
pub(super) fn destination_key(route: &Route) -> String {
    match route {
        Route::Local(_) => "local".into(),
        Route::Lmtp(endpoint) => format!("lmtp:{endpoint}"),
        Route::Smarthost(h) => format!("smarthost:{}:{}", h.host.to_ascii_lowercase(), h.port),
        Route::Mx { domain, .. } => format!("mx:{domain}"),
    }
}

/// What became of one group of recipients for one destination.
pub(super) enum GroupOutcome {
    /// An outcome per member: (index, outcome, next hop offered DSN).
    Done(Vec<(usize, Outcome, bool)>),
    /// The destination has no free permit: nothing was tried, the message waits for one.
    Parked,
    /// The destination is down: deferred without trying, not before `until` (Unix seconds).
    Suspended { until: i64, reason: Reason },
    /// Every place for this destination is taken on the other nodes sharing the queue:
    /// not tried, nothing recorded, looked at again at `until`.
    Later { until: i64 },
}

/// One transaction for a group of remote recipients, if the destination has room for it:
/// the hosts of the destination are tried in order until one gives an answer about the
/// message.
pub(super) async fn deliver_remote(
    shared: &Arc<Shared>,
    envelope: &Envelope,
    (key, route, source_routed, members): (&str, &Route, bool, &[(usize, ForwardPath)]),
    cancel: &CancellationToken,
) -> GroupOutcome {
    let all = |outcome: Outcome| {
        GroupOutcome::Done(
            members
                .iter()
                .map(|(i, _)| (*i, outcome.clone(), false))
                .collect(),
        )
    };
    let _dest = match shared.destination_slot(key, shared.clock.now()) {
        Slot::Go(permit) => permit,
        Slot::Busy => return GroupOutcome::Parked,
        Slot::Down { until, reason } => {
            let text = format!("delivery temporarily suspended: {reason}");
            return GroupOutcome::Suspended {
                until,
                reason: Reason::local("4.4.1", text),
            };
        }
    };
    let Ok(_permit) = shared.deliveries.clone().acquire_owned().await else {
        return all(Outcome::Transient(Reason::local(
            "4.3.0",
            "semaphore closed",
        )));
    };
    // With a shared queue the limit per destination holds across the nodes too.
    let per_destination = shared.config().outbound.per_destination.max(1);
    let _cluster = match shared.spool.destination_permit(key, per_destination).await {
        Ok(Some(permit)) => permit,
        Ok(None) => {
            debug!(queue_id = %envelope.id, destination = %key, "every place taken on the other nodes");
            return GroupOutcome::Later {
                until: shared.clock.now() + 1,
            };
        }
        Err(e) => return all(Outcome::Transient(Reason::local("4.3.0", e.to_string()))),
    };
    let smtp_settings = SmtpSettings {
        helo_name: shared.helo_name(),
        ..shared.config().outbound.smtp.clone()
    };
    let hosts = match hosts_of(shared, route, &smtp_settings).await {
        Ok(hosts) => hosts,
        Err(outcome) => return all(outcome),
    };
    let mut from = envelope.reverse_path.clone();
    if source_routed && let Ok(us) = Domain::parse(&shared.config().settings.hostname) {
        from = route::prepend_hop(&from, &us);
    }
    let attempt = Attempt {
        shared,
        envelope,
        from: &from,
        members,
        tls: hosts.tls,
        auth: hosts.auth,
        lmtp: hosts.lmtp,
        settings: &smtp_settings,
        cancel,
    };
    match attempt.hosts(&hosts.targets).await {
        Tried::Answered(outcomes) => {
            shared.destination_answered(key);
            GroupOutcome::Done(outcomes)
        }
        Tried::Deleted => {
            let reason = Reason::local("4.3.0", "the message was deleted during delivery");
            all(Outcome::Transient(reason))
        }
        Tried::Failed {
            reason,
            permanent,
            answered,
        } => {
            if answered {
                shared.destination_answered(key);
            } else if !hosts.targets.is_empty() {
                shared.destination_failed(key, shared.clock.now(), &reason.text);
            }
            all(failure(reason, permanent))
        }
    }
}

/// The hosts of a route, in order, with the TLS policy and credentials to use with them.
struct Hosts {
    targets: Vec<mx::Target>,
    tls: TlsPolicy,
    auth: Option<Credentials>,
    /// LMTP to this mail store, not SMTP.
    lmtp: Option<LmtpEndpoint>,
}

/// Resolves a route into its hosts (MX, or a smarthost's addresses), without ourselves; the
/// outcome for every member when that fails.
async fn hosts_of(
    shared: &Arc<Shared>,
    route: &Route,
    settings: &SmtpSettings,
) -> Result<Hosts, Outcome> {
    let resolver = shared.resolver().map_err(|e| {
        let text = format!("no DNS resolver available: {e}");
        Outcome::Transient(Reason::local("4.4.3", text))
    })?;
    let ourselves = &shared.config().outbound.ourselves;
    if let Route::Lmtp(endpoint) = route {
        // The mail store: no MX, never "ourselves" (it is usually on this very host).
        let targets = match (endpoint.unix_target(), endpoint.tcp()) {
            (Some(target), _) => Ok(vec![target]),
            (None, Some((host, port))) => {
                mx::host_targets(resolver.as_ref(), &[host.to_owned()], port).await
            }
            (None, None) => Ok(Vec::new()),
        };
        return match targets {
            Ok(targets) => Ok(Hosts {
                targets,
                tls: TlsPolicy::None,
                auth: None,
                lmtp: Some(endpoint.clone()),
            }),
            Err(e) => Err(failure(Reason::local(e.status(), e.to_string()), false)),
        };
    }
    let (targets, tls, auth) = match route {
        Route::Smarthost(h) => {
            let targets =
                mx::host_targets(resolver.as_ref(), std::slice::from_ref(&h.host), h.port).await;
            // A smarthost that is ourselves loops as surely as an MX that is (RFC 5321 5.1).
            let ours = |t: &mx::Target| ourselves.is_self(&t.host, Some(t.address));
            let targets = targets.and_then(|t| {
                if t.iter().all(ours) {
                    Err(mx::MxError::LoopsBack(h.host.clone()))
                } else {
                    Ok(t)
                }
            });
            (targets, h.tls, h.auth.clone())
        }
        Route::Mx { domain, tls } => {
            let seed = fastrand::u64(..);
            let (port, cap) = (settings.port, settings.max_hosts);
            let targets = mx::targets(resolver.as_ref(), domain, port, cap, seed, ourselves).await;
            (targets, *tls, None)
        }
        Route::Local(_) | Route::Lmtp(_) => {
            return Err(Outcome::Transient(Reason::local("4.3.0", "misrouted")));
        }
    };
    match targets {
        Ok(targets) => Ok(Hosts {
            targets,
            tls,
            auth,
            lmtp: None,
        }),
        Err(e) => Err(failure(
            Reason::local(e.status(), e.to_string()),
            e.is_permanent(),
        )),
    }
}

/// A failure, permanent or not.
fn failure(reason: Reason, permanent: bool) -> Outcome {
    if permanent {
        Outcome::Permanent(reason)
    } else {
        Outcome::Transient(reason)
    }
}

/// One attempt at a group on the hosts of its destination.
struct Attempt<'a> {
    shared: &'a Arc<Shared>,
    envelope: &'a Envelope,
    from: &'a ReversePath,
    members: &'a [(usize, ForwardPath)],
    tls: TlsPolicy,
    auth: Option<Credentials>,
    /// LMTP to this mail store, not SMTP.
    lmtp: Option<LmtpEndpoint>,
    settings: &'a SmtpSettings,
    /// The operator deleted the message: stop, and cut a transaction under way short.
    cancel: &'a CancellationToken,
}

/// What trying the hosts came to.
enum Tried {
    /// A host gave an answer about the message: an outcome per member.
    Answered(Vec<(usize, Outcome, bool)>),
    /// The operator deleted the message: stopped, says nothing about the destination.
    Deleted,
    /// No host did; `answered`: some host answered at all (the destination is not down).
    Failed {
        reason: Reason,
        permanent: bool,
        answered: bool,
    },
}

impl Attempt<'_> {
    /// Tries the hosts in order until one gives an answer about the message.
    async fn hosts(&self, targets: &[mx::Target]) -> Tried {
        let mut last_failure: Option<(Reason, bool)> = None;
        let mut answered = false;
        for target in targets {
            if self.cancel.is_cancelled() {
                break;
            }
            match self.on_host(target, &mut answered).await {
                OnHost::Done(tried) => return tried,
                OnHost::Next { reason, permanent } => last_failure = Some((reason, permanent)),
            }
        }
        let (reason, permanent) =
            last_failure.unwrap_or_else(|| (Reason::local("4.4.1", "no host to try"), false));
        Tried::Failed {
            reason,
            permanent,
            answered,
        }
    }

    /// One host: a connection (kept or new), then the transaction; `answered` is set once the
    /// host has said anything.
    async fn on_host(&self, target: &mx::Target, answered: &mut bool) -> OnHost {
        let (shared, envelope) = (self.shared, self.envelope);
        let pool_key = self.pool_key(target);
        let mut conn = match self.connect(target, &pool_key).await {
            Ok(conn) => conn,
            Err(Some(e)) => {
                warn!(queue_id = %envelope.id, host = %target.host, address = %target.address, error = %e, "cannot deliver to this host");
                *answered |= !unreachable(&e);
                // What the host said, if it said anything; else what we could not do.
                let reason = match e.server_reply() {
                    Some(reply) => Reason::remote(&target.host, reply),
                    None => Reason::not_reached(&e),
                };
                let permanent = e.is_permanent();
                return OnHost::Next { reason, permanent };
            }
            Err(None) => return OnHost::Done(Tried::Deleted),
        };
        *answered = true;
        let dsn = conn.offers_dsn();
        let tx = transaction(envelope, self.from, self.members, dsn);
        let mut body = match shared.spool.open_body(&envelope.id).await {
            Ok(body) => body.into_async(),
            Err(e) => {
                shared.return_connection(pool_key, conn);
                let reason = Reason::local("4.3.0", e.to_string());
                let (permanent, answered) = (false, true);
                return OnHost::Done(Tried::Failed {
                    reason,
                    permanent,
                    answered,
                });
            }
        };
        let host = target.host.clone();
        let result = tokio::select! {
            result = conn.send(tx, &mut body) => result,
            () = self.cancel.cancelled() => {
                // Dropped without QUIT: a peer that has not seen the end of the data
                // discards the message (RFC 5321 4.1.1.4).
                info!(queue_id = %envelope.id, host = %host, "transaction cut short: the message was deleted");
                return OnHost::Done(Tried::Deleted);
            }
        };
        shared.return_connection(pool_key, conn);
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let reason = Reason::remote(&host, &e.reply());
                return OnHost::Next {
                    reason,
                    permanent: false,
                };
            }
        };
        // The whole transaction failed for a reason of this host (MAIL refused with 4xx, the
        // connection lost before any answer): the next host may do better.
        let none_answered =
            result.recipients.iter().all(|(_, r)| r.is_err()) && !result.mail.is_positive();
        if none_answered && result.mail.is_transient() && result.error.is_none() {
            let reason = Reason::remote(&host, &result.mail);
            return OnHost::Next {
                reason,
                permanent: false,
            };
        }
        let protocol = if self.lmtp.is_some() { "lmtp" } else { "smtp" };
        info!(queue_id = %envelope.id, host = %host, address = %target.address, protocol = %protocol, accepted = result.delivered_recipients().count(), "transaction done");
        let outcomes = smtp::outcomes(&host, &result, dsn);
        OnHost::Done(Tried::Answered(
            self.members
                .iter()
                .zip(outcomes)
                .map(|((i, _), o)| (*i, o, dsn))
                .collect(),
        ))
    }

    /// The key of the connections kept for this host, policy and user.
    fn pool_key(&self, target: &mx::Target) -> String {
        let user = self.auth.as_ref().map_or("", |c| c.username.as_str());
        let tls = self.tls.as_str();
        let protocol = if self.lmtp.is_some() { "lmtp" } else { "smtp" };
        format!("{protocol}|{}|{}|{tls}|{user}", target.host, target.address)
    }

    /// A kept connection to the host, or a new one; `Err(None)` if the message was deleted
    /// meanwhile.
    async fn connect(
        &self,
        target: &mx::Target,
        pool_key: &str,
    ) -> Result<Connection, Option<SmtpError>> {
        if let Some(conn) = self.shared.take_connection(pool_key) {
            return Ok(conn);
        }
        let open = async {
            match &self.lmtp {
                Some(endpoint) => lmtp::connect(endpoint, target, self.settings).await,
                None => {
                    let tls_client = self.shared.tls.as_ref();
                    let auth = self.auth.clone();
                    Connection::open(target, self.tls, auth, self.settings, tls_client).await
                }
            }
        };
        tokio::select! {
            opened = open => opened.map_err(Some),
            () = self.cancel.cancelled() => Err(None),
        }
    }
}

/// What one host came to: an end for the group, or on to the next host.
enum OnHost {
    Done(Tried),
    Next { reason: Reason, permanent: bool },
}

/// Whether opening a connection failed without any answer from the host (refused, timed
/// out, closed before the greeting): what makes a destination down when no host answers.
fn unreachable(e: &SmtpError) -> bool {
    matches!(
        e,
        SmtpError::Io { .. } | SmtpError::Timeout { .. } | SmtpError::Closed { .. }
    )
}

/// The transaction for a group; DSN parameters go along when the next hop offers DSN
/// (RFC 3461 6.2); the session drops them otherwise anyway.
pub(super) fn transaction(
    envelope: &Envelope,
    from: &ReversePath,
    members: &[(usize, ForwardPath)],
    dsn: bool,
) -> Transaction {
    let mut params = MailParams::default();
    if dsn {
        params.envid = envelope.envid.clone();
        params.ret = envelope.ret;
    }
    Transaction {
        from: from.clone(),
        params,
        recipients: members
            .iter()
            .map(|(i, fp)| {
                let r = &envelope.recipients[*i];
                let rcpt = if dsn {
                    RcptParams {
                        notify: r.notify,
                        orcpt: r.orcpt.clone(),
                    }
                } else {
                    RcptParams::default()
                };
                (fp.clone(), rcpt)
            })
            .collect(),
        size: envelope.size,
        eight_bit: envelope.body == Some(Body::EightBitMime),
        needs_smtputf8: envelope.smtputf8,
        binary: envelope.body == Some(Body::BinaryMime),
    }
}
