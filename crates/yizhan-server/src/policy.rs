//! Answers to the questions a receiving session asks: which HELO, sender and recipients to
//! accept, what VRFY and EXPN reveal, who may relay. Pure functions of the settings and the
//! directory, so they are unit-tested without sockets.
//!
//! Relay control (RFC 5321 3.6.2, RFC 6409, RFC 4954):
//! - a submission / submissions listener requires AUTH before MAIL (`530 5.7.0`);
//! - an authenticated client, or one in `relay_networks`, may relay to any domain; anyone else
//!   may only send to local domains (`550 5.7.1` otherwise): never an open relay;
//! - an authenticated client may use only its own address or an alias of it as the sender
//!   (`553 5.7.1`), unless `sender_must_match` is off.
//!
//! Source routes (RFC 821 3.6, RFC 5321 3.6.1 and appendix C): by default the route is ignored
//! and the mailbox decides. With `honour_source_routes`, a route must start with one of our
//! names ([`source_route`]); if hops remain after our names, the copy is relayed to the next
//! one, which needs the same permission as any relaying.

use std::net::IpAddr;

use yizhan_proto::address::{ForwardPath, Host, Mailbox, ReversePath};
use yizhan_proto::command::MailKind;
use yizhan_proto::reply::Reply;
use yizhan_proto::server::{Decision, Extensions, ServerConfig, Verbs};
use yizhan_spool::{LocalMailbox, Recipient};

use crate::auth::Credentials;
use crate::directory::{Directory, Lookup, Resolution, Target, canonical_address};
use crate::settings::{AuthSettings, ListenerKind, SmtpSettings, VerifyPolicy};

/// What one listener offers: its kind and its effective settings (`[smtp]` and `[auth]` with
/// the listener's overrides applied). Computed once per listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// What the listener speaks.
    pub kind: ListenerKind,
    /// The effective SMTP settings.
    pub smtp: SmtpSettings,
    /// The effective AUTH settings.
    pub auth: AuthSettings,
    /// Whether a TLS certificate is configured (STARTTLS can be offered).
    pub tls_available: bool,
    /// Whether any user has a password (AUTH can be offered).
    pub has_credentials: bool,
    /// The inbound checks of this listener.
    pub checks: crate::checks::Checks,
    /// Every session on this listener is recorded (`record = true`).
    pub record: bool,
}

/// Who the client is, as far as relaying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client<'a> {
    /// The authenticated user (canonical address), if AUTH succeeded.
    pub user: Option<&'a str>,
    /// The client address is in `relay_networks`.
    pub trusted: bool,
}

impl Client<'_> {
    /// Whether this client may send to non-local domains.
    pub fn may_relay(&self) -> bool {
        self.user.is_some() || self.trusted
    }
}

/// Whether `ip` is in one of the trusted relay networks.
pub fn is_trusted(smtp: &SmtpSettings, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    smtp.relay_networks.iter().any(|net| net.contains(&ip))
}

/// Whether a client is exempt from the per-address connection limit
/// ([`SmtpSettings::limit_exceptions`]).
pub fn is_limit_exempt(smtp: &SmtpSettings, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    match &smtp.limit_exceptions {
        Some(networks) => networks.iter().any(|net| net.contains(&ip)),
        None => ip.is_loopback() || is_trusted(smtp, ip),
    }
}

/// The protocol settings a session on this listener starts with; `tls_active` for implicit TLS.
pub fn server_config(hostname: &str, listener: &ListenerPolicy, tls_active: bool) -> ServerConfig {
    let smtp = &listener.smtp;
    let auth_mechanisms = if listener.has_credentials {
        listener
            .auth
            .mechanisms
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect()
    } else {
        Vec::new()
    };
    ServerConfig {
        hostname: hostname.to_owned(),
        max_line_length: smtp.max_line_length,
        max_message_size: smtp.max_message_size,
        max_recipients: smtp.max_recipients,
        max_errors: smtp.max_errors,
        junk_command_limit: smtp.junk_command_limit,
        recipient_overshoot_limit: smtp.recipient_overshoot_limit,
        tls_active,
        extensions: Extensions {
            pipelining: smtp.pipelining,
            size: true,
            eight_bit_mime: smtp.eight_bit_mime,
            enhanced_status_codes: smtp.enhanced_status_codes,
            smtputf8: smtp.smtputf8,
            chunking: smtp.chunking,
            // RFC 3030 3: BINARYMIME is sent with BDAT only.
            binarymime: smtp.binarymime && smtp.chunking,
            dsn: smtp.dsn,
            starttls: listener.tls_available && listener.kind != ListenerKind::Submissions,
            auth_mechanisms,
            auth_requires_tls: listener.auth.require_tls,
            auth_legacy_line: true,
            etrn: smtp.etrn,
            ..Extensions::default()
        },
        verbs: Verbs {
            vrfy: smtp.vrfy != VerifyPolicy::Disabled,
            expn: smtp.expn != VerifyPolicy::Disabled,
            help: smtp.help,
            send: smtp.send_soml_saml,
            soml: smtp.send_soml_saml,
            saml: smtp.send_soml_saml,
            turn: smtp.turn,
        },
    }
}

