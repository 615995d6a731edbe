//! The inbound checks in a session ([`crate::checks`]): SPF at MAIL, DKIM, ARC and DMARC at
//! the end of data, on the message kept whole for them; then our `Authentication-Results:`
//! field (forged ones claiming our name removed) goes to the spool before the message.

use yizhan_proto::address::{Host, ReversePath};
use yizhan_proto::header;

use super::*;
use crate::checks::{Action, Checks, SpfMode};

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The checks this session's mail gets: the listener's, unless the client is one of ours
    /// (authenticated, `relay_networks`) or exempt (`[checks] exempt`, this host by default).
    pub(super) fn checks(&self) -> Checks {
        let ours = self.user.is_some() || self.trusted;
        if ours || self.shared.settings.checks.exempts(self.peer.ip()) {
            return Checks::OFF;
        }
        self.listener.checks
    }

    /// SPF at MAIL: the verdict is kept for the end of data; `reject-fail` may refuse now.
    pub(super) async fn check_sender(&mut self, from: &ReversePath) -> Option<Reply> {
        self.spf = None;
        let checks = self.checks();
        if !checks.needs_spf() {
            return None;
        }
        let Some(checker) = self.shared.checker.clone() else {
            // Checks are on but cannot run: deferred, never passed unchecked.
            warn!("inbound checks are on but DNS could not be set up; answering 451");
            return Some(Reply::local_error());
        };
        let helo = match self.session.helo() {
            Some(Host::Domain(domain)) => domain.to_string(),
            Some(literal @ Host::Literal(_)) => literal.to_string(),
            None => String::new(),
        };
        let sender = match from {
            ReversePath::Null => String::new(),
            ReversePath::Path(path) => path.mailbox.to_string(),
        };
        let hostname = &self.shared.settings.hostname;
        let verdict = checker.spf(self.peer.ip(), &helo, &sender, hostname).await;
        let refusal = verdict.refusal(checks.spf);
        if let Some(reply) = &refusal {
            info!(from = %from, spf = verdict.mail_from_result(), code = reply.code, "mail refused by SPF");
        } else if checks.spf == SpfMode::RejectFail {
            debug!(spf = verdict.mail_from_result(), "spf");
        }
        self.spf = Some(verdict);
        refusal
    }

    /// Whether the message must be kept whole for the checks at its end.
    pub(super) fn checks_need_message(&self) -> bool {
        self.checks().needs_message() || self.spf.is_some()
    }

    /// The checks of the whole `message`: `Err` with the refusal (DMARC `p=reject`, or a
    /// temporary DNS error where a policy would decide); `Ok` with our
    /// `Authentication-Results:` (and quarantine marker) fields, and the message without forged
    /// results under our name.
    pub(super) async fn check_message(
        &mut self,
        message: &[u8],
    ) -> Result<(String, Vec<u8>), Reply> {
        let checks = self.checks();
        let Some(checker) = self.shared.checker.clone() else {
            warn!("inbound checks are on but DNS could not be set up; answering 451");
            return Err(Reply::local_error());
        };
        let hostname = &self.shared.settings.hostname;
        let ip = self.peer.ip();
        let verdict = checker
            .message(message, ip, self.spf.as_ref(), checks, hostname)
            .await;
        match &verdict.action {
            Action::Refuse(reply) => {
                info!(checks = %verdict.summary, code = reply.code, "message refused by the inbound checks");
                return Err(reply.clone());
            }
            Action::Quarantine(domain) => {
                info!(checks = %verdict.summary, %domain, "DMARC quarantine: delivered marked");
            }
            Action::Deliver => info!(checks = %verdict.summary, "inbound checks"),
        }
        let (clean, removed) = header::without_our_results(message, hostname);
        if removed > 0 {
            info!(
                removed,
                "removed Authentication-Results fields forged with our name"
            );
        }
        Ok((verdict.fields, clean))
    }
}
