//! `GET /v1/me` and `GET /v1/verify` (forward-auth for proxies).

use std::panic::AssertUnwindSafe;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::core::accounts::User;
use crate::core::time::serde_rfc3339;
use crate::http::AppState;
use crate::http::api::responses::{FailClosed, Unauthenticated};
use crate::http::caller::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::http::metrics::credential_kind;
use crate::http::middleware::{Arrival, panic_response, refuse_oversized};
use crate::http::openapi as doc;

/// The forward-auth route.
pub const VERIFY_ROUTE: &str = "/v1/verify";

#[derive(Serialize, utoipa::ToSchema)]
struct AuthInfo<'a> {
    /// `session` or `jwt`.
    #[schema(schema_with = doc::auth_method_schema)]
    method: &'static str,
    /// The session, or the session or refresh family the token came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    /// When this credential stops working unless renewed (a session's idle
    /// expiry, a token's `exp`).
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MeBody<'a> {
    user: &'a User,
    auth: AuthInfo<'a>,
}

/// Who the caller is, and by which credential.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "accounts",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    responses(
        (status = 200, description = "The caller", body = MeBody),
        Unauthenticated,
        FailClosed,
    ),
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// A role the caller must hold (else 403).
    role: Option<String>,
}

static X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
static X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
static X_AUTH_METHOD: HeaderName = HeaderName::from_static("x-auth-method");

/// 200 with the identity in headers, 401 without a valid credential, 403 when
/// `?role=` names a role the caller lacks.
#[utoipa::path(
    get,
    path = "/v1/verify",
    tag = "accounts",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(VerifyQuery),
    responses(
        (status = 200, description = "Authenticated (and holding `role`, if given); the identity is in the headers",
            headers(
                ("X-Auth-User" = String, description = "Always sent: the user id (`usr_…`)"),
                ("X-Auth-Roles" = String, description = "Always sent: the roles, comma-separated"),
                ("X-Auth-Method" = String, description = "Always sent: `session` or `jwt`"),
            )),
        (status = 400, description = "`invalid_request`: the query string is malformed", body = doc::Error),
        Unauthenticated,
        (status = 403, description = "`forbidden`: the caller lacks `role`", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn verify(caller: Caller, Query(query): Query<VerifyQuery>) -> ApiResult<Response> {
    verify_answer(&caller, &query)
}

/// The forward-auth answer for an authenticated caller.
fn verify_answer(caller: &Caller, query: &VerifyQuery) -> ApiResult<Response> {
    if let Some(role) = query.role.as_deref()
        && !caller.has_role(role)
    {
        return Err(ApiError::forbidden(format!(
            "the role {role:?} is required"
        )));
    }
    let id = HeaderValue::from_str(caller.user_id()).map_err(|_| ApiError::internal())?;
    let roles =
        HeaderValue::from_str(&caller.roles().join(",")).map_err(|_| ApiError::internal())?;
    // Straight into the response's own map (a `(StatusCode, HeaderMap)`
    // answer builds a second map and copies it over), with room for the
    // contract's two response headers added on the way out.
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.reserve(5);
    headers.insert(X_AUTH_USER.clone(), id);
    headers.insert(X_AUTH_ROLES.clone(), roles);
    headers.insert(
        X_AUTH_METHOD.clone(),
        HeaderValue::from_static(caller.method()),
    );
    Ok(response)
}

/// `GET /v1/verify` as the router would answer it (the same extractors,
/// checks, errors, headers and metrics), called by [`crate::http::Endpoint`]
/// before the router: a proxy asks this on every request it forwards, and
/// routing plus the middleware stack cost a quarter to a third of its CPU
/// time (bench/README.md).
pub async fn verify_direct<B: http_body::Body>(state: &AppState, req: Request<B>) -> Response {
    // The credential kind for the metrics comes from the check itself when
    // it passed, so a session check reads its cookie once.
    let mut seen = Arrival::unlabelled(&req);
    let response = match refuse_oversized(&req) {
        Some(refused) => {
            seen.verified_with(credential_kind(req.headers(), state));
            refused
        }
        None => {
            let (mut parts, _body) = req.into_parts();
            let answer = AssertUnwindSafe(verify_parts(&mut parts, state)).catch_unwind();
            let (response, kind) = answer
                .await
                .unwrap_or_else(|panic| (panic_response(panic), None));
            seen.verified_with(kind.unwrap_or_else(|| credential_kind(&parts.headers, state)));
            response
        }
    };
    seen.depart(state, VERIFY_ROUTE, response)
}

/// The answer, and the kind of credential when the caller was authenticated.
async fn verify_parts(parts: &mut Parts, state: &AppState) -> (Response, Option<&'static str>) {
    let caller = match Caller::from_request_parts(parts, state).await {
        Ok(caller) => caller,
        Err(refused) => return (refused.into_response(), None),
    };
    // Without a query string there is nothing to parse (a proxy's usual
    // call); with one, the router's own extractor decides.
    let query = match parts.uri.query() {
        None => Ok(VerifyQuery { role: None }),
        Some(_) => Query::<VerifyQuery>::try_from_uri(&parts.uri).map(|Query(query)| query),
    };
    let response = match query {
        Ok(query) => verify_answer(&caller, &query).into_response(),
        Err(rejection) => rejection.into_response(),
    };
    (response, Some(caller.method()))
}
