//! The header section of a received message (RFC 5322 2.2, 3.6), read where the server must
//! change it: an `Authentication-Results:` field that claims our authserv-id but came with the
//! message is a forgery (RFC 8601 5), so it is removed before ours is added. Total over any
//! bytes (fuzzed: `yizhan_testkit::harness::header`).

/// `message` (CRLF line ends) without the `Authentication-Results:` fields whose authserv-id
/// is `authserv_id` (compared without case), and how many were removed. Only the header
/// section is looked at; the body is never touched.
pub fn without_our_results(message: &[u8], authserv_id: &str) -> (Vec<u8>, usize) {
    let header_end = header_section_len(message);
    let mut kept = Vec::with_capacity(message.len());
    let mut removed = 0;
    for field in fields(&message[..header_end]) {
        if claims(field, authserv_id) {
            removed += 1;
        } else {
            kept.extend_from_slice(field);
        }
    }
    kept.extend_from_slice(&message[header_end..]);
    (kept, removed)
}

/// Where the header section of a message that starts with `bytes` ends (the length of its
/// fields, before the empty line), once the empty line has arrived; `None` while it has not.
/// `from` is how far an earlier call already looked (so a message arriving in pieces is
/// scanned once).
pub fn header_end(bytes: &[u8], from: usize) -> Option<usize> {
    if bytes.starts_with(b"\r\n") || bytes.starts_with(b"\n") {
        return Some(0);
    }
    let start = from.saturating_sub(3);
    let mut at = start;
    while let Some(n) = bytes[at..].iter().position(|&b| b == b'\n') {
        let next = at + n + 1;
        if bytes[next..].starts_with(b"\r\n") || bytes[next..].starts_with(b"\n") {
            return Some(next);
        }
        if bytes.len() - next < 2 && !bytes[next..].is_empty() && bytes[next] == b'\r' {
            // "\r" at the very end: the "\n" may come with the next piece.
            return None;
        }
        at = next;
    }
    None
}

/// The length of the header section: up to and including the last field's line end, before
/// the empty line (the whole message if it has no body).
fn header_section_len(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") || message.starts_with(b"\n") {
        return 0;
    }
    let mut at = 0;
    while let Some(end) = message[at..].iter().position(|&b| b == b'\n') {
        let next = at + end + 1;
        if message[next..].starts_with(b"\r\n") || message[next..].starts_with(b"\n") {
            return next;
        }
        at = next;
    }
    message.len()
}

/// The fields of a header section, each with its continuation lines and line ends.
fn fields(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = header;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            match rest[end..].iter().position(|&b| b == b'\n') {
                Some(n) => end += n + 1,
                None => end = rest.len(),
            }
            if end >= rest.len() || !matches!(rest[end], b' ' | b'\t') {
                break;
            }
        }
        let (field, tail) = rest.split_at(end);
        rest = tail;
        Some(field)
    })
}

/// Whether `field` is an `Authentication-Results:` field for `authserv_id`.
fn claims(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = field[..colon].trim_ascii();
    if !name.eq_ignore_ascii_case(b"Authentication-Results") {
        return false;
    }
    let value = skip_cfws(&field[colon + 1..]);
    let id = match value.strip_prefix(b"\"") {
        Some(quoted) => {
            &quoted[..quoted
                .iter()
                .position(|&b| b == b'"')
                .unwrap_or(quoted.len())]
        }
        None => {
            let end = value
                .iter()
                .position(|&b| matches!(b, b';' | b'(' | b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(value.len());
            &value[..end]
        }
    };
    id.eq_ignore_ascii_case(authserv_id.as_bytes())
}

/// `value` without leading white space, line folds and (nested) comments.
fn skip_cfws(mut value: &[u8]) -> &[u8] {
    loop {
        value = value.trim_ascii_start();
        if !value.starts_with(b"(") {
            return value;
        }
        let mut depth = 0usize;
        let mut end = value.len();
        let mut escaped = false;
        for (i, &b) in value.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        value = &value[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "mx.test.example";

    #[test]
    fn a_forged_field_with_our_id_is_removed_others_stay() {
        let message = b"Received: from a\r\n\tby b\r\n\
            Authentication-Results: MX.test.example;\r\n\tdkim=pass header.d=bank.example\r\n\
            Authentication-Results: (comment (nested)) mx.test.example; spf=pass\r\n\
            authentication-results : \"mx.test.example\"; dmarc=pass\r\n\
            Authentication-Results: other.example; spf=fail\r\n\
            Authentication-Results: mx.test.example.evil; spf=pass\r\n\
            Subject: hi\r\n\r\n\
            Authentication-Results: mx.test.example; in the body, kept\r\n";
        let (kept, removed) = without_our_results(message, OURS);
        let text = String::from_utf8(kept).unwrap();
        assert_eq!(removed, 3, "{text}");
        assert_eq!(
            text,
            "Received: from a\r\n\tby b\r\n\
             Authentication-Results: other.example; spf=fail\r\n\
             Authentication-Results: mx.test.example.evil; spf=pass\r\n\
             Subject: hi\r\n\r\n\
             Authentication-Results: mx.test.example; in the body, kept\r\n"
        );
    }

    #[test]
    fn the_end_of_the_header_is_found_in_pieces() {
        let message = b"Subject: a\r\nX: b\r\n\r\nbody\r\n";
        assert_eq!(header_end(message, 0), Some(18));
        assert_eq!(
            header_end(&message[..18], 0),
            None,
            "the empty line not there yet"
        );
        assert_eq!(header_end(&message[..19], 0), None, "its \n not there yet");
        assert_eq!(header_end(&message[..20], 0), Some(18));
        assert_eq!(
            header_end(message, 18),
            Some(18),
            "resumes where it stopped"
        );
        assert_eq!(header_end(b"\r\nbody", 0), Some(0));
        assert_eq!(header_end(b"", 0), None);
    }

    #[test]
    fn odd_messages_pass_through() {
        for message in [
            &b""[..],
            b"\r\nbody only\r\n",
            b"Subject: x",
            b"no colon\r\n\r\n",
        ] {
            let (kept, removed) = without_our_results(message, OURS);
            assert_eq!((kept.as_slice(), removed), (message, 0));
        }
        let (kept, removed) = without_our_results(b"Authentication-Results: mx.test.example", OURS);
        assert_eq!((kept.as_slice(), removed), (&b""[..], 1));
    }

    proptest::proptest! {
        #[test]
        fn the_body_and_other_fields_are_never_changed(
            header in proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,30}", 0..6),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let mut message = Vec::new();
            for field in &header {
                message.extend_from_slice(field.as_bytes());
                message.extend_from_slice(b"\r\n");
            }
            message.extend_from_slice(b"\r\n");
            message.extend_from_slice(&body);
            let (kept, removed) = without_our_results(&message, OURS);
            let expected = header.iter().filter(|f| claims(f.as_bytes(), OURS)).count();
            proptest::prop_assert_eq!(removed, expected);
            proptest::prop_assert!(kept.ends_with(&body));
            if removed == 0 {
                proptest::prop_assert_eq!(kept, message);
            }
        }
    }
}
