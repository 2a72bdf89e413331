//! Browser sessions: `POST /v1/sessions`, `GET`/`DELETE /v1/session`,
//! `GET /v1/sessions`, `DELETE /v1/sessions/{id}`, `POST /v1/logout-all`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use serde::Deserialize;

use crate::config::BrowserMode;
use crate::core::accounts::Password;
use crate::core::secret::BearerSecret;
use crate::core::sessions::csrf_token_for;
use crate::http::AppState;
use crate::http::api::views::{SessionList, SessionListItem, SessionState, SessionView};
use crate::http::caller::{Caller, SessionCaller, session_secret};
use crate::http::cookies::{clear_session_cookie, read_cookie, session_cookie};
use crate::http::csrf::FreshRequest;
use crate::http::error::ApiResult;
use crate::http::extract::{Client, JsonOrForm};
use crate::http::jwt_cookie::{clear_pair_cookies, pair_cookies};
use crate::http::openapi as doc;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginBody {
    /// Matched case-insensitively.
    #[schema(example = "alice@example.com")]
    email: String,
    #[schema(
        min_length = 8,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    password: String,
}

/// The session cookie a request carried, valid or not (for login, which
/// destroys it).
pub struct CarriedSession(Option<BearerSecret>);

impl FromRequestParts<AppState> for CarriedSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(CarriedSession(session_secret(parts, state)))
    }
}

/// 204 that also drops the browser's credential cookies.
fn no_content_clearing_cookies(state: &AppState) -> Response {
    let [access, refresh] = clear_pair_cookies(state);
    let mut response = (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_session_cookie(&state.settings))],
    )
        .into_response();
    if state.settings.browser_mode == BrowserMode::JwtCookie {
        let headers = response.headers_mut();
        headers.append(header::SET_COOKIE, access);
        headers.append(header::SET_COOKIE, refresh);
    }
    response
}

/// Signs in: starts a session and sets its cookie. Any session the request
/// carried is destroyed first (no fixation). In jwt-cookie mode the access and
/// refresh tokens are set as cookies instead, and `session` describes the
/// refresh family.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "sessions",
    request_body(content(
        (LoginBody = "application/json"),
        (LoginBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 201, description = "Signed in", body = SessionState,
            headers(("Set-Cookie" = String, description = "Always sent: `__Host-tessera_session=<id>; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=<seconds>` (in jwt-cookie mode `__Host-tessera_access` and `__Host-tessera_refresh` instead)"))),
        (status = 400, description = "`invalid_request`: the body is not valid JSON or cannot be read", body = doc::Error),
        (status = 401, description = "`invalid_credentials`: the email or password is wrong (the same answer for both)", body = doc::Error),
        (status = 403, description = "`account_suspended`: the account is suspended; `email_not_verified`: `email_verification` is `required` and the account's address is not verified (said only after the password matched); `csrf_failed`: `Origin` is foreign or `Sec-Fetch-Site` is `cross-site`", body = doc::Error),
        (status = 413, description = "`payload_too_large`: the body is larger than 64 KiB", body = doc::Error),
        (status = 415, description = "`unsupported_media_type`: the body is neither `application/json` nor `application/x-www-form-urlencoded`", body = doc::Error),
        (status = 422, description = "`validation_failed`: a field is missing or not a string, or the password is not 8 to 1024 characters", body = doc::Error),
        (status = 429, description = "`rate_limited`: too many attempts from this address, or too many failed logins for this account", body = doc::Error,
            headers(("Retry-After" = u64, description = "Always sent: seconds to wait"))),
        (status = 503, description = "`unavailable`: password hashing is saturated (with `Retry-After`) or a store is down", body = doc::Error,
            headers(("Retry-After" = u64, description = "Seconds to wait, when hashing is saturated"))),
    ),
)]
pub async fn login(
    State(state): State<AppState>,
    _: FreshRequest,
    CarriedSession(carried): CarriedSession,
    headers: axum::http::HeaderMap,
    Client(client): Client,
    JsonOrForm(body): JsonOrForm<LoginBody>,
) -> ApiResult<Response> {
    if state.settings.browser_mode == BrowserMode::JwtCookie {
        return login_jwt_cookie(&state, &headers, carried, client, body).await;
    }
    let new = state
        .core
        .login(
            &body.email,
            Password::new(body.password),
            carried.as_ref(),
            client,
        )
        .await?;
    let session = &new.auth.session;
    let max_age = (session.expires_at - state.core.now()).whole_seconds();
    let csrf_token = csrf_token_for(&new.secret);
    let body = SessionState {
        user: &new.auth.user,
        session: SessionView::new(session, &state.core.policy.sessions),
        csrf_token: &csrf_token,
    };
    Ok((
        StatusCode::CREATED,
        [(
            header::SET_COOKIE,
            session_cookie(&state.settings, new.secret.expose(), max_age),
        )],
        axum::Json(body),
    )
        .into_response())
}

