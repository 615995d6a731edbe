//! AUTH (RFC 4954) in a session: the SASL steps, the failure policy and the per-address
//! rate limits ([`crate::limits`]).

use super::*;

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Carries an AUTH exchange one step further (RFC 4954 4).
    pub(super) async fn auth_step(&mut self, step: Step) -> Decision {
        match step {
            Step::Challenge(reply) => Decision::Reply(reply),
            Step::Fail(reply) => {
                self.auth = None;
                self.auth_failed(None, reply).await
            }
            Step::Verify { user, password } => {
                self.auth = None;
                let credentials = self.shared.credentials.clone();
                let checks = &self.shared.password_checks;
                match auth::verify(checks, credentials, user.clone(), password).await {
                    Ok(Some(canonical)) => {
                        info!(user = %canonical, "authenticated");
                        crate::metrics::auth("success");
                        self.live.update(|v| v.user = Some(canonical.clone()));
                        self.user = Some(canonical);
                        Decision::Reply(Reply::auth_ok())
                    }
                    Ok(None) => self.auth_failed(Some(&user), Reply::auth_failed()).await,
                    Err(error) => {
                        warn!(%error, "password check failed");
                        Decision::Reply(Reply::auth_temp_failure())
                    }
                }
            }
        }
    }

    /// Counts one `event` against the client address's rate limit; true if within it (or the
    /// client is exempt).
    pub(super) fn allow(&self, event: Limited) -> bool {
        self.exempt || self.shared.limits.allow(event, self.peer.ip())
    }

    /// A failed attempt: logged (never with the password), then a growing delay, and after
    /// `max_failures` the connection is closed with 421.
    pub(super) async fn auth_failed(&mut self, user: Option<&str>, reply: Reply) -> Decision {
        self.auth_failures += 1;
        crate::metrics::auth("failure");
        if !self.allow(Limited::AuthFailure) {
            warn!(client = %self.peer.ip(), "too many failed AUTH attempts from this address; closing");
            let host = self.shared.settings.hostname.clone();
            return Decision::Close(Reply::rate_limited(&host, "failed AUTH attempts"));
        }
        let policy = &self.listener.auth;
        warn!(
            client = %self.peer.ip(),
            user = user.unwrap_or("<malformed>"),
            failures = self.auth_failures,
            "authentication failed"
        );
        if self.auth_failures >= policy.max_failures {
            warn!(client = %self.peer.ip(), "too many authentication failures; closing");
            let host = self.shared.settings.hostname.clone();
            return Decision::Close(Reply::auth_too_many_failures(&host));
        }
        let delay = auth::failure_delay(
            self.auth_failures,
            policy.failure_delay,
            policy.failure_delay_max,
        );
        tokio::time::sleep(delay).await;
        Decision::Reply(reply)
    }
}
