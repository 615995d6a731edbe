//! What happens, as it happens, for the operator's view (issue #15): the live sessions, the
//! recent delivery outcomes, a stream of [`Event`]s (`yizhan watch`, the console, the SSE
//! stream of `/api/events`), and the terminals of RFC 821's SEND, SOML and SAML
//! ([`Events::open_terminal`]).
//!
//! One [`Events`] per server, made by the queue runner and reached through its handle, so a
//! session, the runner, the pickup and the admin listener all speak to the same one. Cheap on
//! the hot path: nothing is built for the stream when nobody listens, a session updates only
//! its own entry, and the recent log is a bounded ring.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Events kept for a listener that reads slowly; past this it is told how many it missed.
const STREAM_CAPACITY: usize = 1024;
/// Delivery outcomes kept for `GET /api/deliveries`.
const RECENT_DELIVERIES: usize = 500;
/// Messages waiting for one terminal; past this a SEND to it finds it not active.
const TERMINAL_BACKLOG: usize = 64;

/// Something that happened.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A client connected (`phase: connect`) or left (`phase: disconnect`, with why).
    Session {
        /// Unix seconds.
        at: i64,
        /// The session id of the log's `session{id=...}`.
        session: u64,
        /// `connect` or `disconnect`.
        phase: &'static str,
        /// The client's address and port.
        client: String,
        /// `smtp`, `submission` or `submissions`.
        listener: String,
        /// Why it ended (disconnect only).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A message was queued (its 250 sent, or `sendmail` answered).
    Accepted {
        /// Unix seconds.
        at: i64,
        /// The queue id.
        queue_id: String,
        /// The reverse-path, `""` for `<>`.
        sender: String,
        /// The recipients as queued.
        recipients: Vec<String>,
        /// Bytes stored.
        size: u64,
        /// Where it came from: the client's address, or `local`.
        origin: String,
    },
    /// One recipient's attempt ended.
    Delivery {
        /// Unix seconds.
        at: i64,
        /// The queue id.
        queue_id: String,
        /// The recipient.
        recipient: String,
        /// The reverse-path, `""` for `<>`.
        sender: String,
        /// `delivered`, `deferred` or `bounced`.
        outcome: &'static str,
        /// Where it went, or what happened.
        detail: String,
    },
}

impl Event {
    /// Whether the event concerns `address` (part of it, without case): sender, recipient.
    pub fn concerns(&self, address: &str) -> bool {
        let has = |text: &str| {
            text.to_ascii_lowercase()
                .contains(&address.to_ascii_lowercase())
        };
        match self {
            Event::Session { .. } => false,
            Event::Accepted {
                sender, recipients, ..
            } => has(sender) || recipients.iter().any(|r| has(r)),
            Event::Delivery {
                sender, recipient, ..
            } => has(sender) || has(recipient),
        }
    }
}

/// One live session as the console shows it.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The session id of the log.
    pub id: u64,
    /// The client's address and port.
    pub client: String,
    /// `smtp`, `submission` or `submissions`.
    pub listener: String,
    /// Unix seconds.
    pub started: i64,
    /// The HELO/EHLO name, once given.
    pub helo: Option<String>,
    /// The TLS version and cipher, once TLS is up.
    pub tls: Option<String>,
    /// The authenticated user, once AUTH succeeded.
    pub user: Option<String>,
    /// The verb of the last command read (`MAIL`, `DATA`, ...).
    pub command: Option<&'static str>,
    /// Commands read so far.
    pub commands: u64,
    /// Messages accepted so far.
    pub messages: u64,
}

/// Counts since the server started ([`Events::totals`]).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Messages queued.
    pub accepted: u64,
    /// Recipients delivered.
    pub delivered: u64,
    /// Attempts deferred.
    pub deferred: u64,
    /// Recipients bounced (failed for good).
    pub bounced: u64,
}

