//! SMTP authentication (RFC 4954) on the server side: the SASL exchanges, password checks and
//! the failure policy.
//!
//! - RFC 4616: the PLAIN mechanism (`[authzid] NUL authcid NUL passwd`).
//! - draft-murchison-sasl-login: the LOGIN mechanism exactly as JavaMail and Outlook speak it
//!   (`334 VXNlcm5hbWU6` = "Username:", `334 UGFzc3dvcmQ6` = "Password:").
//! - RFC 4954 4: initial responses (`AUTH PLAIN <b64>`, `AUTH LOGIN <b64 user>`); the `*`
//!   cancel and base64 errors are answered by the protocol session itself.
//! - RFC 4954 6: `235 2.7.0` success, `535 5.7.8` bad credentials, `454 4.7.0` when the check
//!   itself failed.
//!
//! Passwords are stored only as argon2id PHC strings; checking one costs tens of milliseconds of
//! CPU, so [`verify`] runs it on the blocking thread pool and a flood of AUTH attempts cannot
//! stall other sessions. Nothing here logs or formats a password or an AUTH payload.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use yizhan_proto::reply::Reply;

use crate::directory::canonical_address;

/// A SASL mechanism yizhan offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The de-facto LOGIN mechanism (draft-murchison-sasl-login).
    Login,
}

impl Mechanism {
    /// Every mechanism, in the order they are documented.
    pub const ALL: [Mechanism; 2] = [Self::Plain, Self::Login];

    /// The SASL name, as in `AUTH PLAIN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Login => "LOGIN",
        }
    }

    /// The mechanism named `name` (case-insensitive), if offered by yizhan.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a password hash or a credential could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// The text is not a PHC string argon2 understands.
    #[error("not an argon2 PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash): {0}")]
    BadHash(String),
    /// The address is not a valid mailbox address.
    #[error("{0}")]
    BadAddress(String),
    /// Hashing failed.
    #[error("hashing failed: {0}")]
    Hashing(String),
}

/// The password hashes of the users that may authenticate, by canonical address.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    hashes: BTreeMap<String, String>,
}

impl fmt::Debug for Credentials {
    // Hashes are secrets too: list only the users.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.hashes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// Adds `address` with the PHC string `phc`, after checking both.
    pub fn insert(&mut self, address: &str, phc: &str) -> Result<(), CredentialError> {
        check_phc(phc)?;
        let address =
            canonical_address(address).map_err(|e| CredentialError::BadAddress(e.to_string()))?;
        self.hashes.insert(address, phc.to_owned());
        Ok(())
    }

    /// The users, in order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.hashes.keys().map(String::as_str)
    }

    /// True when no user has a password (AUTH is then not offered).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    fn hash_of(&self, user: &str) -> Option<&str> {
        let user = canonical_address(user).ok()?;
        self.hashes.get(&user).map(String::as_str)
    }
}

/// Checks that `phc` is an argon2 PHC string.
pub fn check_phc(phc: &str) -> Result<(), CredentialError> {
    let parsed = PasswordHash::new(phc).map_err(|e| CredentialError::BadHash(e.to_string()))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(CredentialError::BadHash(format!(
            "algorithm {} is not argon2",
            parsed.algorithm
        )));
    }
    Ok(())
}

/// Hashes `password` with argon2id (default parameters, random salt) into a PHC string.
pub fn hash_password(password: &[u8]) -> Result<String, CredentialError> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| CredentialError::Hashing(e.to_string()))
}

/// A hash compared against when the user is unknown, so that the answer takes as long as for a
/// known user (no user enumeration by timing). Its password is random and thrown away.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut seed = [0u8; 16];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        seed.copy_from_slice(&now.to_le_bytes());
        hash_password(&seed).unwrap_or_default()
    })
}

/// Checks `password` for `user` on the blocking thread pool. Returns the canonical user on
/// success, `Ok(None)` for wrong credentials and `Err` when the check itself failed.
pub async fn verify(
    checks: &PasswordChecks,
    credentials: Arc<Credentials>,
    user: String,
    password: Vec<u8>,
) -> Result<Option<String>, VerifyError> {
    let permit = tokio::time::timeout(checks.wait, checks.slots.acquire())
        .await
        .map_err(|_| VerifyError::Busy)?
        .map_err(|_| VerifyError::Busy)?;
    let checked = tokio::task::spawn_blocking(move || {
        let known = credentials.hash_of(&user);
        let ok = match known {
            Some(hash) => Argon2::default().verify_password(&password, hash).is_ok(),
            None => {
                let _ = Argon2::default().verify_password(&password, dummy_hash());
                false
            }
        };
        if ok {
            canonical_address(&user).ok()
        } else {
            None
        }
    })
    .await;
    drop(permit);
    checked.map_err(VerifyError::Failed)
}

