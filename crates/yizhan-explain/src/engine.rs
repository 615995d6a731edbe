//! The walk through a dialogue: the state of both sides as RFC 5321 describes it (greeting,
//! HELO, the three buffers, the message text, AUTH, TLS), one [`Entry`] per line.

use std::collections::{BTreeSet, VecDeque};

use yizhan_proto::command::Command;

use crate::catalogue::Catalogue;
use crate::transcript::{Direction, Line};
use crate::{Entry, Explanation, Finding, Note, expect, mask};

/// Explains `lines` with the words of `cat`.
pub fn explain(lines: &[Line], cat: &Catalogue) -> Explanation {
    let mut walker = Walker::new(cat);
    for line in lines {
        match line.direction {
            Direction::Client => walker.client(line),
            Direction::Server => walker.server(line),
            Direction::Note => walker.remark(line),
        }
    }
    walker.finish()
}

/// A command waiting for its reply.
struct Pending {
    /// Its verb, or `END-OF-DATA` for the final `.`.
    verb: &'static str,
    /// Its argument as written.
    arg: String,
}

/// The message text being read (after 354).
#[derive(Default)]
struct Data {
    lines: usize,
    octets: usize,
    /// A recorder's note summarised the text (its lines were not kept): no count of ours.
    summarised: bool,
}

struct Walker<'a> {
    cat: &'a Catalogue,
    entries: Vec<Entry>,
    findings: Vec<Finding>,
    flagged: BTreeSet<&'static str>,
    pending: VecDeque<Pending>,
    greeted: bool,
    helo: bool,
    tls: bool,
    /// The keywords of the last EHLO reply.
    capabilities: Vec<String>,
    /// Lines of the reply being read so far.
    reply_lines: usize,
    data: Option<Data>,
    /// The SASL mechanism in progress, and how many answers the client gave.
    auth: Option<(String, usize)>,
    /// A 334 came during AUTH: the next client line is an answer, not a command; what the
    /// prompt asked for.
    auth_answer: Option<mask::Prompt>,
    from: Option<String>,
    to: Vec<String>,
    commands: usize,
    replies: usize,
    messages: usize,
    quit: bool,
    /// The rest of the dialogue could not be read (encrypted in a capture).
    opaque: bool,
}

impl<'a> Walker<'a> {
    fn new(cat: &'a Catalogue) -> Self {
        Walker {
            cat,
            entries: Vec::new(),
            findings: Vec::new(),
            flagged: BTreeSet::new(),
            pending: VecDeque::new(),
            greeted: false,
            helo: false,
            tls: false,
            capabilities: Vec::new(),
            reply_lines: 0,
            data: None,
            auth: None,
            auth_answer: None,
            from: None,
            to: Vec::new(),
            commands: 0,
            replies: 0,
            messages: 0,
            quit: false,
            opaque: false,
        }
    }

    fn note(&self, text: String, rfc: Option<&str>) -> Note {
        Note {
            text,
            rfc: rfc.map(str::to_owned),
        }
    }

    fn term(&self, key: &str, values: &[(&str, &str)]) -> Note {
        self.note(self.cat.term(key, values), None)
    }

    /// Flags `key` (once per dialogue) at the line about to be explained.
    fn flag(&mut self, key: &'static str) {
        self.flag_at(key, self.entries.len() + 1);
    }

    /// Flags `key` (once per dialogue) at `line` (1-based).
    fn flag_at(&mut self, key: &'static str, line: usize) {
        if !self.flagged.insert(key) {
            return;
        }
        if let Some(f) = self.cat.findings.get(key) {
            self.findings.push(Finding {
                key: key.to_owned(),
                line,
                text: f.text.clone(),
                rfc: f.rfc.clone(),
            });
        }
    }

    fn push(&mut self, direction: Direction, text: String, notes: Vec<Note>) {
        self.entries.push(Entry {
            direction,
            text,
            notes,
        });
    }

    /// A recorder's remark: shown as it is; TLS from there on when it says so.
    fn remark(&mut self, line: &Line) {
        if line.text.starts_with("TLS established") {
            self.tls = true;
        }
        if line.text.starts_with("encrypted") {
            self.opaque = true;
        }
        if line.text.starts_with("message text:")
            && let Some(data) = self.data.as_mut()
        {
            data.summarised = true;
        }
        self.push(Direction::Note, line.text.clone(), Vec::new());
    }

