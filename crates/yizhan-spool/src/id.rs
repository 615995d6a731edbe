//! Queue ids: UUID v7 (RFC 9562 5.7) as 32 lowercase hex digits, so ids sort by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The id of one message in the spool: a UUID v7 written as 32 lowercase hex digits.
///
/// It names the body file (`bodies/<id>`) and the index row, and appears in the `250` reply
/// and in every log line about the message. UUID v7 starts with the creation time in
/// milliseconds, so ids sort in arrival order.
///
/// Kept inline (32 bytes, no allocation): the runner holds one per queued message in its
/// schedule, a million of them with a large backlog.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId([u8; 32]);

/// A string that is not a valid [`QueueId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue id {0:?}: expected 32 lowercase hex digits")]
pub struct InvalidQueueId(pub String);

impl QueueId {
    /// A new, time-ordered id.
    pub(crate) fn generate() -> Self {
        let mut id = [0; 32];
        uuid::Uuid::now_v7().simple().encode_lower(&mut id);
        QueueId(id)
    }

    /// The all-zero id, for an envelope not stored yet (the store gives it its id:
    /// [`QueueStore::enqueue`](crate::QueueStore::enqueue)).
    pub fn nil() -> Self {
        QueueId([b'0'; 32])
    }

    /// The id as text (32 lowercase hex digits).
    pub fn as_str(&self) -> &str {
        // Only ever made from 32 checked ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The id of `s`, if it is 32 lowercase hex digits.
    fn parse(s: &str) -> Option<QueueId> {
        let bytes: [u8; 32] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(QueueId(bytes))
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

impl FromStr for QueueId {
    type Err = InvalidQueueId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueId::parse(s).ok_or_else(|| InvalidQueueId(s.to_owned()))
    }
}

impl TryFrom<String> for QueueId {
    type Error = InvalidQueueId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        QueueId::parse(&s).ok_or(InvalidQueueId(s))
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.as_str().to_owned()
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_time_ordered() {
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        for id in &ids {
            assert_eq!(id.as_str().parse::<QueueId>().as_ref(), Ok(id));
        }
        // UUID v7 (RFC 9562 5.7) is monotonic within one process.
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn parse_rejects_non_ids() {
        let cases = [
            ("", false),
            ("0123456789abcdef0123456789abcdef", true),
            ("0123456789ABCDEF0123456789abcdef", false), // uppercase
            ("0123456789abcdef0123456789abcde", false),  // 31 digits
            ("0123456789abcdef0123456789abcdef0", false), // 33 digits
            ("0123456789abcdef-123456789abcdef", false),
            ("../../../../../../../../etc/passw", false),
        ];
        for (text, ok) in cases {
            assert_eq!(text.parse::<QueueId>().is_ok(), ok, "{text:?}");
        }
    }

    #[test]
    fn serde_validates() {
        let id = QueueId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<QueueId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<QueueId>("\"nothex\"").is_err());
    }
}