/// jwt-cookie mode: the login starts a refresh family and delivers both
/// tokens in HttpOnly cookies; the body carries the family's CSRF token.
async fn login_jwt_cookie(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    carried: Option<BearerSecret>,
    client: crate::core::sessions::ClientInfo,
    body: LoginBody,
) -> ApiResult<Response> {
    // Whatever the browser carried is ended first (no fixation).
    if let Some(refresh) = read_cookie(headers, state.settings.refresh_cookie_name()) {
        state
            .core
            .revoke_presented_token(refresh, Some("refresh_token"), &client)
            .await?;
    }
    let new = state
        .core
        .login_with_tokens(
            &body.email,
            Password::new(body.password),
            carried.as_ref(),
            &client,
        )
        .await?;
    let csrf_token = state.core.family_csrf_token(&new.family_id);
    let now = state.core.now();
    let session = serde_json::json!({
        "id": new.family_id,
        "created_at": crate::core::time::rfc3339(now),
        "last_seen_at": crate::core::time::rfc3339(now),
        "expires_at": crate::core::time::rfc3339(new.refresh_expires_at),
        "idle_expires_at": crate::core::time::rfc3339(new.refresh_expires_at),
    });
    let [access, refresh] = pair_cookies(state, &new);
    Ok((
        StatusCode::CREATED,
        AppendHeaders([(header::SET_COOKIE, access), (header::SET_COOKIE, refresh)]),
        axum::Json(serde_json::json!({
            "user": new.user,
            "session": session,
            "csrf_token": csrf_token,
        })),
    )
        .into_response())
}

/// The session the cookie belongs to, with its CSRF token (a reloaded page
/// recovers it here). In jwt-cookie mode the refresh cookie's family.
#[utoipa::path(
    get,
    path = "/v1/session",
    tag = "sessions",
    security(("sessionCookie" = []), ("refreshCookie" = [])),
    responses(
        (status = 200, description = "The current session", body = SessionState),
        (status = 401, description = "`unauthenticated`: no session cookie, or it is unknown, expired or revoked", body = doc::Error),
        (status = 503, description = "`unavailable`: a store is down (requests fail closed)", body = doc::Error),
    ),
)]
pub async fn current(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    caller: Result<SessionCaller, crate::http::error::ApiError>,
) -> ApiResult<Response> {
    if state.settings.browser_mode == BrowserMode::JwtCookie
        && let Some(response) = current_jwt_cookie(&state, &headers).await?
    {
        return Ok(response);
    }
    let caller = caller?;
    let auth = &caller.auth;
    let csrf_token = caller.csrf_token();
    Ok(axum::Json(SessionState {
        user: &auth.user,
        session: SessionView::new(&auth.session, &state.core.policy.sessions),
        csrf_token: &csrf_token,
    })
    .into_response())
}