    fn client(&mut self, line: &Line) {
        if line.tls && !self.tls {
            self.tls = true;
        }
        if self.data.is_some() {
            return self.message_text(line);
        }
        if let Some(prompt) = self.auth_answer.take() {
            let (mechanism, step) = self.auth.clone().unwrap_or_default();
            let shown = mask::answer(self.cat, &mechanism, prompt, &line.text);
            self.auth = Some((mechanism, step + 1));
            self.pending.push_back(Pending {
                verb: "AUTH",
                arg: String::new(),
            });
            return self.push(Direction::Client, shown, Vec::new());
        }
        self.commands += 1;
        if !self.pending.is_empty() {
            if self.pending.iter().any(|p| p.verb == "DATA") {
                self.flag("pipelining_after_data");
            } else if !self.capabilities.iter().any(|c| c == "PIPELINING") {
                self.flag("pipelining_misuse");
            }
        }
        // A recorded `AUTH PLAIN [user name ..., masked]`: the command without its (masked)
        // answer, shown as recorded.
        let parsed = match line.text.split_once(" [") {
            Some((command, _)) if line.text.ends_with(']') => command,
            _ => line.text.as_str(),
        };
        match Command::parse(parsed.as_bytes()) {
            Ok(command) => self.command(&command, &line.text),
            Err(_) => self.not_a_command(&line.text),
        }
    }

    /// A line of the message text, or the `.` that ends it.
    fn message_text(&mut self, line: &Line) {
        if self.data.is_none() {
            return;
        }
        if line.bare_lf {
            // RFC 5321 2.3.8: a line ends in CRLF; a bare LF is how SMTP smuggling hides a
            // second message inside the first (a server that reads "\n.\n" as the end).
            self.flag("bare_lf");
        }
        let Some(data) = self.data.as_mut() else {
            return;
        };
        if line.text == "." {
            let (lines, octets) = (data.lines.to_string(), data.octets.to_string());
            let summarised = data.summarised;
            self.data = None;
            let mut notes = vec![self.term("end_of_data", &[])];
            if !summarised {
                notes.push(self.term("data_summary", &[("lines", &lines), ("octets", &octets)]));
            }
            self.pending.push_back(Pending {
                verb: "END-OF-DATA",
                arg: String::new(),
            });
            return self.push(Direction::Client, line.text.clone(), notes);
        }
        let first = data.lines == 0;
        data.lines += 1;
        data.octets += line.text.len() + 2;
        let notes = if first {
            vec![self.term("message_line", &[])]
        } else {
            Vec::new()
        };
        self.push(Direction::Client, line.text.clone(), notes);
    }

    fn command(&mut self, command: &Command, text: &str) {
        let verb = command.verb();
        // The line as shown: an answer given with AUTH is masked before anything quotes it.
        let shown = match command {
            Command::Auth {
                mechanism,
                initial: Some(initial),
            } => {
                let mechanism = mechanism.to_ascii_uppercase();
                // `AUTH LOGIN name`: the initial response is the user name (RFC 4954 4).
                let masked = mask::answer(self.cat, &mechanism, mask::Prompt::UserName, initial);
                format!("AUTH {mechanism} {masked}")
            }
            _ => text.to_owned(),
        };
        let arg = shown
            .split_once(' ')
            .map(|(_, a)| a.trim().to_owned())
            .unwrap_or_default();
        let mut notes = Vec::new();
        if let Some(c) = self.cat.commands.get(verb) {
            let described = if arg.is_empty() { "-" } else { &arg };
            notes.push(self.note(
                crate::catalogue::fill(&c.text, &[("arg", described)]),
                Some(&c.rfc),
            ));
            notes.push(self.note(c.buffers.clone(), None));
        }
        match command {
            Command::Mail { .. } | Command::Rcpt { .. } if !self.helo => self.flag("helo_missing"),
            Command::Auth { mechanism, initial } => {
                let mechanism = mechanism.to_ascii_uppercase();
                if let Some(m) = self.cat.mechanisms.get(&mechanism) {
                    notes.push(self.note(m.clone(), None));
                }
                if !self.tls {
                    self.flag("auth_in_clear");
                }
                self.auth = Some((mechanism, usize::from(initial.is_some())));
            }
            Command::Data => {
                let from = self.from.clone().unwrap_or_else(|| "-".into());
                let to = self.to.join(", ");
                notes.push(self.term("envelope", &[("from", &from), ("to", &to)]));
            }
            Command::Quit => self.quit = true,
            _ => {}
        }
        self.pending.push_back(Pending { verb, arg });
        self.push(Direction::Client, shown, notes);
    }

