//! `yizhan sendmail` (and the binary invoked as `sendmail`, `mailq` or `newaliases`): the
//! classic local submission interface, so that cron, PHP's `mail()` and list managers work
//! unchanged.
//!
//! The message is read from standard input (LF line ends are turned into CRLF, RFC 5322 2.1;
//! without `-i`/`-oi` a line holding a single `.` ends the input, as in classic sendmail),
//! completed with the header fields a message must have (RFC 5322 3.6: `From:`, `Date:`,
//! and `Message-ID:` which it should have, 3.6.4), stripped of `Bcc:` (3.6.3) and written into
//! the server's maildrop ([`yizhan_server::pickup::drop_message`]), so the server does not have
//! to be running. A running server is then woken through the control socket; otherwise it picks
//! the message up when it starts. A maildrop that does not exist belongs to no server: the
//! message is refused (exit 75) before the input is read, and nothing is written.
//!
//! Flags: `-t` (recipients from `To:`, `Cc:`, `Bcc:`, or from the `Resent-` fields if there are
//! any, RFC 5322 3.6.6; added to those on the command line), `-f ADDR` / `-r ADDR` (envelope
//! sender), `-F NAME` (full name for a `From:` that is added), `-i` / `-oi` (a lone `.` is
//! data), `-C FILE` / `--config FILE` (configuration), `-bm` (the default), `-bp` (list the
//! queue, as `mailq`), `-bi` (as `newaliases`), `-bv` (where each recipient's mail would go),
//! `-q` / `-qRDOMAIN` (flush the running server's queue). Other `-o` options and `-v`, `-m`, `-n`, `-N`,
//! `-R`, `-V`, `-B`, `-h`, `-L`, `-O`, `-X` are accepted and ignored; anything else is a usage
//! error.

mod message;
mod stdio_smtp;

pub use message::{Context, Prepared, prepare, read_message};

use std::ffi::OsString;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use yizhan_server::control::{self, Request};
use yizhan_server::pickup::{self, Submission};
use yizhan_server::settings::Settings;

/// Loads the settings the way `serve` does, from `--config FILE` if given (else
/// `$YIZHAN_CONFIG`, else `/etc/yizhan/yizhan.toml`, else the embedded default); the error is
/// ready to print.
pub type LoadSettings<'a> = &'a dyn Fn(Option<PathBuf>) -> Result<Settings, String>;

/// The settings for a client command, or the exit status (78, EX_CONFIG) once the error is
/// said on standard error.
pub fn settings_or_exit(
    load: LoadSettings<'_>,
    config: Option<PathBuf>,
) -> Result<Settings, std::process::ExitCode> {
    load(config).map_err(|e| {
        eprintln!("yizhan: {e}");
        std::process::ExitCode::from(78)
    })
}

/// What the binary is, judging by the name it was invoked under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    /// `sendmail`: submit a message from standard input.
    Sendmail,
    /// `mailq`: list the queue (as `yizhan queue list`).
    Mailq,
    /// `newaliases`: nothing to do (aliases live in the configuration file).
    Newaliases,
}

/// The personality for `argv[0]` (a path or a bare name), or `None` for `yizhan` itself.
pub fn dispatch_by_argv0(argv0: &str) -> Option<Personality> {
    let name = Path::new(argv0).file_name()?.to_str()?;
    match name {
        "sendmail" => Some(Personality::Sendmail),
        "mailq" => Some(Personality::Mailq),
        "newaliases" => Some(Personality::Newaliases),
        _ => None,
    }
}

/// Runs a personality with the arguments after `argv[0]`.
pub fn run_personality(
    personality: Personality,
    args: Vec<OsString>,
    load: LoadSettings<'_>,
) -> ExitCode {
    let args = lossy(args);
    match personality {
        Personality::Sendmail => main(&args, load),
        Personality::Newaliases => newaliases(),
        Personality::Mailq => {
            // mailq knows -C FILE (and our --config FILE); other flags are ignored.
            let config = parse_args(&args).ok().and_then(|o| o.config);
            crate::queue_cmd::mailq(config, load)
        }
    }
}

