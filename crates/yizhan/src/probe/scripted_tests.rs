//! The probe against scripted servers on 127.0.0.1 that get things wrong, or try to trick it:
//! each answer comes from a small function of the command line, so every misbehaviour is one
//! line of script. The probe must report each, and always end.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

use super::card::{Check, Outcome};
use super::run::{Plan, Security, probe};

/// The answer to a line, given whether a MAIL was taken (and not reset) before it.
type Script = Arc<dyn Fn(&str, bool) -> Option<Vec<u8>> + Send + Sync>;

/// A server that greets with `greeting`, then answers each line with `script(line)` (`None`:
/// no answer at all). One connection.
async fn scripted(greeting: &'static [u8], script: Script) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        if write.write_all(greeting).await.is_err() {
            return;
        }
        let mut line = String::new();
        let mut mail = false;
        while lines.read_line(&mut line).await.is_ok_and(|n| n > 0) {
            let upper = line.to_ascii_uppercase();
            let answer = script(line.trim_end(), mail);
            mail = (mail || upper.starts_with("MAIL")) && !upper.starts_with("RSET");
            if let Some(answer) = answer
                && write.write_all(&answer).await.is_err()
            {
                return;
            }
            line.clear();
        }
    });
    address
}

/// A well-behaved answer to each command, the base the scripts change.
fn normal(line: &str, mail: bool) -> Option<Vec<u8>> {
    let verb = line
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let answer: &[u8] = match verb.as_str() {
        "EHLO" => b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
        "MAIL" | "NOOP" | "RSET" => b"250 ok\r\n",
        "RCPT" if !mail => b"503 need MAIL first\r\n",
        "RCPT" if line.contains("elsewhere") => b"550 relay denied\r\n",
        "RCPT" => b"250 ok\r\n",
        "QUIT" => b"221 bye\r\n",
        _ if line.len() > 512 => b"500 line too long\r\n",
        _ => b"500 unknown\r\n",
    };
    Some(answer.to_vec())
}

fn plan(address: std::net::SocketAddr) -> Plan {
    Plan {
        address,
        tls_name: ServerName::try_from("mx.test").unwrap(),
        security: Security::Plain,
        helo: "probe.test".into(),
        timeout: Duration::from_secs(2),
        roots: RootCertStore::empty(),
        login: None,
        auth_in_clear: false,
        relay_test: Some("someone@elsewhere.example".into()),
        from: "probe@probe.test".into(),
        send_to: None,
    }
}

async fn run(plan: &Plan) -> Vec<Check> {
    let (_, checks) = tokio::time::timeout(Duration::from_secs(60), probe(plan))
        .await
        .expect("the probe ends")
        .expect("it connects");
    checks
}

fn outcome(checks: &[Check], key: &str) -> Option<Outcome> {
    checks.iter().find(|c| c.key == key).map(|c| c.outcome)
}

fn detail<'a>(checks: &'a [Check], key: &str) -> &'a str {
    checks
        .iter()
        .find(|c| c.key == key)
        .map_or("", |c| c.detail.as_str())
}

#[tokio::test]
async fn a_well_behaved_server_passes() {
    let address = scripted(b"220 mx.test ready\r\n", Arc::new(normal)).await;
    let checks = run(&plan(address)).await;
    let failed: Vec<&Check> = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(outcome(&checks, "relay"), Some(Outcome::Pass));
    assert_eq!(outcome(&checks, "quit"), Some(Outcome::Pass));
    assert_eq!(outcome(&checks, "size"), Some(Outcome::Pass));
}

#[tokio::test]
async fn a_server_that_cuts_a_long_line_into_commands_is_out_of_step() {
    let script: Script = Arc::new(|line: &str, mail| {
        if line.len() > 512 {
            Some(b"500 too long\r\n500 unknown\r\n500 unknown\r\n".to_vec())
        } else {
            normal(line, mail)
        }
    });
    let address = scripted(b"220 mx.test\r\n", script).await;
    let checks = run(&plan(address)).await;
    assert_eq!(outcome(&checks, "long_line"), Some(Outcome::Fail));
    assert!(detail(&checks, "long_line").contains("{more_replies}"));
    // Out of step, the session ends there: no QUIT is judged on a reply to something else.
    assert_eq!(outcome(&checks, "quit"), None);
}

#[tokio::test]
async fn wrong_answers_to_the_edge_cases_are_reported() {
    let script: Script = Arc::new(|line: &str, mail| match line {
        "XYZZY" => Some(b"250 whatever you say\r\n".to_vec()),
        l if l.starts_with("RCPT") => Some(b"250 ok\r\n".to_vec()),
        _ => normal(line, mail),
    });
    let address = scripted(b"220 mx.test\r\n", script).await;
    let checks = run(&plan(address)).await;
    assert_eq!(outcome(&checks, "unknown_command"), Some(Outcome::Fail));
    // RCPT before MAIL taken: a bad sequence accepted.
    assert_eq!(outcome(&checks, "rcpt_before_mail"), Some(Outcome::Fail));
    assert_eq!(outcome(&checks, "relay"), Some(Outcome::Fail));
    let relay = detail(&checks, "relay");
    assert!(
        relay.contains("<@mx.test:someone@elsewhere.example>"),
        "{relay}"
    );
}

#[tokio::test]
async fn a_reply_that_never_ends_is_cut_off() {
    let script: Script = Arc::new(|line: &str, mail| {
        if line.starts_with("EHLO") {
            Some(b"250-more\r\n".repeat(2000))
        } else {
            normal(line, mail)
        }
    });
    let address = scripted(b"220 mx.test\r\n", script).await;
    let checks = run(&plan(address)).await;
    assert_eq!(outcome(&checks, "session"), Some(Outcome::Fail));
    assert!(detail(&checks, "session").contains("over 512 lines"));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let address = scripted(b"220 mx.test\r\n", Arc::new(|_: &str, _| None)).await;
    let mut plan = plan(address);
    plan.timeout = Duration::from_millis(300);
    let checks = run(&plan).await;
    assert_eq!(outcome(&checks, "greeting"), Some(Outcome::Pass));
    assert!(detail(&checks, "session").contains("no answer within"));
}

#[tokio::test]
async fn data_injected_after_starttls_is_refused() {
    let script: Script = Arc::new(|line: &str, mail| match line {
        "STARTTLS" => Some(b"220 go ahead\r\n250 injected before the handshake\r\n".to_vec()),
        l if l.starts_with("EHLO") => Some(b"250-mx.test\r\n250 STARTTLS\r\n".to_vec()),
        _ => normal(line, mail),
    });
    let address = scripted(b"220 mx.test\r\n", script).await;
    let mut plan = plan(address);
    plan.security = Security::StartTls;
    let checks = run(&plan).await;
    assert_eq!(outcome(&checks, "starttls"), Some(Outcome::Fail));
    assert!(detail(&checks, "starttls").contains("RFC 3207 6"));
}

#[tokio::test]
async fn a_refusing_greeting_ends_the_probe_politely() {
    let address = scripted(b"554 go away\r\n", Arc::new(normal)).await;
    let checks = run(&plan(address)).await;
    assert_eq!(outcome(&checks, "greeting"), Some(Outcome::Fail));
    assert_eq!(checks.len(), 1, "{checks:?}");
}
