//! How `yizhan queue` prints: the `mailq` table, one message, counts in good English.

use std::io::{self, Write};

use jiff::tz::TimeZone;
use yizhan_server::control::MessageInfo;

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(super) fn time(second: i64, tz: &TimeZone, format: &str) -> String {
    match jiff::Timestamp::from_second(second) {
        Ok(t) => t.to_zoned_datetime(tz.clone()).strftime(format).to_string(),
        Err(_) => second.to_string(),
    }
}

fn sender(message: &MessageInfo) -> &str {
    if message.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &message.sender
    }
}

/// The `mailq` table (in the manner of Postfix's `postqueue -p`).
#[cfg(test)]
fn format_list(messages: &[MessageInfo], tz: &TimeZone) -> String {
    let mut out = Vec::new();
    let mut printer = ListPrinter::new(false);
    for m in messages {
        let _ = printer.entry(m, tz, &mut out);
    }
    let _ = printer.finish(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Messages asked for at once by `queue list`.
pub(super) const LIST_PAGE: usize = 1000;

/// `queue list`, one message at a time: the `mailq` table, or a JSON array.
pub(super) struct ListPrinter {
    json: bool,
    count: usize,
    total: u64,
}

impl ListPrinter {
    pub(super) fn new(json: bool) -> Self {
        ListPrinter {
            json,
            count: 0,
            total: 0,
        }
    }

    pub(super) fn entry(
        &mut self,
        m: &MessageInfo,
        tz: &TimeZone,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let first = self.count == 0;
        self.count += 1;
        self.total += m.size;
        if self.json {
            out.write_all(if first { b"[\n" } else { b",\n" })?;
            serde_json::to_writer_pretty(&mut *out, m).map_err(io::Error::from)?;
            return Ok(());
        }
        if first {
            writeln!(
                out,
                "{:<33}{:>9} {:<20}  -Sender/Recipient-------",
                "-Queue ID-", "--Size--", "----Arrival Time----"
            )?;
        }
        let indent = " ".repeat(32 + 1 + 9 + 1 + 20 + 2);
        let mark = if m.held { '!' } else { ' ' };
        writeln!(
            out,
            "{:<32}{mark}{:>9} {:<20}  {}",
            m.id,
            m.size,
            time(m.received_at, tz, "%a %b %e %H:%M:%S"),
            sender(m)
        )?;
        for r in m.recipients.iter().filter(|r| r.state == "pending") {
            if let Some(error) = &r.last_error {
                writeln!(out, "{indent}({})", error.replace(['\r', '\n'], " "))?;
            }
            writeln!(out, "{indent}{}", r.address)?;
        }
        writeln!(out)
    }

    pub(super) fn finish(&self, out: &mut dyn Write) -> io::Result<()> {
        match (self.json, self.count) {
            (true, 0) => writeln!(out, "[]"),
            (true, _) => writeln!(out, "\n]"),
            (false, 0) => writeln!(out, "Mail queue is empty"),
            (false, n) => writeln!(
                out,
                "-- {} Kbytes in {n} Request{}.",
                self.total.div_ceil(1024),
                plural(n)
            ),
        }
    }
}

/// `queue show`: the envelope, each recipient's state and the header section.
pub fn format_show(m: &MessageInfo, headers: &str, tz: &TimeZone) -> String {
    let when = |t| time(t, tz, "%a, %-d %b %Y %H:%M:%S %z");
    let mut out = format!(
        "Queue ID: {}\nArrival:  {}\nSize:     {} bytes\nSender:   <{}>\nStatus:   {}\n",
        m.id,
        when(m.received_at),
        m.size,
        m.sender,
        if m.held { "held" } else { "queued" },
    );
    if let Some(recording) = &m.recording {
        out.push_str(&format!(
            "Session:  {recording} (yizhan sessions show {recording})\n"
        ));
    }
    out.push_str("Recipients:\n");
    for r in &m.recipients {
        let mut line = format!("  {} ({}", r.address, r.state);
        if r.attempts > 0 {
            line.push_str(&format!(
                ", {} attempt{}",
                r.attempts,
                plural(r.attempts as usize)
            ));
        }
        if let Some(next) = r.next_attempt {
            line.push_str(&format!(", next {}", when(next)));
        }
        line.push(')');
        if r.original.trim_matches(['<', '>']) != r.address {
            line.push_str(&format!(" for {}", r.original));
        }
        out.push_str(&line);
        out.push('\n');
        if let Some(detail) = &r.detail {
            out.push_str(&format!("    {detail}\n"));
        } else if let Some(error) = &r.last_error {
            out.push_str(&format!("    last error: {error}\n"));
        }
    }
    out.push('\n');
    out.push_str(&headers.replace("\r\n", "\n"));
    out
}

#[cfg(test)]
mod tests {
    use yizhan_server::control::RecipientInfo;

    use super::*;

    fn message(held: bool) -> MessageInfo {
        MessageInfo {
            recording: None,
            id: "0190f2c4a1b27c3d8e9f00112233aabb".into(),
            received_at: 1_709_640_000, // 2024-03-05 12:00:00 UTC
            size: 1500,
            sender: "".into(),
            held,
            recipients: vec![
                RecipientInfo {
                    address: "a@remote.example".into(),
                    original: "<list@test.example>".into(),
                    local: false,
                    state: "pending".into(),
                    attempts: 2,
                    next_attempt: Some(1_709_643_600),
                    last_error: Some("connection refused".into()),
                    detail: None,
                },
                RecipientInfo {
                    address: "u@test.example".into(),
                    original: "<u@test.example>".into(),
                    local: true,
                    state: "delivered".into(),
                    attempts: 1,
                    next_attempt: None,
                    last_error: None,
                    detail: Some("/mail/u/new/1".into()),
                },
            ],
        }
    }

    #[test]
    fn list_table() {
        assert_eq!(format_list(&[], &TimeZone::UTC), "Mail queue is empty\n");
        let table = format_list(&[message(true), message(false)], &TimeZone::UTC);
        let lines: Vec<&str> = table.lines().collect();
        let pad = " ".repeat(65);
        assert_eq!(
            lines[0],
            "-Queue ID-                        --Size-- ----Arrival Time----  -Sender/Recipient-------"
        );
        assert_eq!(
            lines[1],
            "0190f2c4a1b27c3d8e9f00112233aabb!     1500 Tue Mar  5 12:00:00   MAILER-DAEMON"
        );
        assert_eq!(lines[2], format!("{pad}(connection refused)"));
        assert_eq!(lines[3], format!("{pad}a@remote.example"));
        assert_eq!(lines[4], "");
        assert!(lines[5].starts_with("0190f2c4a1b27c3d8e9f00112233aabb "));
        assert_eq!(lines.last(), Some(&"-- 3 Kbytes in 2 Requests."));
        assert!(
            !table.contains("u@test.example"),
            "delivered recipients are not listed"
        );
    }

    #[test]
    fn show_text() {
        let text = format_show(&message(true), "Subject: x\r\nTo: y\r\n", &TimeZone::UTC);
        let want = "Queue ID: 0190f2c4a1b27c3d8e9f00112233aabb
Arrival:  Tue, 5 Mar 2024 12:00:00 +0000
Size:     1500 bytes
Sender:   <>
Status:   held
Recipients:
  a@remote.example (pending, 2 attempts, next Tue, 5 Mar 2024 13:00:00 +0000) for <list@test.example>
    last error: connection refused
  u@test.example (delivered, 1 attempt)
    /mail/u/new/1

Subject: x
To: y
";
        assert_eq!(text, want);
    }
}