/// Arguments of `yizhan sendmail`, taken raw (sendmail's flags are not clap-shaped).
#[derive(Debug, Clone, clap::Args)]
#[command(disable_help_flag = true)]
pub struct SendmailArgs {
    /// Sendmail flags and recipients: -t, -i/-oi, -f ADDR, -F NAME, -C FILE, ADDR...
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "ARGS")]
    pub args: Vec<OsString>,
}

/// `newaliases`: aliases are read from the configuration file at start, nothing to rebuild.
pub fn newaliases() -> ExitCode {
    eprintln!(
        "newaliases: yizhan reads aliases from its configuration file; nothing to rebuild \
         (run `yizhan check-config`, then restart the server)"
    );
    ExitCode::SUCCESS
}

/// `sendmail ARGS` (without `argv[0]`): parses the flags, loads the settings and submits the
/// message on standard input.
pub fn main(args: &[String], load: LoadSettings<'_>) -> ExitCode {
    let options = match parse_args(args) {
        Ok(options) => options,
        Err(e) => return fail(&e),
    };
    match options.mode {
        Mode::Deliver => {}
        Mode::ListQueue => return crate::queue_cmd::mailq(options.config, load),
        Mode::Newaliases => return newaliases(),
        Mode::Flush(domain) => {
            let args = crate::queue_cmd::QueueArgs {
                config: options.config,
                command: crate::queue_cmd::QueueCommand::Flush {
                    id: None,
                    domain,
                    json: false,
                },
            };
            return crate::queue_cmd::main(args, load);
        }
        Mode::Verify => return verify(&options, load),
        Mode::Smtp => return smtp_on_stdio(&options, load),
    }
    let settings = match load(options.config.clone()) {
        Ok(settings) => settings,
        Err(e) => return fail(&SendmailError::Config(e)),
    };
    let context = Context::current(&settings.hostname);
    match submit(&options, &settings, io::stdin().lock(), &context) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `sendmail -bs`: one SMTP session on standard input and output ([`stdio_smtp`]).
fn smtp_on_stdio(options: &Options, load: LoadSettings<'_>) -> ExitCode {
    let settings = match load(options.config.clone()) {
        Ok(settings) => settings,
        Err(e) => return fail(&SendmailError::Config(e)),
    };
    let context = Context::current(&settings.hostname);
    match stdio_smtp::serve(
        options,
        &settings,
        &context,
        io::stdin().lock(),
        io::stdout().lock(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&SendmailError::Read(e)),
    }
}

/// `sendmail -bv ADDR...`: where each recipient's mail would go, on standard output (as
/// Postfix's `sendmail -bv` reports, without sending anything). Exit 0 when every recipient
/// is deliverable, 67 (EX_NOUSER) otherwise.
fn verify(options: &Options, load: LoadSettings<'_>) -> ExitCode {
    use yizhan_server::directory::{Resolution, Target};
    let settings = match load(options.config.clone()) {
        Ok(settings) => settings,
        Err(e) => return fail(&SendmailError::Config(e)),
    };
    let recipients: Vec<String> = options
        .recipients
        .iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    if recipients.is_empty() {
        return fail(&SendmailError::Usage(
            "-bv needs at least one recipient".into(),
        ));
    }
    let mut all_ok = true;
    for recipient in &recipients {
        let address = recipient.trim_matches(['<', '>']);
        let (local, domain) = match address.rsplit_once('@') {
            Some((local, domain)) => (local, Some(domain)),
            None => (address, None),
        };
        let verdict = match settings.directory.resolve(local, domain) {
            Resolution::Deliver(targets) => targets
                .iter()
                .map(|t| match t {
                    Target::Local(local) => {
                        format!("delivered to the local mailbox {}", local.address)
                    }
                    Target::Remote(remote) => format!("forwarded to {remote}"),
                })
                .collect::<Vec<_>>()
                .join("; "),
            Resolution::NotLocal => format!(
                "relayed to the mail exchangers of {} (looked up when it is sent)",
                domain.unwrap_or("?")
            ),
            Resolution::Relocated(new) => {
                all_ok = false;
                format!("undeliverable: the user has moved to {new} (551)")
            }
            Resolution::UnknownUser => {
                all_ok = false;
                "undeliverable: no such user here (550)".to_owned()
            }
        };
        println!("{address}: {verdict}");
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(67)
    }
}

fn fail(e: &SendmailError) -> ExitCode {
    eprintln!("sendmail: {e}");
    ExitCode::from(e.exit_code())
}

fn lossy(args: Vec<OsString>) -> Vec<String> {
    args.into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// What went wrong, with the sysexits(3) code classic sendmail uses for it.
#[derive(Debug, thiserror::Error)]
pub enum SendmailError {
    /// Bad flags (EX_USAGE, 64).
    #[error("{0}")]
    Usage(String),
    /// No recipient given or found (EX_USAGE, 64).
    #[error("no recipient addresses found (give them as arguments, or use -t)")]
    NoRecipients,
    /// An address does not parse (EX_DATAERR, 65).
    #[error("{0}")]
    BadAddress(String),
    /// The message is larger than the server accepts (EX_DATAERR, 65).
    #[error("message larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The configuration cannot be loaded (EX_CONFIG, 78).
    #[error("{0}")]
    Config(String),
    /// Reading the message failed (EX_IOERR, 74).
    #[error("cannot read the message: {0}")]
    Read(io::Error),
    /// The maildrop cannot be written, or belongs to no server (EX_TEMPFAIL, 75: try again
    /// later). Nothing was queued.
    #[error("{0}; nothing was queued{hint}", hint = drop_hint(.0))]
    Drop(#[from] pickup::DropError),
    /// The server's submission socket cannot be reached (EX_TEMPFAIL, 75). Nothing was queued.
    #[error(
        "cannot reach the server's submission socket {}: {source}; nothing was queued (a user \
         other than root and the server's account queues mail through the running server)",
        path.display()
    )]
    NotRunning {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The server refused the message; `temporary`: try again later (EX_TEMPFAIL, 75), else
    /// EX_DATAERR (65).
    #[error("the server refused the message: {message}")]
    Refused {
        /// Its reason.
        message: String,
        /// Whether trying later may work.
        temporary: bool,
    },
}

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Into the maildrop (root, the server's account): this file, picked up by the server.
    Dropped(PathBuf),
    /// Through the submission socket into the spool, with this queue id and envelope sender.
    Spooled {
        /// The queue id.
        id: String,
        /// The envelope sender the server used (an untrusted user's own address).
        sender: String,
    },
}

/// What to do about a maildrop that belongs to no server, in sendmail's own terms.
fn drop_hint(e: &pickup::DropError) -> &'static str {
    match e {
        pickup::DropError::NoServer { .. } => {
            ". Start `yizhan serve` with the same configuration (messages then wait in the \
             maildrop whenever the server is down), or give sendmail the server's \
             configuration with -C FILE (or $YIZHAN_CONFIG)"
        }
        _ => "",
    }
}

impl SendmailError {
    /// The process exit code (sysexits.h).
    pub fn exit_code(&self) -> u8 {
        match self {
            SendmailError::Usage(_) | SendmailError::NoRecipients => 64,
            SendmailError::BadAddress(_) | SendmailError::TooLarge(_) => 65,
            SendmailError::Read(_) => 74,
            SendmailError::Drop(_) | SendmailError::NotRunning { .. } => 75,
            SendmailError::Refused { temporary, .. } => {
                if *temporary {
                    75
                } else {
                    65
                }
            }
            SendmailError::Config(_) => 78,
        }
    }
}

/// What `-b` asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// `-bm`: submit a message (default).
    #[default]
    Deliver,
    /// `-bp`: list the queue.
    ListQueue,
    /// `-bi`: rebuild aliases (nothing to do).
    Newaliases,
    /// `-bv`: say where each recipient's mail would go; nothing is sent.
    Verify,
    /// `-bs`: an SMTP session on standard input and output.
    Smtp,
    /// `-q` (any interval is ignored, as Postfix does): try every queued message now; `-qR
    /// SITE`: only recipients in that domain.
    Flush(Option<String>),
}

