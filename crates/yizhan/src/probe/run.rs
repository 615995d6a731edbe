//! The probe's conversation, step by step: greeting, EHLO, TLS, the facts it offers, then
//! (only when asked) the relay test, AUTH and a test message, then a short list of edge
//! cases, then QUIT. Each step adds checks to the card; a broken connection ends the session
//! with a failed `session` check. Every step is bounded by the timeout and the steps are
//! fixed in number, so a probe always ends.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::RootCertStore;
use rustls::pki_types::{ServerName, UnixTime};
use yizhan_proto::ehlo::Capabilities;
use yizhan_proto::transcript::mask;

use super::card::{Check, Outcome};
use super::certificate::{self, EXPIRY_WARNING_DAYS};
use super::wire::{TlsFacts, Wire, WireError, one_line};

/// Every check the probe may report, in the order it runs them (the catalogue has words for
/// each, in every language).
#[cfg(test)]
pub const CHECKS: [&str; 21] = [
    "greeting",
    "ehlo",
    "starttls",
    "tls_version",
    "certificate_expiry",
    "certificate_name",
    "certificate_chain",
    "auth_in_clear",
    "size",
    "smtputf8",
    "relay",
    "auth",
    "pipelining",
    "postmaster",
    "message",
    "unknown_command",
    "rcpt_before_mail",
    "long_line",
    "quit",
    "session",
    "eightbitmime",
];

/// How long to listen for a reply nobody asked for (a server out of step).
pub(super) const UNASKED_WAIT: Duration = Duration::from_millis(300);

/// How the session is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain text throughout (STARTTLS only reported).
    Plain,
    /// STARTTLS after the first EHLO (RFC 3207).
    StartTls,
    /// TLS from the first byte (RFC 8314 port 465).
    Implicit,
}

/// A user name and password for AUTH.
#[derive(Clone)]
pub struct Login {
    /// The user name.
    pub user: String,
    /// The password (never printed).
    pub password: String,
    /// PLAIN or LOGIN; the probe picks when `None`.
    pub mechanism: Option<String>,
}

/// What to probe and how.
pub struct Plan {
    /// Where to connect.
    pub address: SocketAddr,
    /// The name the certificate must carry (the host as given, or `--tls-name`).
    pub tls_name: ServerName<'static>,
    /// Plain, STARTTLS or implicit TLS.
    pub security: Security,
    /// The name given in EHLO.
    pub helo: String,
    /// The limit for each step.
    pub timeout: Duration,
    /// The authorities a certificate is checked against.
    pub roots: RootCertStore,
    /// AUTH, when asked.
    pub login: Option<Login>,
    /// Whether AUTH may be sent without TLS (`--auth-in-clear`).
    pub auth_in_clear: bool,
    /// A foreign address to try relaying to, when asked.
    pub relay_test: Option<String>,
    /// The envelope sender of the probe's transactions.
    pub from: String,
    /// Where to send a test message, when asked.
    pub send_to: Option<String>,
}

/// The session in progress.
pub struct Prober<'a> {
    pub(super) plan: &'a Plan,
    pub(super) wire: Wire,
    /// The extensions of the latest EHLO.
    pub(super) caps: Capabilities,
    /// The server's name, from its greeting.
    pub(super) server_name: String,
    /// What the handshake gave, once TLS is on.
    pub(super) tls: Option<TlsFacts>,
    /// The checks so far.
    pub checks: Vec<Check>,
}

/// Runs the whole probe: the explained lines and the checks. `Err` only when no connection
/// could be made.
pub async fn probe(plan: &Plan) -> Result<(Vec<yizhan_explain::Line>, Vec<Check>), WireError> {
    let wire = Wire::connect(plan.address, plan.timeout).await?;
    let mut p = Prober {
        plan,
        wire,
        caps: Capabilities::default(),
        server_name: String::new(),
        tls: None,
        checks: Vec::new(),
    };
    // Each step is bounded by the timeout; the whole, too (a server that trickles one line
    // just inside the timeout, over and over, cannot hold the probe for hours).
    let whole = plan.timeout.saturating_mul(WHOLE_PROBE_STEPS);
    match tokio::time::timeout(whole, p.run()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => p.check("session", Outcome::Fail, e.to_string()),
        Err(_) => p.check(
            "session",
            Outcome::Fail,
            WireError::Timeout(whole).to_string(),
        ),
    }
    Ok((p.wire.lines, p.checks))
}

