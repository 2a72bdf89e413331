//! `GET /healthz` (the process answers) and `GET /readyz` (its stores do).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::http::AppState;
use crate::http::error::ApiResult;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.core.ready().await?;
    Ok(Json(json!({"status": "ready"})))
}
