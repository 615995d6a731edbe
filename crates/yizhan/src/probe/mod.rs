//! `yizhan probe HOST[:PORT]`: talk to a mail server as a client and report on it. The
//! session is printed explained line by line (the `yizhan_explain` crate, as `yizhan explain`
//! does), then a report card: the capabilities offered, TLS and the certificate, the relay
//! test (only when asked), pipelining, SIZE, SMTPUTF8, `<Postmaster>`, and how the server
//! answers an unknown command, RCPT before MAIL and an over-long line, each with its RFC.
//!
//! Exit status: 0 when no check failed, 1 when one did, 69 (EX_UNAVAILABLE) when no
//! connection could be made, 66 (EX_NOINPUT) when the password file cannot be read, 2 for a
//! usage error.

mod card;
mod certificate;
mod run;
#[cfg(test)]
mod scripted_tests;
mod steps;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rustls::pki_types::ServerName;
use yizhan_explain::render::{Format, render};
use yizhan_explain::{Catalogue, Lang, explain};

use card::Card;
use run::{Login, Plan, Security};

/// `yizhan probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The server: a host name or address, with `:PORT` (default 25, or 465 with --tls;
    /// `[::1]:25` for IPv6).
    #[arg(value_name = "HOST[:PORT]")]
    pub target: String,
    /// Upgrade to TLS with STARTTLS after EHLO (RFC 3207); a server that does not offer it
    /// fails the probe.
    #[arg(long, conflicts_with = "tls")]
    pub starttls: bool,
    /// TLS from the first byte (implicit TLS, RFC 8314; port 465).
    #[arg(long)]
    pub tls: bool,
    /// The name the certificate must carry (default: HOST).
    #[arg(long, value_name = "NAME")]
    pub tls_name: Option<String>,
    /// Also trust the authorities in this PEM file (a private CA), beside the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The name to give in EHLO (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    pub helo: Option<String>,
    /// Authenticate as USER; the password is asked on the terminal, or read from
    /// --password-file (never from the command line).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// The file holding the password (its first line), instead of asking.
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
    /// The SASL mechanism: PLAIN or LOGIN (default: PLAIN if offered, else LOGIN).
    #[arg(long, value_name = "MECH", requires = "user", value_parser = ["PLAIN", "LOGIN", "plain", "login"])]
    pub auth_mechanism: Option<String>,
    /// Allow AUTH on a session that is not encrypted (the password then crosses the network
    /// readable by anyone on the path).
    #[arg(long, requires = "user")]
    pub auth_in_clear: bool,
    /// Check that the server refuses to relay to this foreign address (before any AUTH).
    /// Only ask this of a server you run: it is what a spammer's scanner does.
    #[arg(long, value_name = "ADDR")]
    pub relay_test: Option<String>,
    /// Send a short test message to ADDR.
    #[arg(long, value_name = "ADDR")]
    pub send_to: Option<String>,
    /// The envelope sender of the probe's transactions (default: the --user name when it is
    /// an address, else postmaster@ the EHLO name).
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// The limit for each step (connect, each reply, the handshake), e.g. `15s`.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The language of the explanations and the card: en or zh.
    #[arg(long, default_value = "en", value_parser = crate::explain_cmd::parse_lang)]
    pub lang: Lang,
    /// text, markdown or json.
    #[arg(long, default_value = "text", value_parser = crate::explain_cmd::parse_format)]
    pub format: Format,
    /// Print only the report card, not the explained session.
    #[arg(long)]
    pub brief: bool,
}

