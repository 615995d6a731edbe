//! The probe's later steps: the relay test, AUTH, pipelining and `<Postmaster>`, the test
//! message, the edge cases, QUIT. Each ends in checks; a step that cannot run says why.

use yizhan_proto::data::DotStuffer;
use yizhan_proto::reply::Reply;

use super::card::Outcome;
use super::run::{Login, Prober, Stop, UNASKED_WAIT, b64, masked, mechanism, path};
use super::wire::{WireError, one_line};

/// The over-long line: eight times RFC 5321's 512-octet limit for a command line
/// (4.5.3.1.4).
const LONG_LINE: usize = 4096;

/// A command no server knows (the adventure game's magic word, as every SMTP tester uses).
const UNKNOWN_COMMAND: &str = "XYZZY";

impl Prober<'_> {
    /// Tries to relay to `foreign` without authenticating: plainly, with RFC 821's source
    /// route through the server, and with the `%` hack. Any 2xx to RCPT is an open relay.
    pub(super) async fn relay_test(&mut self, foreign: &str) -> Result<(), Stop> {
        let mut variants = vec![path(foreign)];
        if !self.server_name.is_empty() {
            let server = self.server_name.clone();
            variants.push(format!("<@{server}:{foreign}>"));
            if let Some((user, domain)) = foreign.rsplit_once('@') {
                variants.push(format!("<{user}%{domain}@{server}>"));
            }
        }
        let mut seen = Vec::new();
        let mut open = false;
        for variant in &variants {
            let mail = self
                .wire
                .command(&format!("MAIL FROM:{}", path(&self.plan.from)))
                .await?;
            if !mail.is_positive() {
                self.check(
                    "relay",
                    Outcome::Skipped,
                    format!("MAIL: {}", one_line(&mail)),
                );
                self.wire.command("RSET").await?;
                return Ok(());
            }
            let rcpt = self.wire.command(&format!("RCPT TO:{variant}")).await?;
            open |= rcpt.is_positive();
            seen.push(format!("{variant}: {}", one_line(&rcpt)));
            self.wire.command("RSET").await?;
        }
        let outcome = if open { Outcome::Fail } else { Outcome::Pass };
        self.check("relay", outcome, seen.join("; "));
        Ok(())
    }

    /// AUTH PLAIN (one line) or AUTH LOGIN (the two prompts the seed's capture shows), with
    /// the secrets masked in the transcript before they are written down.
    pub(super) async fn auth(&mut self, login: &Login) -> Result<(), Stop> {
        if !self.wire.tls() && !self.plan.auth_in_clear {
            self.check("auth", Outcome::Skipped, self.term("not_sent_in_clear"));
            return Ok(());
        }
        let Some(mech) = mechanism(&self.caps, login.mechanism.as_deref()) else {
            let offered = self.caps.auth_mechanisms().join(" ");
            self.check(
                "auth",
                Outcome::Fail,
                format!("{{auth_not_offered}} ({offered})"),
            );
            return Ok(());
        };
        let last = if mech == "PLAIN" {
            let initial = b64(format!("\0{}\0{}", login.user, login.password).as_bytes());
            let shown = format!("AUTH PLAIN {}", masked("PLAIN", 0, &initial));
            self.wire
                .send_secret(&format!("AUTH PLAIN {initial}"), shown)
                .await?;
            self.wire.reply().await?
        } else {
            self.login(login).await?
        };
        let outcome = if last.code == 235 {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        self.check(
            "auth",
            outcome,
            format!("{} ({mech}): {}", login.user, one_line(&last)),
        );
        Ok(())
    }

    /// AUTH LOGIN: the user name and the password, each after its 334 prompt.
    async fn login(&mut self, login: &Login) -> Result<Reply, WireError> {
        let reply = self.wire.command("AUTH LOGIN").await?;
        if reply.code != 334 {
            return Ok(reply);
        }
        let user = b64(login.user.as_bytes());
        self.wire
            .send_secret(&user, masked("LOGIN", 0, &user))
            .await?;
        let reply = self.wire.reply().await?;
        if reply.code != 334 {
            return Ok(reply);
        }
        let password = b64(login.password.as_bytes());
        self.wire
            .send_secret(&password, masked("LOGIN", 1, &password))
            .await?;
        self.wire.reply().await
    }

    /// MAIL, RCPT TO:<Postmaster> and RSET: in one write when PIPELINING is offered (the
    /// replies must come back whole and in order, and no more of them), one by one otherwise.
    /// The RCPT answers whether the server takes mail for `<Postmaster>` (RFC 5321 4.5.1).
    pub(super) async fn pipelining_and_postmaster(&mut self) -> Result<(), Stop> {
        let commands = [
            format!("MAIL FROM:{}", path(&self.plan.from)),
            "RCPT TO:<Postmaster>".to_owned(),
            "RSET".to_owned(),
        ];
        let mut replies = Vec::new();
        if self.caps.pipelining() {
            self.wire.send_together(&commands).await?;
            for _ in &commands {
                replies.push(self.wire.reply().await?);
            }
            let extra = self.wire.unasked(UNASKED_WAIT).await;
            let codes: Vec<String> = replies.iter().map(|r| r.code.to_string()).collect();
            let in_step = !extra && replies[2].code == 250;
            let outcome = if in_step {
                Outcome::Pass
            } else {
                Outcome::Fail
            };
            let more = if extra { " {more_replies}" } else { "" };
            self.check("pipelining", outcome, format!("{}{more}", codes.join(", ")));
            if extra {
                return Err(Stop::Ended);
            }
        } else {
            for command in &commands {
                replies.push(self.wire.command(command).await?);
            }
            self.check("pipelining", Outcome::Info, self.term("not_offered"));
        }
        let (mail, rcpt) = (&replies[0], &replies[1]);
        let (outcome, detail) = if !mail.is_positive() {
            (Outcome::Skipped, format!("MAIL: {}", one_line(mail)))
        } else if rcpt.is_positive() {
            (Outcome::Pass, one_line(rcpt))
        } else if rcpt.is_transient() {
            (Outcome::Warn, one_line(rcpt))
        } else {
            (Outcome::Fail, one_line(rcpt))
        };
        self.check("postmaster", outcome, detail);
        Ok(())
    }

    /// A short test message to `to`, built with mail-builder and dot-stuffed.
    pub(super) async fn message(&mut self, to: &str) -> Result<(), Stop> {
        let steps = [
            format!("MAIL FROM:{}", path(&self.plan.from)),
            format!("RCPT TO:{}", path(to)),
            "DATA".to_owned(),
        ];
        for (n, step) in steps.iter().enumerate() {
            let reply = self.wire.command(step).await?;
            let expected = if n == 2 {
                reply.code == 354
            } else {
                reply.is_positive()
            };
            if !expected {
                self.check("message", Outcome::Fail, one_line(&reply));
                self.wire.command("RSET").await?;
                return Ok(());
            }
        }
        let text = self.test_message(to);
        let mut wire_text = Vec::with_capacity(text.len() + 8);
        let mut stuffer = DotStuffer::new();
        stuffer.stuff(&text, &mut wire_text);
        stuffer.finish(&mut wire_text);
        self.wire.send_text(&wire_text, summary(&text)).await?;
        let reply = self.wire.reply().await?;
        let outcome = if reply.code == 250 {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        self.check("message", outcome, format!("{to}: {}", one_line(&reply)));
        Ok(())
    }

    fn test_message(&self, to: &str) -> Vec<u8> {
        let target = self.plan.address.to_string();
        mail_builder::MessageBuilder::new()
            .from(self.plan.from.as_str())
            .to(to)
            .subject("yizhan probe")
            .header(
                "Auto-Submitted",
                mail_builder::headers::raw::Raw::new("auto-generated"),
            )
            .text_body(format!(
                "This message was sent by `yizhan probe` to test the mail server at {target}.\r\n\
                 It needs no answer.\r\n"
            ))
            .write_to_vec()
            .unwrap_or_default()
    }

    /// The edge cases: an unknown command, RCPT before MAIL, an over-long line.
    pub(super) async fn edge_cases(&mut self) -> Result<(), Stop> {
        let reply = self.wire.command(UNKNOWN_COMMAND).await?;
        let outcome = match reply.code {
            500 => Outcome::Pass,
            502 => Outcome::Warn,
            _ if reply.is_positive() => Outcome::Fail,
            _ => Outcome::Warn,
        };
        self.check("unknown_command", outcome, one_line(&reply));
        ended(&reply)?;
        let reply = self.wire.command("RCPT TO:<Postmaster>").await?;
        let outcome = match reply.code {
            503 => Outcome::Pass,
            _ if reply.is_positive() => Outcome::Fail,
            _ => Outcome::Warn,
        };
        self.check("rcpt_before_mail", outcome, one_line(&reply));
        if reply.is_positive() {
            self.wire.command("RSET").await?;
        }
        ended(&reply)?;
        self.long_line().await
    }

    /// A 4096-octet NOOP: refused or taken, it must be answered once, and the next command
    /// must get its own answer (a server that cuts the line into several commands is out of
    /// step with its client from then on).
    async fn long_line(&mut self) -> Result<(), Stop> {
        let line = format!("NOOP {}", "x".repeat(LONG_LINE - "NOOP \r\n".len()));
        let reply = match self.wire.command(&line).await {
            Ok(reply) => reply,
            Err(WireError::Closed) => {
                self.check("long_line", Outcome::Warn, self.term("closed"));
                return Err(Stop::Ended);
            }
            Err(e) => return Err(e.into()),
        };
        ended(&reply)?;
        if self.wire.unasked(UNASKED_WAIT).await {
            self.check(
                "long_line",
                Outcome::Fail,
                format!("{} {{more_replies}}", one_line(&reply)),
            );
            return Err(Stop::Ended);
        }
        let noop = self.wire.command("NOOP").await?;
        let outcome = if noop.code == 250 {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        self.check(
            "long_line",
            outcome,
            format!("{}; NOOP: {}", one_line(&reply), one_line(&noop)),
        );
        Ok(())
    }

    /// QUIT and its 221.
    pub(super) async fn quit(&mut self) -> Result<(), Stop> {
        match self.wire.command("QUIT").await {
            Ok(reply) if reply.code == 221 => self.check("quit", Outcome::Pass, one_line(&reply)),
            Ok(reply) => self.check("quit", Outcome::Warn, one_line(&reply)),
            Err(WireError::Closed) => self.check("quit", Outcome::Warn, self.term("closed")),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

/// A 421 ends the session (RFC 5321 3.8): nothing more can be checked.
fn ended(reply: &Reply) -> Result<(), Stop> {
    if reply.code == 421 {
        Err(Stop::Ended)
    } else {
        Ok(())
    }
}

/// The message text as a recording summarises it.
fn summary(text: &[u8]) -> String {
    let lines = memchr_count(text);
    let header_end = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(text.len());
    let names: Vec<String> = String::from_utf8_lossy(&text[..header_end])
        .lines()
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.to_owned()))
        .collect();
    let s = if lines == 1 { "" } else { "s" };
    format!(
        "message text: {} octets, {lines} line{s}; header fields: {}",
        text.len(),
        names.join(", ")
    )
}

fn memchr_count(text: &[u8]) -> usize {
    text.iter().filter(|&&c| c == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_summarised_as_a_recording_does() {
        let text = b"From: a@b\r\nSubject: x\r\n y\r\nTo: c@d\r\n\r\nbody\r\n";
        assert_eq!(
            summary(text),
            "message text: 44 octets, 6 lines; header fields: From, Subject, To"
        );
    }
}