/// A message shown on a user's terminal (RFC 821 SEND, SOML, SAML).
#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TerminalMessage {
    /// Unix seconds.
    pub at: i64,
    /// The reverse-path, `""` for `<>`.
    pub from: String,
    /// The user it was for.
    pub to: String,
    /// `SEND`, `SOML` or `SAML`.
    pub verb: String,
    /// The message (lossy UTF-8, at most [`MAX_TERMINAL_TEXT`] bytes of it).
    pub text: String,
}

/// The most of a message a terminal is shown.
pub const MAX_TERMINAL_TEXT: usize = 64 * 1024;

/// One open terminal: its id and where its messages go.
type OpenTerminal = (u64, mpsc::Sender<Shown>);

/// A message handed to a terminal, with the acknowledgement its writer sends once the message
/// is written out ([`Shown::written`]): until then the message is not counted as shown.
#[derive(Debug)]
pub struct Shown {
    /// The message.
    pub message: TerminalMessage,
    ack: Option<oneshot::Sender<()>>,
}

impl Shown {
    /// Says the message reached the terminal's reader.
    pub fn written(mut self) {
        if let Some(ack) = self.ack.take() {
            let _ = ack.send(());
        }
    }
}

/// How long a session waits for a terminal to take a message before it goes to the mailbox
/// instead (a terminal that is stopped or gone must not swallow mail).
pub const TERMINAL_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The hub. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    stream: broadcast::Sender<Arc<Event>>,
    /// Messages queued, and recipients delivered, deferred, bounced, since the start.
    totals: [std::sync::atomic::AtomicU64; 4],
    recent: Mutex<VecDeque<Arc<Event>>>,
    sessions: Mutex<BTreeMap<u64, Arc<Mutex<SessionView>>>>,
    /// Open terminals by lower-case user address (each with its own queue).
    terminals: Mutex<HashMap<String, Vec<OpenTerminal>>>,
    next_terminal: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events {
            inner: Arc::new(Inner {
                stream: broadcast::channel(STREAM_CAPACITY).0,
                totals: Default::default(),
                recent: Mutex::new(VecDeque::with_capacity(RECENT_DELIVERIES)),
                sessions: Mutex::new(BTreeMap::new()),
                terminals: Mutex::new(HashMap::new()),
                next_terminal: std::sync::atomic::AtomicU64::new(1),
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Unix seconds now.
fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Events {
    /// Follows every event from now on (a slow reader is told how many it missed).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.stream.subscribe()
    }

    /// Whether anyone follows the stream (else events need not be built).
    pub fn followed(&self) -> bool {
        self.inner.stream.receiver_count() > 0
    }

    fn publish(&self, event: Event) {
        let _ = self.inner.stream.send(Arc::new(event));
    }

    /// A message was queued.
    pub fn accepted(&self, make: impl FnOnce(i64) -> Event) {
        self.count(0);
        if self.followed() {
            self.publish(make(now()));
        }
    }

    /// One recipient's attempt ended: kept in the recent log, and streamed.
    pub fn delivery(
        &self,
        queue_id: &str,
        recipient: &str,
        sender: &str,
        outcome: &'static str,
        detail: &str,
    ) {
        self.count(match outcome {
            "delivered" => 1,
            "deferred" => 2,
            _ => 3,
        });
        let event = Arc::new(Event::Delivery {
            at: now(),
            queue_id: queue_id.to_owned(),
            recipient: recipient.to_owned(),
            sender: sender.to_owned(),
            outcome,
            detail: detail.to_owned(),
        });
        {
            let mut recent = lock(&self.inner.recent);
            if recent.len() == RECENT_DELIVERIES {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = self.inner.stream.send(event);
    }

    fn count(&self, which: usize) {
        self.inner.totals[which].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Since the start: messages queued, and recipients delivered, deferred and bounced.
    pub fn totals(&self) -> Totals {
        let get = |i: usize| self.inner.totals[i].load(std::sync::atomic::Ordering::Relaxed);
        Totals {
            accepted: get(0),
            delivered: get(1),
            deferred: get(2),
            bounced: get(3),
        }
    }

    /// The recent delivery outcomes, newest first, at most `limit`.
    pub fn recent_deliveries(&self, limit: usize) -> Vec<Arc<Event>> {
        lock(&self.inner.recent)
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// A session began: it is listed until the returned guard is dropped.
    pub fn session(&self, id: u64, client: SocketAddr, listener: &str) -> SessionEntry {
        let view = SessionView {
            id,
            client: client.to_string(),
            listener: listener.to_owned(),
            started: now(),
            helo: None,
            tls: None,
            user: None,
            command: None,
            commands: 0,
            messages: 0,
        };
        let view = Arc::new(Mutex::new(view));
        lock(&self.inner.sessions).insert(id, view.clone());
        if self.followed() {
            self.publish(Event::Session {
                at: now(),
                session: id,
                phase: "connect",
                client: client.to_string(),
                listener: listener.to_owned(),
                reason: None,
            });
        }
        SessionEntry {
            events: self.clone(),
            view,
            reason: None,
        }
    }

    /// The sessions open now, oldest first.
    pub fn sessions(&self) -> Vec<SessionView> {
        let entries: Vec<_> = lock(&self.inner.sessions).values().cloned().collect();
        entries.iter().map(|v| lock(v).clone()).collect()
    }

    /// Opens a terminal for `user` (RFC 821's "user's terminal"): messages sent to them with
    /// SEND, SOML or SAML arrive on the returned receiver until it is dropped.
    pub fn open_terminal(&self, user: &str) -> Terminal {
        let (sender, receiver) = mpsc::channel(TERMINAL_BACKLOG);
        let id = self
            .inner
            .next_terminal
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let user = user.trim_matches(['<', '>']).to_ascii_lowercase();
        lock(&self.inner.terminals)
            .entry(user.clone())
            .or_default()
            .push((id, sender));
        Terminal {
            events: self.clone(),
            user,
            id,
            receiver,
        }
    }

    /// Whether `user` has a terminal open (a SEND to them can be taken).
    pub fn has_terminal(&self, user: &str) -> bool {
        lock(&self.inner.terminals)
            .get(&user.to_ascii_lowercase())
            .is_some_and(|open| open.iter().any(|(_, s)| !s.is_closed()))
    }

    /// Hands `message` to every terminal `message.to` has open; returns one acknowledgement
    /// per terminal that took it (a full or closed one is skipped).
    pub fn show_on_terminal(&self, message: &TerminalMessage) -> Vec<oneshot::Receiver<()>> {
        let terminals = lock(&self.inner.terminals);
        let Some(open) = terminals.get(&message.to.to_ascii_lowercase()) else {
            return Vec::new();
        };
        let mut acks = Vec::new();
        for (_, sender) in open {
            let (ack, acked) = oneshot::channel();
            let shown = Shown {
                message: message.clone(),
                ack: Some(ack),
            };
            if sender.try_send(shown).is_ok() {
                acks.push(acked);
            }
        }
        acks
    }

    /// Shows `message` on `message.to`'s terminals and waits (at most `wait`) until one of
    /// them has written it out: `true` when one did.
    pub async fn show_and_wait(
        &self,
        message: &TerminalMessage,
        wait: std::time::Duration,
    ) -> bool {
        let mut acks = tokio::task::JoinSet::new();
        for acked in self.show_on_terminal(message) {
            acks.spawn(acked);
        }
        let first = async {
            while let Some(joined) = acks.join_next().await {
                if matches!(joined, Ok(Ok(()))) {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(wait, first).await.unwrap_or(false)
    }
}

/// A session's entry in the live list; removed (and the disconnect streamed) when dropped.
#[derive(Debug)]
pub struct SessionEntry {
    events: Events,
    view: Arc<Mutex<SessionView>>,
    reason: Option<String>,
}

impl SessionEntry {
    /// Changes the entry.
    pub fn update(&self, change: impl FnOnce(&mut SessionView)) {
        change(&mut lock(&self.view));
    }

    /// Why the session ended, for the disconnect event.
    pub fn ended(&mut self, reason: &str) {
        self.reason = Some(reason.to_owned());
    }
}

impl Drop for SessionEntry {
    fn drop(&mut self) {
        let view = lock(&self.view).clone();
        lock(&self.events.inner.sessions).remove(&view.id);
        if self.events.followed() {
            self.events.publish(Event::Session {
                at: now(),
                session: view.id,
                phase: "disconnect",
                client: view.client,
                listener: view.listener,
                reason: self.reason.take(),
            });
        }
    }
}

/// An open terminal ([`Events::open_terminal`]); closed when dropped.
#[derive(Debug)]
pub struct Terminal {
    events: Events,
    user: String,
    id: u64,
    receiver: mpsc::Receiver<Shown>,
}

impl Terminal {
    /// The next message for this terminal (`None` once the server drops it); call
    /// [`Shown::written`] when it is written out.
    pub async fn next(&mut self) -> Option<Shown> {
        self.receiver.recv().await
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        tracing::info!(user = %self.user, "terminal closed");
        let mut terminals = lock(&self.events.inner.terminals);
        if let Some(open) = terminals.get_mut(&self.user) {
            open.retain(|(id, _)| *id != self.id);
            if open.is_empty() {
                terminals.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_listed_while_open() {
        let events = Events::default();
        let mut stream = events.subscribe();
        let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut entry = events.session(7, peer, "smtp");
        entry.update(|v| v.command = Some("MAIL"));
        let [view] = &events.sessions()[..] else {
            panic!()
        };
        assert_eq!((view.id, view.command), (7, Some("MAIL")));
        entry.ended("closed");
        drop(entry);
        assert!(events.sessions().is_empty());
        let connect = stream.try_recv().unwrap();
        assert!(matches!(
            &*connect,
            Event::Session {
                phase: "connect",
                ..
            }
        ));
        let gone = stream.try_recv().unwrap();
        assert!(
            matches!(&*gone, Event::Session { phase: "disconnect", reason: Some(r), .. } if r == "closed")
        );
    }

    #[test]
    fn the_recent_log_is_bounded_and_newest_first() {
        let events = Events::default();
        for i in 0..RECENT_DELIVERIES + 5 {
            events.delivery(&i.to_string(), "a@b", "", "delivered", "ok");
        }
        let recent = events.recent_deliveries(usize::MAX);
        assert_eq!(recent.len(), RECENT_DELIVERIES);
        let Event::Delivery { queue_id, .. } = &*recent[0] else {
            panic!()
        };
        assert_eq!(queue_id, &(RECENT_DELIVERIES + 4).to_string());
        assert!(recent[0].concerns("A@B") && !recent[0].concerns("c@d"));
    }

    #[tokio::test]
    async fn terminals_receive_until_closed() {
        let events = Events::default();
        let message = |to: &str| TerminalMessage {
            at: 0,
            from: "x@y".into(),
            to: to.into(),
            verb: "SEND".into(),
            text: "hi".into(),
        };
        let wait = std::time::Duration::from_millis(200);
        assert!(!events.has_terminal("u@h"));
        assert!(events.show_on_terminal(&message("u@h")).is_empty());
        let mut one = events.open_terminal("<U@h>");
        let two = events.open_terminal("u@h");
        assert!(events.has_terminal("U@H"));
        assert_eq!(events.show_on_terminal(&message("u@H")).len(), 2);
        let shown = one.receiver.try_recv().unwrap();
        assert_eq!(shown.message.text, "hi");
        // Taken but never written (a stopped reader): not shown, the mailbox gets it.
        drop(two);
        assert!(!events.show_and_wait(&message("u@h"), wait).await);
        // Written by the reader: shown.
        let reader = tokio::spawn(async move {
            // The one left over from before, then the new one.
            one.next().await.unwrap().written();
            one.next().await.unwrap().written();
            one
        });
        assert!(events.show_and_wait(&message("u@h"), wait * 10).await);
        let one = reader.await.unwrap();
        drop(shown);
        drop(one);
        assert!(!events.has_terminal("u@h"));
    }
}