    fn not_a_command(&mut self, text: &str) {
        let mut words = text.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        // A credential where a command was expected (an answer sent before its prompt, or
        // after a refused AUTH; an AUTH with odd spacing): never shown.
        let shown = if verb == "AUTH" {
            let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
            match words.next() {
                Some(rest) => {
                    let masked = mask::answer(self.cat, &mechanism, mask::Prompt::Other, rest);
                    format!("AUTH {mechanism} {masked}")
                }
                None => text.to_owned(),
            }
        } else if mask::looks_like_base64(text) {
            mask::answer(self.cat, "", mask::Prompt::Other, text)
        } else {
            text.to_owned()
        };
        let text = shown.as_str();
        let mut notes = Vec::new();
        match self.cat.commands.get(&verb) {
            Some(c) => notes.push(self.note(
                crate::catalogue::fill(&c.text, &[("arg", "?")]),
                Some(&c.rfc),
            )),
            None => notes.push(self.term("unknown_command", &[])),
        }
        self.pending.push_back(Pending {
            verb: "UNKNOWN",
            arg: String::new(),
        });
        self.push(Direction::Client, text.to_owned(), notes);
    }

    fn server(&mut self, line: &Line) {
        if line.tls && !self.tls {
            self.tls = true;
        }
        let Some((code, last, rest)) = reply_line(&line.text) else {
            let notes = vec![self.term("unknown_reply", &[])];
            return self.push(Direction::Server, line.text.clone(), notes);
        };
        let answering = if self.greeted {
            self.pending.front().map(|p| p.verb)
        } else {
            if self.entries.is_empty() && code != 220 && code != 554 {
                self.flag("no_greeting");
            }
            Some("GREETING")
        };
        let notes = if self.reply_lines == 0 {
            self.first_reply_line(code, rest, answering)
        } else if answering == Some("EHLO") {
            self.capability(rest)
        } else {
            Vec::new()
        };
        if answering == Some("EHLO") && self.reply_lines > 0 {
            let keyword = rest.split([' ', '=']).next().unwrap_or("");
            self.capabilities.push(keyword.to_ascii_uppercase());
        }
        self.push(Direction::Server, line.text.clone(), notes);
        if last {
            self.reply_lines = 0;
            self.complete(answering, code);
        } else {
            self.reply_lines += 1;
        }
    }

    /// The notes of a reply's first line: the code, the enhanced code, whether it fits.
    fn first_reply_line(&mut self, code: u16, rest: &str, answering: Option<&str>) -> Vec<Note> {
        self.replies += 1;
        let mut notes = Vec::new();
        match self.cat.replies.get(&code.to_string()) {
            Some(r) => notes.push(self.note(format!("{code}: {}", r.text), Some(&r.rfc))),
            None => notes.push(self.term("unknown_reply", &[])),
        }
        if let Some((class, subject, detail)) = enhanced(rest)
            && let Some(meaning) = self.cat.enhanced(class, subject, detail)
        {
            let code = format!("{class}.{subject}.{detail}");
            notes.push(self.term("enhanced", &[("code", &code), ("text", &meaning)]));
        }
        // During AUTH a 334 makes the next client line an answer, whatever command the
        // reply seemed to answer: a dialogue out of order must not show a password as a name.
        if code == 334 && self.auth.is_some() {
            self.auth_answer = Some(mask::Prompt::of(rest));
        }
        if code == 334
            && let Some(prompt) = mask::decode(rest)
        {
            let prompt = String::from_utf8_lossy(&prompt).into_owned();
            notes.push(self.term("decoded_prompt", &[("text", &prompt)]));
        }
        match answering {
            None => self.flag("reply_without_command"),
            Some("UNKNOWN") => {}
            Some(verb) if expect::fits(verb, code) => {
                if verb != "GREETING" {
                    notes.push(self.term("expected", &[]));
                }
            }
            Some(verb) => {
                let codes: Vec<String> =
                    expect::expected(verb).iter().map(u16::to_string).collect();
                let command = if verb == "END-OF-DATA" { "." } else { verb };
                notes.push(self.term(
                    "not_expected",
                    &[("command", command), ("codes", &codes.join(", "))],
                ));
                self.flag("unexpected_reply");
            }
        }
        notes
    }

