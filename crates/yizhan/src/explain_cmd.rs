//! `yizhan explain`: an SMTP dialogue explained line by line (the `yizhan_explain` crate),
//! from a transcript file or standard input.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use yizhan_explain::render::{Format, render};
use yizhan_explain::{Catalogue, Lang, explain, transcript};

/// `yizhan explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The dialogue: a transcript (`C:`/`S:` lines, swaks' `->`/`<-`, or bare lines as
    /// `openssl s_client` shows them); `-` or nothing for standard input.
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
}

fn parse_lang(s: &str) -> Result<Lang, String> {
    Lang::parse(s).ok_or_else(|| format!("unknown language {s:?} (en, zh)"))
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("unknown format {s:?} (text, markdown, json)"))
}

/// The magic numbers of pcap and pcapng files.
const CAPTURE_MAGIC: [[u8; 4]; 3] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x0a, 0x0d, 0x0d, 0x0a],
];

/// Reads the input, explains it, prints it.
pub fn main(args: &ExplainArgs, load: crate::sendmail::LoadSettings<'_>) -> ExitCode {
    if let Some(id) = &args.session {
        let settings = match load(args.config.clone()) {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("yizhan: {e}");
                return ExitCode::from(78);
            }
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
    if bytes.len() >= 4 && CAPTURE_MAGIC.iter().any(|m| bytes[..4] == m[..]) {
        eprintln!(
            "yizhan: this is a packet capture; explain reads transcripts for now (export the \
             TCP stream as text, e.g. `tshark -r FILE -qz follow,tcp,ascii,0`, or paste the dialogue)"
        );
        return ExitCode::from(65);
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines = transcript::parse(&text);
    if lines.is_empty() {
        eprintln!("yizhan: no SMTP dialogue found in the input");
        return ExitCode::from(65);
    }
    print(&lines, args)
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
