//! `GET /healthz` (the process answers) and `GET /readyz` (its stores do).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::openapi as doc;

/// `GET /healthz` and `GET /readyz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (healthz) or `ready` (readyz).
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process answers (`{\"status\": \"ok\"}`)", body = Health),
    ),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Every backing store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Every store answers (`{\"status\": \"ready\"}`)", body = Health),
        (status = 503, description = "`unavailable`: a store does not answer (the description names it: `the database does not answer`)", body = doc::Error),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    match state.core.ready().await {
        Ok(()) => Ok(Json(Health { status: "ready" })),
        Err(store) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {store} does not answer"),
        )),
    }
}