/// How long an AUTH attempt waits for a free password check before it gets `454 4.7.0`.
pub const CHECK_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// A bound on the password checks running at once (one per core): argon2 takes tens of
/// milliseconds of CPU and about 19 MiB of memory per check, so a flood of AUTH attempts must
/// queue for a slot rather than start hundreds of checks on the blocking pool.
#[derive(Debug)]
pub struct PasswordChecks {
    slots: tokio::sync::Semaphore,
    wait: Duration,
}

impl PasswordChecks {
    /// `slots` checks at once; an attempt waits at most `wait` for one.
    pub fn new(slots: usize, wait: Duration) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            wait,
        }
    }

    /// One check per core, [`CHECK_QUEUE_WAIT`].
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(cores, CHECK_QUEUE_WAIT)
    }
}

/// Why a password could not be checked (the client gets `454 4.7.0`, RFC 4954 6).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Every check slot stayed busy for [`PasswordChecks`]'s wait.
    #[error("too many password checks at once; no free slot within the wait")]
    Busy,
    /// The check's blocking task failed.
    #[error("password check task failed: {0}")]
    Failed(tokio::task::JoinError),
}

/// The delay after the `failures`-th failed attempt (1-based): `base`, doubling with each
/// further failure, never more than `max`. Zero failures cost nothing.
pub fn failure_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// The state of one SASL exchange on a connection.
#[derive(Debug)]
pub struct Exchange {
    mechanism: Mechanism,
    /// LOGIN: the user name, once given.
    user: Option<String>,
}

/// What the driver does next in an exchange.
pub enum Step {
    /// Send this `334` challenge and wait for the answer.
    Challenge(Reply),
    /// Check these credentials, then answer 235 or 535.
    Verify {
        /// The authentication identity as given.
        user: String,
        /// The password (never logged).
        password: Vec<u8>,
    },
    /// The exchange failed (malformed); answer this reply. Counts as a failed attempt.
    Fail(Reply),
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Challenge(r) => f.debug_tuple("Challenge").field(r).finish(),
            Step::Verify { user, .. } => f
                .debug_struct("Verify")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Step::Fail(r) => f.debug_tuple("Fail").field(r).finish(),
        }
    }
}

/// The LOGIN prompts, base64 of "Username:" and "Password:" as Outlook and JavaMail expect.
const LOGIN_USERNAME: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

impl Exchange {
    /// Starts an exchange for `mechanism` with the decoded initial response, if any.
    pub fn start(mechanism: Mechanism, initial: Option<Vec<u8>>) -> (Exchange, Step) {
        let mut exchange = Exchange {
            mechanism,
            user: None,
        };
        let step = match (mechanism, initial) {
            // RFC 4954 4: no initial response: an empty challenge for PLAIN.
            (Mechanism::Plain, None) => Step::Challenge(Reply::auth_challenge("")),
            (Mechanism::Login, None) => Step::Challenge(Reply::auth_challenge(LOGIN_USERNAME)),
            (_, Some(data)) => exchange.respond(data),
        };
        (exchange, step)
    }

    /// Takes the client's decoded answer to the last challenge.
    pub fn respond(&mut self, data: Vec<u8>) -> Step {
        match self.mechanism {
            Mechanism::Plain => plain(&data),
            Mechanism::Login => match self.user.take() {
                None => match String::from_utf8(data) {
                    Ok(user) if !user.is_empty() => {
                        self.user = Some(user);
                        Step::Challenge(Reply::auth_challenge(LOGIN_PASSWORD))
                    }
                    _ => Step::Fail(Reply::auth_failed()),
                },
                Some(user) => Step::Verify {
                    user,
                    password: data,
                },
            },
        }
    }
}

/// RFC 4616 2: `[authzid] NUL authcid NUL passwd`. An authorization identity other than the
/// authentication identity (proxy authorization) is not supported.
fn plain(data: &[u8]) -> Step {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Step::Fail(Reply::auth_failed());
    };
    let (Ok(authzid), Ok(authcid)) = (std::str::from_utf8(authzid), std::str::from_utf8(authcid))
    else {
        return Step::Fail(Reply::auth_failed());
    };
    if authcid.is_empty() || (!authzid.is_empty() && authzid != authcid) {
        return Step::Fail(Reply::auth_failed());
    }
    Step::Verify {
        user: authcid.to_owned(),
        password: password.to_vec(),
    }
}

