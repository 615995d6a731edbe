//! Credentials in a dialogue: what may be shown (a user name) and what never is (a password,
//! or the base64 that carries it). The masked text replaces the line itself.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::catalogue::Catalogue;

/// Decodes base64 (`None` when it is not).
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text.trim()).ok()
}

/// What a line of an AUTH exchange shows, given the mechanism and how many answers the
/// client gave before: a LOGIN user name (its first answer), never a password.
pub(crate) fn answer(cat: &Catalogue, mechanism: &str, step: usize, text: &str) -> String {
    let bytes = decode(text).unwrap_or_default();
    let octets = bytes.len().to_string();
    if text.trim() == "*" {
        return "*".to_owned();
    }
    // Masked already (a recorded session): shown as it is.
    if text.starts_with('[') && text.ends_with(']') {
        return text.to_owned();
    }
    match (mechanism, step) {
        ("LOGIN", 0) => {
            let user = String::from_utf8_lossy(&bytes).into_owned();
            format!("[{}]", cat.term("auth_user", &[("user", &user)]))
        }
        ("LOGIN", _) => format!("[{}]", cat.term("auth_password", &[("octets", &octets)])),
        ("PLAIN", _) => plain(cat, &bytes),
        _ => format!("[{}]", cat.term("auth_secret", &[("octets", &octets)])),
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
    fn passwords_and_their_base64_never_show() {
        let cat = Catalogue::load(Lang::En).unwrap();
        let user = STANDARD.encode("alice@test.example");
        let password = STANDARD.encode("s3cret-pass!");
        assert_eq!(
            answer(&cat, "LOGIN", 0, &user),
            "[user name `alice@test.example` (base64)]"
        );
        let shown = answer(&cat, "LOGIN", 1, &password);
        assert_eq!(shown, "[password (12 octets), masked]");
        let both = STANDARD.encode("\0alice\0s3cret-pass!");
        let shown = answer(&cat, "PLAIN", 0, &both);
        assert!(shown.contains("alice") && !shown.contains("s3cret") && !shown.contains(&both));
        let other = answer(&cat, "CRAM-MD5", 0, &password);
        assert!(!other.contains(&password) && other.contains("12 octets"));
    }
}
