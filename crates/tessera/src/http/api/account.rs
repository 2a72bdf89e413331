//! `POST /v1/account/password`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use serde::Deserialize;

use crate::core::accounts::Password;
use crate::http::AppState;
use crate::http::api::responses::{BadJson, CsrfFailed, HashingSaturated, JsonBodyErrors};
use crate::http::caller::Caller;
use crate::http::cookies::session_cookie;
use crate::http::error::ApiResult;
use crate::http::extract::{Client, Json};
use crate::http::jwt_cookie::pair_cookies;
use crate::http::openapi as doc;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PasswordChange {
    current_password: String,
    #[schema(min_length = 8, max_length = 1024)]
    new_password: String,
}

/// Changes the password; every other session, refresh family and earlier
/// access token dies. A browser caller gets fresh credentials in cookies.
#[utoipa::path(
    post,
    path = "/v1/account/password",
    tag = "accounts",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)")),
    request_body(content = PasswordChange, content_type = "application/json"),
    responses(
        (status = 204, description = "The password is changed",
            headers(("Set-Cookie" = String, description = "For a browser caller: a fresh session cookie (in jwt-cookie mode fresh access and refresh cookies)"))),
        BadJson,
        (status = 401, description = "`invalid_credentials`: the current password is wrong; `unauthenticated`: no valid session cookie or access token", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tessera\", error=\"invalid_token\"` when a presented Bearer token was refused"))),
        CsrfFailed,
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: a field is missing or not a string, or the new password is not 8 to 1024 characters or is too easy to guess (named in `error_description`)", body = doc::Error),
        HashingSaturated,
    ),
)]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    Client(client): Client,
    Json(body): Json<PasswordChange>,
) -> ApiResult<Response> {
    let session = match &caller {
        Caller::Session(s) => Some(s.auth.session.as_ref()),
        _ => None,
    };
    let rotated = state
        .core
        .change_password(
            caller.user_id(),
            Password::new(body.current_password),
            Password::new(body.new_password),
            session,
            &client,
        )
        .await?;
    if let Some(new) = rotated {
        let max_age = (new.auth.session.expires_at - state.core.now()).whole_seconds();
        let cookie = session_cookie(&state.settings, new.secret.expose(), max_age);
        return Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response());
    }
    if let Caller::CookieToken(_) = caller {
        let user = caller.user(&state).await?;
        let pair = state.core.start_browser_family((*user).clone()).await?;
        let [access, refresh] = pair_cookies(&state, &pair);
        return Ok((
            StatusCode::NO_CONTENT,
            AppendHeaders([(header::SET_COOKIE, access), (header::SET_COOKIE, refresh)]),
        )
            .into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
