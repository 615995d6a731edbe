//! The session's questions answered: each command that needs a decision goes to
//! [`crate::policy`], [`crate::auth`], the checks or the runner from here, one method per
//! command with more than a line to say.

use super::*;

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(super) async fn answer(&mut self, question: Question) -> Decision {
        let directory = &self.shared.settings.directory;
        match question {
            Question::Helo { host, extended } => {
                debug!(%host, extended, "helo");
                Decision::Accept
            }
            Question::Mail { kind, from, params } => self.answer_mail(kind, from, params).await,
            Question::Rcpt { to, .. } => self.answer_rcpt(to),
            Question::Vrfy(_) | Question::Expn(_) if !self.allow(Limited::Verify) => {
                info!("VRFY/EXPN refused: rate limit of the client address");
                Decision::Reply(Reply::verify_rate_limited())
            }
            Question::Vrfy(query) => policy::vrfy(directory, self.listener.smtp.vrfy, &query),
            Question::Expn(query) => policy::expn(directory, self.listener.smtp.expn, &query),
            Question::Data => self.start_data(),
            Question::EndOfData { transaction, size } => {
                Box::pin(self.end_of_data(transaction, size)).await
            }
            Question::Auth { mechanism, initial } => {
                let Some(mechanism) = Mechanism::from_name(&mechanism) else {
                    return Decision::Reply(Reply::auth_mechanism_unknown());
                };
                debug!(%mechanism, initial = initial.is_some(), "auth");
                let (exchange, step) = Exchange::start(mechanism, initial);
                self.auth = Some(exchange);
                self.auth_step(step).await
            }
            Question::AuthResponse(data) => match self.auth.as_mut() {
                Some(exchange) => {
                    let step = exchange.respond(data);
                    self.auth_step(step).await
                }
                None => Decision::Reply(Reply::auth_failed()),
            },
            Question::Etrn(node) => self.answer_etrn(node),
            Question::Turn => self.answer_turn(),
        }
    }

    async fn answer_mail(
        &mut self,
        kind: MailKind,
        from: yizhan_proto::address::ReversePath,
        params: yizhan_proto::command::MailParams,
    ) -> Decision {
        // RFC 4954 5: AUTH= is kept only from an authenticated client; from anyone else
        // it is treated as AUTH=<>. Outbound relaying uses the authenticated user.
        let auth_param = match (&params.auth, &self.user) {
            (Some(_), Some(_)) => "kept",
            (Some(_), None) => "ignored (treated as AUTH=<>)",
            (None, _) => "none",
        };
        // A new transaction: what earlier RCPTs accepted is forgotten.
        self.accepted.clear();
        // Accepted senders and recipients are logged at debug: the "queued" line names
        // the sender and the runner's lines each recipient, as Postfix's do.
        debug!(from = %from, ?kind, size = ?params.size, auth_param, "mail");
        let directory = &self.shared.settings.directory;
        let (decision, rule) =
            policy::mail_with_rule(directory, &self.listener, &self.client(), &from);
        if let Decision::Reply(reply) = &decision {
            info!(from = %from, rule, reply = %reply, "mail rejected");
            return decision;
        }
        match self.check_sender(&from).await {
            Some(refusal) => Decision::Reply(refusal),
            None => decision,
        }
    }

    fn answer_rcpt(&mut self, to: ForwardPath) -> Decision {
        let settings = &self.shared.settings;
        let kind = self
            .session
            .transaction()
            .map_or(MailKind::Mail, |tx| tx.kind);
        let relay = self.client().may_relay();
        let delivery = &settings.delivery;
        let names = delivery
            .honour_source_routes
            .then(|| delivery.our_names(&settings.hostname));
        let events = self.shared.runner.events();
        let terminals = |user: &str| events.has_terminal(user);
        let answer = policy::recipient(
            &settings.directory,
            kind,
            &to,
            relay,
            names.as_deref(),
            &terminals,
        );
        let (decision, rule) = (answer.decision, answer.rule);
        if !answer.targets.is_empty() {
            self.accepted.insert(to.to_string(), answer.targets);
        }
        if let ForwardPath::Path(path) = &to
            && !path.route.is_empty()
        {
            info!(route = ?path.route.iter().map(|d| d.to_string()).collect::<Vec<_>>(), "source route given; delivering to the mailbox");
        }
        match &decision {
            Decision::Accept => debug!(to = %to, "rcpt accepted"),
            Decision::Reply(reply) | Decision::Close(reply) => {
                let verdict = if reply.is_positive() {
                    "accepted"
                } else {
                    "rejected"
                };
                info!(to = %to, rule, reply = %reply, "rcpt {verdict}")
            }
        }
        decision
    }

    fn answer_etrn(&mut self, node: String) -> Decision {
        if !self.trusted && self.user.is_none() {
            // Issue #13: a queue run costs work and connections; strangers cannot ask.
            info!("ETRN refused: client neither in relay_networks nor authenticated");
            return Decision::Reply(Reply::auth_required());
        }
        if !self.allow(Limited::Etrn) {
            info!(%node, "ETRN refused: rate limit of the client address");
            return Decision::Reply(Reply::etrn_refused(&node));
        }
        // RFC 1985 3: "domain", "@domain" (and its subdomains; we flush the domain) or
        // "#queue" (we have one queue: everything).
        let domain = match node.strip_prefix('#') {
            Some(_) => None,
            None => Some(node.trim_start_matches('@').to_ascii_lowercase()),
        };
        info!(%node, "ETRN: queue run started");
        self.shared.runner.flush(domain);
        Decision::Reply(Reply::etrn_started(&node))
    }

    fn answer_turn(&self) -> Decision {
        match &self.user {
            None => Decision::Reply(Reply::turn_needs_auth()),
            Some(user)
                if self
                    .shared
                    .settings
                    .turn_domains
                    .get(user)
                    .is_some_and(|d| !d.is_empty()) =>
            {
                info!(%user, "TURN accepted; turning around");
                Decision::Accept
            }
            Some(user) => {
                info!(%user, "TURN refused: the user owns no domain");
                Decision::Reply(Reply::turn_refused())
            }
        }
    }
}
