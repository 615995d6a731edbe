//! Remote delivery: one SMTP transaction per destination group.

use std::sync::Arc;

use tracing::{info, warn};
use yizhan_delivery::dsn::{self};
use yizhan_delivery::mx::{self};
use yizhan_delivery::route::{self, Route};
use yizhan_delivery::smtp::{self, Connection, Outcome, Reason, SmtpSettings};
use yizhan_proto::address::{Domain, ForwardPath, ReversePath};
use yizhan_proto::client::{Credentials, Transaction};
use yizhan_proto::command::{MailParams, RcptParams, Ret};
use yizhan_spool::Envelope;

use super::settings::OutboundSettings;
use super::shared::Shared;

/// Whether `address` is in a domain whose mail waits for TURN.
pub(super) fn held_for_turn(outbound: &OutboundSettings, address: &str) -> bool {
    !outbound.held_domains.is_empty()
        && address
            .rsplit_once('@')
            .is_some_and(|(_, d)| outbound.held_domains.contains(&d.to_ascii_lowercase()))
}

/// Recipients for one transaction: (destination key, route, source-routed, (index, RCPT path)).
pub(super) type Group = (String, Route, bool, Vec<(usize, ForwardPath)>);

/// The key that groups recipients into one transaction and bounds per-destination concurrency.
pub(super) fn destination_key(route: &Route) -> String {
    match route {
        Route::Local(_) => "local".into(),
        Route::Smarthost(h) => format!("smarthost:{}:{}", h.host.to_ascii_lowercase(), h.port),
        Route::Mx { domain, .. } => format!("mx:{domain}"),
    }
}

/// The reverse-path of the stored envelope.
pub(super) fn reverse_path(envelope: &Envelope) -> ReversePath {
    if envelope.reverse_path.is_empty() {
        return ReversePath::Null;
    }
    let route = if envelope.reverse_route.is_empty() {
        String::new()
    } else {
        let hops: Vec<String> = envelope
            .reverse_route
            .iter()
            .map(|d| format!("@{d}"))
            .collect();
        format!("{}:", hops.join(","))
    };
    ReversePath::parse(&format!("<{route}{}>", envelope.reverse_path)).unwrap_or(ReversePath::Null)
}

