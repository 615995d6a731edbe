//! The admin HTTP listener (issue #15, `[admin]`): `GET /metrics` in the Prometheus text
//! format, and the JSON API under `/api/`. axum with tower-http timeouts and body limits.
//!
//! Safe by default: it listens on loopback only unless a bearer token is configured (the
//! configuration refuses anything else); with a token, every request must carry it
//! (`Authorization: Bearer ...`, compared in constant time), in a header, never a cookie, so a
//! page on another site cannot make the browser act (no CSRF).

mod console;
mod live;
mod queue;
mod recordings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use yizhan_spool::QueueStore;

use crate::control::Control;
use crate::settings::{AdminSettings, LiveSettings};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request body accepted (actions carry lists of ids, nothing big).
const MAX_BODY: usize = 1024 * 1024;

/// Binds the admin listener as `[admin]` says (`None` when it is off). A failure is logged
/// and the mail service goes on without it: the console must never keep mail out.
pub async fn bind(admin: &AdminSettings) -> Option<TcpListener> {
    if !admin.enabled {
        return None;
    }
    match TcpListener::bind(admin.address).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            error!(address = %admin.address, error = %e, "cannot bind the admin listener; metrics, API and console are off (set [admin] address, or enabled = false)");
            None
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) settings: LiveSettings,
    pub(crate) spool: Arc<dyn QueueStore>,
    /// The same operations as the control socket (`yizhan queue`).
    pub(crate) control: Control,
    pub(crate) queue_gauges: Arc<queue::Gauges>,
    /// Live sessions, the delivery log, the event stream, the terminals.
    pub(crate) events: crate::events::Events,
    /// Ends the event streams when the server stops.
    pub(crate) shutdown: CancellationToken,
    /// The bound on password checks (a mail user opening their terminal).
    pub(crate) password_checks: Arc<crate::auth::PasswordChecks>,
    /// Terminal logins, one at a time (with the failure delay: one guess a second at most).
    pub(crate) logins: Arc<tokio::sync::Mutex<()>>,
}

/// Serves `listener` until `shutdown`; `control` carries out the queue actions and reloads.
pub async fn serve(
    listener: TcpListener,
    settings: LiveSettings,
    spool: Arc<dyn QueueStore>,
    control: Control,
    shutdown: CancellationToken,
) {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    let state = AdminState {
        settings,
        spool,
        events: control.events().clone(),
        control,
        queue_gauges: Arc::new(queue::Gauges::default()),
        shutdown: shutdown.clone(),
        password_checks: Arc::new(crate::auth::PasswordChecks::new(
            1,
            crate::auth::CHECK_QUEUE_WAIT,
        )),
        logins: Arc::new(tokio::sync::Mutex::new(())),
    };
    let app = router(state);
    if let Some(address) = local {
        info!(%address, "admin listening (metrics at /metrics, API at /api/)");
    }
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        error!(error = %e, "admin listener failed");
    }
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/health", get(health))
        .route("/api/reload", axum::routing::post(reload))
        .merge(queue::routes())
        .merge(live::routes())
        .merge(console::routes())
        .merge(recordings::routes())
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(state)
}

/// With a token configured, every request must carry it. Without one (loopback only), the
/// request must name a loopback host: a page whose DNS name was rebound to 127.0.0.1 sends
/// its own name and is refused.
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let settings = state.settings.load();
    // The console's files hold no data: served to anyone who may reach the listener (the
    // page asks for the token and sends it with every API call).
    let asset = request.method() == axum::http::Method::GET
        && console::ASSETS.contains(&request.uri().path());
    // A browser says where a request comes from (Fetch Metadata): the API answers only the
    // console itself and tools (no header), never a page of another site, even for a GET
    // (a page may not read the answer, but must not open a terminal or start an action).
    let site = request
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if !asset && site.is_some_and(|s| s != "same-origin" && s != "none") {
        let why = "requests from another site are refused\n";
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    let Some(token) = settings.admin.token.as_deref() else {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !names_loopback(host) {
            let why = "this listener answers requests for 127.0.0.1, [::1] or localhost only\n";
            return (StatusCode::FORBIDDEN, why).into_response();
        }
        return next.run(request).await;
    };
    // A mail user opening their own terminal logs in with their own password (checked by
    // the handler), not the admin token.
    let own_terminal = request.uri().path() == live::TERMINAL_PATH
        && request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Basic "));
    if asset || own_terminal {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return next.run(request).await;
    }
    let mut refused = (
        StatusCode::UNAUTHORIZED,
        "a bearer token is required (Authorization: Bearer TOKEN; see [admin] token_file)\n",
    )
        .into_response();
    refused.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    refused
}

/// Whether a `Host:` value (`name[:port]`) names this machine's loopback.
fn names_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `GET /metrics`: the Prometheus text format, queue gauges counted first.
async fn metrics(State(state): State<AdminState>) -> Response {
    queue::refresh_gauges(&state).await;
    match crate::metrics::handle() {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not recorded\n",
        )
            .into_response(),
    }
}

/// `GET /api/health`: the server answers, with its hostname.
async fn health(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let hostname = state.settings.load().hostname.clone();
    Json(serde_json::json!({ "status": "ok", "hostname": hostname }))
}

/// `POST /api/reload`: reads the configuration file again, as `yizhan reload` does.
async fn reload(State(state): State<AdminState>) -> Response {
    let answer = state.control.handle(crate::control::Request::Reload).await;
    queue::respond(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_pass_without_a_token() {
        for ok in [
            "127.0.0.1:8025",
            "localhost:8025",
            "[::1]:8025",
            "LOCALHOST",
            "127.0.0.2",
        ] {
            assert!(names_loopback(ok), "{ok}");
        }
        for bad in [
            "evil.example:8025",
            "",
            "10.0.0.1:8025",
            "[2001:db8::1]:80",
            "localhost.evil",
        ] {
            assert!(!names_loopback(bad), "{bad}");
        }
    }
}
