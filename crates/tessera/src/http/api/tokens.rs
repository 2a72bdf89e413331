//! The OAuth-facing endpoints: `POST /v1/token` (RFC 6749 password and
//! refresh grants), `/v1/token/revoke` (RFC 7009), `/v1/token/introspect`
//! (RFC 7662), and the session-to-token exchange `POST /v1/session/token`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::config::BrowserMode;
use crate::core::accounts::Password;
use crate::core::error::CoreError;
use crate::core::refresh::TokenPair;
use crate::core::sessions::ClientInfo;
use crate::http::AppState;
use crate::http::api::responses::{
    FailClosed, FormBodyErrors, HashingSaturated, LoginRateLimited, NoSession,
};
use crate::http::caller::SessionCaller;
use crate::http::cookies::read_cookie;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Client, JsonOrForm};
use crate::http::jwt_cookie::{check_family_csrf, pair_cookies};
use crate::http::openapi as doc;

/// What `POST /v1/token` reads: every field optional, so that a missing or
/// wrong one is an RFC 6749 error rather than a 422. The document describes
/// the body with [`TokenGrant`] instead.
#[derive(Deserialize, Default)]
pub struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
}

/// `grant_type` of the password grant.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PasswordGrantType {
    Password,
}

/// `grant_type` of the refresh grant.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefreshTokenGrantType {
    RefreshToken,
}

/// RFC 6749 §4.3: the resource owner password credentials grant.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PasswordGrant {
    #[schema(inline)]
    pub grant_type: PasswordGrantType,
    /// The account's email.
    #[schema(example = "alice@example.com")]
    pub username: String,
    #[schema(
        min_length = 8,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    pub password: String,
    /// Space-separated scopes, each in `TESSERA_ALLOWED_SCOPES`.
    pub scope: Option<String>,
    /// A public client's id, one of `TESSERA_PUBLIC_CLIENTS` (none: the
    /// token is Tessera's own, `tessera`); any other id is `invalid_grant`.
    pub client_id: Option<String>,
}

/// RFC 6749 §6: refreshing. In jwt-cookie mode `refresh_token` may be left
/// out: the refresh cookie is used then (under the CSRF rules).
#[derive(Serialize, utoipa::ToSchema)]
pub struct RefreshTokenGrant {
    #[schema(inline)]
    pub grant_type: RefreshTokenGrantType,
    #[schema(min_length = 1)]
    pub refresh_token: String,
    /// At most the scopes of the original grant.
    pub scope: Option<String>,
}

/// The body of `POST /v1/token`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TokenGrant {
    Password(PasswordGrant),
    RefreshToken(RefreshTokenGrant),
}

#[derive(Serialize, utoipa::ToSchema)]
struct TokenResponse<'a> {
    /// A JWT (RFC 9068).
    access_token: &'a str,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds.
    expires_in: i64,
    /// Opaque and single-use: each refresh returns a new one.
    refresh_token: &'a str,
    /// The granted scopes, space-separated; empty when none was granted.
    #[schema(example = "read:invoices")]
    scope: &'a str,
}

/// `POST /v1/token` in jwt-cookie mode when the refresh token came from its
/// cookie: the new tokens are in `Set-Cookie`, never in the body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CookieRefresh<'a> {
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
    /// The granted scopes, space-separated; empty when none was granted.
    #[schema(example = "read:invoices")]
    pub scope: &'a str,
    /// The refresh family's CSRF token.
    // `None` (sent as `null`) only without the CSRF key, which the server
    // always has once started; the document says a string.
    #[schema(value_type = String)]
    pub csrf_token: Option<&'a str>,
}

/// `POST /v1/session/token`: a short-lived access token tied to the session.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionToken<'a> {
    pub access_token: &'a str,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
}

fn oauth_error(code: &'static str, description: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, description)
}

/// Token-endpoint errors speak RFC 6749.
fn token_error(e: CoreError) -> ApiError {
    match e {
        CoreError::InvalidCredentials => {
            oauth_error("invalid_grant", "the email or password is incorrect")
        }
        CoreError::AccountSuspended => oauth_error("invalid_grant", "this account is suspended"),
        CoreError::Validation(d) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", d),
        other => other.into(),
    }
}