    /// An EHLO capability line.
    fn capability(&self, rest: &str) -> Vec<Note> {
        let (keyword, value) = match rest.split_once([' ', '=']) {
            Some((k, v)) if rest.as_bytes().get(k.len()) == Some(&b'=') => {
                (format!("{}=", k.to_ascii_uppercase()), v)
            }
            Some((k, v)) => (k.to_ascii_uppercase(), v),
            None => (rest.to_ascii_uppercase(), ""),
        };
        let Some(c) = self.cat.capabilities.get(&keyword) else {
            return vec![self.term("vendor", &[])];
        };
        let mut notes = vec![self.note(format!("{keyword}: {}", c.text), Some(&c.rfc))];
        if keyword.starts_with("AUTH") {
            for mechanism in value.split_whitespace() {
                if let Some(m) = self.cat.mechanisms.get(&mechanism.to_ascii_uppercase()) {
                    notes.push(self.note(m.clone(), None));
                }
            }
        } else if !value.is_empty() {
            notes.push(self.term("capability_value", &[("value", value)]));
        }
        notes
    }

    /// A reply is complete: what it changes.
    fn complete(&mut self, answering: Option<&str>, code: u16) {
        if !self.greeted {
            self.greeted = true;
            return;
        }
        let Some(pending) = self.pending.pop_front() else {
            return;
        };
        let ok = code / 100 == 2;
        match (pending.verb, code) {
            ("HELO" | "EHLO", 250) => {
                self.helo = true;
                self.clear_buffers();
                let offers = |k: &str| self.capabilities.iter().any(|c| c.starts_with(k));
                if !self.tls && offers("AUTH") && offers("STARTTLS") {
                    // At the reply's last line, the one just explained.
                    self.flag_at("auth_before_tls", self.entries.len());
                }
            }
            ("MAIL" | "SEND" | "SOML" | "SAML", _) if ok => {
                self.to.clear();
                self.from = Some(path_of(&pending.arg));
                self.buffers_now();
            }
            ("RCPT", _) if ok => {
                self.to.push(path_of(&pending.arg));
                self.buffers_now();
            }
            ("DATA", 354) => self.data = Some(Data::default()),
            ("END-OF-DATA", 250) => {
                self.messages += 1;
                self.clear_buffers();
            }
            ("RSET", 250) => self.clear_buffers(),
            ("STARTTLS", 220) => {
                self.tls = true;
                self.helo = false;
                self.capabilities.clear();
                let note = self.term("tls_begins_unknown", &[]);
                if let Some(last) = self.entries.last_mut() {
                    last.notes.push(note);
                }
            }
            ("AUTH", code) if code != 334 => self.auth = None,
            _ => {}
        }
        let _ = answering;
    }

    fn clear_buffers(&mut self) {
        self.from = None;
        self.to.clear();
    }

    /// Adds the buffers' contents to the last line's notes.
    fn buffers_now(&mut self) {
        let from = self.from.clone().unwrap_or_else(|| "-".into());
        let count = self.to.len().to_string();
        let note = self.term("buffers_now", &[("from", &from), ("count", &count)]);
        if let Some(last) = self.entries.last_mut() {
            last.notes.push(note);
        }
    }

