//! Credentials in a dialogue: what may be shown (a user name) and what never is (a password,
//! or the base64 that carries it). The masked text replaces the line itself.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::catalogue::Catalogue;

/// Whether a line could be base64 (a credential sent where a command was expected): it
/// decodes, with or without its padding. A word such as `XYZZY` (five letters: no base64 has
/// that length) stays shown.
pub(crate) fn looks_like_base64(text: &str) -> bool {
    yizhan_proto::transcript::could_be_base64(text.as_bytes())
}

/// Decodes base64 (`None` when it is not).
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text.trim()).ok()
}

/// What a line of an AUTH exchange shows: a LOGIN user name only when the server's prompt
/// asked for one (`prompt`, decoded; or the initial response of `AUTH LOGIN name`), never a
/// password: an answer whose prompt is not known is masked whole.
pub(crate) fn answer(cat: &Catalogue, mechanism: &str, prompt: Prompt, text: &str) -> String {
    let bytes = decode(text).unwrap_or_default();
    let octets = bytes.len().to_string();
    if text.trim() == "*" {
        return "*".to_owned();
    }
    // Masked already (a recorded session): shown as it is.
    if text.starts_with('[') && text.ends_with(']') {
        return text.to_owned();
    }
    match (mechanism, prompt) {
        ("LOGIN", Prompt::UserName) => {
            let user = String::from_utf8_lossy(&bytes).into_owned();
            format!("[{}]", cat.term("auth_user", &[("user", &user)]))
        }
        ("LOGIN", _) => format!("[{}]", cat.term("auth_password", &[("octets", &octets)])),
        ("PLAIN", _) => plain(cat, &bytes),
        _ => format!("[{}]", cat.term("auth_secret", &[("octets", &octets)])),
    }
}

/// What the server asked for before an AUTH answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Prompt {
    /// A user name (`334 VXNlcm5hbWU6`, "Username:").
    UserName,
    /// Anything else, or not known: the answer may be a password.
    #[default]
    Other,
}

impl Prompt {
    /// The prompt of a `334` reply's text (base64).
    pub(crate) fn of(text: &str) -> Prompt {
        let decoded = decode(text).unwrap_or_default();
        let decoded = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
        if decoded.contains("user") && !decoded.contains("pass") {
            Prompt::UserName
        } else {
            Prompt::Other
        }
    }
}

/// PLAIN's one answer (`authzid NUL user NUL password`): the user shown, the password not.
pub(crate) fn plain(cat: &Catalogue, bytes: &[u8]) -> String {
    let mut parts = bytes.split(|&b| b == 0);
    let (_authzid, user, password) = (parts.next(), parts.next(), parts.next());
    match (user, password) {
        (Some(user), Some(password)) => {
            let user = String::from_utf8_lossy(user).into_owned();
            let octets = password.len().to_string();
            format!(
                "[{}]",
                cat.term("plain_credentials", &[("user", &user), ("octets", &octets)])
            )
        }
        _ => format!(
            "[{}]",
            cat.term("auth_secret", &[("octets", &bytes.len().to_string())])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Lang;

    #[test]
    fn prompts() {
        assert_eq!(Prompt::of("VXNlcm5hbWU6"), Prompt::UserName);
        assert_eq!(Prompt::of("dXNlcm5hbWU6"), Prompt::UserName);
        assert_eq!(Prompt::of("UGFzc3dvcmQ6"), Prompt::Other);
        assert_eq!(Prompt::of("not base64!"), Prompt::Other);
    }

    #[test]
    fn passwords_and_their_base64_never_show() {
        let cat = Catalogue::load(Lang::En).unwrap();
        let user = STANDARD.encode("alice@test.example");
        let password = STANDARD.encode("s3cret-pass!");
        assert_eq!(
            answer(&cat, "LOGIN", Prompt::UserName, &user),
            "[user name `alice@test.example` (base64)]"
        );
        let shown = answer(&cat, "LOGIN", Prompt::Other, &password);
        assert_eq!(shown, "[password (12 octets), masked]");
        let both = STANDARD.encode("\0alice\0s3cret-pass!");
        let shown = answer(&cat, "PLAIN", Prompt::Other, &both);
        assert!(shown.contains("alice") && !shown.contains("s3cret") && !shown.contains(&both));
        let other = answer(&cat, "CRAM-MD5", Prompt::Other, &password);
        assert!(!other.contains(&password) && other.contains("12 octets"));
    }
}
