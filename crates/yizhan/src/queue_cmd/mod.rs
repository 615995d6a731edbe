//! `yizhan queue ...` (and `mailq`): operating the queue of the running server through its
//! control socket (`yizhan_server::control`). Only the server touches the spool; these
//! commands ask it to.
//!
//! | command | does |
//! | --- | --- |
//! | `queue list [FILTERS] [--json]` | the queue, `mailq` style: id (`!` = held), size, arrival, sender, then each pending recipient with its last error |
//! | `queue show ID [--body] [--json]` | one message: envelope, recipient states, its header section, and its text with `--body` |
//! | `queue flush [ID \| --domain D] [--json]` | pending recipients due now (not held messages), runner woken |
//! | `queue hold SELECTION` | kept, never tried, until released |
//! | `queue release SELECTION` | hold lifted, pending recipients due now |
//! | `queue requeue SELECTION` | delivery starts over: hold lifted, attempts forgotten, due now |
//! | `queue bounce SELECTION` | pending recipients failed now, report to the sender |
//! | `queue delete SELECTION` | removed, no report to the sender |
//!
//! A SELECTION is queue ids (the 32 hex digits shown by `list`, or a unique prefix of at
//! least 6), or `--all`, or filters (`--state`, `--sender`, `--recipient`, `--destination`,
//! `--older-than`), the same as the admin API's.

mod bulk;
mod print;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use jiff::tz::TimeZone;
use yizhan_server::control::{self, Action, ClientError, MessageInfo, Request, Response};

pub use bulk::{FilterArgs, Selection};
pub use print::format_show;
use print::{LIST_PAGE, ListPrinter, plural};

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
        /// Only the messages these select.
        #[command(flatten)]
        filter: FilterArgs,
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hold messages: they stay queued but are not tried until released.
    Hold(Selection),
    /// Release held messages; their pending recipients are tried now.
    Release(Selection),
    /// Start delivery over: hold lifted, attempts and last errors forgotten, tried now (the
    /// message's lifetime still counts from its arrival).
    Requeue(Selection),
    /// Give up on the pending recipients now; their senders get a failure report.
    Bounce(Selection),
    /// Delete messages from the queue, without a report to their senders.
    Delete(Selection),
}

impl QueueCommand {
    /// The bulk action of this command, with its selection.
    fn action(&self) -> Option<(Action, &Selection)> {
        Some(match self {
            QueueCommand::Hold(s) => (Action::Hold, s),
            QueueCommand::Release(s) => (Action::Release, s),
            QueueCommand::Requeue(s) => (Action::Requeue, s),
            QueueCommand::Bounce(s) => (Action::Bounce, s),
            QueueCommand::Delete(s) => (Action::Delete, s),
            _ => return None,
        })
    }
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
    /// The command line asks for something impossible (exit status 2, as for clap's errors).
    #[error("{0}")]
    Usage(String),
}

