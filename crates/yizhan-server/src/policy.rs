//! Answers to the questions a receiving session asks: which HELO, sender and recipients to
//! accept, what VRFY and EXPN reveal. Pure functions of the settings and the directory, so they
//! are unit-tested without sockets.

use yizhan_proto::address::{ForwardPath, Host, Mailbox, ReversePath};
use yizhan_proto::command::MailKind;
use yizhan_proto::reply::Reply;
use yizhan_proto::server::{Decision, Extensions, ServerConfig, Verbs};

use crate::directory::{Directory, Lookup, Resolution, Target};
use crate::settings::{Settings, VerifyPolicy};

/// The protocol settings a session on `tls_active` listener starts with.
pub fn server_config(settings: &Settings, tls_active: bool) -> ServerConfig {
    let smtp = &settings.smtp;
    ServerConfig {
        hostname: settings.hostname.clone(),
        max_line_length: smtp.max_line_length,
        max_message_size: smtp.max_message_size,
        max_recipients: smtp.max_recipients,
        max_errors: smtp.max_errors,
        tls_active,
        extensions: Extensions {
            pipelining: smtp.pipelining,
            size: true,
            eight_bit_mime: smtp.eight_bit_mime,
            enhanced_status_codes: smtp.enhanced_status_codes,
            smtputf8: smtp.smtputf8,
            chunking: smtp.chunking,
            ..Extensions::default()
        },
        verbs: Verbs {
            vrfy: smtp.vrfy != VerifyPolicy::Disabled,
            expn: smtp.expn != VerifyPolicy::Disabled,
            help: smtp.help,
            send: smtp.send_soml_saml,
            soml: smtp.send_soml_saml,
            saml: smtp.send_soml_saml,
            turn: false,
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

/// The answer to RCPT for a transaction started by `kind`.
pub fn rcpt(directory: &Directory, kind: MailKind, to: &ForwardPath) -> Decision {
    let shown = to.to_string();
    match resolve(directory, to) {
        Resolution::Deliver(targets) => {
            // RFC 821 SEND delivers to a terminal only; yizhan has no terminal sessions yet, so
            // no recipient is "active" (450, try later or use MAIL). SOML falls back to the
            // mailbox and SAML delivers to the mailbox, as the RFC describes.
            if kind == MailKind::Send {
                return Decision::Reply(Reply::user_not_active(&shown));
            }
            match targets.iter().find_map(|t| match t {
                Target::Remote(address) if targets.len() == 1 => Some(address.clone()),
                _ => None,
            }) {
                Some(address) => Decision::Reply(Reply::will_forward(&format!("<{address}>"))),
                None => Decision::Accept,
            }
        }
        Resolution::Relocated(new) => Decision::Reply(Reply::user_not_local(&format!("<{new}>"))),
        Resolution::UnknownUser => Decision::Reply(Reply::no_such_user(&shown)),
        Resolution::NotLocal => Decision::Reply(Reply::relay_denied(&shown)),
    }
}

/// The answer to MAIL: every syntactically valid sender is accepted for now (sender policy comes
/// with authentication).
pub fn mail(_from: &ReversePath) -> Decision {
    Decision::Accept
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
