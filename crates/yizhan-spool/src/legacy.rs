//! Envelopes as index schema 3 stored them (addresses and parameters as strings, parsed again
//! by every reader), and their upgrade to schema 4 (`yizhan-proto`'s types). [`Spool::open`]
//! upgrades every row once; a row that does not upgrade is left as it was, and the recovery
//! that follows moves it aside (`corrupt`) with the reason, as any damaged row.
//!
//! [`Spool::open`]: crate::Spool::open

use serde::Deserialize;
use yizhan_proto::address::{ForwardPath, Host, Mailbox, ReversePath};
use yizhan_proto::command::{Body, Notify, Orcpt, Ret};

use crate::QueueId;
use crate::envelope::{ClientInfo, Envelope, LocalMailbox, Origin, Recipient, RecipientStatus};

/// A schema-3 envelope row.
#[derive(Deserialize)]
pub(crate) struct EnvelopeV3 {
    id: QueueId,
    received_at: i64,
    size: u64,
    /// Without angle brackets; `""` for `<>`.
    reverse_path: String,
    /// The source route's domains, without `@`.
    #[serde(default)]
    reverse_route: Vec<String>,
    #[serde(default)]
    envid: Option<String>,
    #[serde(default)]
    ret: Option<String>,
    #[serde(default)]
    body_type: Option<String>,
    #[serde(default)]
    smtputf8: bool,
    client: ClientInfoV3,
    recipients: Vec<RecipientV3>,
    #[serde(default)]
    held: bool,
}

#[derive(Deserialize)]
struct ClientInfoV3 {
    helo: String,
    /// `ip:port`, `local (uid N)` or `local`.
    address: String,
    #[serde(default)]
    auth_user: Option<String>,
    #[serde(default)]
    tls: Option<String>,
}

impl ClientInfoV3 {
    /// The typed client; what no longer parses is dropped (it is information, not routing).
    fn upgrade(self) -> ClientInfo {
        let origin = match self.address.parse() {
            Ok(address) => Origin::Network { address },
            Err(_) => Origin::Local {
                uid: self
                    .address
                    .strip_prefix("local (uid ")
                    .and_then(|r| r.strip_suffix(')'))
                    .and_then(|n| n.parse().ok()),
            },
        };
        ClientInfo {
            helo: Host::parse(&self.helo).ok(),
            origin,
            auth_user: self.auth_user.and_then(|u| Mailbox::parse(&u).ok()),
            tls: self.tls,
            recording: None,
        }
    }
}

#[derive(Deserialize)]
struct RecipientV3 {
    address: String,
    original: String,
    mailbox: Option<LocalMailbox>,
    #[serde(default)]
    notify: Option<String>,
    /// `type;address`, the address decoded.
    #[serde(default)]
    orcpt: Option<String>,
    #[serde(default)]
    status: RecipientStatus,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    next_attempt: i64,
    #[serde(default)]
    last_error: Option<String>,
}

impl EnvelopeV3 {
    /// The same envelope with typed fields, or why it cannot be.
    pub(crate) fn upgrade(self) -> Result<Envelope, String> {
        let reverse_path = if self.reverse_path.is_empty() {
            ReversePath::Null
        } else {
            let route: String = self
                .reverse_route
                .iter()
                .map(|hop| format!("@{hop}"))
                .collect::<Vec<_>>()
                .join(",");
            let text = if route.is_empty() {
                format!("<{}>", self.reverse_path)
            } else {
                format!("<{route}:{}>", self.reverse_path)
            };
            ReversePath::parse(&text).map_err(|e| format!("reverse-path {text}: {e}"))?
        };
        let recipients = self
            .recipients
            .into_iter()
            .map(RecipientV3::upgrade)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Envelope {
            id: self.id,
            received_at: self.received_at,
            size: self.size,
            reverse_path,
            envid: self.envid,
            // Written by our own parser in schema 3: a value it does not know again is dropped
            // (the parameter is advice to the next hop), never the message.
            ret: self.ret.as_deref().and_then(Ret::parse),
            body: self.body_type.as_deref().and_then(Body::parse),
            smtputf8: self.smtputf8,
            client: self.client.upgrade(),
            recipients,
            held: self.held,
        })
    }
}

impl RecipientV3 {
    fn upgrade(self) -> Result<Recipient, String> {
        let address = Mailbox::parse(&self.address)
            .map_err(|e| format!("recipient {}: {e}", self.address))?;
        // The path as given; a recipient made up by a report or `sendmail` had `<address>`.
        let original = ForwardPath::parse(&self.original)
            .or_else(|_| ForwardPath::parse(&format!("<{address}>")))
            .map_err(|e| format!("recipient {}: {e}", self.original))?;
        let orcpt = self.orcpt.as_deref().and_then(|text| {
            let (addr_type, addr) = text.split_once(';')?;
            Some(Orcpt {
                addr_type: addr_type.to_owned(),
                addr: addr.to_owned(),
            })
        });
        Ok(Recipient {
            address,
            original,
            mailbox: self.mailbox,
            notify: self.notify.as_deref().and_then(notify_v3),
            orcpt,
            status: self.status,
            attempts: self.attempts,
            next_attempt: self.next_attempt,
            last_error: self.last_error,
        })
    }
}

/// `NOTIFY` as schema 3 stored it: its RFC 3461 text (`SUCCESS,FAILURE`), or, written by the
/// first releases, its `Debug` form (`On { success: true, failure: true, delay: false }`).
fn notify_v3(text: &str) -> Option<Notify> {
    let upper = text.trim().to_ascii_uppercase();
    if upper.starts_with("ON {") {
        return Some(Notify::On {
            success: upper.contains("SUCCESS: TRUE"),
            failure: upper.contains("FAILURE: TRUE"),
            delay: upper.contains("DELAY: TRUE"),
        });
    }
    Notify::parse(&upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_in_both_of_its_schema_3_forms() {
        let on = Notify::On {
            success: true,
            failure: true,
            delay: false,
        };
        assert_eq!(notify_v3("SUCCESS,FAILURE"), Some(on));
        assert_eq!(notify_v3(&format!("{on:?}")), Some(on));
        assert_eq!(notify_v3("never"), Some(Notify::Never));
        assert_eq!(notify_v3("garbage"), None);
    }
}
