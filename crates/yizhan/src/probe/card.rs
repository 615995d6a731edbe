//! The report card: one line per check (what was checked, how it went, what the server said,
//! where the RFCs say so), in the catalogue's language, as text, Markdown or JSON.

use serde::Serialize;
use yizhan_explain::Catalogue;
use yizhan_explain::render::Format;

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// As the RFCs and good practice want it.
    Pass,
    /// Allowed, but worth a look.
    Warn,
    /// Wrong, or unsafe: the probe exits non-zero.
    Fail,
    /// A fact, not a judgement.
    Info,
    /// Not run (not asked for, or the session did not get that far).
    Skipped,
}

impl Outcome {
    fn term(self) -> &'static str {
        match self {
            Outcome::Pass => "probe_pass",
            Outcome::Warn => "probe_warn",
            Outcome::Fail => "probe_fail",
            Outcome::Info => "probe_info",
            Outcome::Skipped => "probe_skipped",
        }
    }
}

/// One check: its key in the catalogue's `[probe]` table, how it went, and the detail (the
/// server's answer, a number, a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The catalogue key (`unknown_command`, ...).
    pub key: &'static str,
    /// How it went.
    pub outcome: Outcome,
    /// What was seen.
    pub detail: String,
}

impl Check {
    /// A check with its outcome and detail.
    pub fn new(key: &'static str, outcome: Outcome, detail: impl Into<String>) -> Check {
        Check {
            key,
            outcome,
            detail: detail.into(),
        }
    }
}

/// The card as JSON and as words: one check with its catalogue title and reference.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    check: &'a str,
    outcome: Outcome,
    title: String,
    detail: String,
    rfc: String,
}

