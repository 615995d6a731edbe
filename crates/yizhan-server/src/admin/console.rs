//! The web console: one page of plain HTML, CSS and JavaScript compiled into the binary (no
//! build step), served at `/`, that speaks to the JSON API like any other client. And
//! `GET /api/stats`, the numbers of its dashboard.
//!
//! The page itself holds no data, so it is served without the token; every API call it makes
//! carries the token in the `Authorization` header (kept in the tab's `sessionStorage`, never
//! in a cookie), so another site cannot make a browser act on the console (no CSRF). A strict
//! Content-Security-Policy allows only these files (no inline script, no other origin) and no
//! framing.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AdminState;
use super::queue::counts;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// The paths of the console's files (served without the token: they hold no data).
pub(super) const ASSETS: [&str; 3] = ["/", "/console.js", "/console.css"];

const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub(super) fn routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/stats", get(stats))
}

fn asset(kind: &'static str, text: &'static str) -> Response {
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /api/stats`: the dashboard's numbers: the queue by state, its oldest message, the
/// sessions open, and the totals since the start (the console makes rates of them).
async fn stats(State(state): State<AdminState>) -> Response {
    let queue = match counts(&state).await {
        Ok(counts) => serde_json::json!({
            "by_state": counts.by_state,
            "oldest_seconds": counts.oldest,
        }),
        Err(why) => serde_json::json!({ "error": why }),
    };
    let settings = state.settings.load();
    Json(serde_json::json!({
        "hostname": settings.hostname,
        "now": jiff::Timestamp::now().as_second(),
        "queue": queue,
        "sessions": state.events.sessions().len(),
        "totals": state.events.totals(),
    }))
    .into_response()
}
