//! The admin HTTP listener (issue #15, `[admin]`): `GET /metrics` in the Prometheus text
//! format, and the JSON API under `/api/`. axum with tower-http timeouts and body limits.
//!
//! Safe by default: it listens on loopback only unless a bearer token is configured (the
//! configuration refuses anything else); with a token, every request must carry it
//! (`Authorization: Bearer ...`, compared in constant time), in a header, never a cookie, so a
//! page on another site cannot make the browser act (no CSRF).

mod queue;

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
use yizhan_spool::Spool;

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
    pub(crate) spool: Spool,
    pub(crate) queue_gauges: Arc<queue::Gauges>,
}

/// Serves `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    settings: LiveSettings,
    spool: Spool,
    shutdown: CancellationToken,
) {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    let state = AdminState {
        settings,
        spool,
        queue_gauges: Arc::new(queue::Gauges::default()),
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
        .merge(queue::routes())
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(state)
}

/// With a token configured, every request must carry it.
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let settings = state.settings.load();
    let Some(token) = settings.admin.token.as_deref() else {
        return next.run(request).await;
    };
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
