//! `sendmail -bs`: an SMTP session on standard input and output, as Postfix's `sendmail -bs`
//! runs one (some programs submit mail this way, e.g. mutt's `smtp` over a pipe, or `fetchmail
//! --mda` setups). The session is the real protocol core (`yizhan_proto::server`), driven here
//! without a network; each message accepted goes the way every `sendmail` message goes
//! ([`super::submit`]: the maildrop, or the server's submission socket for an ordinary user,
//! who cannot choose the envelope sender), and the `250` comes only once it is durably there.
//!
//! Offered: PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES. Not offered: STARTTLS
//! and AUTH (the caller is a local process, known by its uid), DSN, CHUNKING, VRFY, EXPN, SEND,
//! SOML, SAML, TURN, ETRN.

use std::io::{BufRead as _, BufReader, Cursor, Read, Write};

use yizhan_proto::reply::Reply;
use yizhan_proto::server::{
    Decision, Event, Extensions, Question, ServerConfig, ServerSession, Transaction, Verbs,
};
use yizhan_server::settings::Settings;

use super::message::Context;
use super::{Options, Queued, submit};

/// Bytes read from standard input at once.
const READ_CHUNK: usize = 16 * 1024;

/// The session's configuration: the server's name and limits, the extensions above.
fn config(settings: &Settings) -> ServerConfig {
    let smtp = &settings.smtp;
    ServerConfig {
        hostname: settings.hostname.clone(),
        max_line_length: smtp.max_line_length,
        max_message_size: smtp.max_message_size,
        max_recipients: smtp.max_recipients,
        extensions: Extensions {
            pipelining: true,
            size: true,
            eight_bit_mime: true,
            enhanced_status_codes: true,
            smtputf8: true,
            chunking: false,
            binarymime: false,
            dsn: false,
            starttls: false,
            auth_mechanisms: Vec::new(),
            etrn: false,
            requiretls: false,
            ..Extensions::default()
        },
        verbs: Verbs {
            vrfy: false,
            expn: false,
            help: true,
            send: false,
            soml: false,
            saml: false,
            turn: false,
        },
        ..ServerConfig::default()
    }
}

/// Runs one SMTP session on `input`/`output` until QUIT or the end of the input. `options`
/// carries `-F` and `-C`; each message is submitted with its own envelope.
pub fn serve(
    options: &Options,
    settings: &Settings,
    context: &Context,
    input: impl Read,
    mut output: impl Write,
) -> std::io::Result<()> {
    let mut session = ServerSession::new(config(settings));
    let mut body = Vec::new();
    let mut input = BufReader::with_capacity(READ_CHUNK, input);
    loop {
        while let Some(event) = session.next_event() {
            match event {
                Event::Send(bytes) => {
                    output.write_all(&bytes)?;
                    output.flush()?;
                }
                Event::Ask(question) => {
                    let decision = answer(question, &mut body, options, settings, context);
                    session.decide(decision);
                }
                Event::Body(chunk) => body.extend_from_slice(&chunk),
                Event::DataAborted => body.clear(),
                // Neither is offered; a session never asks for them here.
                Event::StartTls | Event::Turn | Event::Close => return Ok(()),
            }
        }
        // Nobody counts commands here (the server's connections do).
        session.take_commands().for_each(drop);
        // A line at a time: a client that wrote its whole session ahead (a script piping a
        // file) is taken as one that waits for each reply, not refused for pipelining before
        // EHLO offered it.
        let buffered = input.fill_buf()?;
        if buffered.is_empty() {
            return Ok(());
        }
        let n = buffered
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buffered.len(), |end| end + 1);
        session.receive(&buffered[..n]);
        input.consume(n);
    }
}

fn answer(
    question: Question,
    body: &mut Vec<u8>,
    options: &Options,
    settings: &Settings,
    context: &Context,
) -> Decision {
    match question {
        // Recipients are resolved by the server as for any `sendmail` message; an unknown
        // local user gets a report, as with `sendmail user`.
        Question::Helo { .. } | Question::Mail { .. } | Question::Rcpt { .. } | Question::Data => {
            Decision::Accept
        }
        Question::EndOfData { transaction, .. } => {
            let message = std::mem::take(body);
            Decision::Reply(queue(&transaction, message, options, settings, context))
        }
        // Not offered (see the module documentation).
        Question::Vrfy(_)
        | Question::Expn(_)
        | Question::Auth { .. }
        | Question::AuthResponse(_)
        | Question::Etrn(_)
        | Question::Turn => Decision::Reply(Reply::local_error()),
    }
}

/// Submits one message; the reply says where it went or why not.
fn queue(
    transaction: &Transaction,
    message: Vec<u8>,
    options: &Options,
    settings: &Settings,
    context: &Context,
) -> Reply {
    let envelope = Options {
        sender: Some(
            transaction
                .from
                .mailbox()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        recipients: transaction
            .recipients
            .iter()
            .map(|(to, _)| match to.mailbox() {
                Some(mailbox) => mailbox.to_string(),
                // `RCPT TO:<Postmaster>`: a bare local part is the primary local domain's.
                None => "postmaster".to_owned(),
            })
            .collect(),
        // The session has already undone the dot-stuffing: the text ends where it ends.
        ignore_dots: true,
        extract_recipients: false,
        ..options.clone()
    };
    match submit(&envelope, settings, Cursor::new(message), context) {
        Ok(Queued::Spooled { id, .. }) => Reply::queued(&id),
        Ok(Queued::Dropped(path)) => {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            Reply::queued(name.as_deref().unwrap_or("the maildrop"))
        }
        Err(e) if e.exit_code() == 75 => {
            eprintln!("sendmail: {e}");
            Reply::local_error()
        }
        Err(e) => Reply::transaction_failed(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_no_tls_auth_or_dsn() {
        let c = config(&Settings::default());
        assert!(c.extensions.pipelining && c.extensions.eight_bit_mime);
        assert!(!c.extensions.starttls && c.extensions.auth_mechanisms.is_empty());
        assert!(!c.extensions.dsn && !c.verbs.vrfy && !c.verbs.send);
    }
}
