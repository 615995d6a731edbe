//! `/api/queue`: the queue as JSON, with filters and paging; and the queue gauges of
//! `/metrics`, counted from the same listing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use yizhan_proto::address::Host;
use yizhan_spool::Envelope;

use super::AdminState;
use crate::control::{ErrorKind, MessageInfo, Request, Response as ControlResponse};

/// At most this many destinations get a gauge of their own; the rest are summed as `other`
/// (a queue for a million domains must not make a million series).
const MAX_DESTINATIONS: usize = 50;
/// Messages per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) fn routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/api/queue", get(list))
        .route("/api/queue/{id}", get(one))
        .route("/api/queue/actions", axum::routing::post(act))
}

/// The destinations given a gauge at the last scrape (set to 0 when they leave the queue).
#[derive(Default)]
pub(crate) struct Gauges {
    destinations: Mutex<HashSet<String>>,
}

/// The state of a message for filters and gauges: `held`, `deferred` (a pending recipient
/// was tried and failed), `active` (waiting for its first attempt), `done` (nothing pending).
fn state_of(envelope: &Envelope) -> &'static str {
    let pending = || envelope.recipients.iter().filter(|r| r.is_pending());
    if envelope.held {
        "held"
    } else if pending().any(|r| r.attempts > 0) {
        "deferred"
    } else if pending().next().is_some() {
        "active"
    } else {
        "done"
    }
}

/// The domains of the pending remote recipients of `envelope`.
fn destinations(envelope: &Envelope) -> impl Iterator<Item = String> + '_ {
    envelope
        .recipients
        .iter()
        .filter(|r| r.is_pending() && r.mailbox.is_none())
        .map(|r| match r.address.host() {
            Host::Domain(d) => d.to_string().to_ascii_lowercase(),
            literal => literal.to_string(),
        })
}