/// Runs the probe and prints what it found.
pub fn main(args: &ProbeArgs) -> ExitCode {
    if args.user.is_some() && !args.starttls && !args.tls && !args.auth_in_clear {
        eprintln!(
            "yizhan: --user needs an encrypted session (--starttls or --tls), or --auth-in-clear to send the password in clear text"
        );
        return ExitCode::from(2);
    }
    let cat = match Catalogue::load(args.lang) {
        Ok(cat) => cat,
        Err(e) => {
            eprintln!("yizhan: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = match plan(args) {
        Ok(plan) => plan,
        Err((code, message)) => {
            eprintln!("yizhan: {message}");
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("yizhan: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = display_target(args, plan.address);
    let (lines, checks) = match runtime.block_on(run::probe(&plan)) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("yizhan: cannot connect to {target}: {e}");
            return ExitCode::from(69);
        }
    };
    let card = Card { target, checks };
    print!("{}", report(&card, &lines, args, &cat));
    if card.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The explained session (unless --brief) and the card, in the format asked.
fn report(
    card: &Card,
    lines: &[yizhan_explain::Line],
    args: &ProbeArgs,
    cat: &Catalogue,
) -> String {
    let explained = explain(lines, cat);
    if args.format == Format::Json {
        let mut value = serde_json::json!({ "card": card.to_json(cat) });
        if !args.brief {
            value["session"] = serde_json::to_value(&explained).unwrap_or_default();
        }
        return serde_json::to_string_pretty(&value).unwrap_or_default() + "\n";
    }
    let mut out = String::new();
    if !args.brief {
        out.push_str(&render(&explained, args.format, cat));
        out.push('\n');
    }
    out.push_str(&card.render(args.format, cat));
    out
}

/// `host:port (address)`, as the card's heading shows the server.
fn display_target(args: &ProbeArgs, address: SocketAddr) -> String {
    let (host, _) = split_target(&args.target).unwrap_or_default();
    if host == address.ip().to_string() {
        address.to_string()
    } else {
        format!("{host}:{} [{}]", address.port(), address.ip())
    }
}

/// Everything the probe needs, from the arguments: the address resolved, the password read.
fn plan(args: &ProbeArgs) -> Result<Plan, (u8, String)> {
    let usage = |m: String| (2u8, m);
    let (host, port) = split_target(&args.target).map_err(usage)?;
    let port = port.unwrap_or(if args.tls { 465 } else { 25 });
    let address = resolve(&host, port).map_err(|e| (69, e))?;
    let name = args.tls_name.clone().unwrap_or_else(|| host.clone());
    let tls_name = ServerName::try_from(name.clone())
        .map_err(|_| usage(format!("{name:?} is not a host name or address for TLS")))?;
    let roots = certificate::roots(args.ca_file.as_deref()).map_err(|e| (66, e))?;
    let login = match &args.user {
        Some(user) => Some(Login {
            user: user.clone(),
            password: password(args)?,
            mechanism: args.auth_mechanism.as_ref().map(|m| m.to_ascii_uppercase()),
        }),
        None => None,
    };
    let helo = args.helo.clone().unwrap_or_else(this_host);
    Ok(Plan {
        address,
        tls_name,
        security: if args.tls {
            Security::Implicit
        } else if args.starttls {
            Security::StartTls
        } else {
            Security::Plain
        },
        from: args
            .from
            .clone()
            .unwrap_or_else(|| default_sender(args.user.as_deref(), &helo)),
        helo,
        timeout: args.timeout,
        roots,
        login,
        auth_in_clear: args.auth_in_clear,
        relay_test: args.relay_test.clone(),
        send_to: args.send_to.clone(),
    })
}

/// `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT`, or a bare IPv6 address.
fn split_target(target: &str) -> Result<(String, Option<u16>), String> {
    let bad_port = |p: &str| format!("{p:?} is not a port number (in {target:?})");
    if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{target:?}: missing ']'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad_port(p))?),
            None if after.is_empty() => None,
            None => return Err(format!("{target:?}: unexpected {after:?} after ']'")),
        };
        return Ok((host.to_owned(), port));
    }
    if target.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((target.to_owned(), None));
    }
    match target.rsplit_once(':') {
        Some((host, p)) => Ok((host.to_owned(), Some(p.parse().map_err(|_| bad_port(p))?))),
        None if target.is_empty() => Err("no host given".into()),
        None => Ok((target.to_owned(), None)),
    }
}

/// The first address of `host` (the system's resolver: /etc/hosts, then DNS).
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// The password: the first line of --password-file, else asked on the terminal.
fn password(args: &ProbeArgs) -> Result<String, (u8, String)> {
    let password = match &args.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| (66, format!("cannot read {}: {e}", path.display())))?;
            text.lines().next().unwrap_or_default().to_owned()
        }
        None => rpassword::prompt_password("Password: ").map_err(|e| {
            (
                66,
                format!("cannot ask for the password ({e}); give --password-file FILE"),
            )
        })?,
    };
    if password.is_empty() {
        return Err((66, "the password is empty".into()));
    }
    Ok(password)
}

/// The probe's envelope sender: an authenticated user's own address, as a submission server
/// wants it (RFC 6409 6.1), else postmaster at the EHLO name.
fn default_sender(user: Option<&str>, helo: &str) -> String {
    match user {
        Some(user) if user.contains('@') => user.to_owned(),
        _ => format!("postmaster@{helo}"),
    }
}

/// This machine's host name, for EHLO.
fn this_host() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_split_into_host_and_port() {
        let ok = |t: &str| split_target(t).unwrap();
        assert_eq!(ok("mx.example"), ("mx.example".into(), None));
        assert_eq!(ok("mx.example:587"), ("mx.example".into(), Some(587)));
        assert_eq!(ok("127.0.0.1:2525"), ("127.0.0.1".into(), Some(2525)));
        assert_eq!(ok("[::1]:25"), ("::1".into(), Some(25)));
        assert_eq!(ok("[::1]"), ("::1".into(), None));
        assert_eq!(ok("::1"), ("::1".into(), None));
        assert!(split_target("mx:smtp").unwrap_err().contains("not a port"));
        assert!(split_target("[::1").unwrap_err().contains("missing"));
        assert!(split_target("[::1]x").is_err());
        assert!(split_target("").is_err());
    }
}
