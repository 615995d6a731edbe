//! What happens now: `GET /api/sessions` (live sessions), `GET /api/deliveries` (the recent
//! delivery log), `GET /api/config` (the configuration in effect, as `check-config` prints
//! it), and two Server-Sent Events streams: `GET /api/events` (sessions, queued messages,
//! deliveries) and `GET /api/terminal?user=ADDR` (that user's terminal for RFC 821 SEND, SOML
//! and SAML, open while the stream is).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tracing::info;

use super::AdminState;

/// Deliveries per page of `/api/deliveries` unless `limit` says otherwise.
const DEFAULT_DELIVERIES: usize = 100;

/// A comment line sent on a quiet stream, so proxies and browsers keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) fn routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/api/sessions", get(sessions))
        .route("/api/deliveries", get(deliveries))
        .route("/api/config", get(config))
        .route("/api/events", get(events))
        .route(TERMINAL_PATH, get(terminal))
}

/// The path of a terminal stream: the one API path a mail user may open with their own
/// password (HTTP Basic), for their own address only.
pub(super) const TERMINAL_PATH: &str = "/api/terminal";

/// How long a login waits for its turn.
const LOGIN_WAIT: Duration = Duration::from_secs(10);

/// How long a wrong password costs before the answer (as a failed AUTH does). Logins are
/// checked one at a time ([`AdminState::logins`]), so this bounds guessing to one password
/// a second, however many requests come at once.
const LOGIN_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// `GET /api/sessions`: the sessions open now, oldest first.
async fn sessions(State(state): State<AdminState>) -> Response {
    Json(serde_json::json!({ "sessions": state.events.sessions() })).into_response()
}

/// The query of `/api/deliveries` and `/api/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct About {
    /// Only what concerns this address (part of it, without case).
    address: Option<String>,
    /// At most this many (deliveries).
    limit: Option<usize>,
}

/// `GET /api/deliveries[?address=&limit=]`: the recent delivery outcomes, newest first.
async fn deliveries(State(state): State<AdminState>, Query(about): Query<About>) -> Response {
    let limit = about.limit.unwrap_or(DEFAULT_DELIVERIES);
    let found: Vec<crate::events::Event> = state
        .events
        .recent_deliveries(usize::MAX)
        .into_iter()
        .filter(|e| about.address.as_deref().is_none_or(|a| e.concerns(a)))
        .take(limit)
        .map(|e| (*e).clone())
        .collect();
    Json(serde_json::json!({ "deliveries": found })).into_response()
}

/// `GET /api/config`: the configuration in effect, a line per subject as `yizhan
/// check-config` prints it (no secret is in it: users are counted, keys named by path).
async fn config(State(state): State<AdminState>) -> Response {
    let settings = state.settings.load();
    let admin = &settings.admin;
    Json(serde_json::json!({
        "hostname": settings.hostname,
        "summary": crate::summary::summary(&settings),
        "admin": {
            "address": admin.address.to_string(),
            "token": if admin.token.is_some() { "set (redacted)" } else { "none (loopback only)" },
        },
    }))
    .into_response()
}

/// `GET /api/events[?address=]`: every event from now on, as Server-Sent Events (`event:`
/// the type, `data:` its JSON), until the client goes away or the server stops.
async fn events(
    State(state): State<AdminState>,
    Query(about): Query<About>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = state.events.subscribe();
    let shutdown = state.shutdown.clone();
    let address = about.address;
    let stream = stream::unfold(
        (receiver, shutdown, address),
        |(mut receiver, shutdown, address)| async move {
            loop {
                let received = tokio::select! {
                    r = receiver.recv() => r,
                    () = shutdown.cancelled() => return None,
                };
                let sse = match received {
                    Ok(event) if address.as_deref().is_none_or(|a| event.concerns(a)) => {
                        let kind = match &*event {
                            crate::events::Event::Session { .. } => "session",
                            crate::events::Event::Accepted { .. } => "accepted",
                            crate::events::Event::Delivery { .. } => "delivery",
                        };
                        SseEvent::default()
                            .event(kind)
                            .json_data(&*event)
                            .unwrap_or_default()
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(count)) => {
                        SseEvent::default().event("missed").data(count.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(sse), (receiver, shutdown, address)));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// The query of `/api/terminal`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Whose {
    /// The user (local address) whose terminal this is.
    user: String,
}

/// `GET /api/terminal?user=ADDR`: while this stream is open, `ADDR` has a terminal (RFC 821
/// SEND to them is accepted, SOML shows here instead of the mailbox, SAML both); each
/// message comes as an event `message` with the JSON of `events::TerminalMessage`.
async fn terminal(
    State(state): State<AdminState>,
    Query(whose): Query<Whose>,
    headers: axum::http::HeaderMap,
) -> Response {
    let user = whose.user;
    if let Some(basic) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        && let Err(refused) = login(&state, basic, &user).await
    {
        return refused;
    }
    open_terminal(&state, user).into_response()
}

/// Checks a mail user's HTTP Basic login (`basic`, base64 of `address:password`) for the
/// terminal of `user`: the password must be right and `user` their own address.
async fn login(state: &AdminState, basic: &str, user: &str) -> Result<(), Response> {
    use base64::Engine as _;
    // 403, not 401 with a Basic challenge: a browser would answer a challenge with its own
    // password dialog instead of letting the console say what went wrong.
    let refuse = |status, why: &str| (status, format!("{why}\n")).into_response();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok());
    let Some((address, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "malformed Basic credentials",
        ));
    };
    let Ok(_turn) = tokio::time::timeout(LOGIN_WAIT, state.logins.lock()).await else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins at once; try again",
        ));
    };
    let credentials = Arc::new(state.settings.load().credentials.clone());
    let verified = crate::auth::verify(
        &state.password_checks,
        credentials,
        address.to_owned(),
        password.as_bytes().to_vec(),
    )
    .await;
    match verified {
        Ok(Some(canonical)) if canonical.eq_ignore_ascii_case(user.trim_matches(['<', '>'])) => {
            Ok(())
        }
        Ok(Some(canonical)) => {
            info!(%canonical, %user, "terminal refused: not the user's own address");
            Err(refuse(
                StatusCode::FORBIDDEN,
                "a user may open only their own terminal",
            ))
        }
        Ok(None) => {
            info!(%address, "terminal login failed");
            tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
            Err(refuse(StatusCode::FORBIDDEN, "wrong address or password"))
        }
        Err(e) => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

/// The terminal of `user` as a stream of Server-Sent Events.
fn open_terminal(
    state: &AdminState,
    user: String,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
    info!(%user, "terminal opened (admin listener)");
    let terminal = state.events.open_terminal(&user);
    let shutdown = state.shutdown.clone();
    let opened = SseEvent::default().event("open").data(user.clone());
    let first = stream::iter([Ok(opened)]);
    let rest = stream::unfold(
        (terminal, shutdown, user),
        |(mut terminal, shutdown, user)| async move {
            let shown = tokio::select! {
                m = terminal.next() => m,
                () = shutdown.cancelled() => None,
            };
            let shown = shown?;
            let sse = SseEvent::default()
                .event("message")
                .json_data(&shown.message)
                .unwrap_or_default();
            // Handed to the connection: as far as a stream can tell, shown.
            shown.written();
            Some((Ok(sse), (terminal, shutdown, user)))
        },
    );
    use futures_util::StreamExt as _;
    Sse::new(first.chain(rest)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
