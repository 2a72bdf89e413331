//! `GET /healthz` (the process answers) and `GET /readyz` (its stores do).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::openapi as doc;

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process answers (`{\"status\": \"ok\"}`)", body = doc::Health),
    ),
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Every backing store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Every store answers (`{\"status\": \"ready\"}`)", body = doc::Health),
        (status = 503, description = "`unavailable`: a store does not answer (the description names it: `the database does not answer`)", body = doc::Error),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    match state.core.ready().await {
        Ok(()) => Ok(Json(json!({"status": "ready"}))),
        Err(store) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {store} does not answer"),
        )),
    }
}
