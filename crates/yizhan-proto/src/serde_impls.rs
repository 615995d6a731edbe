//! `serde` for the envelope types (feature `serde`), so that the spool stores what the
//! protocol parsed and reads it back as the same types: every value is written in its SMTP
//! form (`<@a,@b:user@example.org>`, `SUCCESS,FAILURE`, `8BITMIME`, ...) and parsed with the
//! same parser as on the wire when read, so a stored value is never trusted unparsed.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::address::{Domain, ForwardPath, Host, Mailbox, ReversePath};
use crate::command::{Body, Notify, Orcpt, Ret};

/// Serialize as `Display`, deserialize with the type's own parser.
macro_rules! via_text {
    ($type:ty, $what:literal, $parse:expr) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                let parse: fn(&str) -> Option<$type> = $parse;
                parse(&text).ok_or_else(|| D::Error::custom(format!("invalid {}: {text:?}", $what)))
            }
        }
    };
}

via_text!(Domain, "domain", |s| Domain::parse(s).ok());
via_text!(Host, "host", |s| Host::parse(s).ok());
via_text!(Mailbox, "mailbox", |s| Mailbox::parse(s).ok());
via_text!(ReversePath, "reverse-path", |s| ReversePath::parse(s).ok());
via_text!(ForwardPath, "forward-path", |s| ForwardPath::parse(s).ok());
via_text!(Notify, "NOTIFY value", Notify::parse);

impl std::fmt::Display for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Ret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

via_text!(Body, "BODY value", Body::parse);
via_text!(Ret, "RET value", Ret::parse);

/// `ORCPT` as its two parts, the address decoded (`{"type":"rfc822","addr":"a@b"}`).
#[derive(Serialize, Deserialize)]
struct OrcptRepr {
    #[serde(rename = "type")]
    addr_type: String,
    addr: String,
}

impl Serialize for Orcpt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        OrcptRepr {
            addr_type: self.addr_type.clone(),
            addr: self.addr.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Orcpt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = OrcptRepr::deserialize(deserializer)?;
        Ok(Orcpt {
            addr_type: repr.addr_type,
            addr: repr.addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(
        value: T,
        json: &str,
    ) {
        assert_eq!(serde_json::to_string(&value).unwrap(), json);
        assert_eq!(serde_json::from_str::<T>(json).unwrap(), value);
    }

    #[test]
    fn envelope_types_are_stored_in_their_smtp_form() {
        round_trip(
            ReversePath::parse("<@relay.example:alice@example.org>").unwrap(),
            r#""<@relay.example:alice@example.org>""#,
        );
        round_trip(ReversePath::Null, r#""<>""#);
        round_trip(ForwardPath::Postmaster, r#""<postmaster>""#);
        round_trip(
            Mailbox::parse("用户@例子.example").unwrap(),
            r#""用户@例子.example""#,
        );
        round_trip(Notify::Never, r#""NEVER""#);
        round_trip(Body::EightBitMime, r#""8BITMIME""#);
        round_trip(Ret::Hdrs, r#""HDRS""#);
        round_trip(
            Orcpt {
                addr_type: "utf-8".into(),
                addr: "δοκιμή@far.example".into(),
            },
            r#"{"type":"utf-8","addr":"δοκιμή@far.example"}"#,
        );
    }

    #[test]
    fn a_bad_stored_value_is_an_error_not_a_default() {
        assert!(serde_json::from_str::<ReversePath>(r#""alice@""#).is_err());
        assert!(serde_json::from_str::<Notify>(r#""NEVER,SUCCESS""#).is_err());
        assert!(serde_json::from_str::<Mailbox>("42").is_err());
    }
}