/// Parsed sendmail flags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// `-C FILE` / `--config FILE`.
    pub config: Option<PathBuf>,
    /// `-t`: take recipients from the header.
    pub extract_recipients: bool,
    /// `-i` / `-oi`: a line with a single `.` does not end the input.
    pub ignore_dots: bool,
    /// `-f ADDR` / `-r ADDR`: the envelope sender (`""` or `<>` for the null sender).
    pub sender: Option<String>,
    /// `-F NAME`: the full name for an added `From:`.
    pub full_name: Option<String>,
    /// `-b` mode.
    pub mode: Mode,
    /// Recipients given as arguments (each may be a comma-separated list).
    pub recipients: Vec<String>,
    /// `-N NOTIFY`, `-R RET`, `-V ENVID`: delivery status notifications asked for.
    pub dsn: pickup::Dsn,
}

/// Parses sendmail flags getopt-style (`-ti`, `-fme@x`, `-f me@x`, `--` ends the flags).
pub fn parse_args(args: &[String]) -> Result<Options, SendmailError> {
    let mut options = Options::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            options.recipients.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(value) = arg.strip_prefix("--config") {
            let value = match value.strip_prefix('=') {
                Some(v) => v.to_owned(),
                None if value.is_empty() => take_next(args, &mut i, "--config")?,
                None => return Err(SendmailError::Usage(format!("unknown option {arg}"))),
            };
            options.config = Some(PathBuf::from(value));
            continue;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            options.recipients.push(arg.clone());
            continue;
        };
        for (at, flag) in flags.char_indices() {
            let rest = &flags[at + flag.len_utf8()..];
            match flag {
                't' => options.extract_recipients = true,
                'i' => options.ignore_dots = true,
                'v' | 'm' | 'n' | 'U' | 'G' => {}
                // Flags with a value: the rest of this argument, else the next argument.
                'f' | 'r' | 'F' | 'C' | 'o' | 'O' | 'b' | 'N' | 'R' | 'V' | 'B' | 'h' | 'L'
                | 'X' | 'q' => {
                    let value = if !rest.is_empty() {
                        rest.to_owned()
                    } else if flag == 'q' {
                        String::new()
                    } else {
                        take_next(args, &mut i, &format!("-{flag}"))?
                    };
                    apply_valued(&mut options, flag, value)?;
                    break;
                }
                other => {
                    return Err(SendmailError::Usage(format!(
                        "unsupported option -{other} (see `yizhan sendmail` in docs/operations.md)"
                    )));
                }
            }
        }
    }
    Ok(options)
}