/// A detail in words: each `{name}` the probe wrote becomes the catalogue's `probe_name`
/// term; anything else in braces (a server's text) is left as it is.
fn words(detail: &str, cat: &Catalogue) -> String {
    let mut out = String::with_capacity(detail.len());
    let mut rest = detail;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let key = after
            .find('}')
            .map(|close| &after[..close])
            .filter(|k| k.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'));
        match key.and_then(|k| cat.terms.get(&format!("probe_{k}"))) {
            Some(term) => {
                out.push_str(term);
                rest = &after[key.map_or(0, str::len) + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The whole report.
#[derive(Debug)]
pub struct Card {
    /// `host:port` as probed.
    pub target: String,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl Card {
    /// Whether the server passed: no check failed.
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    fn shown<'a>(&'a self, cat: &Catalogue) -> Vec<Shown<'a>> {
        self.checks
            .iter()
            .map(|c| {
                let entry = cat.probe.get(c.key);
                Shown {
                    check: c.key,
                    outcome: c.outcome,
                    title: entry.map_or_else(|| c.key.to_owned(), |e| e.text.clone()),
                    detail: words(&c.detail, cat),
                    rfc: entry.map(|e| e.rfc.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The verdict with the totals: `12 passed, 1 warning(s), 0 failed. The server passed.`
    fn verdict(&self, cat: &Catalogue) -> String {
        let key = if self.passed() {
            "probe_verdict_pass"
        } else {
            "probe_verdict_fail"
        };
        cat.term(
            key,
            &[
                ("passed", &self.count(Outcome::Pass).to_string()),
                ("warnings", &self.count(Outcome::Warn).to_string()),
                ("failed", &self.count(Outcome::Fail).to_string()),
            ],
        )
    }

    /// The card as a JSON value.
    pub fn to_json(&self, cat: &Catalogue) -> serde_json::Value {
        serde_json::json!({
            "target": self.target,
            "passed": self.passed(),
            "checks": self.shown(cat),
        })
    }

    /// The card written out.
    pub fn render(&self, format: Format, cat: &Catalogue) -> String {
        let shown = self.shown(cat);
        let heading = cat.term("probe_card", &[("target", &self.target)]);
        let verdict = self.verdict(cat);
        match format {
            Format::Json => {
                serde_json::to_string_pretty(&self.to_json(cat)).unwrap_or_default() + "\n"
            }
            Format::Markdown => {
                let cell = |s: &str| {
                    s.replace('|', "\\|")
                        .replace('<', "&lt;")
                        .replace('>', "&gt;")
                };
                let mut out = format!(
                    "## {heading}\n\n| | {} | {} | RFC |\n| --- | --- | --- | --- |\n",
                    cat.term("probe_column_check", &[]),
                    cat.term("probe_column_detail", &[])
                );
                for s in &shown {
                    out.push_str(&format!(
                        "| {} | {} | {} | {} |\n",
                        cat.term(s.outcome.term(), &[]),
                        cell(&s.title),
                        cell(&s.detail),
                        s.rfc
                    ));
                }
                out.push_str(&format!("\n{verdict}\n"));
                out
            }
            Format::Text => {
                let mut out = format!("{heading}\n");
                let width = Outcome::ALL
                    .iter()
                    .map(|o| cat.term(o.term(), &[]).chars().count())
                    .max()
                    .unwrap_or(0);
                for s in &shown {
                    let label = cat.term(s.outcome.term(), &[]);
                    let pad = " ".repeat(width.saturating_sub(label.chars().count()));
                    out.push_str(&format!("  [{label}]{pad} {} [{}]\n", s.title, s.rfc));
                    if !s.detail.is_empty() {
                        out.push_str(&format!("  {}    {}\n", " ".repeat(width), s.detail));
                    }
                }
                out.push_str(&format!("{verdict}\n"));
                out
            }
        }
    }
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Pass,
        Outcome::Warn,
        Outcome::Fail,
        Outcome::Info,
        Outcome::Skipped,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhan_explain::Lang;

    fn card() -> Card {
        Card {
            target: "127.0.0.1:25".into(),
            checks: vec![
                Check::new("greeting", Outcome::Pass, "220 mx ESMTP"),
                Check::new("size", Outcome::Warn, ""),
                Check::new("unknown_command", Outcome::Fail, "250 ok"),
            ],
        }
    }

    #[test]
    fn details_are_put_in_words() {
        let en = Catalogue::load(Lang::En).unwrap();
        let zh = Catalogue::load(Lang::Zh).unwrap();
        assert_eq!(words("{not_offered}", &en), en.terms["probe_not_offered"]);
        assert_eq!(
            words("a {closed} b", &zh),
            format!("a {} b", zh.terms["probe_closed"])
        );
        // A server's own braces are left alone, whole.
        assert_eq!(words("250 {ok} {Weird-1} {", &en), "250 {ok} {Weird-1} {");
    }

    #[test]
    fn a_failed_check_fails_the_card() {
        let mut c = card();
        assert!(!c.passed());
        c.checks.pop();
        assert!(c.passed());
    }

    #[test]
    fn every_check_and_outcome_has_words_in_every_language() {
        for lang in Lang::ALL {
            let cat = Catalogue::load(lang).unwrap();
            for key in super::super::run::CHECKS {
                assert!(cat.probe.contains_key(key), "{lang:?} probe.{key}");
            }
            for o in Outcome::ALL {
                assert!(cat.terms.contains_key(o.term()), "{lang:?} {}", o.term());
            }
            for format in [Format::Text, Format::Markdown, Format::Json] {
                let out = card().render(format, &cat);
                assert!(
                    out.contains("127.0.0.1:25") && out.contains("250 ok"),
                    "{out}"
                );
                assert!(!out.contains("probe_"), "a term is missing: {out}");
            }
        }
        let en = Catalogue::load(Lang::En).unwrap();
        let text = card().render(Format::Text, &en);
        assert!(text.contains("[FAIL]"), "{text}");
        assert!(text.contains("1 passed, 1 warning(s), 1 failed"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&card().render(Format::Json, &en)).unwrap();
        assert_eq!(json["passed"], false);
        assert_eq!(json["checks"][2]["outcome"], "fail");
        assert_eq!(json["checks"][2]["rfc"], "RFC 5321 4.2.4");
    }
}