/// Where an accepted recipient goes.
pub fn resolve(directory: &Directory, to: &ForwardPath) -> Resolution {
    match to {
        ForwardPath::Postmaster => directory.resolve("postmaster", None),
        ForwardPath::Path(path) => resolve_mailbox(directory, &path.mailbox),
    }
}

fn resolve_mailbox(directory: &Directory, mailbox: &Mailbox) -> Resolution {
    match mailbox.host() {
        Host::Domain(domain) => {
            directory.resolve(mailbox.local_part().as_str(), Some(domain.as_str()))
        }
        // Mail to an address literal is never ours: we do not accept mail for bare IPs.
        Host::Literal(_) => Resolution::NotLocal,
    }
}

/// The answer to RCPT for a transaction started by `kind`; `relay` when the client may send to
/// non-local domains ([`Client::may_relay`]).
pub fn rcpt(directory: &Directory, kind: MailKind, to: &ForwardPath, relay: bool) -> Decision {
    rcpt_with_rule(directory, kind, to, relay, &|_| false).0
}

/// Whether a user (canonical local address, lower-case) has a terminal open (SEND).
pub type Terminals<'a> = &'a dyn Fn(&str) -> bool;

/// [`rcpt`], with the rule that decided, for the log (`local mailbox`, `relaying denied`, ...).
fn rcpt_with_rule(
    directory: &Directory,
    kind: MailKind,
    to: &ForwardPath,
    relay: bool,
    terminals: Terminals<'_>,
) -> (Decision, &'static str) {
    let shown = to.to_string();
    match resolve(directory, to) {
        Resolution::Deliver(targets) => {
            // RFC 821 SEND delivers to a terminal only: a user is "active" when they have one
            // open (`yizhan watch --user`, the console); otherwise 450, try later or use MAIL.
            // SOML and SAML are accepted as MAIL; the end of data shows them on the terminal.
            if kind == MailKind::Send {
                let open = targets.iter().any(|t| match t {
                    Target::Local(t) => terminals(&t.address.to_ascii_lowercase()),
                    Target::Remote(_) => false,
                });
                if open {
                    return (Decision::Accept, "SEND: the user's terminal is open");
                }
                let reply = Reply::user_not_active(&shown);
                return (
                    Decision::Reply(reply),
                    "SEND: no terminal session for the user",
                );
            }
            match targets.iter().find_map(|t| match t {
                Target::Remote(address) if targets.len() == 1 => Some(address.clone()),
                _ => None,
            }) {
                Some(address) => (
                    Decision::Reply(Reply::will_forward(&format!("<{address}>"))),
                    "alias to a foreign address (251)",
                ),
                None => (Decision::Accept, "local mailbox or alias"),
            }
        }
        Resolution::Relocated(new) => (
            Decision::Reply(Reply::user_not_local(&format!("<{new}>"))),
            "[[relocated]] user (551)",
        ),
        Resolution::UnknownUser => (
            Decision::Reply(Reply::no_such_user(&shown)),
            "no such user in a local domain",
        ),
        // Queued for outbound delivery (the spool's `mailbox = None`).
        Resolution::NotLocal if relay && kind != MailKind::Send => (
            Decision::Accept,
            "relay for an authenticated or relay_networks client",
        ),
        Resolution::NotLocal if relay => (
            Decision::Reply(Reply::relay_denied(&shown)),
            "SEND is never relayed",
        ),
        Resolution::NotLocal => (
            Decision::Reply(Reply::relay_denied(&shown)),
            "relaying denied: not authenticated, not in relay_networks",
        ),
    }
}

