//! Writing a message into its file: the `Return-Path:` line, then the body with CRLF turned
//! into LF (the Maildir convention), in few large writes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::{COPY_BUFFER, MaildirError, READ_CHUNK};

/// Writes the Return-Path line and the body, CRLF turned into LF, through `buf` (one `write`
/// for a message that fits in [`COPY_BUFFER`]). Does not sync.
pub(super) fn write_message(
    mut file: &File,
    path: &Path,
    return_path: &str,
    body: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<(), MaildirError> {
    buf.clear();
    buf.extend_from_slice(format!("Return-Path: <{return_path}>\n").as_bytes());
    let mut lf = CrlfToLf::default();
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        let n = match body.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A read error is the spool's, a write error the mailbox's.
            Err(e) => return Err(MaildirError::Body(e)),
        };
        if n == 0 {
            lf.finish(buf);
        } else {
            lf.convert(&chunk[..n], buf);
        }
        if n == 0 || buf.len() >= COPY_BUFFER {
            file.write_all(buf).map_err(|e| MaildirError::io(path, e))?;
            buf.clear();
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// CRLF to LF as the bytes pass, chunk by chunk: a CR at the end of one chunk waits for the
/// first byte of the next. A CR not followed by LF is kept.
#[derive(Debug, Default)]
pub(super) struct CrlfToLf {
    /// The last chunk ended with a CR not written yet.
    cr: bool,
}

impl CrlfToLf {
    /// Appends `input`, converted, to `out`.
    pub(super) fn convert(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if self.cr {
            match input.first() {
                None => return,
                Some(b'\n') => {}
                Some(_) => out.push(b'\r'),
            }
            self.cr = false;
        }
        while let Some(i) = memchr::memchr(b'\r', input) {
            out.extend_from_slice(&input[..i]);
            match input.get(i + 1) {
                // The CR of a CRLF: dropped, the LF is copied with what follows.
                Some(b'\n') => {}
                Some(_) => out.push(b'\r'),
                None => {
                    self.cr = true;
                    return;
                }
            }
            input = &input[i + 1..];
        }
        out.extend_from_slice(input);
    }

    /// The end of the input: a CR still waiting is kept.
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.cr) {
            out.push(b'\r');
        }
    }
}
