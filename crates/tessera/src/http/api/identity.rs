//! `GET /v1/me` and `GET /v1/verify` (forward-auth for proxies).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::core::accounts::User;
use crate::core::time::serde_rfc3339;
use crate::http::AppState;
use crate::http::caller::Caller;
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

pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let user = caller.user(&state).await?;
    let auth = match &caller {
        Caller::Session(s) => AuthInfo {
            method: "session",
            session_id: Some(&s.auth.session.id),
            expires_at: state.core.policy.sessions.idle_expires_at(&s.auth.session),
        },
        Caller::Token(c) | Caller::CookieToken(c) => AuthInfo {
            method: "jwt",
            session_id: Some(&c.sid),
            expires_at: OffsetDateTime::from_unix_timestamp(c.exp)
                .map_err(|_| ApiError::internal())?,
        },
    };
    Ok(axum::Json(MeBody { user: &user, auth }).into_response())
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
pub async fn verify(caller: Caller, Query(query): Query<VerifyQuery>) -> ApiResult<Response> {
    if let Some(role) = query.role.as_deref()
        && !caller.has_role(role)
    {
        return Err(ApiError::forbidden(format!(
            "the role {role:?} is required"
        )));
    }
    let mut headers = HeaderMap::with_capacity(3);
    let id = HeaderValue::from_str(caller.user_id()).map_err(|_| ApiError::internal())?;
    let roles =
        HeaderValue::from_str(&caller.roles().join(",")).map_err(|_| ApiError::internal())?;
    headers.insert(X_AUTH_USER.clone(), id);
    headers.insert(X_AUTH_ROLES.clone(), roles);
    headers.insert(
        X_AUTH_METHOD.clone(),
        HeaderValue::from_static(caller.method()),
    );
    Ok((StatusCode::OK, headers).into_response())
}