/// The spool recipient for a directory target, given by the client as `original`. The
/// directory's addresses are checked when the configuration is read, so one that is no mailbox
/// is a bug: logged, and not queued.
pub fn queued(target: Target, original: ForwardPath, due: i64) -> Option<Recipient> {
    let (address, mailbox) = match target {
        Target::Local(t) => (
            t.address,
            Some(LocalMailbox {
                domain: t.domain,
                local: t.local,
            }),
        ),
        Target::Remote(address) => (address, None),
    };
    match Mailbox::parse(&address) {
        Ok(address) => Some(Recipient::pending(address, original, mailbox, due)),
        Err(e) => {
            tracing::error!(%address, error = %e, "directory target is no mailbox; not queued");
            None
        }
    }
}

/// The answer to RCPT and, when it is positive, what is queued for the recipient: RCPT and
/// the envelope ask this one function, so what RCPT accepted is what is queued (issue #12: a
/// source-routed path accepted for relaying was resolved again as a local mailbox at the end
/// of data, found unknown and dropped, and the message committed without recipients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptAnswer {
    /// What to answer.
    pub decision: Decision,
    /// What to queue (empty unless the answer is positive).
    pub targets: Vec<Target>,
    /// The rule that decided, for the log.
    pub rule: &'static str,
}

/// See [`RcptAnswer`]. `our_names` (lower-case) when source routes are honoured.
pub fn recipient(
    directory: &Directory,
    kind: MailKind,
    to: &ForwardPath,
    relay: bool,
    our_names: Option<&[String]>,
    terminals: Terminals<'_>,
) -> RcptAnswer {
    let positive = |d: &Decision| match d {
        Decision::Accept => true,
        Decision::Reply(reply) => reply.is_positive(),
        Decision::Close(_) => false,
    };
    if let Some(names) = our_names
        && let Some(decision) = source_route(to, names, relay)
    {
        // Relayed to the route's next hop: queued for outbound delivery with the path as
        // given (the runner takes the route from it).
        let targets = match (positive(&decision), to.mailbox()) {
            (true, Some(mailbox)) => vec![Target::Remote(mailbox.to_string())],
            _ => Vec::new(),
        };
        let rule = "source route ([delivery] honour_source_routes)";
        return RcptAnswer {
            decision,
            targets,
            rule,
        };
    }
    let (decision, rule) = rcpt_with_rule(directory, kind, to, relay, terminals);
    let targets = if positive(&decision) {
        match resolve(directory, to) {
            Resolution::Deliver(targets) => targets,
            // Queued for outbound delivery (`mailbox = None`).
            Resolution::NotLocal => to
                .mailbox()
                .map(|m| vec![Target::Remote(m.to_string())])
                .unwrap_or_default(),
            Resolution::Relocated(_) | Resolution::UnknownUser => Vec::new(),
        }
    } else {
        Vec::new()
    };
    RcptAnswer {
        decision,
        targets,
        rule,
    }
}

/// The answer to RCPT for a source-routed path when source routes are honoured (`our_names`
/// lower-case), or `None` to answer as for the plain mailbox ([`rcpt`]):
/// - a route whose first hop is not one of our names: `550 5.7.1` (RFC 821 3.6: the first host
///   of the route is the one the path is given to);
/// - a route that names hosts after ours: relaying to the next one, `550 5.7.1` unless `relay`;
///   accepted (queued for the next hop) otherwise, whatever the mailbox's domain;
/// - a route that only names us: `None`, the mailbox decides.
pub fn source_route(to: &ForwardPath, our_names: &[String], relay: bool) -> Option<Decision> {
    let ForwardPath::Path(path) = to else {
        return None;
    };
    let first = path.route.first()?;
    let ours = |d: &yizhan_proto::address::Domain| {
        our_names.iter().any(|n| n.eq_ignore_ascii_case(d.as_str()))
    };
    if !ours(first) {
        return Some(Decision::Reply(Reply::relay_denied(&to.to_string())));
    }
    if path.route.iter().all(ours) {
        return None;
    }
    Some(if relay {
        Decision::Accept
    } else {
        Decision::Reply(Reply::relay_denied(&to.to_string()))
    })
}

