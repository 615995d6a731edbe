//! `yizhan queue hold|release|requeue|bounce|delete SELECTION`: the messages named by ids,
//! `--all` or filters, acted on in parts (one `act` request each, one group commit in the
//! server), with a progress bar on a terminal for big selections.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use yizhan_server::control::{Acted, Action, Filter, Request, Response, STATES};

use super::print::plural;
use super::{QueueError, ask, each_message, print_json};

/// Messages asked for in one `act` request: big enough for the server to apply them in one
/// group commit, small enough for the progress bar to move.
const PART: usize = 500;

/// Below this many messages no progress bar is drawn.
const PROGRESS_FROM: usize = 2 * PART;

/// Which messages, by what they are (the same filters as `GET /api/queue`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct FilterArgs {
    /// Only messages in this state: active (not tried yet), deferred (tried, will be tried
    /// again), held, done (being removed).
    #[arg(long, value_name = "STATE", value_parser = clap::builder::PossibleValuesParser::new(STATES))]
    pub state: Option<String>,
    /// Only messages whose sender contains this text (without case; `<>`: the null sender).
    #[arg(long, value_name = "TEXT")]
    pub sender: Option<String>,
    /// Only messages with a recipient containing this text (without case).
    #[arg(long, value_name = "TEXT")]
    pub recipient: Option<String>,
    /// Only messages with a pending recipient in this remote domain.
    #[arg(long, value_name = "DOMAIN")]
    pub destination: Option<String>,
    /// Only messages that arrived at least this long ago (`90s`, `2h`, `3d`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
}

impl FilterArgs {
    /// The filter the server's API uses.
    pub fn to_filter(&self) -> Result<Filter, QueueError> {
        let min_age = match self.older_than {
            None => None,
            Some(age) => Some(
                i64::try_from(age.as_secs())
                    .map_err(|_| QueueError::Usage(format!("--older-than {age:?} is too long")))?,
            ),
        };
        let filter = Filter {
            state: self.state.clone(),
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            destination: self.destination.clone(),
            min_age,
        };
        filter.check().map_err(QueueError::Usage)?;
        Ok(filter)
    }
}

/// The messages a bulk action applies to: ids, or `--all`, or filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Selection {
    /// Queue ids (or unique prefixes of at least 6 digits).
    pub ids: Vec<String>,
    /// Every message in the queue (with filters: every message they select).
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// Or the messages these select.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Selection {
    /// The ids given, or the ids of the messages the filters (or `--all`) select, read from
    /// the server; `true` when they were selected rather than named.
    fn ids(&self, socket: &Path) -> Result<(Vec<String>, bool), QueueError> {
        let filter = self.filter.to_filter()?;
        match (self.ids.is_empty(), filter.is_empty() && !self.all) {
            (false, true) => return Ok((self.ids.clone(), false)),
            (false, false) => {
                return Err(QueueError::Usage(
                    "give queue ids, or --all / filters, not both".into(),
                ));
            }
            (true, true) => {
                return Err(QueueError::Usage(
                    "which messages? give queue ids, --all, or filters (--state, --sender, \
                     --recipient, --destination, --older-than)"
                        .into(),
                ));
            }
            (true, false) => {}
        }
        let now = jiff::Timestamp::now().as_second();
        let mut ids = Vec::new();
        each_message(socket, |m| {
            if filter.matches(m, now) {
                ids.push(m.id.clone());
            }
            Ok(())
        })?;
        Ok((ids, true))
    }
}

/// `action` on the selected messages: each one done is printed (with a total for a
/// selection), each failure named once on stderr.
pub(super) fn act(
    action: Action,
    selection: &Selection,
    socket: &Path,
    out: &mut dyn Write,
) -> Result<(), QueueError> {
    let (ids, selected) = selection.ids(socket)?;
    let progress = progress_bar(ids.len(), action);
    let mut acted = Acted::default();
    for part in ids.chunks(PART) {
        let request = Request::Act {
            action,
            ids: part.to_vec(),
        };
        let Response::Acted(done) = ask(socket, request)? else {
            return Err(QueueError::Unexpected);
        };
        progress.inc(part.len() as u64);
        acted.messages += done.messages;
        acted.recipients += done.recipients;
        acted.done.extend(done.done);
        acted.errors.extend(done.errors);
    }
    progress.finish_and_clear();
    if selection.json {
        print_json(out, &acted)?;
    } else {
        let verb = action.done_verb();
        for one in &acted.done {
            writeln!(
                out,
                "{verb} {} ({} pending recipient{})",
                one.id,
                one.recipients,
                plural(one.recipients)
            )?;
        }
        if selected {
            writeln!(
                out,
                "{verb} {} message{} ({} pending recipient{})",
                acted.messages,
                plural(acted.messages),
                acted.recipients,
                plural(acted.recipients)
            )?;
        }
    }
    for failed in &acted.errors {
        eprintln!("yizhan: {}", failed.error);
    }
    match acted.errors.len() {
        0 => Ok(()),
        n => Err(QueueError::Reported(n)),
    }
}

/// A bar on stderr for a big selection (indicatif draws nothing when stderr is not a
/// terminal).
fn progress_bar(total: usize, action: Action) -> ProgressBar {
    if total < PROGRESS_FROM {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} messages ({eta} left)")
    {
        bar.set_style(style);
    }
    bar.set_message(action.done_verb());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_needs_ids_or_filters_not_both() {
        let socket = Path::new("/nonexistent/control.sock");
        let none = Selection::default();
        assert!(matches!(none.ids(socket), Err(QueueError::Usage(m)) if m.contains("--all")));
        let both = Selection {
            ids: vec!["abcdef".into()],
            filter: FilterArgs {
                state: Some("held".into()),
                ..FilterArgs::default()
            },
            ..Selection::default()
        };
        assert!(matches!(both.ids(socket), Err(QueueError::Usage(_))));
        let named = Selection {
            ids: vec!["abcdef".into()],
            ..Selection::default()
        };
        assert_eq!(named.ids(socket).unwrap(), (vec!["abcdef".into()], false));
    }

    #[test]
    fn older_than_is_seconds() {
        let args = FilterArgs {
            older_than: Some(Duration::from_secs(7200)),
            sender: Some("<>".into()),
            ..FilterArgs::default()
        };
        let filter = args.to_filter().unwrap();
        assert_eq!(filter.min_age, Some(7200));
        assert_eq!(filter.sender.as_deref(), Some("<>"));
    }
}
