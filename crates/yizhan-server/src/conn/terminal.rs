//! RFC 821 SEND, SOML and SAML at the end of data: the message shown on the terminals of the
//! local users it was accepted for (`crate::events`, `yizhan watch --user`, the console).
//!
//! A user counts as shown only once one of their terminals has written the message out
//! (within [`TERMINAL_ACK_WAIT`]); otherwise the message goes to their mailbox, whatever the
//! verb: a stopped or vanished terminal never swallows accepted mail.

use std::collections::HashSet;

use crate::events::{TERMINAL_ACK_WAIT, TerminalMessage};

use super::*;

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// SEND and SOML: shows the message (`text`, its start) on the terminals first; the users
    /// it reached are taken out of `envelope`. `Some(reply)` when none is left to queue.
    pub(super) async fn terminals_first(
        &mut self,
        tx: &Transaction,
        text: &[u8],
        envelope: &mut Envelope,
    ) -> Option<Decision> {
        let shown = self.show_on_terminals(tx, text).await;
        if shown.is_empty() {
            return None;
        }
        envelope
            .recipients
            .retain(|r| !shown.contains(&r.address.to_string().to_ascii_lowercase()));
        if !envelope.recipients.is_empty() {
            return None;
        }
        info!(from = %tx.from, users = shown.len(), verb = tx.kind.verb(), "shown on the users' terminals; nothing to queue");
        Some(Decision::Reply(Reply::shown_on_terminal(shown.len())))
    }

    /// Shows the message on the terminal of each local user it was accepted for who has one
    /// open; returns the users (lower-case addresses) whose terminal wrote it out.
    pub(super) async fn show_on_terminals(
        &mut self,
        tx: &Transaction,
        text: &[u8],
    ) -> HashSet<String> {
        let mut shown = HashSet::new();
        let events = self.shared.runner.events().clone();
        let from = tx
            .from
            .mailbox()
            .map(ToString::to_string)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(text).into_owned();
        let users: Vec<String> = tx
            .recipients
            .iter()
            .filter_map(|(to, _)| self.accepted.get(&to.to_string()))
            .flatten()
            .filter_map(|target| match target {
                Target::Local(local) => Some(local.address.to_ascii_lowercase()),
                Target::Remote(_) => None,
            })
            .collect();
        for user in users {
            if shown.contains(&user) || !events.has_terminal(&user) {
                continue;
            }
            let message = TerminalMessage {
                at: jiff::Timestamp::now().as_second(),
                from: from.clone(),
                to: user.clone(),
                verb: tx.kind.verb().to_owned(),
                text: text.clone(),
            };
            if events.show_and_wait(&message, TERMINAL_ACK_WAIT).await {
                info!(%from, to = %user, verb = tx.kind.verb(), "shown on the user's terminal");
                shown.insert(user);
            } else if tx.kind != MailKind::Saml {
                info!(%from, to = %user, verb = tx.kind.verb(), "the user's terminal did not take the message; queued for the mailbox instead");
            }
        }
        shown
    }
}
