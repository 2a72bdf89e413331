//! `GET /v1/me` and `GET /v1/verify` (forward-auth for proxies).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::core::accounts::User;
use crate::core::time::serde_rfc3339;
use crate::http::AppState;
use crate::http::caller::SessionCaller;
use crate::http::error::{ApiError, ApiResult};

#[derive(Serialize)]
struct AuthInfo<'a> {
    method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(with = "serde_rfc3339")]
    expires_at: OffsetDateTime,
}

#[derive(Serialize)]
struct MeBody<'a> {
    user: &'a User,
    auth: AuthInfo<'a>,
}

pub async fn me(State(state): State<AppState>, caller: SessionCaller) -> Response {
    let session = &caller.auth.session;
    axum::Json(MeBody {
        user: &caller.auth.user,
        auth: AuthInfo {
            method: "session",
            session_id: Some(&session.id),
            expires_at: state.core.policy.sessions.idle_expires_at(session),
        },
    })
    .into_response()
}

#[derive(Deserialize)]
pub struct VerifyQuery {
    role: Option<String>,
}

static X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
static X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
static X_AUTH_METHOD: HeaderName = HeaderName::from_static("x-auth-method");

/// 200 with the identity in headers, 401 without a valid credential, 403 when
/// `?role=` names a role the caller lacks.
pub async fn verify(
    caller: SessionCaller,
    Query(query): Query<VerifyQuery>,
) -> ApiResult<Response> {
    let user = &caller.auth.user;
    if let Some(role) = query.role.as_deref()
        && !user.has_role(role)
    {
        return Err(ApiError::forbidden(format!(
            "the role {role:?} is required"
        )));
    }
    let mut headers = HeaderMap::with_capacity(3);
    let id = HeaderValue::from_str(&user.id).map_err(|_| ApiError::internal())?;
    let roles = HeaderValue::from_str(&user.roles.join(",")).map_err(|_| ApiError::internal())?;
    headers.insert(X_AUTH_USER.clone(), id);
    headers.insert(X_AUTH_ROLES.clone(), roles);
    headers.insert(X_AUTH_METHOD.clone(), HeaderValue::from_static("session"));
    Ok((StatusCode::OK, headers).into_response())
}
