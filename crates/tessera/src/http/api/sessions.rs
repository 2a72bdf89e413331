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
use crate::http::api::responses::{
    BadId, CsrfFailed, FailClosed, FormBodyErrors, HashingSaturated, LoginRateLimited, NoSession,
    Unauthenticated,
};
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
        FormBodyErrors,
        (status = 422, description = "`validation_failed`: a field is missing or not a string, or the password is not 8 to 1024 characters", body = doc::Error),
        LoginRateLimited,
        HashingSaturated,
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
    let csrf_token = family_csrf_token(state, &new.family_id)?;
    let now = state.core.now();
    let body = SessionState {
        user: &new.user,
        session: family_view(&new.family_id, now, now, new.refresh_expires_at),
        csrf_token: &csrf_token,
    };
    let [access, refresh] = pair_cookies(state, &new);
    Ok((
        StatusCode::CREATED,
        AppendHeaders([(header::SET_COOKIE, access), (header::SET_COOKIE, refresh)]),
        axum::Json(body),
    )
        .into_response())
}

/// A refresh family as the contract's session object: it has no idle
/// expiry of its own (its token's expiry is both).
fn family_view(
    id: &str,
    created_at: time::OffsetDateTime,
    last_seen_at: time::OffsetDateTime,
    expires_at: time::OffsetDateTime,
) -> SessionView<'_> {
    SessionView {
        id,
        created_at,
        last_seen_at,
        expires_at,
        idle_expires_at: expires_at,
    }
}

/// The family's CSRF token; without the key (never after start-up) the
/// request fails rather than answer without one.
fn family_csrf_token(state: &AppState, family_id: &str) -> ApiResult<String> {
    state
        .core
        .family_csrf_token(family_id)
        .ok_or_else(crate::http::error::ApiError::internal)
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
        NoSession,
        FailClosed,
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
    let csrf_token = family_csrf_token(state, &family.id)?;
    let body = SessionState {
        user: &user,
        session: family_view(&family.id, family.created_at, state.core.now(), expires_at),
        csrf_token: &csrf_token,
    };
    Ok(Some(axum::Json(body).into_response()))
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
        Unauthenticated,
        CsrfFailed,
        FailClosed,
    ),
)]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    match &caller {
        Caller::Session(s) => state.core.logout(&s.auth).await?,
        Caller::Token(c) | Caller::CookieToken(c) => state.core.end_sid(&c.sub, &c.sid).await?,
    }
    Ok(no_content_clearing_cookies(&state))
}

/// The caller's live sessions, newest first; in jwt-cookie mode also their
/// refresh families (browsers and apps, without address or user agent).
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    responses(
        (status = 200, description = "The caller's sessions", body = SessionList),
        Unauthenticated,
        FailClosed,
    ),
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let sessions = state.core.sessions_of(caller.user_id()).await?;
    let families = if state.settings.browser_mode == BrowserMode::JwtCookie {
        state.core.families_of(caller.user_id()).await?
    } else {
        Vec::new()
    };
    let current_id = caller.sid();
    let mut items: Vec<SessionListItem> = sessions
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
        .chain(families.iter().map(|f| SessionListItem {
            id: &f.family.id,
            created_at: f.family.created_at,
            last_seen_at: f.last_used_at,
            expires_at: f.expires_at,
            ip: None,
            user_agent: None,
            current: f.family.id == current_id,
        }))
        .collect();
    items.sort_by_key(|item| std::cmp::Reverse(item.created_at));
    Ok(axum::Json(SessionList { sessions: items }).into_response())
}

/// Ends one of the caller's own sessions.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    operation_id = "revoke_session",
    tag = "sessions",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(
        ("id" = String, Path, description = "A session id (`ses_…`) of the caller; in jwt-cookie mode also a refresh family id (`fam_…`)"),
        ("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)"),
    ),
    responses(
        (status = 204, description = "The session is gone",
            headers(("Set-Cookie" = String, description = "Clears the browser's cookies when the session ended is the caller's own"))),
        BadId,
        Unauthenticated,
        CsrfFailed,
        (status = 404, description = "`not_found`: no such session of the caller", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if state.settings.browser_mode == BrowserMode::JwtCookie && id.starts_with("fam_") {
        state.core.end_family_of(caller.user_id(), &id).await?;
    } else {
        state.core.revoke_session(caller.user_id(), &id).await?;
    }
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
        Unauthenticated,
        CsrfFailed,
        FailClosed,
    ),
)]
pub async fn logout_all(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    state.core.logout_all(caller.user_id()).await?;
    Ok(no_content_clearing_cookies(&state))
}
