//! `yizhan queue ...` (and `mailq`): operating the queue of the running server through its
//! control socket (`yizhan_server::control`). Only the server touches the spool; these
//! commands ask it to.
//!
//! | command | does |
//! | --- | --- |
//! | `queue list [--json]` | every message, `mailq` style: id (`!` = held), size, arrival, sender, then each pending recipient with its last error |
//! | `queue show ID [--body] [--json]` | one message: envelope, recipient states, its header section, and its text with `--body` |
//! | `queue flush [ID \| --domain D]` | pending recipients due now (not held messages), runner woken |
//! | `queue hold ID...` | kept, never tried, until released |
//! | `queue release ID...` | hold lifted, pending recipients due now |
//! | `queue delete ID...` | removed, no report to the sender |
//!
//! IDs are the 32 hex digits shown by `list`, or a unique prefix of at least 6.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use jiff::tz::TimeZone;
use yizhan_server::control::{self, ClientError, MessageInfo, Request, Response};

use crate::sendmail::LoadSettings;

/// How long to wait for the server's answer.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `yizhan queue`.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// The configuration file (default: $YIZHAN_CONFIG, else /etc/yizhan/yizhan.toml if it
    /// exists, else the embedded default).
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// The queue operations.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum QueueCommand {
    /// List the queue like mailq: id (`!` = held), size, arrival, sender, pending recipients.
    List {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, every recipient's state, and its header.
    Show {
        /// Queue id (or a unique prefix of at least 6 digits).
        id: String,
        /// Also print the message text after the header (at most 256 KiB).
        #[arg(long)]
        body: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try now: one message, the recipients in one domain, or every message not held.
    Flush {
        /// Queue id (or a unique prefix).
        id: Option<String>,
        /// Only recipients in this domain.
        #[arg(long, conflicts_with = "id", value_name = "DOMAIN")]
        domain: Option<String>,
    },
    /// Hold messages: they stay queued but are not tried until released.
    Hold {
        /// Queue ids (or unique prefixes).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Release held messages; their pending recipients are tried now.
    Release {
        /// Queue ids (or unique prefixes).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete messages from the queue, without a report to their senders.
    Delete {
        /// Queue ids (or unique prefixes).
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// Why a queue command failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No answer from the server (not running, no permission, ...).
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The server refused (no such message, held, ...).
    #[error("{0}")]
    Refused(String),
    /// The server answered something else than expected.
    #[error("unexpected answer from the server")]
    Unexpected,
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    /// Some ids failed; each was already named on stderr (the exit status says it).
    #[error("{0} of the messages could not be changed")]
    Reported(usize),
}

/// `yizhan queue ...`: loads the settings to find the data directory (hence the socket), runs
/// the command, prints to standard output.
pub fn main(args: QueueArgs, load: LoadSettings<'_>) -> ExitCode {
    let settings = match load(args.config) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("yizhan: {e}");
            return ExitCode::from(78);
        }
    };
    let socket = control::socket_path(&settings.data_dir);
    let mut out = io::stdout().lock();
    match run(&args.command, &socket, &mut out, &TimeZone::system()) {
        Ok(()) => ExitCode::SUCCESS,
        // Each failure was printed where it happened: said once.
        Err(QueueError::Reported(_)) => ExitCode::FAILURE,
        Err(e) => {
            let _ = out.flush();
            eprintln!("yizhan: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mailq` (or `sendmail -bp`): `queue list`, for root and the server's account; anyone else
/// (no access to the control socket) sees their own queued messages through the submission
/// socket ([`yizhan_server::submit`]).
pub fn mailq(config: Option<PathBuf>, load: LoadSettings<'_>) -> ExitCode {
    use yizhan_server::submit::{self, SubmitRequest, SubmitResponse};
    let settings = match load(config) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("yizhan: {e}");
            return ExitCode::from(78);
        }
    };
    let socket = control::socket_path(&settings.data_dir);
    let mut out = io::stdout().lock();
    let tz = TimeZone::system();
    let listed = match run(&QueueCommand::List { json: false }, &socket, &mut out, &tz) {
        Err(QueueError::Client(ClientError::PermissionDenied { .. })) => {
            match submit::request(&settings.data_dir, &SubmitRequest::List, b"") {
                Ok(SubmitResponse::Queue { messages }) => print_list(&messages, &tz, &mut out),
                Ok(SubmitResponse::Error { message, .. }) => Err(QueueError::Refused(message)),
                Ok(_) => Err(QueueError::Unexpected),
                Err(e) => Err(QueueError::Refused(format!(
                    "cannot reach the server's submission socket {}: {e}",
                    submit::socket_path(&settings.data_dir).display()
                ))),
            }
        }
        other => other,
    };
    match listed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("yizhan: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one queue command against the server listening on `socket`, writing to `out`; times
/// are shown in `tz`. With several ids, every id is tried and the first error is returned.
pub fn run(
    command: &QueueCommand,
    socket: &Path,
    out: &mut dyn Write,
    tz: &TimeZone,
) -> Result<(), QueueError> {
    let ask = |request: Request| -> Result<Response, QueueError> {
        match control::request(socket, &request, TIMEOUT)? {
            Response::Error { message, .. } => Err(QueueError::Refused(message)),
            other => Ok(other),
        }
    };
    match command {
        QueueCommand::List { json } => {
            // Page by page: a backlog of a million messages is printed as it is read, never
            // held in memory here or in the server.
            let mut printer = ListPrinter::new(*json);
            let mut after = None;
            loop {
                let request = Request::List {
                    after: after.take(),
                    limit: Some(LIST_PAGE),
                };
                let Response::Queue { messages } = ask(request)? else {
                    return Err(QueueError::Unexpected);
                };
                for m in &messages {
                    printer.entry(m, tz, out)?;
                }
                match messages.last() {
                    Some(last) if messages.len() == LIST_PAGE => after = Some(last.id.clone()),
                    _ => break,
                }
            }
            printer.finish(out)?;
        }
        QueueCommand::Show { id, body, json } => {
            let request = Request::Show {
                id: id.clone(),
                body: *body,
            };
            let Response::Message {
                message,
                headers,
                body: text,
            } = ask(request)?
            else {
                return Err(QueueError::Unexpected);
            };
            if *json {
                let value =
                    serde_json::json!({ "message": message, "headers": headers, "body": text });
                serde_json::to_writer_pretty(&mut *out, &value).map_err(io::Error::from)?;
                writeln!(out)?;
            } else {
                out.write_all(format_show(&message, &headers, tz).as_bytes())?;
                if let Some(text) = text {
                    writeln!(out)?;
                    out.write_all(text.replace("\r\n", "\n").as_bytes())?;
                }
            }
        }
        QueueCommand::Flush { id, domain } => {
            let request = Request::Flush {
                id: id.clone(),
                domain: domain.clone(),
            };
            let Response::Done {
                messages,
                recipients,
            } = ask(request)?
            else {
                return Err(QueueError::Unexpected);
            };
            writeln!(
                out,
                "flushed {recipients} recipient{} in {messages} message{}",
                plural(recipients),
                plural(messages)
            )?;
        }
        QueueCommand::Hold { ids }
        | QueueCommand::Release { ids }
        | QueueCommand::Delete { ids } => {
            let mut failed = 0;
            for id in ids {
                let (request, verb) = match command {
                    QueueCommand::Hold { .. } => (Request::Hold { id: id.clone() }, "held"),
                    QueueCommand::Release { .. } => {
                        (Request::Release { id: id.clone() }, "released")
                    }
                    _ => (Request::Delete { id: id.clone() }, "deleted"),
                };
                match ask(request) {
                    Ok(Response::Done { recipients, .. }) => writeln!(
                        out,
                        "{verb} {id} ({recipients} pending recipient{})",
                        plural(recipients)
                    )?,
                    Ok(_) => {
                        eprintln!("yizhan: {id}: {}", QueueError::Unexpected);
                        failed += 1;
                    }
                    // The server is not there: the other ids will not fare better.
                    Err(e @ QueueError::Client(_)) => return Err(e),
                    Err(e) => {
                        eprintln!("yizhan: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                return Err(QueueError::Reported(failed));
            }
        }
    }
    Ok(())
}

/// Prints `messages` as `queue list` does.
fn print_list(
    messages: &[MessageInfo],
    tz: &TimeZone,
    out: &mut dyn Write,
) -> Result<(), QueueError> {
    let mut printer = ListPrinter::new(false);
    for m in messages {
        printer.entry(m, tz, out)?;
    }
    printer.finish(out)?;
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn time(second: i64, tz: &TimeZone, format: &str) -> String {
    match jiff::Timestamp::from_second(second) {
        Ok(t) => t.to_zoned_datetime(tz.clone()).strftime(format).to_string(),
        Err(_) => second.to_string(),
    }
}

fn sender(message: &MessageInfo) -> &str {
    if message.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &message.sender
    }
}

/// The `mailq` table (in the manner of Postfix's `postqueue -p`).
#[cfg(test)]
fn format_list(messages: &[MessageInfo], tz: &TimeZone) -> String {
    let mut out = Vec::new();
    let mut printer = ListPrinter::new(false);
    for m in messages {
        let _ = printer.entry(m, tz, &mut out);
    }
    let _ = printer.finish(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Messages asked for at once by `queue list`.
const LIST_PAGE: usize = 1000;

/// `queue list`, one message at a time: the `mailq` table, or a JSON array.
struct ListPrinter {
    json: bool,
    count: usize,
    total: u64,
}

impl ListPrinter {
    fn new(json: bool) -> Self {
        ListPrinter {
            json,
            count: 0,
            total: 0,
        }
    }

    fn entry(&mut self, m: &MessageInfo, tz: &TimeZone, out: &mut dyn Write) -> io::Result<()> {
        let first = self.count == 0;
        self.count += 1;
        self.total += m.size;
        if self.json {
            out.write_all(if first { b"[\n" } else { b",\n" })?;
            serde_json::to_writer_pretty(&mut *out, m).map_err(io::Error::from)?;
            return Ok(());
        }
        if first {
            writeln!(
                out,
                "{:<33}{:>9} {:<20}  -Sender/Recipient-------",
                "-Queue ID-", "--Size--", "----Arrival Time----"
            )?;
        }
        let indent = " ".repeat(32 + 1 + 9 + 1 + 20 + 2);
        let mark = if m.held { '!' } else { ' ' };
        writeln!(
            out,
            "{:<32}{mark}{:>9} {:<20}  {}",
            m.id,
            m.size,
            time(m.received_at, tz, "%a %b %e %H:%M:%S"),
            sender(m)
        )?;
        for r in m.recipients.iter().filter(|r| r.state == "pending") {
            if let Some(error) = &r.last_error {
                writeln!(out, "{indent}({})", error.replace(['\r', '\n'], " "))?;
            }
            writeln!(out, "{indent}{}", r.address)?;
        }
        writeln!(out)
    }

    fn finish(&self, out: &mut dyn Write) -> io::Result<()> {
        match (self.json, self.count) {
            (true, 0) => writeln!(out, "[]"),
            (true, _) => writeln!(out, "\n]"),
            (false, 0) => writeln!(out, "Mail queue is empty"),
            (false, n) => writeln!(
                out,
                "-- {} Kbytes in {n} Request{}.",
                self.total.div_ceil(1024),
                plural(n)
            ),
        }
    }
}

/// `queue show`: the envelope, each recipient's state and the header section.
pub fn format_show(m: &MessageInfo, headers: &str, tz: &TimeZone) -> String {
    let when = |t| time(t, tz, "%a, %-d %b %Y %H:%M:%S %z");
    let mut out = format!(
        "Queue ID: {}\nArrival:  {}\nSize:     {} bytes\nSender:   <{}>\nStatus:   {}\nRecipients:\n",
        m.id,
        when(m.received_at),
        m.size,
        m.sender,
        if m.held { "held" } else { "queued" },
    );
    for r in &m.recipients {
        let mut line = format!("  {} ({}", r.address, r.state);
        if r.attempts > 0 {
            line.push_str(&format!(
                ", {} attempt{}",
                r.attempts,
                plural(r.attempts as usize)
            ));
        }
        if let Some(next) = r.next_attempt {
            line.push_str(&format!(", next {}", when(next)));
        }
        line.push(')');
        if r.original.trim_matches(['<', '>']) != r.address {
            line.push_str(&format!(" for {}", r.original));
        }
        out.push_str(&line);
        out.push('\n');
        if let Some(detail) = &r.detail {
            out.push_str(&format!("    {detail}\n"));
        } else if let Some(error) = &r.last_error {
            out.push_str(&format!("    last error: {error}\n"));
        }
    }
    out.push('\n');
    out.push_str(&headers.replace("\r\n", "\n"));
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use yizhan_server::control::RecipientInfo;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        queue: Queue,
    }

    #[derive(clap::Subcommand)]
    enum Queue {
        Queue(QueueArgs),
    }

    #[test]
    fn command_line() {
        let id = "0190f2c4a1b27c3d8e9f00112233aabb";
        let cases: Vec<(Vec<&str>, QueueCommand, Option<&str>)> = vec![
            (
                vec!["queue", "list"],
                QueueCommand::List { json: false },
                None,
            ),
            (
                vec!["queue", "list", "--json", "--config", "y.toml"],
                QueueCommand::List { json: true },
                Some("y.toml"),
            ),
            (
                vec!["queue", "-c", "y.toml", "show", id],
                QueueCommand::Show {
                    id: id.into(),
                    body: false,
                    json: false,
                },
                Some("y.toml"),
            ),
            (
                vec!["queue", "show", "--body", id],
                QueueCommand::Show {
                    id: id.into(),
                    body: true,
                    json: false,
                },
                None,
            ),
            (
                vec!["queue", "-c", "y.toml", "show", id],
                QueueCommand::Show {
                    id: id.into(),
                    body: false,
                    json: false,
                },
                Some("y.toml"),
            ),
            (
                vec!["queue", "flush"],
                QueueCommand::Flush {
                    id: None,
                    domain: None,
                },
                None,
            ),
            (
                vec!["queue", "flush", id],
                QueueCommand::Flush {
                    id: Some(id.into()),
                    domain: None,
                },
                None,
            ),
            (
                vec!["queue", "flush", "--domain", "x.example"],
                QueueCommand::Flush {
                    id: None,
                    domain: Some("x.example".into()),
                },
                None,
            ),
            (
                vec!["queue", "hold", id, "abcdef"],
                QueueCommand::Hold {
                    ids: vec![id.into(), "abcdef".into()],
                },
                None,
            ),
            (
                vec!["queue", "release", id],
                QueueCommand::Release {
                    ids: vec![id.into()],
                },
                None,
            ),
            (
                vec!["queue", "delete", id],
                QueueCommand::Delete {
                    ids: vec![id.into()],
                },
                None,
            ),
        ];
        for (argv, want, config) in cases {
            let argv: Vec<&str> = std::iter::once("yizhan")
                .chain(argv.iter().copied())
                .collect();
            let Cli {
                queue: Queue::Queue(args),
            } = Cli::try_parse_from(&argv).unwrap();
            assert_eq!(args.command, want, "{argv:?}");
            assert_eq!(args.config.as_deref(), config.map(Path::new), "{argv:?}");
        }
        for bad in [
            vec!["queue", "hold"],
            vec!["queue", "flush", "x", "--domain", "d"],
            vec!["queue", "show"],
        ] {
            let argv: Vec<&str> = std::iter::once("yizhan")
                .chain(bad.iter().copied())
                .collect();
            assert!(Cli::try_parse_from(&argv).is_err(), "{bad:?}");
        }
    }

    fn message(held: bool) -> MessageInfo {
        MessageInfo {
            id: "0190f2c4a1b27c3d8e9f00112233aabb".into(),
            received_at: 1_709_640_000, // 2024-03-05 12:00:00 UTC
            size: 1500,
            sender: "".into(),
            held,
            recipients: vec![
                RecipientInfo {
                    address: "a@remote.example".into(),
                    original: "<list@test.example>".into(),
                    local: false,
                    state: "pending".into(),
                    attempts: 2,
                    next_attempt: Some(1_709_643_600),
                    last_error: Some("connection refused".into()),
                    detail: None,
                },
                RecipientInfo {
                    address: "u@test.example".into(),
                    original: "<u@test.example>".into(),
                    local: true,
                    state: "delivered".into(),
                    attempts: 1,
                    next_attempt: None,
                    last_error: None,
                    detail: Some("/mail/u/new/1".into()),
                },
            ],
        }
    }

    #[test]
    fn list_table() {
        assert_eq!(format_list(&[], &TimeZone::UTC), "Mail queue is empty\n");
        let table = format_list(&[message(true), message(false)], &TimeZone::UTC);
        let lines: Vec<&str> = table.lines().collect();
        let pad = " ".repeat(65);
        assert_eq!(
            lines[0],
            "-Queue ID-                        --Size-- ----Arrival Time----  -Sender/Recipient-------"
        );
        assert_eq!(
            lines[1],
            "0190f2c4a1b27c3d8e9f00112233aabb!     1500 Tue Mar  5 12:00:00   MAILER-DAEMON"
        );
        assert_eq!(lines[2], format!("{pad}(connection refused)"));
        assert_eq!(lines[3], format!("{pad}a@remote.example"));
        assert_eq!(lines[4], "");
        assert!(lines[5].starts_with("0190f2c4a1b27c3d8e9f00112233aabb "));
        assert_eq!(lines.last(), Some(&"-- 3 Kbytes in 2 Requests."));
        assert!(
            !table.contains("u@test.example"),
            "delivered recipients are not listed"
        );
    }

    #[test]
    fn show_text() {
        let text = format_show(&message(true), "Subject: x\r\nTo: y\r\n", &TimeZone::UTC);
        let want = "Queue ID: 0190f2c4a1b27c3d8e9f00112233aabb
Arrival:  Tue, 5 Mar 2024 12:00:00 +0000
Size:     1500 bytes
Sender:   <>
Status:   held
Recipients:
  a@remote.example (pending, 2 attempts, next Tue, 5 Mar 2024 13:00:00 +0000) for <list@test.example>
    last error: connection refused
  u@test.example (delivered, 1 attempt)
    /mail/u/new/1

Subject: x
To: y
";
        assert_eq!(text, want);
    }

    #[test]
    fn not_running_names_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let mut out = Vec::new();
        let err = run(
            &QueueCommand::List { json: false },
            &socket,
            &mut out,
            &TimeZone::UTC,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("not running") && text.contains(&socket.display().to_string()),
            "{text}"
        );
    }
}