/// The answer to MAIL: AUTH first on submission listeners (RFC 6409 4.3, RFC 4954 6), and an
/// authenticated client may only use an address it owns.
pub fn mail(
    directory: &Directory,
    listener: &ListenerPolicy,
    client: &Client<'_>,
    from: &ReversePath,
) -> Decision {
    mail_with_rule(directory, listener, client, from).0
}

/// [`mail`], with the rule that refused (empty when accepted), for the log.
pub fn mail_with_rule(
    directory: &Directory,
    listener: &ListenerPolicy,
    client: &Client<'_>,
    from: &ReversePath,
) -> (Decision, &'static str) {
    let submission = matches!(
        listener.kind,
        ListenerKind::Submission | ListenerKind::Submissions
    );
    let Some(user) = client.user else {
        return if submission {
            (
                Decision::Reply(Reply::auth_required()),
                "a submission listener requires AUTH",
            )
        } else {
            (Decision::Accept, "")
        };
    };
    match from {
        ReversePath::Path(path)
            if listener.auth.sender_must_match && !owns(directory, user, &path.mailbox) =>
        {
            (
                Decision::Reply(Reply::sender_not_owned(&format!("<{}>", path.mailbox))),
                "[auth] sender_must_match: not the user's address",
            )
        }
        _ => (Decision::Accept, ""),
    }
}

/// Whether `user` may send as `sender`: its own address, or an alias that has it as a member.
pub fn owns(directory: &Directory, user: &str, sender: &Mailbox) -> bool {
    let Ok(sender) = canonical_address(&sender.to_string()) else {
        return false;
    };
    sender == user
        || directory
            .aliases()
            .any(|(alias, members)| alias == sender && members.iter().any(|m| m == user))
}

/// Whether AUTH can work at all on this listener, for a start-up warning.
pub fn auth_possible(listener: &ListenerPolicy, credentials: &Credentials) -> bool {
    !credentials.is_empty()
        && !listener.auth.mechanisms.is_empty()
        && (listener.tls_available || !listener.auth.require_tls)
}

/// The answer to VRFY (RFC 5321 3.5.3).
pub fn vrfy(directory: &Directory, policy: VerifyPolicy, query: &str) -> Decision {
    if policy != VerifyPolicy::Enabled {
        return Decision::Reply(Reply::vrfy_cannot_verify());
    }
    Decision::Reply(lookup_reply(directory.vrfy(query), query))
}

/// The answer to EXPN (RFC 5321 3.5.2).
pub fn expn(directory: &Directory, policy: VerifyPolicy, query: &str) -> Decision {
    if policy != VerifyPolicy::Enabled {
        return Decision::Reply(Reply::vrfy_cannot_verify());
    }
    match directory.expn(query) {
        Lookup::Unknown => Decision::Reply(Reply::no_such_list(query)),
        other => Decision::Reply(lookup_reply(other, query)),
    }
}

