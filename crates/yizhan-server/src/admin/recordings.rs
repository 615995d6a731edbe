//! `/api/recordings`: the recorded sessions (`[record]`), for the console's message view
//! (a queued message names the recording of the session that brought it).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::AdminState;

/// Recordings listed unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;

pub(super) fn routes() -> axum::Router<AdminState> {
    axum::Router::new()
        .route("/api/recordings", get(list))
        .route("/api/recordings/{id}", get(one))
}

/// The query of `GET /api/recordings`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
}

/// `GET /api/recordings[?limit=]`: the recorded sessions, newest first (headers).
async fn list(State(state): State<AdminState>, Query(page): Query<Page>) -> Response {
    let data_dir = state.settings.load().data_dir.clone();
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    let listed = tokio::task::spawn_blocking(move || crate::record::list(&data_dir)).await;
    match listed {
        Ok(Ok(mut headers)) => {
            headers.truncate(limit);
            Json(serde_json::json!({ "recordings": headers })).into_response()
        }
        Ok(Err(e)) => failed(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => failed(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `GET /api/recordings/{id}`: one recorded session, every line (id or unique prefix).
async fn one(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let data_dir = state.settings.load().data_dir.clone();
    let read = tokio::task::spawn_blocking(move || crate::record::read(&data_dir, &id)).await;
    match read {
        Ok(Ok(recorded)) => Json(recorded).into_response(),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            failed(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e)) => failed(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => failed(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn failed(status: StatusCode, why: String) -> Response {
    (status, Json(serde_json::json!({ "error": why }))).into_response()
}
