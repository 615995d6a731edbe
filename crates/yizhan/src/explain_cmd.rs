//! `yizhan explain`: an SMTP dialogue explained line by line (the `yizhan_explain` crate),
//! from a transcript file or standard input.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use yizhan_explain::render::{Format, render};
use yizhan_explain::{Catalogue, Lang, capture, explain, transcript};

/// `yizhan explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The dialogue: a transcript (`C:`/`S:` lines, swaks' `->`/`<-`, or bare lines as
    /// `openssl s_client` shows them), or a packet capture (pcap or pcapng: every SMTP
    /// connection in it); `-` or nothing for standard input.
    #[arg(value_name = "FILE", conflicts_with = "session")]
    pub input: Option<PathBuf>,
    /// A recorded session instead (its id, or a unique prefix: `yizhan sessions list`).
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// The configuration file, to find the recorded sessions (default: $YIZHAN_CONFIG, else
    /// /etc/yizhan/yizhan.toml if it exists, else the embedded default).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The language of the explanations: en or zh.
    #[arg(long, default_value = "en", value_parser = parse_lang)]
    pub lang: Lang,
    /// text, markdown or json.
    #[arg(long, default_value = "text", value_parser = parse_format)]
    pub format: Format,
    /// In a capture, the SMTP ports (repeatable; default 25, 465, 587 and 2525).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
}

pub fn parse_lang(s: &str) -> Result<Lang, String> {
    Lang::parse(s).ok_or_else(|| format!("unknown language {s:?} (en, zh)"))
}

pub fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("unknown format {s:?} (text, markdown, json)"))
}

/// Reads the input, explains it, prints it.
pub fn main(args: &ExplainArgs, load: crate::sendmail::LoadSettings<'_>) -> ExitCode {
    if let Some(id) = &args.session {
        let settings = match crate::sendmail::settings_or_exit(load, args.config.clone()) {
            Ok(settings) => settings,
            Err(code) => return code,
        };
        return match yizhan_server::record::read(&settings.data_dir, id) {
            Ok(recorded) => print(&crate::sessions_cmd::lines(&recorded), args),
            Err(e) => {
                eprintln!("yizhan: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let bytes = match &args.input {
        Some(path) if path.as_os_str() != "-" => match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("yizhan: cannot read {}: {e}", path.display());
                return ExitCode::from(66);
            }
        },
        _ => {
            let mut bytes = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
                eprintln!("yizhan: cannot read standard input: {e}");
                return ExitCode::from(66);
            }
            bytes
        }
    };
    if capture::is_capture(&bytes) {
        return explain_capture(&bytes, args);
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines = transcript::parse(&text);
    if lines.is_empty() {
        eprintln!("yizhan: no SMTP dialogue found in the input");
        return ExitCode::from(65);
    }
    print(&lines, args)
}

/// Every SMTP connection of a capture, explained one after the other.
fn explain_capture(bytes: &[u8], args: &ExplainArgs) -> ExitCode {
    let ports = if args.port.is_empty() {
        capture::SMTP_PORTS.to_vec()
    } else {
        args.port.clone()
    };
    let conversations = match capture::read(bytes, &ports) {
        Ok(conversations) => conversations,
        Err(e) => {
            eprintln!("yizhan: {e}");
            return ExitCode::from(65);
        }
    };
    if conversations.is_empty() {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        eprintln!(
            "yizhan: no TCP connection to an SMTP port ({}) in the capture (--port PORT for another)",
            ports.join(", ")
        );
        return ExitCode::from(65);
    }
    let cat = match Catalogue::load(args.lang) {
        Ok(cat) => cat,
        Err(e) => {
            eprintln!("yizhan: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.format == Format::Json {
        let all: Vec<serde_json::Value> = conversations
            .iter()
            .map(|c| {
                serde_json::json!({
                    "client": c.client.to_string(),
                    "server": c.server.to_string(),
                    "explanation": explain(&c.lines, &cat),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    for (n, c) in conversations.iter().enumerate() {
        let heading = format!("connection {}: {} -> {}", n + 1, c.client, c.server);
        match args.format {
            Format::Markdown => println!("## {heading}\n"),
            _ => println!("== {heading}\n"),
        }
        print!("{}", render(&explain(&c.lines, &cat), args.format, &cat));
        println!();
    }
    ExitCode::SUCCESS
}

fn print(lines: &[yizhan_explain::Line], args: &ExplainArgs) -> ExitCode {
    let cat = match Catalogue::load(args.lang) {
        Ok(cat) => cat,
        Err(e) => {
            eprintln!("yizhan: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", render(&explain(lines, &cat), args.format, &cat));
    ExitCode::SUCCESS
}