/// One transaction for a group of remote recipients: the hosts of the destination are tried in
/// order until one gives an answer about the message. Returns (index, outcome, next hop
/// offered DSN) per member.
pub(super) async fn deliver_remote(
    shared: &Arc<Shared>,
    envelope: &Envelope,
    key: &str,
    route: &Route,
    source_routed: bool,
    members: &[(usize, ForwardPath)],
) -> Vec<(usize, Outcome, bool)> {
    let all = |outcome: Outcome| -> Vec<(usize, Outcome, bool)> {
        members
            .iter()
            .map(|(i, _)| (*i, outcome.clone(), false))
            .collect()
    };
    let per_dest = shared.destination_permits(key);
    let Ok(_dest) = per_dest.acquire_owned().await else {
        return all(Outcome::Transient(Reason::local(
            "4.3.0",
            "semaphore closed",
        )));
    };
    let Ok(_permit) = shared.deliveries.clone().acquire_owned().await else {
        return all(Outcome::Transient(Reason::local(
            "4.3.0",
            "semaphore closed",
        )));
    };
    let resolver = match shared.resolver() {
        Ok(resolver) => resolver,
        Err(e) => {
            let text = format!("no DNS resolver available: {e}");
            return all(Outcome::Transient(Reason::local("4.4.3", text)));
        }
    };
    let smtp_settings = SmtpSettings {
        helo_name: shared.helo_name(),
        ..shared.outbound.smtp.clone()
    };
    let (targets, tls, auth) = match route {
        Route::Smarthost(h) => (
            mx::host_targets(resolver.as_ref(), std::slice::from_ref(&h.host), h.port).await,
            h.tls,
            h.auth.clone(),
        ),
        Route::Mx { domain, tls } => (
            mx::targets(
                resolver.as_ref(),
                domain,
                smtp_settings.port,
                smtp_settings.max_hosts,
                shared.next_seed(),
            )
            .await,
            *tls,
            None,
        ),
        Route::Local(_) => return all(Outcome::Transient(Reason::local("4.3.0", "misrouted"))),
    };
    let targets = match targets {
        Ok(t) => t,
        Err(e) => {
            let reason = Reason::local(e.status(), e.to_string());
            return all(if e.is_permanent() {
                Outcome::Permanent(reason)
            } else {
                Outcome::Transient(reason)
            });
        }
    };

    let mut from = reverse_path(envelope);
    if source_routed && let Ok(us) = Domain::parse(&shared.settings.hostname) {
        from = route::prepend_hop(&from, &us);
    }
    let mut last_failure: Option<(Reason, bool)> = None;
    let auth_user = auth
        .as_ref()
        .map(|c: &Credentials| c.username.clone())
        .unwrap_or_default();
    for target in &targets {
        let pool_key = format!(
            "{}|{}|{}|{}",
            target.host,
            target.address,
            tls.as_str(),
            auth_user
        );
        let mut conn = match shared.take_connection(&pool_key) {
            Some(conn) => conn,
            None => match Connection::open(
                target,
                tls,
                auth.clone(),
                &smtp_settings,
                shared.tls.as_ref(),
            )
            .await
            {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(queue_id = %envelope.id, host = %target.host, address = %target.address, error = %e, "cannot deliver to this host");
                    let reason = Reason::remote(&target.host, &e.reply());
                    last_failure = Some((reason, e.is_permanent()));
                    continue;
                }
            },
        };
        let dsn = conn.offers_dsn();
        let tx = transaction(envelope, &from, members, dsn);
        let mut body = match shared.spool.open_body(&envelope.id) {
            Ok(body) => body.into_async(),
            Err(e) => {
                shared.return_connection(pool_key, conn);
                return all(Outcome::Transient(Reason::local("4.3.0", e.to_string())));
            }
        };
        let result = conn.send(tx, &mut body).await;
        let host = target.host.clone();
        shared.return_connection(pool_key, conn);
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                last_failure = Some((Reason::remote(&host, &e.reply()), false));
                continue;
            }
        };
        // The whole transaction failed for a reason of this host (MAIL refused with 4xx, the
        // connection lost before any answer): the next host may do better.
        let none_answered =
            result.recipients.iter().all(|(_, r)| r.is_err()) && !result.mail.is_positive();
        if none_answered && result.mail.is_transient() && result.error.is_none() {
            last_failure = Some((Reason::remote(&host, &result.mail), false));
            continue;
        }
        info!(queue_id = %envelope.id, host = %host, address = %target.address, accepted = result.delivered_recipients().count(), "transaction done");
        return members
            .iter()
            .zip(smtp::outcomes(&host, &result, dsn))
            .map(|((i, _), o)| (*i, o, dsn))
            .collect();
    }
    match last_failure {
        Some((reason, true)) => all(Outcome::Permanent(reason)),
        Some((reason, false)) => all(Outcome::Transient(reason)),
        None => all(Outcome::Transient(Reason::local("4.4.1", "no host to try"))),
    }
}

/// The transaction for a group; DSN parameters go along when the next hop offers DSN
/// (RFC 3461 6.2); the session drops them otherwise anyway.
pub(super) fn transaction(
    envelope: &Envelope,
    from: &ReversePath,
    members: &[(usize, ForwardPath)],
    dsn: bool,
) -> Transaction {
    let body = envelope.body_type.as_deref().map(str::to_ascii_uppercase);
    let mut params = MailParams::default();
    if dsn {
        params.envid = envelope.envid.clone();
        params.ret = match envelope
            .ret
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("FULL") => Some(Ret::Full),
            Some("HDRS") => Some(Ret::Hdrs),
            _ => None,
        };
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
                        notify: dsn::notify_param(r.notify.as_deref()),
                        orcpt: dsn::orcpt_param(r.orcpt.as_deref()),
                    }
                } else {
                    RcptParams::default()
                };
                (fp.clone(), rcpt)
            })
            .collect(),
        size: envelope.size,
        eight_bit: body.as_deref() == Some("8BITMIME"),
        needs_smtputf8: envelope.smtputf8,
        binary: body.as_deref() == Some("BINARYMIME"),
    }
}
