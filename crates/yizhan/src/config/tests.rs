//! Tests of the configuration file as a whole: parsing, every key, every problem.

use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use yizhan_server::auth::Mechanism;
use yizhan_server::directory::Directory;
use yizhan_server::settings::{
    ListenerKind, ListenerOverrides, MaildirSync, TlsPolicy, VerifyPolicy,
};

use super::*;

/// The sample from the project brief and docs/configuration.md, unchanged.
pub(crate) const SAMPLE: &str = r#"hostname = "mx.test.example"
data_dir = "/var/lib/yizhan"

[[listener]]
address = "127.0.0.1:2525"
kind = "smtp"                 # later also "submission" and "submissions"

[smtp]
max_message_size = 10485760   # advertised with SIZE
max_recipients = 1000

[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"

[[mailbox]]
address = "user2@test.example"

[[alias]]
address = "list@test.example"
members = ["user@test.example", "user2@test.example"]

[[relocated]]
address = "moved@test.example"
new_address = "moved@elsewhere.example"
"#;

fn problems(text: &str) -> Vec<Problem> {
    match parse("t.toml", text) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

fn parse_error(text: &str) -> String {
    match parse("t.toml", text) {
        Err(e @ ConfigError::Parse { .. }) => e.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn sample_is_accepted_and_gives_the_expected_settings() {
    let settings = parse("sample.toml", SAMPLE).unwrap();
    let mut b = Directory::builder();
    b.domain("test.example")
        .mailbox("user@test.example", None)
        .mailbox("user2@test.example", None)
        .alias(
            "list@test.example",
            ["user@test.example", "user2@test.example"],
        )
        .relocated("moved@test.example", "moved@elsewhere.example");
    let defaults = Settings::default();
    let want = Settings {
        hostname: "mx.test.example".to_owned(),
        data_dir: PathBuf::from("/var/lib/yizhan"),
        listeners: vec![ListenerSettings::new(
            "127.0.0.1:2525".parse().unwrap(),
            ListenerKind::Smtp,
        )],
        smtp: yizhan_server::settings::SmtpSettings {
            max_message_size: 10_485_760,
            max_recipients: 1000,
            ..defaults.smtp.clone()
        },
        directory: b.build().unwrap(),
        ..defaults
    };
    assert_eq!(settings, want);
    assert_eq!(settings.directory.postmaster(), "postmaster@test.example");
}

#[test]
fn the_documented_examples_are_the_tested_ones() {
    let doc = include_str!("../../../../docs/configuration.md");
    assert!(
        doc.contains(SAMPLE),
        "docs/configuration.md must show SAMPLE unchanged"
    );
    let body: String = EMBEDDED_DEFAULT
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        doc.contains(&body),
        "docs/configuration.md must show the embedded default"
    );
}

/// Issue #12: never the current directory; root, XDG, HOME, in that order.
#[test]
fn the_default_data_dir_depends_on_the_account_not_the_directory() {
    let account = |uid, home: Option<&str>, xdg: Option<&str>| Account {
        uid,
        home: home.map(PathBuf::from),
        xdg_data_home: xdg.map(PathBuf::from),
    };
    let cases = [
        (account(0, Some("/root"), Some("/x")), "/var/lib/yizhan"),
        (
            account(1000, Some("/home/ann"), None),
            "/home/ann/.local/share/yizhan",
        ),
        (
            account(1000, Some("/home/ann"), Some("/data/ann")),
            "/data/ann/yizhan",
        ),
        // A relative XDG_DATA_HOME is to be ignored (XDG base directory specification).
        (
            account(1000, Some("/home/ann"), Some("rel")),
            "/home/ann/.local/share/yizhan",
        ),
        // Set but empty (as `XDG_DATA_HOME= yizhan ...`): not absolute, ignored too.
        (
            account(1000, Some("/home/ann"), Some("")),
            "/home/ann/.local/share/yizhan",
        ),
        (account(0, None, None), "/var/lib/yizhan"),
        // No usable home (a service account): the system place.
        (account(1000, None, None), "/var/lib/yizhan"),
        (account(1000, Some("ann"), None), "/var/lib/yizhan"),
    ];
    for (account, want) in cases {
        assert_eq!(
            default_data_dir(&account),
            PathBuf::from(want),
            "{account:?}"
        );
    }
    let ann = account(1000, Some("/home/ann"), None);
    assert!(
        data_dir_help(&ann).contains("/home/ann/.local/share/yizhan for you (uid 1000)"),
        "{}",
        data_dir_help(&ann)
    );
    assert_eq!(
        resolve_data_dir(Path::new(""), Some(Path::new("/etc/yizhan")), &ann),
        PathBuf::from("/home/ann/.local/share/yizhan")
    );
    // A relative data_dir is relative to the file, not to the current directory.
    assert_eq!(
        resolve_data_dir(Path::new("data"), Some(Path::new("/etc/yizhan")), &ann),
        PathBuf::from("/etc/yizhan/data")
    );
    assert_eq!(
        resolve_data_dir(Path::new("/srv/mail"), Some(Path::new("/etc/yizhan")), &ann),
        PathBuf::from("/srv/mail")
    );
}

#[test]
fn embedded_default_is_the_default() {
    assert_eq!(parse("d", EMBEDDED_DEFAULT).unwrap(), Settings::default());
    assert_eq!(parse("d", "").unwrap(), Settings::default());
}

#[test]
fn every_key_is_read() {
    let text = r#"
hostname = "MX.Example.org"
data_dir = "/srv/mail"
postmaster = "admin@example.org"
shutdown_grace = "1m"

[[listener]]
address = "[::1]:25"
kind = "smtp"
[[listener]]
address = "0.0.0.0:587"
kind = "submission"
max_message_size = 2000
max_recipients = 200
max_connections_per_ip = 5
vrfy = "disabled"
expn = "disabled"
send_soml_saml = true
turn = false
etrn = false
relay_networks = []
auth_max_failures = 2
auth_require_tls = true
record = true
[[listener]]
address = "0.0.0.0:465"
kind = "submissions"
[[listener]]
address = "127.0.0.1:2526"   # kind defaults to smtp
proxy_protocol = true
proxy_networks = ["10.0.0.0/8", "fd00::/8"]

[smtp]
max_message_size = 1000
max_recipients = 100
max_line_length = 512
max_errors = 3
max_connections = 10
max_connections_per_ip = 10
command_timeout = 301
data_block_timeout = "3m"
data_termination_timeout = "1h"
vrfy = "enabled"
expn = "cannot-verify"
send_soml_saml = false
help = false
pipelining = false
eight_bit_mime = false
smtputf8 = false
chunking = false
enhanced_status_codes = false
dsn = true
binarymime = false
turn = true
etrn = true
relay_networks = ["10.0.0.0/8"]

[tls]
cert = "/srv/cert.pem"
key = "/srv/key.pem"
reload_interval = "5m"

[auth]
mechanisms = ["LOGIN"]
require_tls = false
failure_delay = "2s"
failure_delay_max = "4s"
max_failures = 5
sender_must_match = false

[queue]
concurrency = 2
retry_initial = "10s"
retry_max_backoff = "2h"
give_up_after = "2d"
maildir_sync = "file"

[[domain]]
name = "example.org"
deliver = "lmtp"
lmtp = "unix:/run/dovecot/lmtp"

[[mailbox]]
address = "admin@example.org"
full_name = "Ada Admin"
password = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$LRbzYPWEbEkM0vJcZVB7l2AgjMC8KjYdyTbcOT4hlQ0"
"#;
    let s = parse("t.toml", text).unwrap();
    assert_eq!(s.listeners[1].proxy_networks, None);
    assert_eq!(
        s.delivery
            .lmtp
            .get("example.org")
            .map(ToString::to_string)
            .as_deref(),
        Some("unix:/run/dovecot/lmtp")
    );
    assert_eq!(
        s.listeners[3].proxy_networks,
        Some(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap()
        ])
    );
    assert_eq!(
        s.listeners[1].overrides,
        ListenerOverrides {
            max_message_size: Some(2000),
            max_recipients: Some(200),
            max_connections_per_ip: Some(5),
            vrfy: Some(VerifyPolicy::Disabled),
            expn: Some(VerifyPolicy::Disabled),
            send_soml_saml: Some(true),
            turn: Some(false),
            etrn: Some(false),
            relay_networks: Some(Vec::new()),
            auth_max_failures: Some(2),
            auth_require_tls: Some(true),
            checks: Default::default(),
            record: true,
        }
    );
    let tls = s.tls.as_ref().unwrap();
    assert_eq!(
        (tls.cert.as_path(), tls.key.as_path(), tls.reload_interval),
        (
            Path::new("/srv/cert.pem"),
            Path::new("/srv/key.pem"),
            Duration::from_secs(300)
        )
    );
    let a = &s.auth;
    assert_eq!(a.mechanisms, [Mechanism::Login]);
    assert!(!a.require_tls && !a.sender_must_match);
    assert_eq!(
        (a.failure_delay, a.failure_delay_max, a.max_failures),
        (Duration::from_secs(2), Duration::from_secs(4), 5)
    );
    assert!(s.smtp.turn && s.smtp.etrn && s.smtp.dsn && !s.smtp.binarymime);
    assert_eq!(s.smtp.relay_networks.len(), 1);
    assert_eq!(s.credentials.users().count(), 1);
    assert_eq!(s.hostname, "MX.Example.org");
    assert_eq!(s.data_dir, PathBuf::from("/srv/mail"));
    assert_eq!(s.shutdown_grace, Duration::from_secs(60));
    let kinds: Vec<_> = s
        .listeners
        .iter()
        .map(|l| (l.address.to_string(), l.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("[::1]:25".to_owned(), ListenerKind::Smtp),
            ("0.0.0.0:587".to_owned(), ListenerKind::Submission),
            ("0.0.0.0:465".to_owned(), ListenerKind::Submissions),
            ("127.0.0.1:2526".to_owned(), ListenerKind::Smtp),
        ]
    );
    let m = &s.smtp;
    assert_eq!(
        (
            m.max_message_size,
            m.max_recipients,
            m.max_line_length,
            m.max_errors
        ),
        (1000, 100, 512, 3)
    );
    assert_eq!((m.max_connections, m.max_connections_per_ip), (10, 10));
    assert_eq!(m.timeouts.command, Duration::from_secs(301));
    assert_eq!(m.timeouts.data_block, Duration::from_secs(180));
    assert_eq!(m.timeouts.data_termination, Duration::from_secs(3600));
    assert_eq!(
        (m.vrfy, m.expn),
        (VerifyPolicy::Enabled, VerifyPolicy::CannotVerify)
    );
    assert!(
        !(m.send_soml_saml
            || m.help
            || m.pipelining
            || m.eight_bit_mime
            || m.smtputf8
            || m.chunking
            || m.enhanced_status_codes)
    );
    let q = &s.queue;
    assert_eq!(q.concurrency, 2);
    assert_eq!(q.retry.initial, Duration::from_secs(10));
    assert_eq!(q.retry.max_backoff, Duration::from_secs(7200));
    assert_eq!(q.retry.give_up_after, Duration::from_secs(172_800));
    assert_eq!(q.maildir_sync, MaildirSync::File);
    assert_eq!(s.directory.postmaster(), "admin@example.org");
    assert_eq!(
        s.directory.mailboxes().collect::<Vec<_>>(),
        [("admin@example.org", Some("Ada Admin"))]
    );
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let cases = [
        ("bogus = 1\n", "bogus", 1),
        ("[smtp]\nmax_size = 1\n", "max_size", 2),
        (
            "[[domain]]\nname = \"a.example\"\n[[mailbox]]\naddress = \"u@a.example\"\nhash = \"x\"\n",
            "hash",
            5,
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:25\"\ntls = true\n",
            "tls",
            3,
        ),
    ];
    for (text, key, line) in cases {
        let e = parse_error(text);
        assert!(e.starts_with("t.toml: "), "{e}");
        assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
        assert!(e.contains(&format!("line {line}")), "{e}");
    }
}

#[test]
fn syntax_and_type_errors_name_line_and_column() {
    let e = parse_error("hostname = \"a\"\n\n[smtp\n");
    assert!(e.contains("line 3, column"), "{e}");
    let e = parse_error("[smtp]\nmax_recipients = \"many\"\n");
    assert!(e.contains("line 2, column"), "{e}");
    let e = parse_error("[[mailbox]]\nfull_name = \"x\"\n");
    assert!(e.contains("missing field `address`"), "{e}");
}

#[test]
fn several_problems_are_reported_at_once() {
    let text = "hostname = \"\"\n[smtp]\nmax_line_length = 100\nvrfy = \"yes\"\n[[domain]]\nname = \"a.example\"\n[[mailbox]]\naddress = \"bad\"\n";
    let found = problems(text);
    let keys: Vec<(&str, Option<(usize, usize)>)> =
        found.iter().map(|p| (p.key.as_str(), p.location)).collect();
    assert_eq!(
        keys,
        [
            ("hostname", Some((1, 12))),
            ("smtp.max_line_length", Some((3, 19))),
            ("smtp.vrfy", Some((4, 8))),
            ("mailbox[0].address", Some((8, 11))),
        ]
    );
    assert_eq!(
        found[1].to_string(),
        "t.toml:3:19: smtp.max_line_length: 100 is below the minimum 512 (RFC 5321 4.5.3.1.4)"
    );
    let e = ConfigError::Invalid(found);
    assert_eq!(e.count(), 4);
    assert_eq!(e.to_string().lines().count(), 4);
}

#[test]
fn each_validation_rule() {
    const DOM: &str = "[[domain]]\nname = \"a.example\"\n[[mailbox]]\naddress = \"u@a.example\"\n";
    // (file text, key, part of the reason)
    let cases: Vec<(String, &str, &str)> = vec![
        ("hostname = \"\"".into(), "hostname", "must not be empty"),
        (
            "hostname = \"mx example\"".into(),
            "hostname",
            "not a domain name",
        ),
        ("data_dir = \"\"".into(), "data_dir", "must not be empty"),
        ("listener = []".into(), "listener", "at least one listener"),
        (
            "[[listener]]\naddress = \"localhost:25\"".into(),
            "listener[0].address",
            "invalid listener address",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:99999\"".into(),
            "listener[0].address",
            "invalid listener address",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:25\"\nkind = \"lmtp\"".into(),
            "listener[0].kind",
            "unknown listener kind \"lmtp\"",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"127.0.0.1:25\""
                .into(),
            "listener[1].address",
            "already used by listener[0]",
        ),
        (
            "[store]\nkind = \"redis\"".into(),
            "store.kind",
            "unknown store \"redis\"",
        ),
        (
            "[store]\nkind = \"postgres\"".into(),
            "store.url",
            "required with kind = \"postgres\"",
        ),
        (
            "[store]\nkind = \"postgres\"\nurl = \"postgres://u:secret@db:notaport/x\"".into(),
            "store.url",
            "not a PostgreSQL connection string",
        ),
        (
            "[store]\nurl = \"postgres://db/x\"".into(),
            "store.url",
            "only for kind = \"postgres\"",
        ),
        (
            "[store]\nkind = \"postgres\"\nurl = \"postgres://db/x\"\nlease = \"5s\"".into(),
            "store.lease",
            "below the minimum 10s",
        ),
        (
            "[store]\nkind = \"postgres\"\nurl = \"postgres://db/x\"\npassword_file = \"/nonexistent/pw\"".into(),
            "store.password_file",
            "cannot read /nonexistent/pw",
        ),
        (
            "[store]\nkind = \"postgres\"\nurl = \"postgres://db/x\"\nca_file = \"/nonexistent/ca.pem\"".into(),
            "store.ca_file",
            "cannot read /nonexistent/ca.pem",
        ),
        (
            "[store]\nca_file = \"/etc/ssl/db-ca.pem\"".into(),
            "store.ca_file",
            "only for kind = \"postgres\"",
        ),
        (
            "[[domain]]\nname = \"a.example\"\ndeliver = \"mbox\"".into(),
            "domain[0].deliver",
            "unknown delivery \"mbox\"",
        ),
        (
            "[[domain]]\nname = \"a.example\"\ndeliver = \"lmtp\"".into(),
            "domain[0].deliver",
            "needs lmtp =",
        ),
        (
            "[[domain]]\nname = \"a.example\"\ndeliver = \"lmtp\"\nlmtp = \"dovecot\"".into(),
            "domain[0].lmtp",
            "expected \"unix:/path/to/socket\" or \"host:port\"",
        ),
        (
            "[[domain]]\nname = \"a.example\"\nlmtp = \"127.0.0.1:24\"".into(),
            "domain[0].lmtp",
            "has no effect without deliver",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:25\"\nproxy_protocol = true".into(),
            "listener[0].proxy_protocol",
            "needs proxy_networks",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:25\"\nproxy_protocol = true\nproxy_networks = []"
                .into(),
            "listener[0].proxy_protocol",
            "needs proxy_networks",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:25\"\nproxy_networks = [\"10.0.0.0/8\"]".into(),
            "listener[0].proxy_networks",
            "has no effect without proxy_protocol",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:25\"\nproxy_protocol = true\nproxy_networks = [\"nowhere\"]"
                .into(),
            "listener[0].proxy_networks[0]",
            "",
        ),
        (
            "[smtp]\nmax_message_size = 0".into(),
            "smtp.max_message_size",
            "below the minimum 1",
        ),
        // RFC 5321 4.5.3.1.8
        (
            "[smtp]\nmax_recipients = 99".into(),
            "smtp.max_recipients",
            "below the minimum 100",
        ),
        // RFC 5321 4.5.3.1.4
        (
            "[smtp]\nmax_line_length = 511".into(),
            "smtp.max_line_length",
            "below the minimum 512",
        ),
        (
            "[smtp]\nmax_errors = 0".into(),
            "smtp.max_errors",
            "below the minimum 1",
        ),
        (
            "[smtp]\nmax_errors = 5000000000".into(),
            "smtp.max_errors",
            "too large",
        ),
        (
            "[smtp]\nmax_connections = 0".into(),
            "smtp.max_connections",
            "below the minimum 1",
        ),
        (
            "[smtp]\nmax_connections = 10\nmax_connections_per_ip = 11".into(),
            "smtp.max_connections_per_ip",
            "more than smtp.max_connections",
        ),
        (
            "[smtp]\ncommand_timeout = 0".into(),
            "smtp.command_timeout",
            "more than 0",
        ),
        (
            "[smtp]\ndata_block_timeout = -1".into(),
            "smtp.data_block_timeout",
            "negative",
        ),
        (
            "[smtp]\ndata_termination_timeout = \"10\"".into(),
            "smtp.data_termination_timeout",
            "time unit needed",
        ),
        (
            "[smtp]\ncommand_timeout = \"5 fortnights\"".into(),
            "smtp.command_timeout",
            "not a duration",
        ),
        (
            "[smtp]\nexpn = \"on\"".into(),
            "smtp.expn",
            "unknown policy \"on\"",
        ),
        // RFC 3030 3
        (
            "[smtp]\nchunking = false\nbinarymime = true".into(),
            "smtp.binarymime",
            "needs smtp.chunking",
        ),
        (
            "[queue]\nconcurrency = 0".into(),
            "queue.concurrency",
            "below the minimum 1",
        ),
        (
            "[queue]\nretry_initial = \"2h\"\nretry_max_backoff = \"1h\"".into(),
            "queue.retry_max_backoff",
            "shorter than queue.retry_initial",
        ),
        (
            "[queue]\ngive_up_after = 0".into(),
            "queue.give_up_after",
            "more than 0",
        ),
        (
            "[queue]\nmaildir_sync = \"fsync\"".into(),
            "queue.maildir_sync",
            "unknown mode \"fsync\" (expected \"batch\" or \"file\")",
        ),
        (
            "shutdown_grace = \"soon\"".into(),
            "shutdown_grace",
            "not a duration",
        ),
        (
            "[[domain]]\nname = \"a_b.example\"".into(),
            "domain[0].name",
            "bad domain name",
        ),
        (
            "[[domain]]\nname = \"a.example\"\n[[domain]]\nname = \"A.EXAMPLE\"".into(),
            "domain[1].name",
            "duplicate domain",
        ),
        (
            format!("{DOM}[[mailbox]]\naddress = \"u@@a.example\""),
            "mailbox[1].address",
            "bad address syntax",
        ),
        (
            format!("{DOM}[[mailbox]]\naddress = \"u@b.example\""),
            "mailbox[1].address",
            "not in a local domain",
        ),
        (
            format!("{DOM}[[mailbox]]\naddress = \"U@A.example\""),
            "mailbox[1].address",
            "already defined as mailbox[0].address",
        ),
        (
            format!("{DOM}[[mailbox]]\naddress = \"v@a.example\"\nfull_name = \"\""),
            "mailbox[1].full_name",
            "full name",
        ),
        (
            format!("{DOM}[[alias]]\naddress = \"l@a.example\"\nmembers = []"),
            "alias[0].members",
            "at least one member",
        ),
        (
            format!(
                "{DOM}[[alias]]\naddress = \"l@a.example\"\nmembers = [\"u@a.example\", \"<x@y.example>\"]"
            ),
            "alias[0].members[1]",
            "bad address syntax",
        ),
        (
            format!("{DOM}[[alias]]\naddress = \"l@a.example\"\nmembers = [\"ghost@a.example\"]"),
            "alias[0].members[0]",
            "is not a mailbox, an alias",
        ),
        (
            format!("{DOM}[[alias]]\naddress = \"u@a.example\"\nmembers = [\"x@y.example\"]"),
            "alias[0].address",
            "already defined as mailbox[0].address",
        ),
        (
            format!("{DOM}[[relocated]]\naddress = \"u@a.example\"\nnew_address = \"u@b.example\""),
            "relocated[0].address",
            "already defined as mailbox[0].address",
        ),
        (
            format!("{DOM}[[relocated]]\naddress = \"r@b.example\"\nnew_address = \"u@c.example\""),
            "relocated[0].address",
            "not in a local domain",
        ),
        (
            format!("{DOM}[[relocated]]\naddress = \"r@a.example\"\nnew_address = \"nowhere\""),
            "relocated[0].new_address",
            "bad address syntax",
        ),
        (
            format!("postmaster = \"boss@a.example\"\n{DOM}"),
            "postmaster",
            "is not a mailbox, an alias",
        ),
        (
            format!("postmaster = \"boss\"\n{DOM}"),
            "postmaster",
            "bad address syntax",
        ),
    ];
    for (text, key, reason) in &cases {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{text}: {found:?}");
        assert_eq!(found[0].key, *key, "{text}");
        assert!(
            found[0].reason.contains(reason),
            "{text}: {}",
            found[0].reason
        );
        assert!(found[0].location.is_some(), "{text}: no location");
    }
}

#[test]
fn alias_loops_are_accepted() {
    let text = r#"
[[domain]]
name = "a.example"
[[mailbox]]
address = "u@a.example"
[[alias]]
address = "x@a.example"
members = ["y@a.example", "u@a.example"]
[[alias]]
address = "y@a.example"
members = ["x@a.example", "friend@remote.example"]
"#;
    let s = parse("t.toml", text).unwrap();
    assert_eq!(s.directory.aliases().count(), 2);
}

#[test]
fn discovery_order() {
    let flag = Some(PathBuf::from("/f.toml"));
    let env = Some(OsString::from("/e.toml"));
    let yes = |_: &Path| true;
    let no = |_: &Path| false;
    let system = PathBuf::from(SYSTEM_CONFIG);
    assert_eq!(
        Source::discover(flag.clone(), env.clone(), yes),
        Source::Flag("/f.toml".into())
    );
    assert_eq!(
        Source::discover(None, env.clone(), yes),
        Source::Env("/e.toml".into())
    );
    assert_eq!(
        Source::discover(None, Some(OsString::new()), yes),
        Source::System(system.clone())
    );
    assert_eq!(Source::discover(None, None, yes), Source::System(system));
    assert_eq!(Source::discover(None, None, no), Source::Embedded);
}

#[test]
fn overrides_replace_listeners_and_data_dir() {
    let mut s = parse("s", SAMPLE).unwrap();
    Overrides::default().apply(&mut s);
    assert_eq!(s, parse("s", SAMPLE).unwrap());
    let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let b: SocketAddr = "[::1]:2525".parse().unwrap();
    Overrides {
        listen: vec![a, b],
        data_dir: Some("/tmp/d".into()),
    }
    .apply(&mut s);
    assert_eq!(
        s.listeners,
        [a, b].map(|address| ListenerSettings::new(address, ListenerKind::Smtp))
    );
    assert_eq!(s.data_dir, PathBuf::from("/tmp/d"));
}

#[test]
fn summary_names_the_essentials() {
    let lines = summary(&parse("s", SAMPLE).unwrap());
    let text = lines.join("\n");
    for part in [
        "hostname: mx.test.example",
        "listener: 127.0.0.1:2525 (smtp)",
        "domains: test.example (2 mailboxes)",
        "2 mailboxes, 1 alias, 1 relocated; postmaster postmaster@test.example",
    ] {
        assert!(text.contains(part), "{part} missing from\n{text}");
    }
}

const TLS_AUTH: &str = r#"hostname = "mx.test.example"

[[listener]]
address = "127.0.0.1:2525"
kind = "smtp"

[[listener]]
address = "127.0.0.1:2587"
kind = "submission"
max_recipients = 100
auth_max_failures = 2
vrfy = "disabled"

[[listener]]
address = "127.0.0.1:2465"
kind = "submissions"

[smtp]
relay_networks = ["10.0.0.0/8", "192.0.2.7"]

[tls]
cert = "/etc/yizhan/cert.pem"
key = "/etc/yizhan/key.pem"
reload_interval = "30s"

[auth]
mechanisms = ["PLAIN", "LOGIN"]
require_tls = true
failure_delay = "500ms"
failure_delay_max = "8s"
max_failures = 3

[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"
password = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$LRbzYPWEbEkM0vJcZVB7l2AgjMC8KjYdyTbcOT4hlQ0"
"#;

#[test]
fn tls_auth_relay_and_listener_overrides() {
    let s = parse("t.toml", TLS_AUTH).unwrap();
    let tls = s.tls.as_ref().unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/yizhan/cert.pem"));
    assert_eq!(tls.reload_interval, Duration::from_secs(30));
    assert_eq!(s.auth.failure_delay, Duration::from_millis(500));
    assert_eq!(s.auth.max_failures, 3);
    assert_eq!(
        s.credentials.users().collect::<Vec<_>>(),
        ["user@test.example"]
    );
    assert_eq!(
        s.smtp.relay_networks,
        vec![
            "10.0.0.0/8".parse::<IpNet>().unwrap(),
            "192.0.2.7/32".parse().unwrap()
        ]
    );
    let sub = &s.listeners[1];
    assert_eq!(sub.kind, ListenerKind::Submission);
    assert_eq!(s.smtp_for(sub).max_recipients, 100);
    assert_eq!(s.smtp_for(sub).vrfy, VerifyPolicy::Disabled);
    assert_eq!(s.auth_for(sub).max_failures, 2);
    assert_eq!(s.smtp_for(&s.listeners[0]).max_recipients, 1000);
    assert_eq!(s.listeners[2].kind, ListenerKind::Submissions);
    let text = summary(&s).join("\n");
    assert!(
        text.contains("auth: PLAIN LOGIN (1 user with a password)"),
        "{text}"
    );
    assert!(!text.contains("argon2"), "the summary never shows hashes");
}

#[test]
fn tls_auth_problems_are_all_reported() {
    let text = r#"
[[listener]]
address = "127.0.0.1:2465"
kind = "submissions"

[[listener]]
address = "127.0.0.1:2587"
relay_networks = ["10.0.0.0/33"]

[smtp]
relay_networks = ["not-a-network"]

[auth]
mechanisms = ["CRAM-MD5"]
failure_delay = "2s"
failure_delay_max = "1s"

[[mailbox]]
address = "user@localhost"
password = "hunter2"
"#;
    let keys: Vec<String> = problems(text).into_iter().map(|p| p.key).collect();
    for want in [
        "listener[0].kind",
        "listener[1].relay_networks[0]",
        "smtp.relay_networks[0]",
        "auth.mechanisms[0]",
        "auth.failure_delay_max",
        "mailbox[0].password",
    ] {
        assert!(
            keys.iter().any(|k| k == want),
            "{want} missing from {keys:?}"
        );
    }
}

/// The delivery example of docs/configuration.md, unchanged.
pub(crate) const DELIVERY_SAMPLE: &str = r#"hostname = "mx.test.example"

[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"

[[mailbox]]
address = "relay-client@test.example"
password = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$LRbzYPWEbEkM0vJcZVB7l2AgjMC8KjYdyTbcOT4hlQ0"
turn_domains = ["client.example"]

[delivery]
remote_port = 25
dns_servers = ["192.0.2.53", "127.0.0.1:5353"]
connect_timeout = "30s"
max_mx_hosts = 5
per_destination = 4
delay_warning = "4h"
tls = "opportunistic"
honour_source_routes = true
local_names = ["mx.test.example", "mail.test.example"]

[delivery.domain_tls]
"bank.example" = "verify"
"legacy.example" = "none"

[[smarthost]]
domain = "partner.example"
host = "relay.partner.example"
port = 587
tls = "require"
user = "yizhan"
password = "secret"

[[smarthost]]
host = "192.0.2.25"
"#;

#[test]
fn delivery_keys_are_read() {
    let doc = include_str!("../../../../docs/configuration.md");
    assert!(doc.contains(DELIVERY_SAMPLE), "docs show DELIVERY_SAMPLE");
    let s = parse("t.toml", DELIVERY_SAMPLE).unwrap();
    let d = &s.delivery;
    assert_eq!(d.remote_port, 25);
    assert_eq!(
        d.dns_servers,
        vec![
            "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        ]
    );
    assert_eq!(d.connect_timeout, Duration::from_secs(30));
    assert_eq!(d.delay_warning, Some(Duration::from_secs(4 * 3600)));
    assert!(d.honour_source_routes);
    assert_eq!(d.local_names, ["mx.test.example", "mail.test.example"]);
    assert_eq!(d.domain_tls.get("bank.example"), Some(&TlsPolicy::Verify));
    assert_eq!(d.domain_tls.get("legacy.example"), Some(&TlsPolicy::None));
    let partner = d.smarthosts.get("partner.example").unwrap();
    assert_eq!(
        (partner.host.as_str(), partner.port, partner.tls),
        ("relay.partner.example", 587, TlsPolicy::Require)
    );
    assert_eq!(partner.auth.as_ref().unwrap().username, "yizhan");
    let default = d.default_smarthost.as_ref().unwrap();
    assert_eq!((default.host.as_str(), default.port), ("192.0.2.25", 25));
    assert_eq!(
        s.turn_owner("CLIENT.example"),
        Some("relay-client@test.example")
    );
    assert!(
        summary(&s)
            .iter()
            .any(|l| l.starts_with("delivery: port 25"))
    );
    // 0 turns delay warnings off.
    let s = parse("t.toml", "[delivery]\ndelay_warning = 0\n").unwrap();
    assert_eq!(s.delivery.delay_warning, None);
}

#[test]
fn delivery_problems_are_all_reported() {
    let text = r#"
[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"
turn_domains = ["test.example", "bad domain"]

[delivery]
remote_port = 70000
dns_servers = ["dns.example"]
max_mx_hosts = 0
command_timeout = 0
tls = "maybe"
local_names = ["not a name"]

[delivery.domain_tls]
"x.example" = "sometimes"

[[smarthost]]
domain = "test.example"
host = "relay.example"
user = "u"
password = "p"

[[smarthost]]
host = "a.example"

[[smarthost]]
host = "b.example"
port = 0
"#;
    let keys: Vec<String> = problems(text).into_iter().map(|p| p.key).collect();
    for want in [
        "delivery.remote_port",
        "delivery.dns_servers[0]",
        "delivery.max_mx_hosts",
        "delivery.command_timeout",
        "delivery.tls",
        "delivery.local_names[0]",
        "delivery.domain_tls.\"x.example\"",
        "smarthost[0].domain",
        "smarthost[0].user",
        "smarthost[2].host",
        "smarthost[2].port",
        "mailbox[0].turn_domains",
        "mailbox[0].turn_domains[0]",
        "mailbox[0].turn_domains[1]",
    ] {
        assert!(
            keys.iter().any(|k| k == want),
            "{want} missing from {keys:?}"
        );
    }
}

#[test]
fn record_section() {
    let s = parse(
        "t.toml",
        "[record]\nnetworks = [\"192.0.2.0/24\"]\nmax_session_bytes = \"64KiB\"\nkeep = 10\nkeep_for = \"2d\"\nbodies = true\n",
    )
    .unwrap();
    assert_eq!(
        s.record.networks,
        ["192.0.2.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        (
            s.record.max_session_bytes,
            s.record.keep,
            s.record.keep_for,
            s.record.bodies
        ),
        (65536, 10, Duration::from_secs(2 * 86400), true)
    );
    let err = parse("t.toml", "[record]\nkeep = 0\nmax_session_bytes = 10\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("record.keep") && text.contains("record.max_session_bytes"),
        "{text}"
    );
}

#[test]
fn durations_and_sizes_take_units() {
    let text = "[smtp]\ncommand_timeout = \"1h30m\"\nmax_message_size = \"25MiB\"\n\
                max_session_bytes = \"2GiB\"\n[queue]\ngive_up_after = \"4d 12h\"\n\
                retry_initial = 60\n[[listener]]\naddress = \"127.0.0.1:2525\"\n\
                max_message_size = \"64KiB\"\n";
    let s = parse("t.toml", text).unwrap();
    assert_eq!(s.smtp.timeouts.command, Duration::from_secs(5400));
    assert_eq!(s.smtp.max_message_size, 25 * 1024 * 1024);
    assert_eq!(s.smtp.max_session_bytes, 2 << 30);
    assert_eq!(s.queue.retry.give_up_after, Duration::from_secs(108 * 3600));
    assert_eq!(s.queue.retry.initial, Duration::from_secs(60));
    assert_eq!(s.listeners[0].overrides.max_message_size, Some(65_536));
    let found = problems("[smtp]\nmax_message_size = \"huge\"\n");
    assert_eq!(found[0].key, "smtp.max_message_size");
    assert_eq!(found[0].location, Some((2, 20)));
    assert!(
        found[0].reason.contains("not a size"),
        "{}",
        found[0].reason
    );
    // "Never" written as a huge number is refused rather than overflowing a deadline.
    let found = problems("[smtp]\ncommand_timeout = 9223372036854775807\n");
    assert_eq!(found[0].key, "smtp.command_timeout");
    assert!(
        found[0].reason.contains("longer than"),
        "{}",
        found[0].reason
    );
}

#[test]
fn dkim_keys_are_loaded_and_their_problems_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let path = dir.path().join("k.pem");
    std::fs::write(&path, key.serialize_pem()).unwrap();
    let file = dir.path().join("y.toml");
    let file = file.to_str().unwrap();
    let good = "[[dkim]]\ndomain = \"Example.COM\"\nselector = \"s1\"\nkey = \"k.pem\"\n\
                algorithm = \"ed25519-sha256\"\n";
    let s = parse(file, good).unwrap();
    let k = s
        .dkim
        .for_domain("example.com")
        .expect("loaded, relative to the file");
    assert_eq!((k.selector.as_str(), k.headers.len()), ("s1", 12));
    let bad = "[[dkim]]\ndomain = \"a.example\"\nselector = \"bad selector\"\nkey = \"k.pem\"\n\
               [[dkim]]\ndomain = \"b.example\"\nselector = \"s\"\nkey = \"k.pem\"\n\
               algorithm = \"dsa\"\n\
               [[dkim]]\ndomain = \"c.example\"\nselector = \"s\"\nkey = \"missing.pem\"\n\
               headers = [\"Subject\"]\n\
               [[dkim]]\ndomain = \"d.example\"\nselector = \"s\"\nkey = \"k.pem\"\n";
    let found = match parse(file, bad) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("{other:?}"),
    };
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "dkim[0].selector",
            "dkim[1].algorithm",
            "dkim[2].headers",
            "dkim[2].key",
            "dkim[3].key"
        ],
        "{found:?}"
    );
    // An Ed25519 key read as RSA (the default) is named as such.
    assert!(
        found[4].reason.contains("not an RSA key"),
        "{}",
        found[4].reason
    );
    assert!(
        found[3].reason.contains("missing.pem"),
        "{}",
        found[3].reason
    );
}

#[test]
fn client_programs_do_not_read_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("y.toml");
    std::fs::write(
        &file,
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey = \"unreadable.pem\"\n",
    )
    .unwrap();
    let source = Source::Flag(file.clone());
    assert!(matches!(load(&source), Err(ConfigError::Invalid(_))));
    let settings = load_without_keys(&source).expect("keys are not read");
    assert!(settings.dkim.is_empty());
    // The rest of the section is still checked.
    std::fs::write(
        &file,
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"bad one\"\nkey = \"k.pem\"\n",
    )
    .unwrap();
    assert!(matches!(
        load_without_keys(&source),
        Err(ConfigError::Invalid(_))
    ));
}

#[test]
fn checks_are_read_per_listener_and_named_when_wrong() {
    use yizhan_server::checks::{DmarcMode, SpfMode, TagMode};
    let text = "[checks]\nspf = \"reject-fail\"\narc = \"off\"\nexempt = [\"10.0.0.0/8\"]\n\
                [[listener]]\naddress = \"127.0.0.1:25\"\n\
                [[listener]]\naddress = \"127.0.0.1:2526\"\ncheck = 1\n";
    assert!(
        parse("t.toml", text).is_err(),
        "an unknown listener key is refused"
    );
    let text = "[checks]\nspf = \"reject-fail\"\narc = \"off\"\nexempt = [\"10.0.0.0/8\"]\n\
                [[listener]]\naddress = \"127.0.0.1:25\"\n\
                [[listener]]\naddress = \"127.0.0.1:2526\"\nchecks = { dmarc = \"tag\" }\n\
                [[listener]]\naddress = \"127.0.0.1:587\"\nkind = \"submission\"\n";
    let s = parse("t.toml", text).unwrap();
    let c = s.checks_for(&s.listeners[0]);
    assert_eq!(
        (c.spf, c.dkim, c.arc, c.dmarc),
        (
            SpfMode::RejectFail,
            TagMode::Tag,
            TagMode::Off,
            DmarcMode::Enforce
        )
    );
    assert_eq!(s.checks_for(&s.listeners[1]).dmarc, DmarcMode::Tag);
    assert!(
        !s.checks_for(&s.listeners[2]).any(),
        "submission is not checked"
    );
    assert!(s.checks.exempts("10.1.2.3".parse().unwrap()));
    assert!(
        !s.checks.exempts("127.0.0.1".parse().unwrap()),
        "the list replaces the default"
    );
    let found = problems(
        "[checks]\nspf = \"reject\"\n[[listener]]\naddress = \"127.0.0.1:25\"\n\
         checks = { exempt = [] }\n",
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["listener[0].checks.exempt", "checks.spf"],
        "{found:?}"
    );
    assert!(
        found[1].reason.contains("\"reject-fail\""),
        "{}",
        found[1].reason
    );
    assert_eq!(found[1].location, Some((2, 7)));
}
