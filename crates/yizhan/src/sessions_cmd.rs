//! `yizhan sessions list|show`: the recorded sessions (`[record]`, a listener's `record`),
//! read from `<data_dir>/sessions/` (root or the server's account).

use std::path::PathBuf;
use std::process::ExitCode;

use jiff::tz::TimeZone;
use yizhan_server::record;

use crate::sendmail::LoadSettings;

/// `yizhan sessions`.
#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    /// The configuration file (default: $YIZHAN_CONFIG, else /etc/yizhan/yizhan.toml if it
    /// exists, else the embedded default).
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: SessionsCommand,
}

/// The operations on recordings.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum SessionsCommand {
    /// The recorded sessions, newest first: id, start, client, listener.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One recorded session, line by line (`yizhan explain --session ID` explains it).
    Show {
        /// The recording's id (or a unique prefix).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command.
pub fn main(args: SessionsArgs, load: LoadSettings<'_>) -> ExitCode {
    let settings = match crate::sendmail::settings_or_exit(load, args.config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let tz = TimeZone::system();
    let shown = match args.command {
        SessionsCommand::List { json } => record::list(&settings.data_dir).map(|headers| {
            if json {
                serde_json::to_string_pretty(&headers).unwrap_or_default() + "\n"
            } else if headers.is_empty() {
                "No recorded sessions (see [record] in docs/configuration.md)\n".to_owned()
            } else {
                headers
                    .iter()
                    .map(|h| {
                        format!(
                            "{:<24} {}  {:<22} {}\n",
                            h.id,
                            when(h.started, &tz),
                            h.client,
                            h.listener
                        )
                    })
                    .collect()
            }
        }),
        SessionsCommand::Show { id, json } => {
            record::read(&settings.data_dir, &id).map(|recorded| {
                if json {
                    return serde_json::to_string_pretty(&recorded).unwrap_or_default() + "\n";
                }
                let h = &recorded.header;
                let mut out = format!(
                    "session {} from {} on {} ({}), {}\n",
                    h.id,
                    h.client,
                    h.local,
                    h.listener,
                    when(h.started, &tz)
                );
                for e in &recorded.entries {
                    let who = match e.d.as_str() {
                        "c" => "C:",
                        "s" => "S:",
                        _ => "--",
                    };
                    out.push_str(&format!("{:>7.3} {who} {}\n", e.t as f64 / 1000.0, e.x));
                }
                out
            })
        }
    };
    match shown {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("yizhan: {e}");
            ExitCode::FAILURE
        }
    }
}

fn when(second: i64, tz: &TimeZone) -> String {
    jiff::Timestamp::from_second(second).map_or_else(
        |_| second.to_string(),
        |t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%F %T")
                .to_string()
        },
    )
}

/// A recording as the explainer's lines.
pub fn lines(recorded: &record::Recorded) -> Vec<yizhan_explain::Line> {
    use yizhan_explain::Direction;
    recorded
        .entries
        .iter()
        .map(|e| yizhan_explain::Line {
            direction: match e.d.as_str() {
                "c" => Direction::Client,
                "s" => Direction::Server,
                _ => Direction::Note,
            },
            text: e.x.clone(),
            tls: false,
            bare_lf: false,
        })
        .collect()
}
