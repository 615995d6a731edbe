//! Queuing a local user's message (from the maildrop or the submission socket): recipients
//! resolved as for SMTP, the trace line, the hop limit, the commit.

use tracing::{error, info, warn};
use yizhan_proto::address::{ForwardPath, Mailbox, Path as SmtpPath, ReversePath};
use yizhan_proto::command::Body;
use yizhan_proto::reply::Reply;
use yizhan_spool::{ClientInfo, Envelope, Intake, Origin, QueueId, Recipient, RecipientStatus};

use super::{ImportError, Submission};
use crate::directory::{Directory, Resolution};
use crate::dkim::{SignFor, Signer as _};
use crate::policy;
use crate::queue::RunnerHandle;
use crate::settings::LiveSettings;
use crate::trace::HopCounter;

/// Queues locally submitted messages (the maildrop's, the submission socket's): recipients
/// resolved as for SMTP, a `Received:` line naming the submitter's uid, the hop limit, then a
/// commit to the spool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Importer {
    pub(crate) spool: Intake,
    pub(crate) runner: RunnerHandle,
    /// The settings in force (replaced by a reload); each message reads them once.
    pub(crate) settings: LiveSettings,
}

impl Importer {
    /// Queues `message` from local user `uid` with the envelope `submission`; `from` names
    /// where it came from in the log; `sign_for` says whose `From:` may be DKIM-signed. Returns once the message is durably in the spool.
    pub(crate) async fn queue(
        &self,
        submission: &Submission,
        message: &[u8],
        uid: u32,
        from: &str,
        sign_for: &SignFor,
    ) -> Result<QueueId, ImportError> {
        let settings = self.settings.load_full();
        let max = settings.smtp.max_message_size;
        if message.len() as u64 > max {
            return Err(ImportError::Bad(format!(
                "message larger than the limit of {max} bytes"
            )));
        }
        let dsn = submission.dsn.parse().map_err(ImportError::Bad)?;
        let now = jiff::Timestamp::now().as_second();
        let mut recipients = resolve_recipients(
            &settings.directory,
            &settings.hostname,
            &submission.recipients,
            now,
        );
        if recipients.is_empty() {
            return Err(ImportError::Bad("no recipients".into()));
        }
        if dsn.notify.is_some() {
            for r in &mut recipients {
                r.notify = dsn.notify;
            }
        }
        // RFC 5321 6.3, as at the end of SMTP data (our own Received: line counts): a looping
        // message is bounced to its sender, never sent on.
        let mut hops = HopCounter::new();
        hops.feed(message);
        let max_hops = settings.smtp.max_hops;
        if hops.hops() + 1 > max_hops {
            let detail = Reply::too_many_hops(max_hops).to_string();
            for r in recipients.iter_mut().filter(|r| r.is_pending()) {
                r.status = RecipientStatus::Failed {
                    at: now,
                    detail: detail.clone(),
                };
            }
        }
        let sender = match submission.sender.trim().trim_matches(['<', '>']) {
            "" => ReversePath::Null,
            s => Mailbox::parse(s)
                .map(|m| ReversePath::Path(SmtpPath::new(m)))
                .map_err(|e| ImportError::Bad(format!("invalid sender {s:?}: {e}")))?,
        };
        let mut incoming = self
            .spool
            .create()
            .map_err(|e| ImportError::Transient(e.to_string()))?;
        let id = incoming.id().clone();
        let received = received_line(&settings.hostname, uid, id.as_str(), &recipients);
        // No Authentication-Results field may claim our name (RFC 8601 5), whoever sent it.
        let (cleaned, _) = yizhan_proto::header::without_our_results(message, &settings.hostname);
        let message = cleaned.as_slice();
        // A local user's mail is ours to sign, as an authenticated user's is.
        let signature = match settings.dkim.signature(message, sign_for) {
            Ok(field) => field.unwrap_or_default(),
            Err(error) => {
                warn!(%error, from, "DKIM signing failed; the message is queued unsigned");
                String::new()
            }
        };
        incoming
            .write(received.as_bytes())
            .and_then(|()| incoming.write(signature.as_bytes()))
            .and_then(|()| incoming.write(message))
            .map_err(|e| ImportError::Transient(e.to_string()))?;
        let failed: Vec<&Recipient> = recipients.iter().filter(|r| !r.is_pending()).collect();
        for r in &failed {
            if let RecipientStatus::Failed { detail, .. } = &r.status {
                warn!(queue_id = %id, to = %r.address, %detail, "local recipient refused; a report goes to the sender");
            }
        }
        let envelope = Envelope {
            id: id.clone(),
            received_at: now,
            size: 0,
            reverse_path: sender,
            envid: dsn.envid,
            ret: dsn.ret,
            body: Some(Body::EightBitMime),
            smtputf8: !message.is_ascii(),
            client: ClientInfo {
                origin: Origin::Local { uid: Some(uid) },
                ..ClientInfo::default()
            },
            recipients,
            held: false,
        };
        let count = envelope.recipients.len();
        let mut stored = envelope.clone();
        stored.size = incoming.size();
        let committed = self
            .spool
            .commit(incoming, envelope)
            .await
            .map_err(|e| ImportError::Transient(e.to_string()))?;
        info!(queue_id = %id, uid, recipients = count, from, "queued from a local user");
        crate::metrics::message_accepted("local", message.len() as u64);
        stored.id = committed.clone();
        self.runner.submit(stored);
        Ok(committed)
    }
}