/// `yizhan queue ...`: loads the settings to find the data directory (hence the socket), runs
/// the command, prints to standard output.
pub fn main(args: QueueArgs, load: LoadSettings<'_>) -> ExitCode {
    let settings = match crate::sendmail::settings_or_exit(load, args.config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let socket = control::socket_path(&settings.data_dir);
    let mut out = io::stdout().lock();
    match run(&args.command, &socket, &mut out, &TimeZone::system()) {
        Ok(()) => ExitCode::SUCCESS,
        // Each failure was printed where it happened: said once.
        Err(QueueError::Reported(_)) => ExitCode::FAILURE,
        Err(e @ QueueError::Usage(_)) => {
            eprintln!("yizhan: {e}");
            ExitCode::from(2)
        }
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
    let settings = match crate::sendmail::settings_or_exit(load, config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let socket = control::socket_path(&settings.data_dir);
    let mut out = io::stdout().lock();
    let tz = TimeZone::system();
    let listed = match run(
        &QueueCommand::List {
            filter: FilterArgs::default(),
            json: false,
        },
        &socket,
        &mut out,
        &tz,
    ) {
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
/// are shown in `tz`. An action on several messages tries every one, names each failure on
/// stderr, and then fails with [`QueueError::Reported`].
pub fn run(
    command: &QueueCommand,
    socket: &Path,
    out: &mut dyn Write,
    tz: &TimeZone,
) -> Result<(), QueueError> {
    if let Some((action, selection)) = command.action() {
        return bulk::act(action, selection, socket, out);
    }
    match command {
        QueueCommand::List { filter, json } => {
            let filter = filter.to_filter()?;
            let now = jiff::Timestamp::now().as_second();
            let mut printer = ListPrinter::new(*json);
            // Page by page: a backlog of a million messages is printed as it is read, never
            // held in memory here or in the server.
            each_message(socket, |m| {
                if filter.matches(m, now) {
                    printer.entry(m, tz, out)?;
                }
                Ok(())
            })?;
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
            } = ask(socket, request)?
            else {
                return Err(QueueError::Unexpected);
            };
            if *json {
                let value =
                    serde_json::json!({ "message": message, "headers": headers, "body": text });
                print_json(out, &value)?;
            } else {
                out.write_all(format_show(&message, &headers, tz).as_bytes())?;
                if let Some(text) = text {
                    writeln!(out)?;
                    out.write_all(text.replace("\r\n", "\n").as_bytes())?;
                }
            }
        }
        QueueCommand::Flush { id, domain, json } => {
            let request = Request::Flush {
                id: id.clone(),
                domain: domain.clone(),
            };
            let Response::Done {
                messages,
                recipients,
            } = ask(socket, request)?
            else {
                return Err(QueueError::Unexpected);
            };
            if *json {
                let value = serde_json::json!({ "messages": messages, "recipients": recipients });
                print_json(out, &value)?;
            } else {
                writeln!(
                    out,
                    "flushed {recipients} recipient{} in {messages} message{}",
                    plural(recipients),
                    plural(messages)
                )?;
            }
        }
        _ => unreachable!("the bulk actions are handled above"),
    }
    Ok(())
}

/// One request; a refusal is an error.
fn ask(socket: &Path, request: Request) -> Result<Response, QueueError> {
    match control::request(socket, &request, TIMEOUT)? {
        Response::Error { message, .. } => Err(QueueError::Refused(message)),
        other => Ok(other),
    }
}

/// Calls `each` on every queued message, oldest first, a page at a time.
fn each_message(
    socket: &Path,
    mut each: impl FnMut(&MessageInfo) -> Result<(), QueueError>,
) -> Result<(), QueueError> {
    let mut after = None;
    loop {
        let request = Request::List {
            after: after.take(),
            limit: Some(LIST_PAGE),
        };
        let Response::Queue { messages } = ask(socket, request)? else {
            return Err(QueueError::Unexpected);
        };
        for m in &messages {
            each(m)?;
        }
        match messages.last() {
            Some(last) if messages.len() == LIST_PAGE => after = Some(last.id.clone()),
            _ => return Ok(()),
        }
    }
}

fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), QueueError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
    writeln!(out)?;
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

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
                QueueCommand::List {
                    filter: FilterArgs::default(),
                    json: false,
                },
                None,
            ),
            (
                vec!["queue", "list", "--json", "--config", "y.toml"],
                QueueCommand::List {
                    filter: FilterArgs::default(),
                    json: true,
                },
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
                    json: false,
                },
                None,
            ),
            (
                vec!["queue", "flush", id],
                QueueCommand::Flush {
                    id: Some(id.into()),
                    domain: None,
                    json: false,
                },
                None,
            ),
            (
                vec!["queue", "flush", "--domain", "x.example"],
                QueueCommand::Flush {
                    id: None,
                    domain: Some("x.example".into()),
                    json: false,
                },
                None,
            ),
            (
                vec!["queue", "hold", id, "abcdef"],
                QueueCommand::Hold(Selection {
                    ids: vec![id.into(), "abcdef".into()],
                    ..Selection::default()
                }),
                None,
            ),
            (
                vec!["queue", "release", id],
                QueueCommand::Release(Selection {
                    ids: vec![id.into()],
                    ..Selection::default()
                }),
                None,
            ),
            (
                vec!["queue", "delete", id],
                QueueCommand::Delete(Selection {
                    ids: vec![id.into()],
                    ..Selection::default()
                }),
                None,
            ),
            (
                vec![
                    "queue",
                    "requeue",
                    "--state",
                    "deferred",
                    "--older-than",
                    "2h",
                    "--json",
                ],
                QueueCommand::Requeue(Selection {
                    filter: FilterArgs {
                        state: Some("deferred".into()),
                        older_than: Some(Duration::from_secs(7200)),
                        ..FilterArgs::default()
                    },
                    json: true,
                    ..Selection::default()
                }),
                None,
            ),
            (
                vec!["queue", "bounce", "--all", "--destination", "far.example"],
                QueueCommand::Bounce(Selection {
                    all: true,
                    filter: FilterArgs {
                        destination: Some("far.example".into()),
                        ..FilterArgs::default()
                    },
                    ..Selection::default()
                }),
                None,
            ),
            (
                vec!["queue", "list", "--sender", "<>"],
                QueueCommand::List {
                    filter: FilterArgs {
                        sender: Some("<>".into()),
                        ..FilterArgs::default()
                    },
                    json: false,
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
            vec!["queue", "hold", "--state", "frozen"],
            vec!["queue", "bounce", "--all", id],
            vec!["queue", "flush", "x", "--domain", "d"],
            vec!["queue", "show"],
        ] {
            let argv: Vec<&str> = std::iter::once("yizhan")
                .chain(bad.iter().copied())
                .collect();
            assert!(Cli::try_parse_from(&argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn not_running_names_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let mut out = Vec::new();
        let err = run(
            &QueueCommand::List {
                filter: FilterArgs::default(),
                json: false,
            },
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