fn take_next(args: &[String], i: &mut usize, flag: &str) -> Result<String, SendmailError> {
    let value = args
        .get(*i)
        .cloned()
        .ok_or_else(|| SendmailError::Usage(format!("option {flag} needs a value")))?;
    *i += 1;
    Ok(value)
}

fn apply_valued(options: &mut Options, flag: char, value: String) -> Result<(), SendmailError> {
    match flag {
        'f' | 'r' => options.sender = Some(value),
        // One line of text: a line break would add a header field of the user's choosing.
        'F' if value.chars().any(char::is_control) => {
            return Err(SendmailError::Usage(
                "-F: the full name must be one line of text (no line breaks or control characters)"
                    .into(),
            ));
        }
        'F' => options.full_name = Some(value),
        'C' => options.config = Some(PathBuf::from(value)),
        // -oi (and -oitrue); every other -o option is a sendmail.cf knob we do not have.
        'o' if value == "i" || value.eq_ignore_ascii_case("itrue") => options.ignore_dots = true,
        'b' => {
            options.mode = match value.as_str() {
                "m" => Mode::Deliver,
                "p" => Mode::ListQueue,
                "i" => Mode::Newaliases,
                "v" => Mode::Verify,
                "s" => Mode::Smtp,
                other => {
                    return Err(SendmailError::Usage(format!(
                        "unsupported mode -b{other} (only -bm, -bp, -bi, -bs and -bv)"
                    )));
                }
            }
        }
        // -q, -q15m (an interval: ignored, the server retries on its own schedule), -qRSITE.
        'q' => {
            let site = value
                .strip_prefix('R')
                .map(|s| s.trim_start_matches('@').to_owned());
            if site.as_deref() == Some("") {
                return Err(SendmailError::Usage(
                    "-qR needs a domain (-qRexample.org)".into(),
                ));
            }
            if site.is_none() && value.starts_with(['I', 'S']) {
                return Err(SendmailError::Usage(format!(
                    "-q{value}: only -q, -qINTERVAL and -qRDOMAIN are supported"
                )));
            }
            options.mode = Mode::Flush(site);
        }
        'N' => {
            options.dsn.notify = Some(value);
            options.dsn.parse().map_err(SendmailError::Usage)?;
        }
        'R' => {
            options.dsn.ret = Some(value);
            options.dsn.parse().map_err(SendmailError::Usage)?;
        }
        'V' => {
            options.dsn.envid = Some(value);
            options.dsn.parse().map_err(SendmailError::Usage)?;
        }
        _ => {}
    }
    Ok(())
}

