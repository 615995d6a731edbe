//! The `yizhan` binary: a mail transfer agent.
//!
//! The binary parses the command line and the configuration file and hands typed
//! [`yizhan_server::settings::Settings`] to the server; the server library never reads files
//! itself. The configuration file is read by this crate's library half (`yizhan::config`).
#![forbid(unsafe_code)]

mod dkim_cmd;
mod docs_cmd;
mod explain_cmd;
mod preflight;
mod private;
mod privileges;
mod probe;
mod queue_cmd;
mod sendmail;
mod serve;
mod sessions_cmd;
mod watch_cmd;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use yizhan::config::{self, ConfigError, Overrides, Source};

/// yizhan, a mail transfer agent.
#[derive(Debug, Parser)]
#[command(name = "yizhan", version, about)]
struct Cli {
    /// Log filter, e.g. `debug` or `yizhan=debug,info` (default: $RUST_LOG, else `info`).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    /// Log format: `text` (one line per event) or `json` (one JSON object per line, with its
    /// fields and span, for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the mail server until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Check the configuration: print a summary, the TLS certificate's expiry and
    /// "configuration OK", or every problem.
    CheckConfig(ConfigArgs),
    /// Read a password from stdin (one line) and print its argon2id PHC string, for
    /// `[[mailbox]] password = "..."`.
    HashPassword,
    /// Operate the running server's queue: list, show, flush, hold, release, delete.
    Queue(queue_cmd::QueueArgs),
    /// DKIM keys: `generate` makes one and prints the DNS record to publish.
    Dkim(dkim_cmd::DkimArgs),
    /// Make the running server read its configuration again (as SIGHUP does); exits non-zero
    /// with the problems if the server refuses the file (it then keeps the old one).
    Reload(ReloadArgs),
    /// Queue a message from standard input, like sendmail(8): -t, -f ADDR, -i/-oi, -F NAME,
    /// recipients as arguments.
    Sendmail(sendmail::SendmailArgs),
    /// Follow the running server: sessions, queued messages, deliveries; with --user ADDR,
    /// be that user's terminal for RFC 821 SEND, SOML and SAML.
    Watch(watch_cmd::WatchArgs),
    /// Recorded sessions: `list`, and `show ID` (see [record] in the configuration).
    Sessions(sessions_cmd::SessionsArgs),
    /// Explain an SMTP dialogue line by line (commands, buffers, reply codes, capabilities,
    /// findings), in English or Chinese, as text, Markdown or JSON.
    Explain(explain_cmd::ExplainArgs),
    /// Talk to a mail server as a client and report on it: the session explained, then a
    /// report card (capabilities, TLS and certificate, pipelining, SIZE, SMTPUTF8, edge
    /// cases, optionally AUTH, a relay test and a test message). Exits 1 when a check fails.
    Probe(probe::ProbeArgs),
    /// Print the shell completion script for bash, zsh or fish.
    Completions(docs_cmd::CompletionsArgs),
    /// Write the man pages (yizhan.1, one per subcommand, sendmail.1, mailq.1) into DIR.
    Manpages(docs_cmd::ManpagesArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// The configuration file (default: $YIZHAN_CONFIG, else /etc/yizhan/yizhan.toml if it
    /// exists, else the embedded default).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ReloadArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The server's data directory, if it was started with `--data-dir` (default: the
    /// configuration's).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen for SMTP on ADDR (repeatable); replaces the file's listeners.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Keep the spool and mailboxes in DIR; replaces the file's `data_dir` (the default is
    /// below).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Invoked as `sendmail`, `mailq` or `newaliases` (a symlink to this binary)?
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(personality) = argv
        .first()
        .and_then(|a| a.to_str())
        .and_then(sendmail::dispatch_by_argv0)
    {
        let _ = init_logging(Some("warn"), LogFormat::Text);
        let args = argv.split_off(1);
        if personality == sendmail::Personality::Sendmail && asks_help(&args) {
            return sendmail_help();
        }
        return sendmail::run_personality(personality, args, &load_for_client);
    }
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Sendmail(args) = &cli.command
        && asks_help(&args.args)
    {
        return sendmail_help();
    }
    // Client commands stay quiet unless asked.
    let quiet = matches!(
        cli.command,
        Command::Queue(_)
            | Command::Watch(_)
            | Command::Explain(_)
            | Command::Probe(_)
            | Command::Sessions(_)
            | Command::Sendmail(_)
            | Command::Reload(_)
            | Command::Dkim(_)
            | Command::Completions(_)
            | Command::Manpages(_)
    );
    let level = cli.log_level.as_deref().or(quiet.then_some("warn"));
    if let Err(e) = init_logging(level, cli.log_format) {
        eprintln!("yizhan: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::CheckConfig(args) => check_config(&args),
        Command::Serve(args) => serve(args),
        Command::Reload(args) => reload(args),
        Command::Dkim(args) => dkim_cmd::main(args, &load_with_keys),
        Command::HashPassword => hash_password(),
        Command::Queue(args) => queue_cmd::main(args, &load_for_client),
        Command::Watch(args) => watch_cmd::main(args, &load_for_client),
        Command::Explain(args) => explain_cmd::main(&args, &load_for_client),
        Command::Probe(args) => probe::main(&args),
        Command::Sessions(args) => sessions_cmd::main(args, &load_for_client),
        Command::Sendmail(args) => {
            sendmail::run_personality(sendmail::Personality::Sendmail, args.args, &load_for_client)
        }
        Command::Completions(args) => docs_cmd::completions(&args, command()),
        Command::Manpages(args) => docs_cmd::manpages(&args, command()),
    }
}

/// An error with its causes, each said once: a cause whose text the message already holds
/// (thiserror messages often include their source) is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// The command line, with the data directory's paragraph (this user's default spelled out)
/// after the help of yizhan and of every subcommand that uses it.
fn command() -> clap::Command {
    let help = config::data_dir_help(&config::Account::current());
    let mut command = Cli::command().after_help(help.clone());
    for name in ["serve", "check-config", "queue", "sendmail"] {
        command = command.mut_subcommand(name, |sub| sub.after_help(help.clone()));
    }
    command
}

/// `--help` among sendmail's flags (which clap takes raw): before `--`, it cannot be anything
/// else.
fn asks_help(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--help")
}

/// `yizhan sendmail --help` (or `sendmail --help`).
fn sendmail_help() -> ExitCode {
    let mut command = command();
    command.build();
    let printed = command
        .find_subcommand_mut("sendmail")
        .is_some_and(|sub| sub.print_long_help().is_ok());
    if printed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Loads the configuration for a client command (`queue`, `sendmail`, `mailq`) the way `serve`
/// does: `--config FILE` (or sendmail's `-C FILE`), else $YIZHAN_CONFIG, else
/// /etc/yizhan/yizhan.toml, else the embedded default. Private keys are not read: a local user may run `sendmail` without reading them.
fn load_for_client(config: Option<PathBuf>) -> Result<yizhan_server::settings::Settings, String> {
    let source = source(&ConfigArgs { config });
    config::load_without_keys(&source).map_err(|e| described(&e))
}

/// [`load_for_client`] with the private keys read (`yizhan dkim check` compares them).
fn load_with_keys(config: Option<PathBuf>) -> Result<yizhan_server::settings::Settings, String> {
    load(&ConfigArgs { config }).map_err(|e| described(&e))
}

/// A configuration error and its count, for a client command's stderr.
fn described(e: &ConfigError) -> String {
    let n = e.count();
    format!(
        "{e}\nconfiguration has {n} problem{}",
        if n == 1 { "" } else { "s" }
    )
}

/// `yizhan reload`: asks the running server (found by its data directory's control socket) to
/// read its configuration file again, and prints what it answered.
fn reload(args: ReloadArgs) -> ExitCode {
    use yizhan_server::control::{self, Request, Response};
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => match load_for_client(args.config.config) {
            Ok(settings) => settings.data_dir,
            Err(problems) => {
                eprintln!("{problems}");
                eprintln!("yizhan: not reloaded; the server keeps its configuration");
                return ExitCode::FAILURE;
            }
        },
    };
    let socket = control::socket_path(&data_dir);
    let timeout = std::time::Duration::from_secs(60);
    match control::request(&socket, &Request::Reload, timeout) {
        Ok(Response::Reloaded { needs_restart }) => {
            println!("configuration reloaded");
            for setting in needs_restart {
                println!("not applied, needs a restart: {setting}");
            }
            ExitCode::SUCCESS
        }
        Ok(Response::Error { message, .. }) => {
            eprintln!("{message}");
            eprintln!("yizhan: reload refused; the server keeps its configuration");
            ExitCode::FAILURE
        }
        Ok(other) => {
            eprintln!("yizhan: unexpected answer from the server: {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("yizhan: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `yizhan hash-password`: one line from stdin (without its line ending) to a PHC string.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("yizhan: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("yizhan: empty password");
        return ExitCode::FAILURE;
    }
    match yizhan_server::auth::hash_password(password.as_bytes()) {
        Ok(phc) => {
            println!("{phc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("yizhan: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr with the filter from `--log-level`, else `RUST_LOG`, else `info`.
fn init_logging(level: Option<&str>, format: LogFormat) -> anyhow::Result<()> {
    let filter = log_filter(level, std::env::var("RUST_LOG").ok().as_deref())?;
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(filter)
        .init();
    Ok(())
}

/// The log filter: comma-separated `target=level` directives and a bare default level, e.g.
/// `debug` or `yizhan=debug,info` (a target matches its modules too). `Targets` rather than
/// `EnvFilter`: no regex engine in the binary (less resident memory), no span or field filters.
/// An invalid `--log-level` is an error; an invalid `RUST_LOG` falls back to `info`.
fn log_filter(level: Option<&str>, env: Option<&str>) -> anyhow::Result<Targets> {
    let default = || Targets::new().with_default(tracing::Level::INFO);
    Ok(match level {
        Some(level) => level
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?,
        None => env.and_then(|v| v.parse().ok()).unwrap_or_else(default),
    })
}

/// Where the configuration comes from (`--config`, `$YIZHAN_CONFIG`, the system file, the
/// embedded default).
fn source(args: &ConfigArgs) -> Source {
    Source::discover(
        args.config.clone(),
        std::env::var_os(config::CONFIG_ENV),
        Path::exists,
    )
}

/// Finds and loads the configuration, logging which one is used.
fn load(args: &ConfigArgs) -> Result<yizhan_server::settings::Settings, ConfigError> {
    let source = source(args);
    tracing::info!("configuration: {source}");
    config::load(&source)
}

fn report(e: &ConfigError) {
    eprintln!("{e}");
    let n = e.count();
    eprintln!(
        "configuration has {n} problem{}",
        if n == 1 { "" } else { "s" }
    );
}

fn check_config(args: &ConfigArgs) -> ExitCode {
    let settings = match load(args) {
        Ok(settings) => settings,
        Err(e) => {
            report(&e);
            return ExitCode::FAILURE;
        }
    };
    for line in config::summary(&settings) {
        println!("{line}");
    }
    let problems = start_problems(&settings);
    for problem in &problems {
        eprintln!("{problem}");
    }
    match problems.len() {
        0 => {
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        n => {
            eprintln!(
                "configuration has {n} problem{}",
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

/// What `serve` would refuse with these settings, beyond the file itself: the TLS files (loaded
/// as at start; an expired certificate too), the service account as root, the data directory
/// and the listeners' addresses.
fn start_problems(settings: &yizhan_server::settings::Settings) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(tls) = &settings.tls {
        let checked = yizhan_server::tls::load_config(&tls.cert, &tls.key)
            .and_then(|_| yizhan_server::tls::cert_info(&tls.cert));
        match checked {
            Ok(info) => {
                let now = jiff::Timestamp::now().as_second();
                println!("tls certificate: {}", info.describe(now));
                if info.seconds_left(now) < 0 {
                    problems.push("tls: the certificate has expired".to_owned());
                }
            }
            Err(e) => problems.push(format!("tls: {e}")),
        }
    }
    let root = rustix::process::geteuid().is_root();
    let account =
        privileges::account(&settings.user, settings.group.as_deref()).and_then(|account| {
            match account {
                Some(a) => privileges::check_reachable(&settings.data_dir, &a),
                None => Ok(()),
            }
        });
    if let Err(e) = account {
        problems.push(e.to_string());
    }
    if let Err(e) = preflight::data_dir(&settings.data_dir, root) {
        problems.push(e);
    }
    let socket = yizhan_server::control::socket_path(&settings.data_dir);
    let running = std::os::unix::net::UnixStream::connect(socket).is_ok();
    if running {
        println!("a server is running on this data directory; addresses it holds are not checked");
    }
    let addresses: Vec<_> = settings.listeners.iter().map(|l| l.address).collect();
    problems.extend(preflight::listeners(&addresses, running));
    problems
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut settings = match load(&args.config) {
        Ok(settings) => settings,
        Err(e) => {
            report(&e);
            return ExitCode::FAILURE;
        }
    };
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
    };
    overrides.apply(&mut settings);
    // What SIGHUP and `yizhan reload` read again: the same file (by its absolute name, in
    // case the working directory changes), the same overrides, the same account's defaults.
    let reload = serve::Reload {
        source: source(&args.config).absolute(),
        overrides,
        account: config::Account::current(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("yizhan: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve::run(settings, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    /// --log-level, RUST_LOG, target, level, enabled?
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
        Level,
        bool,
    );

    #[test]
    fn log_filter_directives() {
        let cases: [Case; 8] = [
            (None, None, "yizhan_server::conn", Level::INFO, true),
            (None, None, "yizhan_server::conn", Level::DEBUG, false),
            (Some("debug"), None, "rustls", Level::DEBUG, true),
            (
                Some("yizhan=debug,info"),
                None,
                "yizhan_server::conn",
                Level::DEBUG,
                true,
            ),
            (
                Some("yizhan=debug,info"),
                None,
                "hickory_proto",
                Level::DEBUG,
                false,
            ),
            (Some("warn"), Some("trace"), "yizhan", Level::INFO, false),
            (
                None,
                Some("yizhan_spool=trace"),
                "yizhan_spool::embedded",
                Level::TRACE,
                true,
            ),
            (
                None,
                Some("not a=filter=at all"),
                "yizhan",
                Level::INFO,
                true,
            ),
        ];
        for (level, env, target, at, want) in cases {
            let filter = log_filter(level, env).expect("valid");
            assert_eq!(
                filter.would_enable(target, &at),
                want,
                "{level:?} {env:?} {target} {at}"
            );
        }
        assert!(log_filter(Some("yizhan=loud"), None).is_err());
    }
}
