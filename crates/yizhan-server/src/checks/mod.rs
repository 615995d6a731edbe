//! Inbound checks on the `smtp` listener (issue #14): SPF for the HELO and MAIL FROM
//! identities (RFC 7208), DKIM verification of every signature (RFC 6376), ARC chain validation
//! (RFC 8617) and DMARC alignment and policy (RFC 7489), reported in one
//! `Authentication-Results:` field (RFC 8601) with our hostname as authserv-id.
//!
//! `mail-auth` is named here and in [`crate::dkim`] only. Its DNS lookups use the same name
//! servers as delivery (`delivery.dns_servers`, else the system's), so a test points every
//! check at a test DNS server.
//!
//! When: SPF at MAIL (a `reject-fail` refusal comes before any data is sent); DKIM, ARC and
//! DMARC at the end of data, on the message kept whole for them. Clients never checked:
//! authenticated users, `relay_networks` and [`ChecksSettings::exempt`] (this host).

pub mod policy;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfOutput, SpfResult,
};
use yizhan_proto::reply::Reply;

pub use policy::{
    Checks, ChecksOverrides, ChecksSettings, DmarcMode, QUARANTINE_FIELD, SpfMode, TagMode,
};

/// What runs the checks: the DNS client. One per server, shared; kept by a reload (its name
/// servers need a restart, like delivery's).
pub struct Checker {
    auth: MessageAuthenticator,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").finish_non_exhaustive()
    }
}

/// The SPF results of one transaction, found at MAIL.
#[derive(Debug, Clone)]
pub struct SpfVerdict {
    helo: SpfOutput,
    mail_from: SpfOutput,
    /// The HELO/EHLO domain as given.
    helo_domain: String,
    /// The MAIL FROM identity checked (`postmaster@` the HELO domain for `<>`).
    sender: String,
}

/// What to do with a message after its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deliver it.
    Deliver,
    /// Deliver it marked: `p=quarantine` of this domain.
    Quarantine(String),
    /// Answer this (550 or 451) instead of accepting it.
    Refuse(Reply),
}

/// The outcome of the checks of one message.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The header fields to add (CRLF included): ours, then the quarantine marker if any.
    pub fields: String,
    /// What to do with the message.
    pub action: Action,
    /// One line for the log (`spf=pass dkim=pass arc=none dmarc=pass`).
    pub summary: String,
}

impl Checker {
    /// A checker asking `dns_servers` (each with its port; empty: the system's resolver) with
    /// `timeout` per query.
    pub fn new(dns_servers: &[SocketAddr], timeout: Duration) -> Result<Checker, String> {
        let auth = if dns_servers.is_empty() {
            MessageAuthenticator::new_system_conf()
        } else {
            let (config, opts) = yizhan_delivery::mx::resolver_config(dns_servers, timeout);
            MessageAuthenticator::new(config, opts)
        }
        .map_err(|e| format!("cannot set up DNS for the inbound checks: {e}"))?;
        Ok(Checker { auth })
    }

    /// SPF for the HELO identity and the MAIL FROM one (`sender` empty for `<>`: then the
    /// identity is `postmaster@` the HELO domain, RFC 7208 2.4); `host` is our hostname (the
    /// `%{r}` macro).
    pub async fn spf(&self, ip: IpAddr, helo: &str, sender: &str, host: &str) -> SpfVerdict {
        let sender = if sender.is_empty() {
            format!("postmaster@{helo}")
        } else {
            sender.to_owned()
        };
        let helo_output = self
            .auth
            .verify_spf(SpfParameters::verify_ehlo(ip, helo, host))
            .await;
        let mail_from = self
            .auth
            .verify_spf(SpfParameters::verify_mail_from(ip, helo, host, &sender))
            .await;
        SpfVerdict {
            helo: helo_output,
            mail_from,
            helo_domain: helo.to_owned(),
            sender,
        }
    }

