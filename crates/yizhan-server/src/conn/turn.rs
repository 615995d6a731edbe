//! TURN (RFC 821 4.1.1) with the ATRN meaning of RFC 2645: after `250` the roles swap on the
//! same socket and the authenticated user's held mail is delivered to them.

use super::*;

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// After `250` to TURN the roles swap on this socket (RFC 821 4.1.1, with the ATRN meaning
    /// of RFC 2645): we become the client, wait for the peer's 220 greeting, and deliver the
    /// queued mail of the domains the authenticated user owns. Returns why the session ended.
    pub(super) async fn turn(&mut self) -> &'static str {
        let Some(user) = self.user.clone() else {
            return "TURN without authentication";
        };
        let domains = self
            .shared
            .settings
            .turn_domains
            .get(&user)
            .cloned()
            .unwrap_or_default();
        let stream: Box<dyn yizhan_delivery::smtp::Duplex> =
            match std::mem::replace(&mut self.stream, Stream::Upgrading) {
                Stream::Plain(s) => Box::new(s),
                Stream::Tls(s) => Box::new(*s),
                Stream::Upgrading => return "TURN on a broken stream",
            };
        let host = match self.session.helo() {
            Some(h) => h.to_string(),
            None => self.peer.ip().to_string(),
        };
        let target = yizhan_delivery::mx::Target {
            host,
            address: self.peer,
        };
        let smtp = crate::listener::outbound_settings(&self.shared.settings).smtp;
        let mut conn = match yizhan_delivery::smtp::Connection::over(stream, target, &smtp).await {
            Ok(conn) => conn,
            Err(error) => {
                warn!(%error, "TURN: the client did not take the server role");
                return "TURN failed";
            }
        };
        match self.shared.runner.deliver_turn(&mut conn, &domains).await {
            Ok(summary) => info!(
                %user,
                messages = summary.messages,
                delivered = summary.delivered,
                deferred = summary.deferred,
                failed = summary.failed,
                "TURN: queued mail delivered"
            ),
            Err(error) => warn!(%error, "TURN: cannot read or record the queue"),
        }
        conn.quit().await;
        "TURN finished"
    }
}