fn lookup_reply(lookup: Lookup, query: &str) -> Reply {
    match lookup {
        Lookup::Mailbox { address, full_name } => Reply::vrfy_user(&address, full_name.as_deref()),
        Lookup::List(members) => {
            let members: Vec<String> = members.iter().map(|m| format!("<{m}>")).collect();
            Reply::expn_members(&members)
        }
        Lookup::Relocated(new) => Reply::user_not_local(&format!("<{new}>")),
        Lookup::Ambiguous(_) => Reply::ambiguous_user(query),
        Lookup::Unknown => Reply::no_such_user(query),
        Lookup::NotLocal => Reply::vrfy_cannot_verify(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn directory() -> Directory {
        let mut b = Directory::builder();
        b.domain("test.example")
            .mailbox("user@test.example", None)
            .mailbox("user2@test.example", None)
            .alias("sales@test.example", ["user@test.example"]);
        b.build().unwrap()
    }

    /// RFC 821 SEND: accepted only for a user with a terminal open (else 450 "not active");
    /// never relayed; through an alias, the members' terminals count.
    #[test]
    fn send_needs_an_open_terminal() {
        let code = |to: &str, open: &[&str], relay: bool| {
            let to = ForwardPath::parse(to).unwrap();
            let terminals = |user: &str| open.contains(&user);
            let answer = recipient(&directory(), MailKind::Send, &to, relay, None, &terminals);
            match answer.decision {
                Decision::Accept => (250, answer.rule),
                Decision::Reply(r) | Decision::Close(r) => (r.code, answer.rule),
            }
        };
        assert_eq!(code("<user@test.example>", &[], false).0, 450);
        assert_eq!(
            code("<user@test.example>", &["user@test.example"], false),
            (250, "SEND: the user's terminal is open")
        );
        assert_eq!(
            code("<user2@test.example>", &["user@test.example"], false).0,
            450
        );
        assert_eq!(
            code("<sales@test.example>", &["user@test.example"], false).0,
            250
        );
        assert_eq!(code("<x@far.example>", &["x@far.example"], true).0, 550);
    }

    /// RFC 821 3.6: a route is honoured only when it starts with us; further hops are relaying.
    #[test]
    fn source_routes_when_honoured() {
        let ours = vec![
            "mx.test.example".to_owned(),
            "alias.test.example".to_owned(),
        ];
        let table = [
            ("<user@test.example>", false, None),
            ("<@mx.test.example:user@test.example>", false, None),
            (
                "<@MX.test.example,@alias.test.example:user@test.example>",
                false,
                None,
            ),
            ("<@other.example:user@test.example>", true, Some(550)),
            (
                "<@mx.test.example,@next.example:user@far.example>",
                false,
                Some(550),
            ),
            (
                "<@mx.test.example,@next.example:user@far.example>",
                true,
                Some(250),
            ),
        ];
        for (path, relay, want) in table {
            let to = ForwardPath::parse(path).unwrap();
            let got = source_route(&to, &ours, relay).map(|d| match d {
                Decision::Accept => 250,
                Decision::Reply(r) | Decision::Close(r) => r.code,
            });
            assert_eq!(got, want, "{path} relay={relay}");
        }
    }

    /// Issue #12: what RCPT accepts is what is queued, from one function. A source route that
    /// relays on is queued for its next hop whatever the mailbox (before, the envelope looked
    /// the mailbox up again, found no such user, dropped it and committed no recipient).
    #[test]
    fn what_rcpt_accepts_is_what_is_queued() {
        let ours = ["mx.test.example".to_owned()];
        let user = |a: &str| {
            Target::Local(match directory().resolve(a, Some("test.example")) {
                Resolution::Deliver(mut t) => match t.remove(0) {
                    Target::Local(l) => l,
                    Target::Remote(_) => unreachable!(),
                },
                _ => unreachable!(),
            })
        };
        let remote = |a: &str| Target::Remote(a.to_owned());
        /// (path, may relay, our names if routes are honoured, reply code, queued targets)
        type Case<'a> = (&'a str, bool, Option<&'a [String]>, u16, Vec<Target>);
        let table: [Case; 7] = [
            (
                "<@mx.test.example,@next.example:nobody@test.example>",
                true,
                Some(&ours),
                250,
                vec![remote("nobody@test.example")],
            ),
            (
                "<@mx.test.example,@next.example:nobody@test.example>",
                false,
                Some(&ours),
                550,
                vec![],
            ),
            (
                "<@mx.test.example:user@test.example>",
                false,
                Some(&ours),
                250,
                vec![user("user")],
            ),
            (
                "<@mx.test.example:nobody@test.example>",
                true,
                Some(&ours),
                550,
                vec![],
            ),
            // Routes not honoured: the mailbox decides.
            (
                "<@next.example:user@test.example>",
                false,
                None,
                250,
                vec![user("user")],
            ),
            (
                "<user@far.example>",
                true,
                None,
                250,
                vec![remote("user@far.example")],
            ),
            ("<user@far.example>", false, None, 550, vec![]),
        ];
        for (path, relay, names, code, targets) in table {
            let to = ForwardPath::parse(path).unwrap();
            let answer = recipient(&directory(), MailKind::Mail, &to, relay, names, &|_| false);
            let got = match &answer.decision {
                Decision::Accept => 250,
                Decision::Reply(r) | Decision::Close(r) => r.code,
            };
            assert_eq!(
                (got, answer.targets),
                (code, targets),
                "{path} relay={relay}"
            );
        }
    }

    fn listener(kind: ListenerKind) -> ListenerPolicy {
        let s = Settings::default();
        ListenerPolicy {
            kind,
            smtp: s.smtp,
            auth: s.auth,
            tls_available: true,
            has_credentials: true,
            checks: crate::checks::Checks::OFF,
            record: false,
        }
    }

    fn path(addr: &str) -> ForwardPath {
        ForwardPath::parse(addr).unwrap()
    }

    fn from(addr: &str) -> ReversePath {
        ReversePath::parse(addr).unwrap()
    }

    fn code(d: Decision) -> u16 {
        match d {
            Decision::Accept => 250,
            Decision::Reply(r) | Decision::Close(r) => r.code,
        }
    }

    #[test]
    fn relay_needs_auth_or_a_trusted_network() {
        // RFC 5321 3.6.2: no open relay; 550 5.7.1 for a non-local recipient.
        let d = directory();
        let table = [
            ("<user@test.example>", false, 250),
            ("<nobody@test.example>", false, 550),
            ("<someone@remote.example>", false, 550),
            ("<someone@remote.example>", true, 250),
            ("<someone@[192.0.2.1]>", false, 550),
        ];
        for (to, relay, want) in table {
            assert_eq!(
                code(rcpt(&d, MailKind::Mail, &path(to), relay)),
                want,
                "{to} {relay}"
            );
        }
    }

    #[test]
    fn submission_requires_auth_and_owned_senders() {
        // RFC 6409 4.3 / RFC 4954 6: 530 5.7.0 before AUTH; 553 5.7.1 for a foreign sender.
        let d = directory();
        let anon = Client {
            user: None,
            trusted: false,
        };
        let user = Client {
            user: Some("user@test.example"),
            trusted: false,
        };
        let table = [
            (ListenerKind::Submission, anon, "<user@test.example>", 530),
            (ListenerKind::Submissions, anon, "<user@test.example>", 530),
            (ListenerKind::Smtp, anon, "<anyone@remote.example>", 250),
            (ListenerKind::Submission, user, "<user@test.example>", 250),
            (ListenerKind::Submission, user, "<USER@Test.Example>", 250),
            (ListenerKind::Submission, user, "<sales@test.example>", 250),
            (ListenerKind::Submission, user, "<user2@test.example>", 553),
            (ListenerKind::Smtp, user, "<boss@remote.example>", 553),
            (ListenerKind::Submission, user, "<>", 250),
        ];
        for (kind, client, sender, want) in table {
            let l = listener(kind);
            assert_eq!(
                code(mail(&d, &l, &client, &from(sender))),
                want,
                "{kind} {sender}"
            );
        }
        let mut l = listener(ListenerKind::Submission);
        l.auth.sender_must_match = false;
        assert_eq!(
            code(mail(&d, &l, &user, &from("<user2@test.example>"))),
            250
        );
    }

    #[test]
    fn trusted_networks() {
        let mut smtp = Settings::default().smtp;
        assert!(!is_trusted(&smtp, "127.0.0.1".parse().unwrap()));
        smtp.relay_networks = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted(&smtp, "10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&smtp, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!is_trusted(&smtp, "11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn starttls_and_auth_are_offered_per_listener() {
        let smtp = server_config("h", &listener(ListenerKind::Smtp), false);
        assert!(smtp.extensions.starttls);
        assert_eq!(smtp.extensions.auth_mechanisms, ["PLAIN", "LOGIN"]);
        assert!(smtp.extensions.auth_requires_tls);
        let implicit = server_config("h", &listener(ListenerKind::Submissions), true);
        assert!(!implicit.extensions.starttls && implicit.tls_active);
        let mut none = listener(ListenerKind::Smtp);
        none.has_credentials = false;
        none.tls_available = false;
        let c = server_config("h", &none, false);
        assert!(c.extensions.auth_mechanisms.is_empty() && !c.extensions.starttls);
    }

    /// DSN (RFC 3461) and BINARYMIME (RFC 3030) when configured; BINARYMIME only with CHUNKING
    /// (RFC 3030 3), however the settings were made.
    #[test]
    fn dsn_and_binarymime_are_offered_when_configured() {
        let ext = |dsn, binarymime, chunking| {
            let mut l = listener(ListenerKind::Smtp);
            (l.smtp.dsn, l.smtp.binarymime, l.smtp.chunking) = (dsn, binarymime, chunking);
            let e = server_config("h", &l, false).extensions;
            (e.dsn, e.binarymime, e.chunking)
        };
        assert_eq!(ext(false, false, true), (false, false, true));
        assert_eq!(ext(true, true, true), (true, true, true));
        assert_eq!(ext(false, true, false), (false, false, false));
    }
}
