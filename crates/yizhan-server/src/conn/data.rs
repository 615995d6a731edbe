//! The message data of a session: the spool writer and its `Received:` line (RFC 5321 4.4),
//! the hop count (RFC 5321 6.3), and the commit at the end of data that makes the 250 a
//! promise.

use yizhan_delivery::dsn::NotifyOn;
use yizhan_proto::command::Notify;

use crate::dkim::SignFor;

/// Why a message is kept whole until its end ([`Connection::held`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hold {
    /// To be DKIM-signed (our user's mail).
    Sign,
    /// To be checked (DKIM, ARC, DMARC: a stranger's mail on a checking listener); our
    /// `Received:` line is written after the results, at the end.
    Check {
        /// Our trace line.
        received: String,
    },
}

use super::*;

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(super) fn body(&mut self, chunk: &[u8]) {
        if self.write_failed {
            return;
        }
        self.hops.feed(chunk);
        if let Some(copy) = self.terminal_copy.as_mut() {
            let room = crate::events::MAX_TERMINAL_TEXT.saturating_sub(copy.len());
            copy.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if let Some((_, message)) = self.held.as_mut() {
            message.extend_from_slice(chunk);
            let kib = message.len().div_ceil(1024);
            if self.reserve_held(kib) {
                return;
            }
            self.held_over_budget();
            return;
        }
        // The header section is kept until its end, then written without any
        // Authentication-Results field claiming our name (RFC 8601 5); the rest streams.
        if let Some((pending, scanned)) = self.header.as_mut() {
            pending.extend_from_slice(chunk);
            if yizhan_proto::header::header_end(pending, *scanned).is_none() {
                *scanned = pending.len();
                return;
            }
            self.flush_header();
            return;
        }
        self.spool_write(chunk);
    }

    /// Takes from the shared budget what the held message needs to reach `kib` KiB; false
    /// when the budget is used up.
    fn reserve_held(&mut self, kib: usize) -> bool {
        let have = self.held_permit.as_ref().map_or(0, |p| p.num_permits());
        if kib <= have {
            return true;
        }
        let more = u32::try_from(kib - have).unwrap_or(u32::MAX);
        match self.shared.held_budget.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                match self.held_permit.as_mut() {
                    Some(held) => held.merge(permit),
                    None => self.held_permit = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// The held message no longer fits the shared budget: it is written to the spool as it
    /// is and the rest streams. A message to be signed goes unsigned; one to be checked is
    /// answered 451 at its end (never passed unchecked).
    fn held_over_budget(&mut self) {
        let Some((hold, message)) = self.held.take() else {
            return;
        };
        self.held_permit = None;
        match hold {
            Hold::Sign => {
                warn!(
                    "too much message data held for signing across sessions; this message goes unsigned"
                );
            }
            Hold::Check { .. } => {
                warn!(
                    "too much message data held for checking across sessions; this message will be answered 451"
                );
                // Refused at its end anyway: the rest is read and dropped, not stored.
                self.over_budget = true;
                self.write_failed = true;
                return;
            }
        }
        let hostname = &self.shared.settings.hostname;
        let (clean, _) = yizhan_proto::header::without_our_results(&message, hostname);
        self.spool_write(&clean);
    }

    /// Writes the header section kept so far (and what followed it in the same piece),
    /// without forged results under our name.
    pub(super) fn flush_header(&mut self) {
        let Some((pending, _)) = self.header.take() else {
            return;
        };
        let hostname = &self.shared.settings.hostname;
        let (clean, removed) = yizhan_proto::header::without_our_results(&pending, hostname);
        if removed > 0 {
            info!(
                removed,
                "removed Authentication-Results fields forged with our name"
            );
        }
        self.spool_write(&clean);
    }

    fn spool_write(&mut self, bytes: &[u8]) {
        if let Some(incoming) = self.incoming.as_mut()
            && let Err(error) = incoming.write(bytes)
        {
            warn!(%error, "spool write failed");
            self.write_failed = true;
        }
    }

    /// Opens the spool writer and writes the `Received:` line (RFC 5321 4.4) first.
    pub(super) fn start_data(&mut self) -> Decision {
        self.write_failed = false;
        self.over_budget = false;
        self.hops = HopCounter::new();
        let to_terminal = self
            .session
            .transaction()
            .is_some_and(|tx| tx.kind != MailKind::Mail);
        self.terminal_copy = to_terminal.then(Vec::new);
        self.data_deadline =
            Some(tokio::time::Instant::now() + self.listener.smtp.timeouts.data_termination);
        let mut incoming = match self.shared.spool.create() {
            Ok(incoming) => incoming,
            Err(error) => {
                warn!(%error, "cannot create a spool file");
                return Decision::Reply(Reply::local_error());
            }
        };
        let received = self.received_line(incoming.id().as_str());
        // Our users' mail (authenticated, or from relay_networks) is signed if a key exists;
        // strangers' is checked if the listener says so.
        let ours = self.user.is_some() || self.trusted;
        self.held = if ours && !self.shared.settings.dkim.is_empty() {
            Some((Hold::Sign, Vec::new()))
        } else if self.checks_need_message() {
            // Our Authentication-Results goes above our Received: (RFC 8601 5), so the
            // trace line waits for the end of data.
            Some((
                Hold::Check {
                    received: received.clone(),
                },
                Vec::new(),
            ))
        } else {
            None
        };
        if !matches!(self.held, Some((Hold::Check { .. }, _)))
            && let Err(error) = incoming.write(received.as_bytes())
        {
            warn!(%error, "spool write failed");
            return Decision::Reply(Reply::local_error());
        }
        self.incoming = Some(incoming);
        self.header = self.held.is_none().then(|| (Vec::new(), 0));
        Decision::Accept
    }

    /// Writes the message kept whole ([`Hold`]): after its `DKIM-Signature:` field when it
    /// is signed, after our `Authentication-Results:` when it is checked. `Err`: why (`checks`
    /// or `spool`) and the reply instead of a 250.
    async fn store_held(&mut self, incoming: &mut Incoming) -> Result<(), (&'static str, Reply)> {
        use crate::dkim::Signer as _;
        let Some((hold, message)) = self.held.take() else {
            return Ok(());
        };
        let spool_error = |error: yizhan_spool::SpoolError| {
            warn!(%error, "spool write failed");
            ("spool", Reply::local_error())
        };
        let stored = match hold {
            Hold::Sign => {
                // Forged results under our name go before the signature covers the message.
                let hostname = &self.shared.settings.hostname;
                let (message, _) = yizhan_proto::header::without_our_results(&message, hostname);
                let signer = &self.shared.settings.dkim;
                match signer.signature(&message, &self.sign_for()) {
                    Ok(Some(field)) => incoming.write(field.as_bytes()).map_err(spool_error)?,
                    Ok(None) => {}
                    // Sent unsigned rather than refused: a missing signature costs less than
                    // a bounce.
                    Err(error) => {
                        warn!(%error, "DKIM signing failed; the message is queued unsigned");
                    }
                }
                message
            }
            Hold::Check { received } => {
                let (fields, clean) = self
                    .check_message(&message)
                    .await
                    .map_err(|reply| ("checks", reply))?;
                incoming.write(fields.as_bytes()).map_err(spool_error)?;
                incoming.write(received.as_bytes()).map_err(spool_error)?;
                clean
            }
        };
        incoming.write(&stored).map_err(spool_error)
    }

    /// Whose `From:` this session's mail may be signed for: anyone's from `relay_networks`,
    /// an authenticated user's own addresses (and owned domains) otherwise.
    fn sign_for(&self) -> SignFor {
        let settings = &self.shared.settings;
        match &self.user {
            _ if self.trusted => SignFor::AnyDomain,
            Some(user) => {
                // Their address and the aliases they belong to: what `policy::owns` lets
                // them send as.
                let mut addresses = vec![user.clone()];
                addresses.extend(
                    settings
                        .directory
                        .aliases()
                        .filter(|(_, members)| members.iter().any(|m| m == user))
                        .map(|(alias, _)| alias.to_string()),
                );
                let owned = settings.turn_domains.get(user);
                SignFor::user(&addresses, owned.map_or(&[][..], Vec::as_slice))
            }
            None => SignFor::User {
                addresses: Vec::new(),
                domains: Vec::new(),
            },
        }
    }

    pub(super) async fn end_of_data(&mut self, transaction: Transaction, size: u64) -> Decision {
        self.data_deadline = None;
        let Some(mut incoming) = self.incoming.take() else {
            return Decision::Reply(Reply::local_error());
        };
        // A message without a body: its header section is all there is.
        self.flush_header();
        if std::mem::take(&mut self.over_budget) {
            self.write_failed = false;
            crate::metrics::message_rejected("busy");
            return Decision::Reply(Reply::too_busy_to_check());
        }
        if std::mem::take(&mut self.write_failed) {
            self.held = None;
            self.held_permit = None;
            return Decision::Reply(Reply::local_error());
        }
        let stored = self.store_held(&mut incoming).await;
        self.held_permit = None;
        if let Err((reason, reply)) = stored {
            crate::metrics::message_rejected(reason);
            return Decision::Reply(reply);
        }
        // RFC 5321 6.3: our own `Received:` line counts as one more hop.
        let hops = self.hops.hops() + 1;
        let max_hops = self.shared.settings.smtp.max_hops;
        if hops > max_hops {
            warn!(from = %transaction.from, hops, max_hops, "message refused: too many hops (a mail loop?)");
            crate::metrics::message_rejected("hops");
            return Decision::Reply(Reply::too_many_hops(max_hops));
        }
        let (mut envelope, expanded) = self.envelope(incoming.id().clone(), &transaction, size);
        let terminal_text = self.terminal_copy.take();
        if let Some(text) = &terminal_text
            && transaction.kind != MailKind::Saml
            && let Some(all_shown) = self
                .terminals_first(&transaction, text, &mut envelope)
                .await
        {
            return all_shown;
        }
        let recipients = envelope.recipients.len();
        if recipients == 0 {
            // Never committed: a message nobody would get, acknowledged, would be lost.
            warn!(from = %transaction.from, "no recipient to queue; message not accepted");
            return Decision::Reply(Reply::local_error());
        }
        let mut stored = envelope.clone();
        stored.size = incoming.size();
        match self.shared.spool.commit(incoming, envelope).await {
            Ok(id) => {
                // The size stored (with our trace fields), as `queue list` shows it: one
                // message, one size.
                let size = stored.size;
                info!(queue_id = %id, from = %transaction.from, size, recipients, "queued");
                crate::metrics::message_accepted("smtp", size);
                self.live.update(|v| v.messages += 1);
                stored.id = id.clone();
                if !expanded.is_empty() {
                    self.shared.runner.report_expanded(stored.clone(), expanded);
                }
                self.shared.runner.submit(stored);
                if let Some(text) = &terminal_text
                    && transaction.kind == MailKind::Saml
                {
                    // SAML: the mailbox first (stored now), then the terminals.
                    self.show_on_terminals(&transaction, text).await;
                }
                Decision::Reply(Reply::queued(id.as_str()))
            }
            Err(error) => {
                warn!(%error, "commit failed; answering 451");
                Decision::Reply(Reply::local_error())
            }
        }
    }

    /// The spool envelope for a finished transaction: aliases expanded, duplicates removed;
    /// and the addresses that expanded to several members with NOTIFY=SUCCESS, owed an
    /// `expanded` report (RFC 3461 6.2.7.3: their members are not asked to report success).
    pub(super) fn envelope(
        &self,
        id: QueueId,
        tx: &Transaction,
        size: u64,
    ) -> (Envelope, Vec<crate::queue::Expanded>) {
        let received_at = jiff::Timestamp::now().as_second();
        let mut recipients: Vec<Recipient> = Vec::new();
        let mut expanded = Vec::new();
        for (to, params) in &tx.recipients {
            let Some(targets) = self.accepted.get(&to.to_string()) else {
                warn!(to = %to, "accepted recipient without a decision; not queued");
                continue;
            };
            let mut notify = params.notify;
            if targets.len() > 1 && NotifyOn::of(notify.as_ref()).success {
                expanded.push(crate::queue::Expanded {
                    address: to.to_string().trim_matches(['<', '>']).to_owned(),
                    original_recipient: params
                        .orcpt
                        .as_ref()
                        .map(|o| format!("{};{}", o.addr_type, o.addr)),
                });
                notify = without_success(notify);
            }
            for target in targets.iter().cloned() {
                let Some(mut recipient) = policy::queued(target, to.clone(), received_at) else {
                    continue;
                };
                if recipients.iter().any(|r| r.address == recipient.address) {
                    continue;
                }
                recipient.notify = notify;
                recipient.orcpt.clone_from(&params.orcpt);
                recipients.push(recipient);
            }
        }
        let envelope = Envelope {
            id,
            received_at,
            size,
            reverse_path: tx.from.clone(),
            envid: tx.params.envid.clone(),
            ret: tx.params.ret,
            body: tx.params.body,
            smtputf8: tx.params.smtputf8,
            client: ClientInfo {
                helo: self.session.helo().cloned(),
                origin: Origin::Network { address: self.peer },
                auth_user: self.user.as_deref().and_then(|u| Mailbox::parse(u).ok()),
                tls: self.tls_info.clone(),
                recording: self.recording.as_ref().map(|r| r.id().to_owned()),
            },
            recipients,
            held: false,
        };
        (envelope, expanded)
    }

    /// The trace line (RFC 5321 4.4): from (HELO name and address) (the TLS version and cipher)
    /// by (us) with (protocol: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA of RFC 3848, or the
    /// UTF8SMTP forms of RFC 6531) id (queue id) for (the recipient when there is exactly one);
    /// date.
    pub(super) fn received_line(&self, id: &str) -> String {
        let helo = match self.session.helo() {
            Some(Host::Domain(d)) => d.to_string(),
            Some(host @ Host::Literal(_)) => host.to_string(),
            None => "unknown".to_string(),
        };
        let tx = self.session.transaction();
        let utf8 = tx.is_some_and(|tx| tx.params.smtputf8);
        let protocol = protocol_name(
            utf8,
            self.session.is_extended(),
            self.session.is_tls(),
            self.user.is_some(),
        );
        let tls = match &self.tls_info {
            Some(described) => format!("\r\n\t(using {described})"),
            None => String::new(),
        };
        // RFC 5321 4.1.3: an IPv6 address literal has the `IPv6:` tag.
        let ip = match self.peer.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => format!("[{v4}]"),
            std::net::IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
        };
        let mut line = format!(
            "Received: from {helo} ({ip}){tls}\r\n\tby {host} (yizhan) with {protocol} id {id}",
            host = self.shared.settings.hostname,
        );
        if let Some(tx) = tx
            && tx.recipients.len() == 1
        {
            line.push_str(&format!("\r\n\tfor {}", tx.recipients[0].0));
        }
        let now = jiff::ZonedDateTime::now();
        let date = jiff::fmt::rfc2822::to_string(&now).unwrap_or_else(|_| now.to_string());
        line.push_str(&format!(";\r\n\t{date}\r\n"));
        line
    }
}

/// The `with` protocol name of RFC 3848 (and RFC 6531 3.7.3 for SMTPUTF8): `S` for TLS, `A` for
/// an authenticated client.
fn protocol_name(utf8: bool, extended: bool, tls: bool, authenticated: bool) -> String {
    let base = match (utf8, extended) {
        (true, _) => "UTF8SMTP",
        (false, true) => "ESMTP",
        (false, false) => return "SMTP".to_owned(),
    };
    let suffix = match (tls, authenticated) {
        (false, false) => "",
        (true, false) => "S",
        (false, true) => "A",
        (true, true) => "SA",
    };
    format!("{base}{suffix}")
}

/// `notify` without SUCCESS, for the members of an expanded address (RFC 3461 6.2.7.3); only
/// SUCCESS asked for becomes NEVER.
fn without_success(notify: Option<Notify>) -> Option<Notify> {
    match notify {
        Some(Notify::On {
            success: true,
            failure,
            delay,
        }) if failure || delay => Some(Notify::On {
            success: false,
            failure,
            delay,
        }),
        Some(Notify::On { success: true, .. }) => Some(Notify::Never),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_of_an_expansion_are_not_asked_for_success() {
        let on = |success, failure, delay| {
            Some(Notify::On {
                success,
                failure,
                delay,
            })
        };
        assert_eq!(
            without_success(on(true, true, false)),
            on(false, true, false)
        );
        assert_eq!(
            without_success(on(true, false, true)),
            on(false, false, true)
        );
        assert_eq!(without_success(on(true, false, false)), Some(Notify::Never));
        assert_eq!(
            without_success(on(false, true, true)),
            on(false, true, true)
        );
        assert_eq!(without_success(Some(Notify::Never)), Some(Notify::Never));
        assert_eq!(without_success(None), None);
    }

    #[test]
    fn protocol_names_follow_rfc_3848() {
        let table = [
            ((false, false, false, false), "SMTP"),
            ((false, true, false, false), "ESMTP"),
            ((false, true, true, false), "ESMTPS"),
            ((false, true, false, true), "ESMTPA"),
            ((false, true, true, true), "ESMTPSA"),
            ((true, true, true, true), "UTF8SMTPSA"),
            ((true, true, false, false), "UTF8SMTP"),
        ];
        for ((utf8, ext, tls, auth), want) in table {
            assert_eq!(protocol_name(utf8, ext, tls, auth), want);
        }
    }
}