    fn finish(mut self) -> Explanation {
        // What went on inside TLS is not known: no finding about how it ended.
        if !self.pending.is_empty() && !self.quit && !self.opaque {
            self.flag("command_without_reply");
        }
        if !self.quit && !self.opaque {
            self.flag("missing_quit");
        }
        let (commands, replies, messages) = (
            self.commands.to_string(),
            self.replies.to_string(),
            self.messages.to_string(),
        );
        let summary = self.cat.term(
            "session_summary",
            &[
                ("commands", &commands),
                ("replies", &replies),
                ("messages", &messages),
            ],
        );
        Explanation {
            entries: self.entries,
            findings: self.findings,
            summary,
        }
    }
}

/// `250-text` or `250 text`: the code, whether it is the reply's last line, and the text.
fn reply_line(text: &str) -> Option<(u16, bool, &str)> {
    let code: u16 = text.get(..3)?.parse().ok()?;
    if !(200..600).contains(&code) {
        return None;
    }
    match text.as_bytes().get(3) {
        None => Some((code, true, "")),
        Some(b' ') => Some((code, true, &text[4..])),
        Some(b'-') => Some((code, false, &text[4..])),
        _ => None,
    }
}

/// An RFC 3463 code at the start of a reply's text (`5.1.1 ...`).
fn enhanced(text: &str) -> Option<(u8, u16, u16)> {
    let word = text.split(' ').next()?;
    let mut parts = word.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    (parts.next().is_none() && matches!(class, 2 | 4 | 5)).then_some((class, subject, detail))
}

/// The path of `FROM:<a@b> SIZE=1` or `TO:<a@b>`: `<a@b>`.
fn path_of(arg: &str) -> String {
    let after = arg.split_once(':').map_or(arg, |(_, rest)| rest).trim();
    after.split(' ').next().unwrap_or(after).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Lang;
    use crate::transcript::parse;

    fn run(text: &str) -> Explanation {
        explain(&parse(text), &Catalogue::load(Lang::En).unwrap())
    }

    #[test]
    fn replies_and_enhanced_codes() {
        assert_eq!(
            reply_line("250-PIPELINING"),
            Some((250, false, "PIPELINING"))
        );
        assert_eq!(reply_line("221"), Some((221, true, "")));
        assert_eq!(reply_line("hello"), None);
        assert_eq!(enhanced("5.1.1 no such user"), Some((5, 1, 1)));
        assert_eq!(enhanced("1.2.3 x"), None);
        assert_eq!(path_of("FROM:<a@b> SIZE=10"), "<a@b>");
    }

    #[test]
    fn a_plain_session_has_no_findings() {
        let e = run(
            "S: 220 mx ESMTP\nC: EHLO me\nS: 250-mx\nS: 250 PIPELINING\nC: MAIL FROM:<a@b>\nS: 250 2.1.0 ok\nC: RCPT TO:<c@d>\nS: 250 2.1.5 ok\nC: DATA\nS: 354 go\nC: Subject: x\nC: \nC: hi\nC: .\nS: 250 2.0.0 queued\nC: QUIT\nS: 221 bye\n",
        );
        assert!(e.findings.is_empty(), "{:?}", e.findings);
        assert_eq!(e.summary, "5 commands, 7 replies, 1 message(s) accepted");
        let data = e.entries.iter().find(|x| x.text == "DATA").unwrap();
        assert!(
            data.notes
                .iter()
                .any(|n| n.text.contains("from <a@b> to <c@d>"))
        );
    }

    #[test]
    fn a_summarised_text_is_not_counted_as_empty() {
        let mut lines = crate::transcript::parse(
            "S: 220 mx\nC: EHLO me\nS: 250 mx\nC: MAIL FROM:<a@b>\nS: 250 ok\nC: RCPT TO:<c@d>\nS: 250 ok\nC: DATA\nS: 354 go\nC: .\nS: 250 ok\n",
        );
        let dot = lines.iter().position(|l| l.text == ".").unwrap();
        lines.insert(
            dot,
            Line {
                direction: Direction::Note,
                text: "message text: 431 octets, 13 lines; header fields: From".into(),
                tls: false,
                bare_lf: false,
            },
        );
        let cat = Catalogue::load(crate::Lang::En).unwrap();
        let e = explain(&lines, &cat);
        let dot = e.entries.iter().find(|x| x.text == ".").unwrap();
        assert_eq!(dot.notes.len(), 1, "{:?}", dot.notes);
        let plain = run(
            "S: 220 mx\nC: MAIL FROM:<a@b>\nS: 250 ok\nC: RCPT TO:<c@d>\nS: 250 ok\nC: DATA\nS: 354 go\nC: hi\nC: .\nS: 250 ok\n",
        );
        let dot = plain.entries.iter().find(|x| x.text == ".").unwrap();
        assert!(
            dot.notes
                .iter()
                .any(|n| n.text.contains("1 lines, 4 octets")),
            "{:?}",
            dot.notes
        );
    }

    #[test]
    fn an_initial_response_is_masked_everywhere() {
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::STANDARD.encode("\0ann\0hunter2");
        let e = run(&format!(
            "S: 220 mx\nC: EHLO me\nS: 250 mx\nC: AUTH PLAIN {secret}\nS: 235 ok\n"
        ));
        let all = serde_json::to_string(&e).unwrap();
        assert!(!all.contains(&secret) && !all.contains("hunter2"), "{all}");
        assert!(all.contains("user name `ann`"), "{all}");
    }

    #[test]
    fn wrong_answers_and_misuse_are_flagged() {
        let e = run(
            "S: 220 mx\nC: HELO me\nS: 250 mx\nC: MAIL FROM:<a@b>\nC: RCPT TO:<c@d>\nS: 354 what\nS: 250 ok\nC: DATA\nS: 354 go\nC: .\nS: 250 ok\n",
        );
        let keys: Vec<&str> = e.findings.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            ["pipelining_misuse", "unexpected_reply", "missing_quit"]
        );
    }
}