/// Reads, prepares and queues one message. Root and the server's account (whoever may write
/// into the maildrop of `settings.data_dir`) drop it there, even while the server is down,
/// then wake a running server (best effort); anyone else hands it to the running server
/// through its submission socket ([`yizhan_server::submit`]), which decides the sender.
pub fn submit(
    options: &Options,
    settings: &Settings,
    input: impl BufRead,
    context: &Context,
) -> Result<Queued, SendmailError> {
    // Refused before the input is read when no server would ever read the message.
    let maildrop = pickup::maildrop_dir(&settings.data_dir);
    let direct = match std::fs::symlink_metadata(&maildrop) {
        Ok(_) => rustix::fs::access(
            maildrop.join("tmp"),
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        )
        .is_ok(),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => false,
        Err(_) => true,
    };
    if direct {
        pickup::check_maildrop(&maildrop)?;
    }
    let max = settings.smtp.max_message_size;
    let message = read_message(input, options.ignore_dots, max)?;
    let prepared = prepare(&message, options, context)?;
    if prepared.message.len() as u64 > max {
        return Err(SendmailError::TooLarge(max));
    }
    if !direct {
        return through_server(&settings.data_dir, prepared, options.dsn.clone());
    }
    let submission = Submission {
        version: pickup::FORMAT_VERSION,
        sender: prepared.sender,
        recipients: prepared.recipients,
        dsn: options.dsn.clone(),
    };
    let path = pickup::drop_message(&maildrop, &submission, &prepared.message)?;
    // A running server picks it up at once; otherwise within a second, or when it starts.
    let _ = control::request(
        &control::socket_path(&settings.data_dir),
        &Request::Pickup,
        Duration::from_secs(2),
    );
    Ok(Queued::Dropped(path))
}