/// Body errors at the token endpoint are `invalid_request` (RFC 6749 §5.2),
/// except size and media-type errors, which keep their status.
fn body_error(e: ApiError) -> ApiError {
    if e.status == StatusCode::UNPROCESSABLE_ENTITY {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.description)
    } else {
        e
    }
}

fn required<'a>(value: &'a Option<String>, name: &'static str) -> ApiResult<&'a str> {
    value.as_deref().filter(|v| !v.is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the {name} parameter is required"),
        )
    })
}

fn pair_response(pair: &TokenPair) -> Response {
    axum::Json(TokenResponse {
        access_token: &pair.access.token,
        token_type: "Bearer",
        expires_in: pair.access.expires_in,
        refresh_token: pair.refresh.expose(),
        scope: pair.scope.as_deref().unwrap_or(""),
    })
    .into_response()
}

/// The OAuth 2.0 token endpoint: the password grant starts a refresh family,
/// the refresh grant rotates it (a reused refresh token revokes the family).
#[utoipa::path(
    post,
    path = "/v1/token",
    tag = "tokens",
    security((), ("refreshCookie" = [])),
    params(("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "jwt-cookie mode, refresh from the cookie: the refresh family's `csrf_token`")),
    request_body(content(
        (TokenGrant = "application/x-www-form-urlencoded"),
        (TokenGrant = "application/json"),
    )),
    responses(
        (status = 200, description = "A new token pair (in jwt-cookie mode, refreshing from the cookie: the pair in cookies and the family's CSRF token in the body)",
            body = doc::OneOf<TokenResponse<'static>, CookieRefresh<'static>>,
            headers(("Set-Cookie" = String, description = "jwt-cookie mode, refresh from the cookie: the new access and refresh cookies"))),
        (status = 400, description = "`invalid_request`: the body cannot be read or a parameter is missing or malformed; `invalid_grant`: wrong credentials, a suspended account, an invalid `client_id`, or a dead or reused refresh token; `unsupported_grant_type`; `invalid_scope`", body = doc::Error),
        (status = 403, description = "`email_not_verified`: the password grant, `email_verification` is `required` and the account's address is not verified (said only after the password matched); `csrf_failed`: jwt-cookie mode, refresh from the cookie without the right `X-CSRF-Token` or with a foreign `Origin`", body = doc::Error),
        FormBodyErrors,
        LoginRateLimited,
        HashingSaturated,
    ),
)]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Client(client): Client,
    body: Result<JsonOrForm<TokenRequest>, ApiError>,
) -> ApiResult<Response> {
    let JsonOrForm(req) = body.map_err(body_error)?;
    match required(&req.grant_type, "grant_type")? {
        "password" => {
            let username = required(&req.username, "username")?;
            let password = required(&req.password, "password")?;
            let pair = state
                .core
                .password_grant(
                    username,
                    Password::new(password.to_owned()),
                    req.client_id.as_deref(),
                    req.scope.as_deref(),
                    &client,
                )
                .await
                .map_err(token_error)?;
            Ok(pair_response(&pair))
        }
        "refresh_token" => match req.refresh_token.as_deref().filter(|t| !t.is_empty()) {
            Some(presented) => {
                let pair = state
                    .core
                    .refresh_grant(presented, req.scope.as_deref(), &client)
                    .await
                    .map_err(token_error)?;
                Ok(pair_response(&pair))
            }
            None => refresh_from_cookie(&state, &headers, &client).await,
        },
        _ => Err(oauth_error(
            "unsupported_grant_type",
            "grant_type must be password or refresh_token",
        )),
    }
}

