//! An [`Explanation`] written out: as text for a terminal, as Markdown for a ticket or a wiki,
//! or as JSON for a program.

use crate::catalogue::Catalogue;
use crate::{Direction, Explanation, Note};

/// How to write an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Each line, then its notes indented below it.
    #[default]
    Text,
    /// A table: the line, and its notes beside it.
    Markdown,
    /// The [`Explanation`] as JSON.
    Json,
}

impl Format {
    /// `text`, `markdown` (or `md`), `json`.
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "text" => Some(Format::Text),
            "markdown" | "md" => Some(Format::Markdown),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Writes `e` in `format`, with the words of `cat`.
pub fn render(e: &Explanation, format: Format, cat: &Catalogue) -> String {
    match format {
        Format::Text => text(e, cat),
        Format::Markdown => markdown(e, cat),
        Format::Json => serde_json::to_string_pretty(e).unwrap_or_default() + "\n",
    }
}

fn who(direction: Direction) -> &'static str {
    match direction {
        Direction::Client => "C:",
        Direction::Server => "S:",
        Direction::Note => "--",
    }
}

fn with_rfc(note: &Note, cat: &Catalogue) -> String {
    match &note.rfc {
        Some(rfc) => format!("{} [{}]", note.text, rfc_label(rfc, cat)),
        None => note.text.clone(),
    }
}

/// `RFC 5321 4.2.2` as the catalogue writes it (the references carry their own "RFC").
fn rfc_label(rfc: &str, _cat: &Catalogue) -> String {
    rfc.to_owned()
}

fn text(e: &Explanation, cat: &Catalogue) -> String {
    let mut out = String::new();
    for entry in &e.entries {
        out.push_str(&format!("{} {}\n", who(entry.direction), entry.text));
        for note in &entry.notes {
            out.push_str(&format!("       {}\n", with_rfc(note, cat)));
        }
    }
    out.push('\n');
    findings(e, cat, &mut out, "");
    out.push_str(&e.summary);
    out.push('\n');
    out
}

fn findings(e: &Explanation, cat: &Catalogue, out: &mut String, bullet: &str) {
    if e.findings.is_empty() {
        out.push_str(&cat.term("no_findings", &[]));
        out.push_str("\n\n");
        return;
    }
    out.push_str(&cat.term("findings", &[]));
    out.push_str(":\n");
    for f in &e.findings {
        let line = cat.term("line", &[("n", &f.line.to_string())]);
        out.push_str(&format!("{bullet}  {line}: {} [{}]\n", f.text, f.rfc));
    }
    out.push('\n');
}

fn markdown(e: &Explanation, cat: &Catalogue) -> String {
    let cell = |s: &str| {
        s.replace('|', "\\|")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = String::from("| # | | line | explanation |\n| ---: | --- | --- | --- |\n");
    for (n, entry) in e.entries.iter().enumerate() {
        let notes: Vec<String> = entry
            .notes
            .iter()
            .map(|note| cell(&with_rfc(note, cat)))
            .collect();
        out.push_str(&format!(
            "| {} | {} | `{}` | {} |\n",
            n + 1,
            who(entry.direction),
            entry.text.replace('`', "'").replace('|', "\\|"),
            notes.join("<br>")
        ));
    }
    out.push('\n');
    findings(e, cat, &mut out, "-");
    out.push_str(&e.summary);
    out.push('\n');
    out
}
