//! Browser sessions: `POST /v1/sessions`, `GET`/`DELETE /v1/session`,
//! `GET /v1/sessions`, `DELETE /v1/sessions/{id}`, `POST /v1/logout-all`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::core::accounts::Password;
use crate::core::secret::BearerSecret;
use crate::core::sessions::csrf_token_for;
use crate::http::AppState;
use crate::http::api::views::{SessionList, SessionListItem, SessionState, SessionView};
use crate::http::caller::{SessionCaller, session_secret};
use crate::http::cookies::{clear_session_cookie, session_cookie};
use crate::http::csrf::FreshRequest;
use crate::http::error::ApiResult;
use crate::http::extract::{Client, JsonOrForm};

#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
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

fn no_content_clearing_cookie(state: &AppState) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_session_cookie(&state.settings))],
    )
        .into_response()
}

pub async fn login(
    State(state): State<AppState>,
    _: FreshRequest,
    CarriedSession(carried): CarriedSession,
    Client(client): Client,
    JsonOrForm(body): JsonOrForm<LoginBody>,
) -> ApiResult<Response> {
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

pub async fn current(State(state): State<AppState>, caller: SessionCaller) -> Response {
    let auth = &caller.auth;
    axum::Json(SessionState {
        user: &auth.user,
        session: SessionView::new(&auth.session, &state.core.policy.sessions),
        csrf_token: &caller.csrf_token,
    })
    .into_response()
}

pub async fn logout(State(state): State<AppState>, caller: SessionCaller) -> ApiResult<Response> {
    state.core.logout(&caller.auth).await?;
    Ok(no_content_clearing_cookie(&state))
}

pub async fn list(State(state): State<AppState>, caller: SessionCaller) -> ApiResult<Response> {
    let sessions = state.core.sessions_of(&caller.auth.user.id).await?;
    let current_id = &caller.auth.session.id;
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
                current: &s.id == current_id,
            })
            .collect(),
    };
    Ok(axum::Json(body).into_response())
}

pub async fn revoke(
    State(state): State<AppState>,
    caller: SessionCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.core.revoke_session(&caller.auth.user.id, &id).await?;
    if id == caller.auth.session.id {
        return Ok(no_content_clearing_cookie(&state));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn logout_all(
    State(state): State<AppState>,
    caller: SessionCaller,
) -> ApiResult<Response> {
    state.core.logout_all(&caller.auth.user.id).await?;
    Ok(no_content_clearing_cookie(&state))
}