#[cfg(test)]
mod properties {
    use base64::Engine as _;
    use proptest::prelude::*;

    use super::*;
    use crate::catalogue::Lang;
    use crate::transcript::parse;

    proptest! {
        /// Around any dialogue, an AUTH exchange's password, and its base64, never appear in
        /// an explanation, in either language.
        #[test]
        fn passwords_never_appear(
            before in proptest::collection::vec("[ -~]{0,40}", 0..8),
            after in proptest::collection::vec("[ -~]{0,40}", 0..8),
            password in "[A-Za-z0-9!#%&]{8,24}",
            plain in any::<bool>(),
        ) {
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            let mut text = String::from("S: 220 mx\nC: EHLO me\nS: 250 mx\n");
            for l in &before { text.push_str(&format!("C: {l}\n")); }
            if plain {
                text.push_str(&format!("C: AUTH PLAIN {}\nS: 235 ok\n", b64(&format!("\0u\0{password}"))));
            } else {
                text.push_str(&format!(
                    "C: AUTH LOGIN\nS: 334 VXNlcm5hbWU6\nC: {}\nS: 334 UGFzc3dvcmQ6\nC: {}\nS: 235 ok\n",
                    b64("u"), b64(&password)
                ));
            }
            for l in &after { text.push_str(&format!("S: {l}\n")); }
            // The same answers sent where commands were expected (a refused AUTH, a client
            // that does not wait for its prompt) and an AUTH with odd spacing.
            text.push_str(&format!("C: {}\nC: AUTH  PLAIN {}\nC: auth\tplain {}\n",
                b64(&password), b64(&format!("\0u\0{password}")), b64(&format!("\0u\0{password}"))));
            for lang in Lang::ALL {
                let cat = Catalogue::load(lang).unwrap();
                let e = explain(&parse(&text), &cat);
                let all = serde_json::to_string(&e).unwrap();
                prop_assert!(!all.contains(&b64(&password)));
                if !before.iter().chain(&after).any(|l| l.contains(&password)) {
                    prop_assert!(!all.contains(&password), "{}", all);
                }
            }
        }

        /// Any text: one entry per line, and no panic.
        #[test]
        fn any_text_is_explained(text in "(([CS]: )?[ -~]{0,30}\n){0,20}") {
            let cat = Catalogue::load(Lang::En).unwrap();
            let lines = parse(&text);
            prop_assert_eq!(explain(&lines, &cat).entries.len(), lines.len());
        }
    }
}