/// The spool recipients for addresses given to `sendmail`, resolved as SMTP recipients are:
/// local mailboxes and aliases expand; a foreign domain is a remote recipient; relocated
/// (RFC 5321 3.4, 551) and unknown users (550) and invalid addresses fail at once. A bare local
/// part means the primary local domain (else `hostname`). Duplicates are dropped.
pub fn resolve_recipients(
    directory: &Directory,
    hostname: &str,
    addresses: &[String],
    now: i64,
) -> Vec<Recipient> {
    let primary = directory.domains().first().map_or(hostname, String::as_str);
    let mut out: Vec<Recipient> = Vec::new();
    let mut push = |r: Recipient| {
        if !out.iter().any(|o| o.address == r.address) {
            out.push(r);
        }
    };
    let failed = |address: Mailbox, detail: String| Recipient {
        status: RecipientStatus::Failed { at: now, detail },
        ..Recipient::to(address, None, now)
    };
    for given in addresses {
        let given = given.trim().trim_start_matches('<').trim_end_matches('>');
        let full = if given.contains('@') {
            given.to_owned()
        } else {
            format!("{given}@{primary}")
        };
        let mailbox = match Mailbox::parse(&full) {
            Ok(mailbox) => mailbox,
            Err(e) => {
                // `sendmail` checks every address before it drops a message: this drop was
                // made by something else. There is no address to report on.
                error!(address = %full, error = %e, "maildrop recipient is no address; skipped");
                continue;
            }
        };
        let original = ForwardPath::Path(SmtpPath::new(mailbox.clone()));
        match policy::resolve(directory, &original) {
            Resolution::Deliver(targets) => {
                for target in targets {
                    if let Some(r) = policy::queued(target, original.clone(), now) {
                        push(r);
                    }
                }
            }
            Resolution::Relocated(new) => push(failed(
                mailbox,
                format!("551 5.1.6 user not local; please try <{new}>"),
            )),
            Resolution::UnknownUser => {
                push(failed(mailbox, "550 5.1.1 no such user here".to_owned()))
            }
            Resolution::NotLocal => push(Recipient::to(mailbox, None, now)),
        }
    }
    out
}

/// The trace line (RFC 5321 4.4, RFC 5322 3.6.7) for a message picked up from the maildrop.
pub(super) fn received_line(
    hostname: &str,
    uid: u32,
    id: &str,
    recipients: &[Recipient],
) -> String {
    let mut line =
        format!("Received: by {hostname} (yizhan pickup, from userid {uid})\r\n\tid {id}");
    if let [one] = recipients {
        line.push_str(&format!("\r\n\tfor <{}>", one.address));
    }
    let now = jiff::ZonedDateTime::now();
    let date = jiff::fmt::rfc2822::to_string(&now).unwrap_or_else(|_| now.to_string());
    line.push_str(&format!(";\r\n\t{date}\r\n"));
    line
}