/// jwt-cookie mode: the refresh token comes from its cookie, under the CSRF
/// rules, and both cookies are reset. The tokens never appear in the body.
async fn refresh_from_cookie(
    state: &AppState,
    headers: &HeaderMap,
    client: &ClientInfo,
) -> ApiResult<Response> {
    let presented = (state.settings.browser_mode == BrowserMode::JwtCookie)
        .then(|| read_cookie(headers, state.settings.refresh_cookie_name()))
        .flatten()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the refresh_token parameter is required",
            )
        })?;
    let Some((family, _, _)) = state
        .core
        .refresh_token_owner(presented)
        .await
        .map_err(token_error)?
    else {
        return Err(oauth_error(
            "invalid_grant",
            "the refresh token is invalid, expired or revoked",
        ));
    };
    check_family_csrf(headers, state, &family.id)?;
    let pair = state
        .core
        .refresh_grant(presented, None, client)
        .await
        .map_err(token_error)?;
    let [access, refresh] = pair_cookies(state, &pair);
    let csrf_token = state.core.family_csrf_token(&pair.family_id);
    Ok((
        AppendHeaders([(header::SET_COOKIE, access), (header::SET_COOKIE, refresh)]),
        axum::Json(CookieRefresh {
            token_type: "Bearer",
            expires_in: pair.access.expires_in,
            scope: pair.scope.as_deref().unwrap_or(""),
            csrf_token: csrf_token.as_deref(),
        }),
    )
        .into_response())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct RevokeRequest {
    /// An access token or a refresh token.
    #[schema(value_type = String, min_length = 1)]
    token: Option<String>,
    #[schema(example = "refresh_token")]
    token_type_hint: Option<String>,
}

/// RFC 7009: 200 whatever the token was, so callers learn nothing.
#[utoipa::path(
    post,
    path = "/v1/token/revoke",
    operation_id = "revoke_token",
    tag = "tokens",
    request_body(content(
        (RevokeRequest = "application/x-www-form-urlencoded"),
        (RevokeRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "Done, whatever the token was (RFC 7009): a refresh token revokes its family, an access token is denied until its `exp`"),
        (status = 400, description = "`invalid_request`: the body cannot be read or `token` is missing", body = doc::Error),
        FormBodyErrors,
        FailClosed,
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Client(client): Client,
    body: Result<JsonOrForm<RevokeRequest>, ApiError>,
) -> ApiResult<Response> {
    let JsonOrForm(req) = body.map_err(body_error)?;
    let token = required(&req.token, "token")?;
    state
        .core
        .revoke_presented_token(token, req.token_type_hint.as_deref(), &client)
        .await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct IntrospectRequest {
    /// An access token.
    #[schema(value_type = String, min_length = 1)]
    token: Option<String>,
}

/// HTTP Basic credentials of a service client.
pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// RFC 7662 introspection for service clients: `{"active": false}` for
/// anything invalid, expired or revoked.
#[utoipa::path(
    post,
    path = "/v1/token/introspect",
    tag = "tokens",
    security(("basicAuth" = [])),
    request_body(content(
        (IntrospectRequest = "application/x-www-form-urlencoded"),
        (IntrospectRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "What the token is, or `{\"active\": false}`", body = crate::core::introspect::Introspection),
        (status = 400, description = "`invalid_request`: the body cannot be read or `token` is missing", body = doc::Error),
        (status = 401, description = "`invalid_client`: missing or wrong service client credentials", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "Always sent: `Basic realm=\"tessera\"` (the Bearer challenge instead when the Authorization header is over 8 KiB)"))),
        FormBodyErrors,
        FailClosed,
    ),
)]
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonOrForm<IntrospectRequest>, ApiError>,
) -> ApiResult<Response> {
    let (id, secret) = basic_credentials(&headers).ok_or(CoreError::InvalidClient)?;
    state.core.authenticate_client(&id, &secret).await?;
    let JsonOrForm(req) = body.map_err(body_error)?;
    let token = required(&req.token, "token")?;
    let answer = state.core.introspect(token).await?;
    Ok(axum::Json(answer).into_response())
}

/// Session-to-token exchange: a short-lived access token for the signed-in
/// browser, tied to its session (revoked with it, never outliving it).
#[utoipa::path(
    post,
    path = "/v1/session/token",
    tag = "sessions",
    security(("sessionCookie" = [])),
    params(("X-CSRF-Token" = String, Header, description = "Required: the session's `csrf_token`")),
    responses(
        (status = 200, description = "A short-lived access token tied to the session", body = SessionToken),
        NoSession,
        (status = 403, description = "`csrf_failed`: the request without the right `X-CSRF-Token`, or with a foreign `Origin`", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn session_token(
    State(state): State<AppState>,
    caller: SessionCaller,
) -> ApiResult<Response> {
    let token = state.core.session_access_token(&caller.auth).await?;
    Ok(axum::Json(SessionToken {
        access_token: &token.token,
        token_type: "Bearer",
        expires_in: token.expires_in,
    })
    .into_response())
}
