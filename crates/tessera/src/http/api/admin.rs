//! The administration API (role `admin`, by session + CSRF or Bearer): users,
//! signing keys, the audit log. Role changes and suspension take effect at
//! the user's very next request (caches are evicted, earlier tokens cut off).

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::core::accounts::UserStatus;
use crate::http::AppState;
use crate::http::caller::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Json;
use crate::store::{AuditQuery, UserQuery};

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

#[derive(Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// `GET /v1/admin/users?q=&limit=&cursor=`: a page of users by id; `cursor`
/// is returned while more may follow.
pub async fn users(
    State(state): State<AppState>,
    _: Admin,
    Query(query): Query<UsersQuery>,
) -> ApiResult<Response> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let users = state
        .core
        .list_users(&UserQuery {
            email_contains: query.q.filter(|q| !q.is_empty()),
            limit,
            after_id: query.cursor.filter(|c| !c.is_empty()),
        })
        .await?;
    let cursor = (users.len() == limit as usize)
        .then(|| users.last().map(|u| u.id.clone()))
        .flatten();
    Ok(axum::Json(json!({ "users": users, "cursor": cursor })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    roles: Option<Vec<String>>,
    status: Option<String>,
}

/// `PATCH /v1/admin/users/{id}` `{roles?, status?}`.
pub async fn update_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(patch): Json<UserPatch>,
) -> ApiResult<Response> {
    let status =
        match patch.status.as_deref() {
            None => None,
            Some(s) => Some(UserStatus::parse(s).ok_or_else(|| {
                ApiError::validation("status must be \"active\" or \"suspended\"")
            })?),
        };
    let mut user = state.core.user(&id).await?;
    if let Some(roles) = &patch.roles {
        user = state
            .core
            .set_roles_by(Some(admin.user_id()), &id, roles)
            .await?;
    }
    if let Some(status) = status
        && status != user.status
    {
        user = state
            .core
            .set_status_by(Some(admin.user_id()), &id, status)
            .await?;
    }
    Ok(axum::Json(json!({ "user": user })).into_response())
}

/// `POST /v1/admin/users/{id}/revoke`: logout everywhere for that user.
pub async fn revoke_user(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.core.user(&id).await?;
    state.core.logout_all(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct AuditParams {
    user_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<u32>,
    before: Option<String>,
}

/// `GET /v1/admin/audit?user_id=&type=&limit=&before=`, newest first.
pub async fn audit(
    State(state): State<AppState>,
    _: Admin,
    Query(params): Query<AuditParams>,
) -> ApiResult<Response> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let events = state
        .core
        .audit_page(&AuditQuery {
            event_type: params.event_type.filter(|t| !t.is_empty()),
            user_id: params.user_id.filter(|u| !u.is_empty()),
            limit,
            before: params.before.filter(|b| !b.is_empty()),
        })
        .await?;
    let cursor = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id.clone()))
        .flatten();
    Ok(axum::Json(json!({ "events": events, "cursor": cursor })).into_response())
}
