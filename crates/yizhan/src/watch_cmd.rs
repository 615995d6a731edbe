//! `yizhan watch`: what the running server does, as it happens (sessions, queued messages,
//! delivery outcomes), or with `--user ADDR` that user's terminal: the messages sent to them
//! with RFC 821 SEND, SOML or SAML, shown as write(1) shows a message.

use std::io::{self, BufRead as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use jiff::tz::TimeZone;
use serde_json::Value;
use yizhan_server::control::{self, Request, Response};
use yizhan_server::events::TerminalMessage;

use crate::sendmail::LoadSettings;

/// `yizhan watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The configuration file (default: $YIZHAN_CONFIG, else /etc/yizhan/yizhan.toml if it
    /// exists, else the embedded default).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only events about this address (part of it, without case): as sender or recipient.
    #[arg(long, value_name = "TEXT", conflicts_with = "user")]
    pub address: Option<String>,
    /// Be this user's terminal: show the messages sent to ADDR with SEND, SOML or SAML (RFC
    /// 821) while this runs.
    #[arg(long, value_name = "ADDR")]
    pub user: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs until the server goes away or the user interrupts.
pub fn main(args: WatchArgs, load: LoadSettings<'_>) -> ExitCode {
    let settings = match crate::sendmail::settings_or_exit(load, args.config.clone()) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let socket = control::socket_path(&settings.data_dir);
    let request = Request::Watch {
        address: args.address.clone(),
        user: args.user.clone(),
    };
    let lines = match control::watch(&socket, &request) {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("yizhan: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(user) = &args.user {
        eprintln!(
            "yizhan: this is {user}'s terminal now: SEND, SOML and SAML to them show here (Ctrl-C ends)"
        );
    }
    let mut lines = lines;
    let mut out = io::stdout().lock();
    let tz = TimeZone::system();
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let response = serde_json::from_str::<Response>(line.trim_end()).ok();
        let shown = match &response {
            Some(response) if args.json => print_json(&mut out, response),
            Some(response) => print_text(&mut out, response, &tz),
            None => Ok(()),
        };
        if shown.and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
        // A terminal message is on the screen: the server may count it as shown.
        if matches!(response, Some(Response::Terminal { .. }))
            && lines.get_mut().write_all(b"\n").is_err()
        {
            break;
        }
    }
    eprintln!("yizhan: the server closed the stream");
    ExitCode::SUCCESS
}

fn print_json(out: &mut dyn Write, response: &Response) -> io::Result<()> {
    let value = match response {
        Response::Event { event } => event.clone(),
        Response::Terminal { message } => serde_json::to_value(message).unwrap_or_default(),
        Response::Missed { count } => serde_json::json!({ "type": "missed", "count": count }),
        _ => return Ok(()),
    };
    writeln!(out, "{value}")
}

fn print_text(out: &mut dyn Write, response: &Response, tz: &TimeZone) -> io::Result<()> {
    match response {
        Response::Event { event } => writeln!(out, "{}", describe(event, tz)),
        Response::Terminal { message } => out.write_all(terminal(message, tz).as_bytes()),
        Response::Missed { count } => {
            writeln!(
                out,
                "... {count} events missed (this terminal read too slowly)"
            )
        }
        _ => Ok(()),
    }
}

fn clock(at: Option<i64>, tz: &TimeZone) -> String {
    at.and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// `text` safe for a terminal: every control character but the line ends and tabs (a message
/// or a remote reply could hold escape sequences that retitle, recolour or answer back) in
/// caret form (`^[`), as write(1) does.
pub fn printable(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\t' => out.push('\t'),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7f}' => out.push_str("^?"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// One event as a line of text (nothing in it can drive the terminal).
pub fn describe(event: &Value, tz: &TimeZone) -> String {
    printable(&describe_raw(event, tz), false)
}

fn describe_raw(event: &Value, tz: &TimeZone) -> String {
    let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or("");
    let sender = |key: &str| format!("<{}>", text(key));
    let at = clock(event.get("at").and_then(Value::as_i64), tz);
    match text("type") {
        "session" => {
            let id = event.get("session").and_then(Value::as_u64).unwrap_or(0);
            let reason = match text("reason") {
                "" => String::new(),
                r => format!(": {r}"),
            };
            format!(
                "{at} session {id} {} {} ({}){reason}",
                text("phase"),
                text("client"),
                text("listener")
            )
        }
        "accepted" => {
            let to: Vec<&str> = event
                .get("recipients")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let size = event.get("size").and_then(Value::as_u64).unwrap_or(0);
            format!(
                "{at} queued {} from {} to {} ({size} bytes, from {})",
                text("queue_id"),
                sender("sender"),
                to.join(", "),
                text("origin")
            )
        }
        "delivery" => format!(
            "{at} {} {} to {}: {}",
            text("outcome"),
            text("queue_id"),
            text("recipient"),
            text("detail")
        ),
        _ => event.to_string(),
    }
}

/// A message on the terminal, as write(1) shows one.
pub fn terminal(message: &TerminalMessage, tz: &TimeZone) -> String {
    let from = if message.from.is_empty() {
        "MAILER-DAEMON"
    } else {
        &message.from
    };
    let mut text = printable(&message.text.replace("\r\n", "\n"), true);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    format!(
        "\nMessage from {} ({}) at {} ...\n{text}EOF\n",
        printable(from, false),
        printable(&message.verb, false),
        clock(Some(message.at), tz)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_lines() {
        let tz = TimeZone::UTC;
        let delivery = serde_json::json!({"type": "delivery", "at": 3600, "queue_id": "q1",
            "recipient": "a@b", "sender": "", "outcome": "deferred", "detail": "451 later"});
        assert_eq!(
            describe(&delivery, &tz),
            "01:00:00 deferred q1 to a@b: 451 later"
        );
        let accepted = serde_json::json!({"type": "accepted", "at": 0, "queue_id": "q2",
            "sender": "s@x", "recipients": ["a@b", "c@d"], "size": 10, "origin": "local"});
        assert_eq!(
            describe(&accepted, &tz),
            "00:00:00 queued q2 from <s@x> to a@b, c@d (10 bytes, from local)"
        );
        let gone = serde_json::json!({"type": "session", "at": 0, "session": 4,
            "phase": "disconnect", "client": "127.0.0.1:9", "listener": "smtp", "reason": "closed"});
        assert_eq!(
            describe(&gone, &tz),
            "00:00:00 session 4 disconnect 127.0.0.1:9 (smtp): closed"
        );
    }

    #[test]
    fn escape_sequences_never_reach_the_terminal() {
        assert_eq!(
            printable("a\x1b]52;c;AAAA\x07b\r", true),
            "a^[]52;c;AAAA^Gb^M"
        );
        assert_eq!(printable("x\ny\tz\u{9b}", false), "x^Jy\tz\\u{9b}");
        let message = TerminalMessage {
            at: 0,
            from: "evil\x1b[2J@x".into(),
            to: "u@h".into(),
            verb: "SEND".into(),
            text: "\x1b[31mred\r\nline".into(),
        };
        let shown = terminal(&message, &TimeZone::UTC);
        assert!(!shown.contains('\x1b'), "{shown:?}");
        assert!(shown.contains("^[[31mred\nline\n"), "{shown:?}");
        let delivery = serde_json::json!({"type": "delivery", "at": 0, "queue_id": "q",
            "recipient": "a@b", "outcome": "deferred", "detail": "550 \x1b]0;pwned\x07"});
        assert!(!describe(&delivery, &TimeZone::UTC).contains('\x1b'));
    }

    #[test]
    fn a_terminal_message_reads_like_write() {
        let message = TerminalMessage {
            at: 60,
            from: "boss@example.org".into(),
            to: "u@h".into(),
            verb: "SEND".into(),
            text: "Subject: lunch\r\n\r\nnow?\r\n".into(),
        };
        assert_eq!(
            terminal(&message, &TimeZone::UTC),
            "\nMessage from boss@example.org (SEND) at 00:01:00 ...\nSubject: lunch\n\nnow?\nEOF\n"
        );
    }
}