/// The whole probe takes at most this many times the step timeout.
const WHOLE_PROBE_STEPS: u32 = 10;

/// A step broke the session, or a check found the session cannot go on.
#[derive(Debug, thiserror::Error)]
pub(super) enum Stop {
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The session ended where it should (a refused greeting): nothing more to report.
    #[error("")]
    Ended,
}

impl Prober<'_> {
    pub(super) fn check(&mut self, key: &'static str, outcome: Outcome, detail: impl Into<String>) {
        self.checks.push(Check::new(key, outcome, detail));
    }

    async fn run(&mut self) -> Result<(), WireError> {
        match self.steps().await {
            Ok(()) | Err(Stop::Ended) => Ok(()),
            Err(Stop::Wire(e)) => Err(e),
        }
    }

    async fn steps(&mut self) -> Result<(), Stop> {
        if self.plan.security == Security::Implicit {
            self.handshake("implicit").await?;
        }
        self.greeting().await?;
        let clear_caps = self.ehlo().await?;
        if self.plan.security == Security::StartTls {
            self.starttls().await?;
        } else if self.plan.security == Security::Plain {
            let (outcome, term) = if clear_caps.starttls() {
                (Outcome::Info, "offered")
            } else {
                (Outcome::Warn, "not_offered")
            };
            self.check("starttls", outcome, self.term(term));
        }
        self.tls_checks();
        self.auth_in_clear(&clear_caps);
        self.offered_facts();
        if let Some(foreign) = &self.plan.relay_test {
            self.relay_test(foreign).await?;
        } else {
            self.check("relay", Outcome::Skipped, self.term("not_asked_relay"));
        }
        if let Some(login) = &self.plan.login {
            self.auth(login).await?;
        }
        self.pipelining_and_postmaster().await?;
        if let Some(to) = &self.plan.send_to {
            self.message(to).await?;
        }
        self.edge_cases().await?;
        self.quit().await?;
        Ok(())
    }

    pub(super) fn term(&self, key: &str) -> String {
        // The words come from the catalogue at render time; the detail keeps a marker the
        // card replaces (see `card::Card::render`).
        format!("{{{key}}}")
    }

    async fn handshake(&mut self, how: &str) -> Result<(), Stop> {
        let config = yizhan_delivery::smtp::TlsClient::new(RootCertStore::empty())
            .map_err(|e| WireError::Handshake(std::io::Error::other(e)))?
            .config(false);
        match self
            .wire
            .start_tls(config, self.plan.tls_name.clone(), how)
            .await
        {
            Ok(facts) => {
                self.tls = Some(facts);
                Ok(())
            }
            Err(e) => {
                self.check("starttls", Outcome::Fail, e.to_string());
                Err(Stop::Ended)
            }
        }
    }

    async fn greeting(&mut self) -> Result<(), Stop> {
        let reply = self.wire.reply().await?;
        self.server_name = reply
            .lines
            .first()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        if reply.code == 220 {
            self.check("greeting", Outcome::Pass, one_line(&reply));
            return Ok(());
        }
        self.check("greeting", Outcome::Fail, one_line(&reply));
        if reply.code == 554 {
            // RFC 5321 3.1: the client should send QUIT and wait for the 221.
            let _ = self.wire.command("QUIT").await;
        }
        Err(Stop::Ended)
    }

    /// EHLO (HELO when refused): the extensions before any TLS.
    async fn ehlo(&mut self) -> Result<Capabilities, Stop> {
        let reply = self
            .wire
            .command(&format!("EHLO {}", self.plan.helo))
            .await?;
        if reply.code == 250 {
            self.caps = Capabilities::from_ehlo_reply(&reply);
            self.check("ehlo", Outcome::Pass, self.caps.lines().join("; "));
            return Ok(self.caps.clone());
        }
        let helo = self
            .wire
            .command(&format!("HELO {}", self.plan.helo))
            .await?;
        self.caps = Capabilities::default();
        if helo.code == 250 {
            self.check(
                "ehlo",
                Outcome::Warn,
                format!("{} {{helo_only}}", one_line(&reply)),
            );
            Ok(self.caps.clone())
        } else {
            self.check("ehlo", Outcome::Fail, one_line(&helo));
            Err(Stop::Ended)
        }
    }

    async fn starttls(&mut self) -> Result<(), Stop> {
        if !self.caps.starttls() {
            self.check("starttls", Outcome::Fail, self.term("not_offered"));
            return Ok(());
        }
        let reply = self.wire.command("STARTTLS").await?;
        if reply.code != 220 {
            self.check("starttls", Outcome::Fail, one_line(&reply));
            return Ok(());
        }
        self.handshake("STARTTLS").await?;
        let version = self
            .tls
            .as_ref()
            .map(|t| t.version.clone())
            .unwrap_or_default();
        self.check("starttls", Outcome::Pass, version);
        let reply = self
            .wire
            .command(&format!("EHLO {}", self.plan.helo))
            .await?;
        if reply.code != 250 {
            self.check("ehlo", Outcome::Fail, one_line(&reply));
            return Err(Stop::Ended);
        }
        self.caps = Capabilities::from_ehlo_reply(&reply);
        let lines = self.caps.lines().join("; ");
        if let Some(ehlo) = self.checks.iter_mut().find(|c| c.key == "ehlo") {
            ehlo.detail = format!("{lines} {{after_tls}}");
        }
        Ok(())
    }

    /// The TLS version and the certificate, when TLS is on.
    fn tls_checks(&mut self) {
        let Some(facts) = self.tls.clone() else {
            return;
        };
        let modern = matches!(facts.version.as_str(), "TLS 1.3" | "TLS 1.2");
        let outcome = if modern { Outcome::Pass } else { Outcome::Fail };
        self.check(
            "tls_version",
            outcome,
            format!("{} {}", facts.version, facts.cipher),
        );
        let now = UnixTime::now();
        let Some(cert) =
            certificate::examine(&facts.chain, &self.plan.tls_name, &self.plan.roots, now)
        else {
            self.check(
                "certificate_chain",
                Outcome::Fail,
                self.term("no_certificate"),
            );
            return;
        };
        let days = (cert.not_after - now.as_secs() as i64).div_euclid(86_400);
        let until = jiff::Timestamp::from_second(cert.not_after).map_or_else(
            |_| cert.not_after.to_string(),
            |t| t.strftime("%F").to_string(),
        );
        let expiry = if cert.not_after < now.as_secs() as i64 {
            (Outcome::Fail, format!("{{expired}} {until}"))
        } else if cert.not_before > now.as_secs() as i64 {
            (Outcome::Fail, "{not_yet_valid}".to_owned())
        } else if days < EXPIRY_WARNING_DAYS {
            (Outcome::Warn, format!("{until} ({days} {{days_left}})"))
        } else {
            (Outcome::Pass, format!("{until} ({days} {{days_left}})"))
        };
        self.check("certificate_expiry", expiry.0, expiry.1);
        let name = tls_name_text(&self.plan.tls_name);
        let names = cert.names.join(", ");
        match &cert.name {
            Ok(()) => self.check(
                "certificate_name",
                Outcome::Pass,
                format!("{name} ({names})"),
            ),
            Err(why) => self.check(
                "certificate_name",
                Outcome::Fail,
                format!("{name}: {why} ({names})"),
            ),
        }
        match &cert.chain {
            Ok(()) => self.check("certificate_chain", Outcome::Pass, cert.issuer.clone()),
            Err(why) => self.check(
                "certificate_chain",
                Outcome::Fail,
                format!("{}: {why}", cert.issuer),
            ),
        }
    }

    /// AUTH offered before TLS lets a client send its password in clear text (RFC 4954 4).
    fn auth_in_clear(&mut self, clear: &Capabilities) {
        if self.plan.security == Security::Implicit {
            self.check("auth_in_clear", Outcome::Pass, self.term("implicit_tls"));
            return;
        }
        let mechanisms = clear.auth_mechanisms();
        if mechanisms.is_empty() {
            self.check(
                "auth_in_clear",
                Outcome::Pass,
                self.term("auth_not_in_clear"),
            );
        } else {
            self.check(
                "auth_in_clear",
                Outcome::Fail,
                format!("AUTH {}", mechanisms.join(" ")),
            );
        }
    }

    /// SIZE, SMTPUTF8 and 8BITMIME as the server declares them.
    fn offered_facts(&mut self) {
        match self.caps.size() {
            Some(0) => self.check("size", Outcome::Info, self.term("no_fixed_limit")),
            Some(n) => self.check(
                "size",
                Outcome::Pass,
                format!(
                    "{n} {{octets}} ({})",
                    bytesize::ByteSize::b(n).display().iec()
                ),
            ),
            None => self.check("size", Outcome::Warn, self.term("not_offered")),
        }
        let smtputf8 = self.caps.smtputf8();
        self.offered("smtputf8", smtputf8, Outcome::Info);
        let eight_bit = self.caps.eight_bit_mime();
        self.offered("eightbitmime", eight_bit, Outcome::Warn);
    }

    fn offered(&mut self, key: &'static str, offered: bool, otherwise: Outcome) {
        if offered {
            self.check(key, Outcome::Pass, self.term("offered"));
        } else {
            self.check(key, otherwise, self.term("not_offered"));
        }
    }
}