/// jwt-cookie mode: the browser's family, found from its refresh cookie, so
/// a reloaded page can recover its CSRF token even after the access token
/// expired (and then refresh).
async fn current_jwt_cookie(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> ApiResult<Option<Response>> {
    let Some(refresh) = read_cookie(headers, state.settings.refresh_cookie_name()) else {
        return Ok(None);
    };
    let Some((family, expires_at)) = state.core.refresh_token_family(refresh).await? else {
        return Ok(None);
    };
    let user = state.core.active_user(&family.user_id).await?;
    let csrf_token = state.core.family_csrf_token(&family.id);
    let session = serde_json::json!({
        "id": family.id,
        "created_at": crate::core::time::rfc3339(family.created_at),
        "last_seen_at": crate::core::time::rfc3339(state.core.now()),
        "expires_at": crate::core::time::rfc3339(expires_at),
        "idle_expires_at": crate::core::time::rfc3339(expires_at),
    });
    Ok(Some(
        axum::Json(serde_json::json!({
            "user": &*user,
            "session": session,
            "csrf_token": csrf_token,
        }))
        .into_response(),
    ))
}

/// Ends the caller's own session (or, for a token, the session or refresh
/// family it came from) and drops the browser's cookies.
#[utoipa::path(
    delete,
    path = "/v1/session",
    tag = "sessions",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)")),
    responses(
        (status = 204, description = "Signed out: the session (or the token's refresh family) is gone server-side",
            headers(("Set-Cookie" = String, description = "Always sent: clears the session cookie (`Max-Age=0`); in jwt-cookie mode also the access and refresh cookies"))),
        (status = 401, description = "`unauthenticated`: no valid session cookie or access token (a refused Bearer token gets the RFC 6750 challenge)", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tessera\", error=\"invalid_token\"` when the request presented a Bearer token"))),
        (status = 403, description = "`csrf_failed`: a cookie-authenticated request without the right `X-CSRF-Token`, or with a foreign `Origin`", body = doc::Error),
        (status = 503, description = "`unavailable`: a store is down (requests fail closed)", body = doc::Error),
    ),
)]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    match &caller {
        Caller::Session(s) => state.core.logout(&s.auth).await?,
        Caller::Token(c) | Caller::CookieToken(c) => state.core.end_sid(&c.sub, &c.sid).await?,
    }
    Ok(no_content_clearing_cookies(&state))
}

/// The caller's live sessions, newest first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    responses(
        (status = 200, description = "The caller's sessions", body = SessionList),
        (status = 401, description = "`unauthenticated`: no valid session cookie or access token (a refused Bearer token gets the RFC 6750 challenge)", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tessera\", error=\"invalid_token\"` when the request presented a Bearer token"))),
        (status = 503, description = "`unavailable`: a store is down (requests fail closed)", body = doc::Error),
    ),
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let sessions = state.core.sessions_of(caller.user_id()).await?;
    let current_id = caller.sid();
    let body = SessionList {
        sessions: sessions
            .iter()
            .map(|s| SessionListItem {
                id: &s.id,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                expires_at: s.expires_at,
                ip: s.ip.as_deref(),
                user_agent: s.user_agent.as_deref(),
                current: s.id == current_id,
            })
            .collect(),
    };
    Ok(axum::Json(body).into_response())
}

/// Ends one of the caller's own sessions.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    operation_id = "revoke_session",
    tag = "sessions",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(
        ("id" = String, Path, description = "A session id (`ses_…`) of the caller"),
        ("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)"),
    ),
    responses(
        (status = 204, description = "The session is gone",
            headers(("Set-Cookie" = String, description = "Clears the browser's cookies when the session ended is the caller's own"))),
        (status = 400, description = "`invalid_request`: the id is not valid UTF-8 once percent-decoded", body = doc::Error),
        (status = 401, description = "`unauthenticated`: no valid session cookie or access token (a refused Bearer token gets the RFC 6750 challenge)", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tessera\", error=\"invalid_token\"` when the request presented a Bearer token"))),
        (status = 403, description = "`csrf_failed`: a cookie-authenticated request without the right `X-CSRF-Token`, or with a foreign `Origin`", body = doc::Error),
        (status = 404, description = "`not_found`: no such session of the caller", body = doc::Error),
        (status = 503, description = "`unavailable`: a store is down (requests fail closed)", body = doc::Error),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.core.revoke_session(caller.user_id(), &id).await?;
    if id == caller.sid() {
        return Ok(no_content_clearing_cookies(&state));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Signs out everywhere: every session, refresh family and earlier access
/// token of the caller is revoked.
#[utoipa::path(
    post,
    path = "/v1/logout-all",
    tag = "sessions",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)")),
    responses(
        (status = 204, description = "Everything of the caller's is revoked",
            headers(("Set-Cookie" = String, description = "Always sent: clears the session cookie (`Max-Age=0`); in jwt-cookie mode also the access and refresh cookies"))),
        (status = 401, description = "`unauthenticated`: no valid session cookie or access token (a refused Bearer token gets the RFC 6750 challenge)", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tessera\", error=\"invalid_token\"` when the request presented a Bearer token"))),
        (status = 403, description = "`csrf_failed`: a cookie-authenticated request without the right `X-CSRF-Token`, or with a foreign `Origin`", body = doc::Error),
        (status = 503, description = "`unavailable`: a store is down (requests fail closed)", body = doc::Error),
    ),
)]
pub async fn logout_all(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    state.core.logout_all(caller.user_id()).await?;
    Ok(no_content_clearing_cookies(&state))
}
