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

use super::AdminState;
use crate::control::{
    self, Acted, Action, ErrorKind, Filter, MessageInfo, Request, Response as ControlResponse,
};

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

/// The whole queue, in the control protocol's view (which the filters and gauges read).
async fn listing(state: &AdminState) -> Result<Vec<MessageInfo>, String> {
    match state.spool.list_all().await {
        Ok(all) => Ok(all.iter().map(MessageInfo::from).collect()),
        Err(e) => Err(e.to_string()),
    }
}

/// The queue counted: messages by state, recipients by destination, the oldest message's age.
pub(super) struct QueueCounts {
    pub(super) by_state: BTreeMap<&'static str, usize>,
    pub(super) by_destination: BTreeMap<String, usize>,
    /// Seconds.
    pub(super) oldest: i64,
}

/// Counts the queue (messages with nothing pending, being removed, are not counted).
pub(super) async fn counts(state: &AdminState) -> Result<QueueCounts, String> {
    let messages = listing(state).await?;
    let mut counts = QueueCounts {
        by_state: ["active", "deferred", "held"]
            .into_iter()
            .map(|s| (s, 0))
            .collect(),
        by_destination: BTreeMap::new(),
        oldest: 0,
    };
    let now = jiff::Timestamp::now().as_second();
    for message in &messages {
        let s = control::state(message);
        if s == "done" {
            continue;
        }
        *counts.by_state.entry(s).or_default() += 1;
        counts.oldest = counts.oldest.max(now.saturating_sub(message.received_at));
        for destination in control::destinations(message) {
            *counts.by_destination.entry(destination).or_default() += 1;
        }
    }
    Ok(counts)
}

/// Counts the queue into the gauges of `/metrics`.
pub(super) async fn refresh_gauges(state: &AdminState) {
    let Ok(QueueCounts {
        by_state,
        by_destination,
        oldest,
    }) = counts(state).await
    else {
        return;
    };
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

/// The query of `GET /api/queue`: a [`Filter`] and a page.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    sender: Option<String>,
    recipient: Option<String>,
    destination: Option<String>,
    min_age: Option<i64>,
    offset: Option<usize>,
    limit: Option<usize>,
}

impl ListQuery {
    fn filter(&self) -> Filter {
        Filter {
            state: self.state.clone(),
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            destination: self.destination.clone(),
            min_age: self.min_age,
        }
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
async fn list(State(state): State<AdminState>, Query(query): Query<ListQuery>) -> Response {
    let filter = query.filter();
    if let Err(why) = filter.check() {
        return bad_request(why);
    }
    let mut messages = match listing(&state).await {
        Ok(messages) => messages,
        Err(why) => return unavailable(why),
    };
    let now = jiff::Timestamp::now().as_second();
    messages.retain(|m| filter.matches(m, now));
    messages.sort_by(|a, b| {
        a.received_at
            .cmp(&b.received_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let total = messages.len();
    let offset = query.offset.unwrap_or(0);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let messages = messages.into_iter().skip(offset).take(limit).collect();
    Json(Page {
        total,
        offset,
        limit,
        messages,
    })
    .into_response()
}

fn bad_request(why: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// `GET /api/queue/{id}[?body=true]`: one message with its header section (id or unique
/// prefix), its recent attempts (`log`), and its text when asked (at most 256 KiB), or 404.
async fn one(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Query(show): Query<Show>,
) -> Response {
    let body = show.body.unwrap_or(false);
    let answer = state.control.handle(Request::Show { id, body }).await;
    let ControlResponse::Message { message, .. } = &answer else {
        return respond(answer);
    };
    // Its attempts as they happened, from the recent delivery log (newest first).
    let log: Vec<crate::events::Event> = state
        .events
        .recent_deliveries(usize::MAX)
        .into_iter()
        .filter(|e| matches!(&**e, crate::events::Event::Delivery { queue_id, .. } if *queue_id == message.id))
        .map(|e| (*e).clone())
        .collect();
    let mut value = serde_json::to_value(&answer).unwrap_or_default();
    value["log"] = serde_json::to_value(log).unwrap_or_default();
    Json(value).into_response()
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

/// The body of `POST /api/queue/actions`: an action, and the messages by id or by filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Act {
    /// `hold`, `release`, `flush`, `requeue`, `bounce` or `delete`.
    action: Action,
    /// Queue ids (or unique prefixes).
    #[serde(default)]
    ids: Vec<String>,
    /// Or every message this selects (`{}`: the whole queue).
    #[serde(default)]
    filter: Option<Filter>,
}

/// `POST /api/queue/actions` `{"action": "hold", "ids": [...]}` (or `"filter": {...}`): the
/// action on each message, as `yizhan queue ACTION` does it; the answer lists what was done
/// to each.
async fn act(State(state): State<AdminState>, Json(act): Json<serde_json::Value>) -> Response {
    // Parsed here rather than by the extractor: a wrong action is a 400 that names the
    // choices, not a bare 422.
    let act: Act = match serde_json::from_value(act) {
        Ok(act) => act,
        Err(e) => {
            return bad_request(format!(
                "{e} (actions: hold, release, flush, requeue, bounce, delete)"
            ));
        }
    };
    let ids = match (act.ids.is_empty(), act.filter) {
        (false, None) => act.ids,
        (true, Some(filter)) => {
            if let Err(why) = filter.check() {
                return bad_request(why);
            }
            let messages = match listing(&state).await {
                Ok(messages) => messages,
                Err(why) => return unavailable(why),
            };
            let now = jiff::Timestamp::now().as_second();
            messages
                .into_iter()
                .filter(|m| filter.matches(m, now))
                .map(|m| m.id)
                .collect()
        }
        _ => return bad_request("give either \"ids\" or \"filter\"".into()),
    };
    let mut acted = Acted::default();
    for part in ids.chunks(control::MAX_ACT_IDS) {
        let request = Request::Act {
            action: act.action,
            ids: part.to_vec(),
        };
        match state.control.handle(request).await {
            ControlResponse::Acted(part) => {
                acted.messages += part.messages;
                acted.recipients += part.recipients;
                acted.done.extend(part.done);
                acted.errors.extend(part.errors);
            }
            other => return respond(other),
        }
    }
    Json(acted).into_response()
}