async fn listing(state: &AdminState) -> Result<Vec<Envelope>, String> {
    let spool = state.spool.clone();
    match tokio::task::spawn_blocking(move || spool.list()).await {
        Ok(Ok(envelopes)) => Ok(envelopes),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Counts the queue into the gauges of `/metrics`.
pub(super) async fn refresh_gauges(state: &AdminState) {
    let Ok(envelopes) = listing(state).await else {
        return;
    };
    let mut by_state: BTreeMap<&'static str, usize> = ["active", "deferred", "held"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    let mut by_destination: BTreeMap<String, usize> = BTreeMap::new();
    let now = jiff::Timestamp::now().as_second();
    let mut oldest = 0;
    for envelope in &envelopes {
        let s = state_of(envelope);
        if s == "done" {
            continue;
        }
        *by_state.entry(s).or_default() += 1;
        oldest = oldest.max(now.saturating_sub(envelope.received_at));
        for destination in destinations(envelope) {
            *by_destination.entry(destination).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = by_destination.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let other: usize = ranked.iter().skip(MAX_DESTINATIONS).map(|(_, n)| n).sum();
    ranked.truncate(MAX_DESTINATIONS);
    if other > 0 {
        ranked.push(("other".into(), other));
    }
    let mut shown = state
        .queue_gauges
        .destinations
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let now_shown: HashSet<String> = ranked.iter().map(|(d, _)| d.clone()).collect();
    for gone in shown.difference(&now_shown) {
        ranked.push((gone.clone(), 0));
    }
    *shown = now_shown;
    let by_state: Vec<(&'static str, usize)> = by_state.into_iter().collect();
    crate::metrics::queue(&by_state, &ranked, u64::try_from(oldest).unwrap_or(0));
}

/// The filters of `GET /api/queue`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filters {
    /// `active`, `deferred`, `held` or `done`.
    state: Option<String>,
    /// Part of the sender address (without case).
    sender: Option<String>,
    /// Part of a recipient address (without case).
    recipient: Option<String>,
    /// The domain of a pending remote recipient.
    destination: Option<String>,
    /// Only messages at least this many seconds old.
    min_age: Option<i64>,
    offset: Option<usize>,
    limit: Option<usize>,
}

impl Filters {
    fn matches(&self, envelope: &Envelope, now: i64) -> bool {
        let contains = |text: &str, part: &str| {
            text.to_ascii_lowercase()
                .contains(&part.to_ascii_lowercase())
        };
        self.state
            .as_deref()
            .is_none_or(|s| s == state_of(envelope))
            && self.sender.as_deref().is_none_or(|part| {
                envelope
                    .reverse_path
                    .mailbox()
                    .is_some_and(|m| contains(&m.to_string(), part))
            })
            && self.recipient.as_deref().is_none_or(|part| {
                envelope
                    .recipients
                    .iter()
                    .any(|r| contains(&r.address.to_string(), part))
            })
            && self
                .destination
                .as_deref()
                .is_none_or(|d| destinations(envelope).any(|mine| mine.eq_ignore_ascii_case(d)))
            && self
                .min_age
                .is_none_or(|age| now.saturating_sub(envelope.received_at) >= age)
    }
}

/// A page of the queue.
#[derive(Debug, Serialize)]
struct Page {
    /// Messages matching the filters, in all.
    total: usize,
    offset: usize,
    limit: usize,
    messages: Vec<MessageInfo>,
}

fn unavailable(why: String) -> Response {
    let body = serde_json::json!({ "error": format!("cannot read the queue now: {why}") });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /api/queue?state=&sender=&recipient=&destination=&min_age=&offset=&limit=`, oldest
/// first.
async fn list(State(state): State<AdminState>, Query(filters): Query<Filters>) -> Response {
    let mut envelopes = match listing(&state).await {
        Ok(envelopes) => envelopes,
        Err(why) => return unavailable(why),
    };
    let now = jiff::Timestamp::now().as_second();
    envelopes.retain(|e| filters.matches(e, now));
    envelopes.sort_by(|a, b| {
        a.received_at
            .cmp(&b.received_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let offset = filters.offset.unwrap_or(0);
    let limit = filters.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let messages = envelopes
        .iter()
        .skip(offset)
        .take(limit)
        .map(MessageInfo::from)
        .collect();
    Json(Page {
        total: envelopes.len(),
        offset,
        limit,
        messages,
    })
    .into_response()
}

/// `GET /api/queue/{id}[?body=true]`: one message with its header section (id or unique
/// prefix), and its text when asked (at most 256 KiB), or 404.
async fn one(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Query(show): Query<Show>,
) -> Response {
    let body = show.body.unwrap_or(false);
    respond(state.control.handle(Request::Show { id, body }).await)
}

/// The query of `GET /api/queue/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Show {
    body: Option<bool>,
}

/// A control answer as HTTP: its JSON, with the status its kind says.
pub(super) fn respond(answer: ControlResponse) -> Response {
    let status = match &answer {
        ControlResponse::Error { kind, .. } => match kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Config => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Held => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        _ => StatusCode::OK,
    };
    (status, Json(answer)).into_response()
}

/// The body of `POST /api/queue/actions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Act {
    /// `hold`, `release`, `flush` or `delete`.
    action: String,
    /// Queue ids (or unique prefixes).
    ids: Vec<String>,
}

/// What one action on many messages did.
#[derive(Debug, Serialize)]
struct Acted {
    /// Messages changed.
    messages: usize,
    /// Pending recipients in them.
    recipients: usize,
    /// The ids that could not be acted on, and why.
    errors: Vec<serde_json::Value>,
}

/// The most ids one request may name.
const MAX_IDS: usize = 10_000;

/// `POST /api/queue/actions` `{"action": "hold", "ids": [...]}`: the action on each message,
/// as `yizhan queue ACTION ID` does it.
async fn act(State(state): State<AdminState>, Json(act): Json<Act>) -> Response {
    let request: fn(String) -> Request = match act.action.as_str() {
        "hold" => |id| Request::Hold { id },
        "release" => |id| Request::Release { id },
        "delete" => |id| Request::Delete { id },
        "flush" => |id| Request::Flush {
            id: Some(id),
            domain: None,
        },
        other => {
            let why = format!("unknown action {other:?} (expected hold, release, flush, delete)");
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": why })),
            )
                .into_response();
        }
    };
    if act.ids.len() > MAX_IDS {
        let why = format!("at most {MAX_IDS} ids per request");
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": why })),
        )
            .into_response();
    }
    let mut done = Acted {
        messages: 0,
        recipients: 0,
        errors: Vec::new(),
    };
    for id in act.ids {
        match state.control.handle(request(id.clone())).await {
            ControlResponse::Done {
                messages,
                recipients,
            } => {
                done.messages += messages;
                done.recipients += recipients;
            }
            ControlResponse::Error { message, .. } => {
                done.errors
                    .push(serde_json::json!({ "id": id, "error": message }));
            }
            other => done
                .errors
                .push(serde_json::json!({ "id": id, "error": format!("{other:?}") })),
        }
    }
    Json(done).into_response()
}