/// Hands a prepared message to the running server's submission socket.
fn through_server(
    data_dir: &std::path::Path,
    prepared: Prepared,
    dsn: pickup::Dsn,
) -> Result<Queued, SendmailError> {
    use yizhan_server::submit::{self, SubmitRequest, SubmitResponse};
    let request = SubmitRequest::Submit {
        sender: prepared.sender,
        recipients: prepared.recipients,
        size: prepared.message.len() as u64,
        dsn,
    };
    let answer = submit::request(data_dir, &request, &prepared.message).map_err(|source| {
        SendmailError::NotRunning {
            path: submit::socket_path(data_dir),
            source,
        }
    })?;
    match answer {
        SubmitResponse::Queued { id, sender } => Ok(Queued::Spooled { id, sender }),
        SubmitResponse::Error { message, temporary } => {
            Err(SendmailError::Refused { message, temporary })
        }
        SubmitResponse::Queue { .. } => Err(SendmailError::Refused {
            message: "unexpected answer".into(),
            temporary: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::message::{from_field, parse_address_list};
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn context() -> Context {
        Context {
            user: "alice".into(),
            hostname: "mx.test.example".into(),
            now: "2024-03-05T12:00:00+01:00[+01:00]".parse().unwrap(),
        }
    }

    #[test]
    fn argv0_personalities() {
        let cases = [
            ("sendmail", Some(Personality::Sendmail)),
            ("/usr/sbin/sendmail", Some(Personality::Sendmail)),
            ("/usr/lib/sendmail", Some(Personality::Sendmail)),
            ("mailq", Some(Personality::Mailq)),
            ("/usr/bin/newaliases", Some(Personality::Newaliases)),
            ("yizhan", None),
            ("/usr/bin/yizhan", None),
            ("", None),
        ];
        for (argv0, want) in cases {
            assert_eq!(dispatch_by_argv0(argv0), want, "{argv0}");
        }
    }

    #[test]
    fn flags_parse_like_sendmail() {
        let cases: Vec<(&str, Options)> = vec![
            (
                "-t -i",
                Options {
                    extract_recipients: true,
                    ignore_dots: true,
                    ..Options::default()
                },
            ),
            (
                "-ti",
                Options {
                    extract_recipients: true,
                    ignore_dots: true,
                    ..Options::default()
                },
            ),
            (
                "-oi a@x",
                Options {
                    ignore_dots: true,
                    recipients: vec!["a@x".into()],
                    ..Options::default()
                },
            ),
            (
                "-oem -odi a@x",
                Options {
                    recipients: vec!["a@x".into()],
                    ..Options::default()
                },
            ),
            (
                "-f me@x a@x",
                Options {
                    sender: Some("me@x".into()),
                    recipients: vec!["a@x".into()],
                    ..Options::default()
                },
            ),
            (
                "-fme@x -Fme",
                Options {
                    sender: Some("me@x".into()),
                    full_name: Some("me".into()),
                    ..Options::default()
                },
            ),
            (
                "-r me@x",
                Options {
                    sender: Some("me@x".into()),
                    ..Options::default()
                },
            ),
            (
                "-C /etc/y.toml",
                Options {
                    config: Some("/etc/y.toml".into()),
                    ..Options::default()
                },
            ),
            (
                "--config /etc/y.toml",
                Options {
                    config: Some("/etc/y.toml".into()),
                    ..Options::default()
                },
            ),
            (
                "--config=/etc/y.toml",
                Options {
                    config: Some("/etc/y.toml".into()),
                    ..Options::default()
                },
            ),
            (
                "-bp",
                Options {
                    mode: Mode::ListQueue,
                    ..Options::default()
                },
            ),
            (
                "-bi",
                Options {
                    mode: Mode::Newaliases,
                    ..Options::default()
                },
            ),
            (
                "-v -- -t",
                Options {
                    recipients: vec!["-t".into()],
                    ..Options::default()
                },
            ),
            (
                "-bs",
                Options {
                    mode: Mode::Smtp,
                    ..Options::default()
                },
            ),
            (
                "-N success,failure -RHDRS -V env-1 a@b",
                Options {
                    dsn: pickup::Dsn {
                        notify: Some("success,failure".into()),
                        ret: Some("HDRS".into()),
                        envid: Some("env-1".into()),
                    },
                    recipients: vec!["a@b".into()],
                    ..Options::default()
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_args(&args(line)).unwrap(), want, "{line}");
        }
        for bad in [
            "-f",
            "-bx",
            "-qR",
            "-qSfoo",
            "-x",
            "--verbose",
            "-N sometimes",
            "-R everything",
            "-V",
        ] {
            let err = parse_args(&args(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 64, "{bad}: {err}");
        }
        let mode = |line: &str| parse_args(&args(line)).unwrap().mode;
        assert_eq!(mode("-q"), Mode::Flush(None));
        assert_eq!(mode("-q15m"), Mode::Flush(None));
        assert_eq!(
            mode("-qRexample.org"),
            Mode::Flush(Some("example.org".into()))
        );
        assert_eq!(
            mode("-qR@example.org"),
            Mode::Flush(Some("example.org".into()))
        );
        assert_eq!(mode("-bv a@b"), Mode::Verify);
    }

    #[test]
    fn clap_takes_the_flags_raw() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            sendmail: SendmailArgs,
        }
        let cli = Cli::try_parse_from(["sendmail", "-t", "-oi", "-f", "a@x", "b@y"]).unwrap();
        assert_eq!(lossy(cli.sendmail.args), args("-t -oi -f a@x b@y"));
    }

    /// Classic sendmail: without -i a lone "." ends the input; LF becomes CRLF (RFC 5322 2.1).
    #[test]
    fn reading_handles_dots_and_line_ends() {
        let cases: [(&[u8], bool, &[u8]); 8] = [
            (b"a\nb\n", false, b"a\r\nb\r\n"),
            (b"a\r\nb\r\n", false, b"a\r\nb\r\n"),
            (b"a\nb", false, b"a\r\nb\r\n"),
            (b"a\n.\nb\n", false, b"a\r\n"),
            (b"a\n.\r\nb\n", false, b"a\r\n"),
            (b"a\n.\nb\n", true, b"a\r\n.\r\nb\r\n"),
            (b"a\n..\nb\n", false, b"a\r\n..\r\nb\r\n"),
            (b"a\n.", false, b"a\r\n"),
        ];
        for (input, ignore_dots, want) in cases {
            let got = read_message(input, ignore_dots, 1000).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(want),
                "{:?} -i={ignore_dots}",
                String::from_utf8_lossy(input)
            );
        }
        let err = read_message(&b"0123456789\n0123456789\n"[..], false, 15).unwrap_err();
        assert_eq!(err.exit_code(), 65);
    }

    /// RFC 5322 3.4: mailboxes, display names (quoted, with commas), comments, groups, routes.
    #[test]
    fn address_lists() {
        let cases: [(&str, &[&str]); 10] = [
            ("a@x", &["a@x"]),
            (" a@x , b@y ", &["a@x", "b@y"]),
            ("Alice <a@x>, \"Bob, Jr.\" <b@y>", &["a@x", "b@y"]),
            ("a@x (Alice, the first), b@y", &["a@x", "b@y"]),
            ("friends: a@x, Bob <b@y>;, c@z", &["a@x", "b@y", "c@z"]),
            ("undisclosed-recipients:;", &[]),
            ("<@relay.example,@r2.example:a@x>", &["a@x"]),
            ("\"odd name\"@x", &["\"odd name\"@x"]),
            ("\"Just A Name\"", &[]),
            ("", &[]),
        ];
        for (value, want) in cases {
            assert_eq!(parse_address_list(value), want, "{value:?}");
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn dash_t_takes_to_cc_bcc_and_removes_bcc() {
        let message = b"To: Alice <alice@test.example>,\r\n bob@test.example\r\nCc: team: carol@test.example;\r\nBcc: \"Secret, Dan\" <dan@test.example>\r\nSubject: hi\r\n\r\nbody\r\n";
        let options = Options {
            extract_recipients: true,
            recipients: vec!["extra@test.example".into()],
            ..Options::default()
        };
        let p = prepare(message, &options, &context()).unwrap();
        assert_eq!(
            p.recipients,
            [
                "extra@test.example",
                "alice@test.example",
                "bob@test.example",
                "carol@test.example",
                "dan@test.example"
            ]
        );
        assert_eq!(p.sender, "alice@mx.test.example");
        let out = text(&p.message);
        assert!(!out.contains("Bcc") && !out.contains("dan@"), "{out}");
        assert!(out.starts_with("To: Alice <alice@test.example>,\r\n bob@test.example\r\nCc: team: carol@test.example;\r\nSubject: hi\r\n"), "{out}");
        assert!(out.contains("\r\nFrom: alice@mx.test.example\r\n"), "{out}");
        assert!(
            out.contains("\r\nDate: Tue, 5 Mar 2024 12:00:00 +0100\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nMessage-ID: <"), "{out}");
        assert!(out.ends_with("\r\n\r\nbody\r\n"), "{out}");
    }

    /// RFC 5322 3.6.6: with Resent- fields, -t uses those.
    #[test]
    fn dash_t_prefers_resent_fields() {
        let message = b"To: old@test.example\r\nResent-To: new@test.example\r\nResent-Bcc: hidden@test.example\r\n\r\nx\r\n";
        let options = Options {
            extract_recipients: true,
            ..Options::default()
        };
        let p = prepare(message, &options, &context()).unwrap();
        assert_eq!(p.recipients, ["new@test.example", "hidden@test.example"]);
        assert!(!text(&p.message).contains("hidden"));
    }

    #[test]
    fn full_names_are_encoded_and_never_add_a_field() {
        // RFC 2047: a non-ASCII name becomes encoded words; the field stays one field.
        let field = from_field(Some("Jos\u{e9} Mart\u{ed}nez"), "jose@test.example");
        assert!(field.starts_with("From: =?utf-8?"), "{field}");
        assert!(field.ends_with("<jose@test.example>"), "{field}");
        assert!(field.is_ascii(), "{field}");
        assert_eq!(from_field(Some("  "), "a@b"), "From: a@b");
        // A line break in -F is refused outright.
        for name in ["Evil\r\nBcc: victim@example.com", "tab\there", "x\ny"] {
            let mut options = Options::default();
            let refused = apply_valued(&mut options, 'F', name.into());
            assert!(matches!(refused, Err(SendmailError::Usage(_))), "{name:?}");
            assert_eq!(options.full_name, None);
        }
    }

    #[test]
    fn existing_fields_are_kept_and_full_name_is_used() {
        let message = b"From: Me <me@test.example>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n";
        let options = Options {
            recipients: vec!["u@test.example".into()],
            ..Options::default()
        };
        let p = prepare(message, &options, &context()).unwrap();
        assert_eq!(p.message, message);

        let options = Options {
            recipients: vec!["u@test.example".into()],
            sender: Some("bounces@test.example".into()),
            full_name: Some("Cron \"Daemon\"".into()),
            ..Options::default()
        };
        let p = prepare(b"Subject: x\r\n\r\nbody\r\n", &options, &context()).unwrap();
        assert_eq!(p.sender, "bounces@test.example");
        assert!(
            text(&p.message).contains("From: \"Cron \\\"Daemon\\\"\" <bounces@test.example>\r\n")
        );

        let options = Options {
            recipients: vec!["u".into()],
            sender: Some("<>".into()),
            ..Options::default()
        };
        let p = prepare(b"\r\nbody\r\n", &options, &context()).unwrap();
        assert_eq!(p.sender, "");
        assert_eq!(p.recipients, ["u"]);
    }

    #[test]
    fn header_less_and_mbox_input() {
        let options = Options {
            recipients: vec!["u@test.example".into()],
            ..Options::default()
        };
        // No header at all: the fields are added and an empty line separates the body.
        let p = prepare(b"just text\r\nmore\r\n", &options, &context()).unwrap();
        let out = text(&p.message);
        assert!(
            out.starts_with("From: alice@mx.test.example\r\nDate: "),
            "{out}"
        );
        assert!(out.ends_with("\r\n\r\njust text\r\nmore\r\n"), "{out}");
        // A leading mbox "From " line is dropped.
        let p = prepare(
            b"From alice Tue Mar  5 12:00:00 2024\r\nSubject: s\r\n\r\nb\r\n",
            &options,
            &context(),
        )
        .unwrap();
        assert!(text(&p.message).starts_with("Subject: s\r\n"));
    }

    #[test]
    fn recipients_are_required_and_checked() {
        let cases: [(Options, &[u8], u8); 3] = [
            (Options::default(), b"To: a@x\r\n\r\n", 64),
            (
                Options {
                    extract_recipients: true,
                    ..Options::default()
                },
                b"Subject: none\r\n\r\n",
                64,
            ),
            (
                Options {
                    extract_recipients: true,
                    ..Options::default()
                },
                b"To: not an address\r\n\r\n",
                65,
            ),
        ];
        for (options, message, code) in cases {
            let err = prepare(message, &options, &context()).unwrap_err();
            assert_eq!(err.exit_code(), code, "{err}");
        }
    }
}