    /// The checks of a whole `message` (as received, CRLF line ends) from `ip`, with the SPF
    /// results of its transaction (`None` when neither SPF nor DMARC is on), reported under
    /// `authserv_id`.
    pub async fn message(
        &self,
        message: &[u8],
        ip: IpAddr,
        spf: Option<&SpfVerdict>,
        checks: Checks,
        authserv_id: &str,
    ) -> Verdict {
        let mut results = AuthenticationResults::new(authserv_id);
        let mut summary = Vec::new();
        if let Some(spf) = spf.filter(|_| checks.spf != SpfMode::Off) {
            results = results
                .with_spf_ehlo_result(&spf.helo, ip, &spf.helo_domain)
                .with_spf_mailfrom_result(&spf.mail_from, ip, &spf.sender, &spf.helo_domain);
            let result = spf_name(spf.mail_from.result());
            crate::metrics::check("spf", result);
            summary.push(format!("spf={result}"));
        }
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // Not a message mail-auth can read (no header section): nothing more to say.
            summary.push("message=unparsable".into());
            return Verdict {
                fields: results.to_header(),
                action: Action::Deliver,
                summary: summary.join(" "),
            };
        };
        let from = parsed.from.first().cloned().unwrap_or_default();
        let dkim = if checks.dkim != TagMode::Off || checks.dmarc != DmarcMode::Off {
            self.auth.verify_dkim(&parsed).await
        } else {
            Vec::new()
        };
        if checks.dkim != TagMode::Off {
            results = results.with_dkim_results(&dkim, &from);
            let first = dkim.first().map_or("none", |d| dkim_name(d.result()));
            crate::metrics::check("dkim", first);
            summary.push(format!("dkim={first}"));
        }
        if checks.arc != TagMode::Off {
            let arc = self.auth.verify_arc(&parsed).await;
            results = results.with_arc_result(&arc, ip);
            let result = dkim_name(arc.result());
            crate::metrics::check("arc", result);
            summary.push(format!("arc={result}"));
        }
        let mut action = Action::Deliver;
        if let Some(spf) = spf.filter(|_| checks.dmarc != DmarcMode::Off) {
            let mail_from_domain = spf.sender.rsplit_once('@').map_or("", |(_, d)| d);
            let dmarc = self
                .auth
                .verify_dmarc(DmarcParameters::new(
                    &parsed,
                    &dkim,
                    mail_from_domain,
                    &spf.mail_from,
                ))
                .await;
            results = results.with_dmarc_result(&dmarc);
            let result = dmarc.result();
            crate::metrics::check("dmarc", dmarc_name(&result));
            summary.push(format!("dmarc={}", dmarc_name(&result)));
            if checks.dmarc == DmarcMode::Enforce {
                // No record read (a DNS error): the policy is unknown, not "none".
                let policy = dmarc.dmarc_record().map(|_| dmarc.policy());
                action = dmarc_action(&result, policy, dmarc.domain());
                // mail-auth leaves a From: with several domains unevaluated (`none`); that
                // would let `From: ceo@bank.example, x@evil.example` past p=reject. RFC 7489
                // 6.6.1 lets a receiver reject it: refused.
                if let Some(domains) = several_author_domains(&parsed.from) {
                    action = Action::Refuse(Reply::several_author_domains(&domains));
                }
            }
        }
        let mut fields = results.to_header();
        if checks.dkim != TagMode::Off && dkim.is_empty() {
            // No signature: said, as RFC 8601 2.7.1's `none` (mail-auth writes nothing).
            match fields.strip_suffix("; none\r\n") {
                Some(bare) => fields = format!("{bare};\r\n\tdkim=none\r\n"),
                None => {
                    let end = fields.len() - "\r\n".len();
                    fields.insert_str(end, ";\r\n\tdkim=none");
                }
            }
        }
        if let Action::Quarantine(domain) = &action {
            fields.push_str(&format!(
                "{QUARANTINE_FIELD}: DMARC policy quarantine of {domain}\r\nX-Spam-Flag: YES\r\n"
            ));
        }
        Verdict {
            fields,
            action,
            summary: summary.join(" "),
        }
    }
}

impl SpfVerdict {
    /// The refusal `mode` asks for: a `fail` of either identity under `reject-fail`
    /// (`550 5.7.23`), a `temperror` (`451 4.7.24`); else `None`.
    pub fn refusal(&self, mode: SpfMode) -> Option<Reply> {
        if mode != SpfMode::RejectFail {
            return None;
        }
        let mail_domain = self.sender.rsplit_once('@').map_or("", |(_, d)| d);
        for (output, domain) in [
            (&self.mail_from, mail_domain),
            (&self.helo, self.helo_domain.as_str()),
        ] {
            match output.result() {
                SpfResult::Fail => return Some(Reply::spf_fail(domain)),
                SpfResult::TempError => return Some(Reply::spf_temp_error(domain)),
                _ => {}
            }
        }
        None
    }

