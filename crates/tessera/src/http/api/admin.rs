//! The administration API (role `admin`, by session + CSRF or Bearer). This
//! part covers signing keys; users and audit follow with the admin issue.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::AppState;
use crate::http::caller::Caller;
use crate::http::error::{ApiError, ApiResult};

/// A caller holding the `admin` role.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.has_role("admin") {
            return Err(ApiError::forbidden("the admin role is required"));
        }
        Ok(Admin(caller))
    }
}

pub async fn keys(State(state): State<AppState>, _: Admin) -> ApiResult<Response> {
    let keys = state.core.key_list().await?;
    Ok(axum::Json(json!({ "keys": keys })).into_response())
}

pub async fn rotate_keys(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> ApiResult<Response> {
    state.core.rotate_keys(Some(caller.user_id())).await?;
    let keys = state.core.key_list().await?;
    Ok(axum::Json(json!({ "keys": keys })).into_response())
}