/// Base64 (RFC 4648 4), as SASL uses it on the wire; for tests and tools.
pub fn encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify_step(step: Step) -> (String, Vec<u8>) {
        match step {
            Step::Verify { user, password } => (user, password),
            other => panic!("expected Verify, got {other:?}"),
        }
    }

    fn challenge(step: Step) -> String {
        match step {
            Step::Challenge(reply) => {
                assert_eq!(reply.code, 334);
                reply.lines.join("")
            }
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        // RFC 4616 2 / RFC 4954 4.
        let (_, step) = Exchange::start(Mechanism::Plain, Some(b"\0user@t.example\0pw".to_vec()));
        assert_eq!(
            verify_step(step),
            ("user@t.example".to_owned(), b"pw".to_vec())
        );
        let (mut ex, step) = Exchange::start(Mechanism::Plain, None);
        assert_eq!(challenge(step), "");
        let step = ex.respond(b"user@t.example\0user@t.example\0pw".to_vec());
        assert_eq!(verify_step(step).0, "user@t.example");
    }

    #[test]
    fn plain_malformed_or_proxy_fails() {
        for data in [
            &b""[..],
            b"user\0pw",
            b"\0\0pw",
            b"other@t.example\0user@t.example\0pw",
            b"\0\xff\0pw",
        ] {
            let (_, step) = Exchange::start(Mechanism::Plain, Some(data.to_vec()));
            assert!(
                matches!(step, Step::Fail(ref r) if r.code == 535),
                "{data:?}"
            );
        }
    }

    #[test]
    fn login_prompts_are_the_ones_outlook_and_javamail_expect() {
        let (mut ex, step) = Exchange::start(Mechanism::Login, None);
        assert_eq!(challenge(step), "VXNlcm5hbWU6");
        assert_eq!(encode(b"Username:"), "VXNlcm5hbWU6");
        assert_eq!(
            challenge(ex.respond(b"user@t.example".to_vec())),
            "UGFzc3dvcmQ6"
        );
        assert_eq!(encode(b"Password:"), "UGFzc3dvcmQ6");
        let (user, password) = verify_step(ex.respond(b"secret".to_vec()));
        assert_eq!(
            (user.as_str(), password.as_slice()),
            ("user@t.example", &b"secret"[..])
        );
        // With an initial response the user name is already given.
        let (mut ex, step) = Exchange::start(Mechanism::Login, Some(b"u@t.example".to_vec()));
        assert_eq!(challenge(step), "UGFzc3dvcmQ6");
        assert_eq!(verify_step(ex.respond(b"pw".to_vec())).0, "u@t.example");
    }

    #[test]
    fn step_debug_never_shows_the_password() {
        let step = Step::Verify {
            user: "u".into(),
            password: b"hunter2".to_vec(),
        };
        assert!(!format!("{step:?}").contains("hunter2"));
    }

    #[test]
    fn failure_delay_doubles_up_to_the_maximum() {
        let s = Duration::from_secs;
        for (failures, want) in [(0, 0), (1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (40, 10)] {
            assert_eq!(failure_delay(failures, s(1), s(10)), s(want), "{failures}");
        }
        assert_eq!(
            failure_delay(3, Duration::from_millis(10), s(1)),
            Duration::from_millis(40)
        );
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(Mechanism::from_name("login"), Some(Mechanism::Login));
        assert_eq!(Mechanism::from_name("PLAIN"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name("CRAM-MD5"), None);
    }

    #[tokio::test]
    async fn verify_checks_the_hash_off_the_runtime() {
        let hash = hash_password(b"right").unwrap();
        let mut credentials = Credentials::default();
        credentials.insert("User@Test.Example", &hash).unwrap();
        assert!(!format!("{credentials:?}").contains("argon2"));
        let c = Arc::new(credentials);
        let checks = PasswordChecks::per_core();
        let user = || "user@test.example".to_string();
        let ok = verify(&checks, c.clone(), user(), b"right".to_vec()).await;
        assert_eq!(ok.unwrap().as_deref(), Some("user@test.example"));
        let bad = verify(&checks, c.clone(), user(), b"wrong".to_vec()).await;
        assert_eq!(bad.unwrap(), None);
        let nobody = "nobody@test.example".to_string();
        let unknown = verify(&checks, c, nobody, b"right".to_vec()).await;
        assert_eq!(unknown.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_waits_for_a_slot_then_gives_up() {
        let c = Arc::new(Credentials::default());
        let checks = PasswordChecks::new(1, Duration::from_secs(10));
        // The only slot is taken (a check in progress): the next attempt waits its 10 s of
        // (paused) time, then is refused as busy, without running argon2.
        let held = checks.slots.acquire().await.unwrap();
        let started = tokio::time::Instant::now();
        let busy = verify(&checks, c.clone(), "u@t.example".into(), b"x".to_vec()).await;
        assert!(matches!(busy, Err(VerifyError::Busy)), "{busy:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(held);
        let free = verify(&checks, c, "u@t.example".into(), b"x".to_vec()).await;
        assert_eq!(free.unwrap(), None);
    }

    #[test]
    fn bad_hashes_are_refused() {
        let mut c = Credentials::default();
        assert!(matches!(
            c.insert("u@t.example", "plaintext"),
            Err(CredentialError::BadHash(_))
        ));
        assert!(c.is_empty());
    }
}