/// The name checked against the certificate, as text.
fn tls_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => format!("{name:?}"),
    }
}

/// `<addr>` for a path.
pub(super) fn path(address: &str) -> String {
    format!("<{address}>")
}

/// base64 of `bytes`.
pub(super) fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The AUTH mechanism to use: the one asked for, else PLAIN, else LOGIN, if offered.
pub(super) fn mechanism(caps: &Capabilities, asked: Option<&str>) -> Option<String> {
    let offered = caps.auth_mechanisms();
    let has = |m: &str| offered.iter().any(|o| o.eq_ignore_ascii_case(m));
    match asked {
        Some(m) => has(m).then(|| m.to_ascii_uppercase()),
        None => ["PLAIN", "LOGIN"]
            .into_iter()
            .find(|m| has(m))
            .map(str::to_owned),
    }
}

/// The secret lines of an AUTH exchange as the transcript shows them.
pub(super) fn masked(mechanism: &str, step: usize, answer: &str) -> String {
    mask(mechanism, step, answer.as_bytes())
}

#[cfg(test)]
mod tests {
    use yizhan_proto::reply::Reply;

    use super::*;

    #[test]
    fn the_mechanism_is_the_one_asked_for_or_plain_or_login() {
        let reply = Reply::multi(
            250,
            None,
            vec!["mx".into(), "AUTH LOGIN PLAIN CRAM-MD5".into()],
        );
        let caps = Capabilities::from_ehlo_reply(&reply);
        assert_eq!(mechanism(&caps, None).as_deref(), Some("PLAIN"));
        assert_eq!(mechanism(&caps, Some("login")).as_deref(), Some("LOGIN"));
        assert_eq!(mechanism(&caps, Some("XOAUTH2")), None);
        let none = Capabilities::from_ehlo_reply(&Reply::new(250, None, "mx"));
        assert_eq!(mechanism(&none, None), None);
    }

    #[test]
    fn a_masked_answer_keeps_no_secret() {
        let plain = b64(b"\0ann@test.example\0hunter2");
        let shown = masked("PLAIN", 0, &plain);
        assert!(
            shown.contains("ann@test.example") && shown.contains("7 octets"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2") && !shown.contains(&plain));
        let pass = b64(b"hunter2");
        assert!(!masked("LOGIN", 1, &pass).contains(&pass));
    }
}