    /// The MAIL FROM result's name (`pass`, `fail`, ...), for the log.
    pub fn mail_from_result(&self) -> &'static str {
        spf_name(self.mail_from.result())
    }
}

/// The author domains of a `From:` that names more than one (lower-case, sorted), else `None`.
fn several_author_domains(from: &[String]) -> Option<String> {
    let mut domains: Vec<String> = from
        .iter()
        .filter_map(|a| {
            a.rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase())
        })
        .collect();
    domains.sort();
    domains.dedup();
    (domains.len() > 1).then(|| domains.join(", "))
}

/// What `enforce` does with a DMARC `result` under the `policy` of `domain` (`None`: its
/// record could not be read).
fn dmarc_action(result: &DmarcResult, policy: Option<Policy>, domain: &str) -> Action {
    match (result, policy) {
        (DmarcResult::Pass | DmarcResult::None | DmarcResult::PermError(_), _) => Action::Deliver,
        (_, Some(Policy::None | Policy::Unspecified)) => Action::Deliver,
        // The policy would decide (or is unknown), and DNS did not answer: try again later,
        // never a pass.
        (DmarcResult::TempError(_), _) => Action::Refuse(Reply::dmarc_temp_error(domain)),
        (DmarcResult::Fail(_), Some(Policy::Reject)) => Action::Refuse(Reply::dmarc_reject(domain)),
        (DmarcResult::Fail(_), Some(Policy::Quarantine)) => Action::Quarantine(domain.to_owned()),
        // A failure without a record cannot happen (no record gives `none`): delivered.
        (DmarcResult::Fail(_), None) => Action::Deliver,
    }
}

fn spf_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_name(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_name(result: &DmarcResult) -> &'static str {
    match result {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::Error;

    #[test]
    fn enforce_follows_the_published_policy() {
        let fail = DmarcResult::Fail(Error::NotAligned);
        let temp =
            DmarcResult::TempError(Error::Dns(mail_auth::DnsError::Resolver("timeout".into())));
        let d = "bank.example";
        assert_eq!(
            dmarc_action(&fail, Some(Policy::Reject), d),
            Action::Refuse(Reply::dmarc_reject(d))
        );
        assert_eq!(
            dmarc_action(&fail, Some(Policy::Quarantine), d),
            Action::Quarantine(d.into())
        );
        assert_eq!(dmarc_action(&fail, Some(Policy::None), d), Action::Deliver);
        assert_eq!(
            dmarc_action(&temp, Some(Policy::Reject), d),
            Action::Refuse(Reply::dmarc_temp_error(d))
        );
        assert_eq!(
            dmarc_action(&temp, None, d),
            Action::Refuse(Reply::dmarc_temp_error(d)),
            "no record read: the policy is unknown"
        );
        assert_eq!(dmarc_action(&temp, Some(Policy::None), d), Action::Deliver);
        assert_eq!(
            dmarc_action(&DmarcResult::Pass, Some(Policy::Reject), d),
            Action::Deliver
        );
        assert_eq!(dmarc_action(&DmarcResult::None, None, d), Action::Deliver);
    }

    #[test]
    fn a_from_with_several_domains_is_named() {
        let from = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            several_author_domains(&from(&["ceo@Bank.example", "x@evil.example"])).as_deref(),
            Some("bank.example, evil.example")
        );
        assert_eq!(
            several_author_domains(&from(&["a@x.example", "b@X.example"])),
            None
        );
        assert_eq!(several_author_domains(&from(&[])), None);
    }

    #[test]
    fn reject_fail_refuses_fail_and_defers_temperror() {
        let verdict = |mail: SpfResult, helo: SpfResult| SpfVerdict {
            helo: SpfOutput::new("client.example".into()).with_result(helo),
            mail_from: SpfOutput::new("bank.example".into()).with_result(mail),
            helo_domain: "client.example".into(),
            sender: "ceo@bank.example".into(),
        };
        let v = verdict(SpfResult::Fail, SpfResult::None);
        assert_eq!(v.refusal(SpfMode::Tag), None);
        assert_eq!(
            v.refusal(SpfMode::RejectFail),
            Some(Reply::spf_fail("bank.example"))
        );
        let v = verdict(SpfResult::Pass, SpfResult::TempError);
        assert_eq!(
            v.refusal(SpfMode::RejectFail),
            Some(Reply::spf_temp_error("client.example"))
        );
        let v = verdict(SpfResult::SoftFail, SpfResult::Neutral);
        assert_eq!(v.refusal(SpfMode::RejectFail), None);
    }
}
