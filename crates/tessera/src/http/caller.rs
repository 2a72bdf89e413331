//! Who is calling: a Bearer token or the session cookie, turned into one
//! verified identity.
//!
//! The extractors do the whole check (token verification, or cookie shape,
//! session lookup, expiry and user status) and, for cookie-authenticated
//! unsafe methods, the CSRF check, so a handler cannot forget either. A
//! request that presents a Bearer token is judged by it alone: an invalid
//! token is a 401 with the RFC 6750 challenge, never a fall-back to cookies.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::cookies::read_cookie;
use super::csrf::{check_session_request, is_unsafe};
use super::error::ApiError;
use crate::core::accounts::User;
use crate::core::error::CoreError;
use crate::core::secret::BearerSecret;
use crate::core::sessions::{Authenticated, csrf_token_for};
use crate::core::tokens::{AccessClaims, TokenRejection};

/// A request authenticated by a live session cookie (and CSRF-checked when
/// its method is unsafe).
pub struct SessionCaller {
    pub auth: Authenticated,
    secret: BearerSecret,
}

impl SessionCaller {
    /// The session's CSRF token (derived on demand: a plain check such as
    /// `/v1/verify` never needs it).
    pub fn csrf_token(&self) -> String {
        csrf_token_for(&self.secret)
    }
}

/// A request authenticated by a session cookie or by an access token.
pub enum Caller {
    Session(SessionCaller),
    /// A Bearer token in the Authorization header.
    Token(Arc<AccessClaims>),
    /// An access token in the jwt-cookie mode's cookie (CSRF-checked).
    CookieToken(Arc<AccessClaims>),
}

impl Caller {
    pub fn user_id(&self) -> &str {
        match self {
            Caller::Session(s) => &s.auth.user.id,
            Caller::Token(c) | Caller::CookieToken(c) => &c.sub,
        }
    }

    pub fn roles(&self) -> &[String] {
        match self {
            Caller::Session(s) => &s.auth.user.roles,
            Caller::Token(c) | Caller::CookieToken(c) => &c.roles,
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Caller::Session(_) => "session",
            Caller::Token(_) | Caller::CookieToken(_) => "jwt",
        }
    }

    /// The session or refresh family this credential belongs to.
    pub fn sid(&self) -> &str {
        match self {
            Caller::Session(s) => &s.auth.session.id,
            Caller::Token(c) | Caller::CookieToken(c) => &c.sid,
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles().iter().any(|r| r == role)
    }

    /// The caller's user object (for tokens, read through the user cache).
    pub async fn user(&self, state: &AppState) -> Result<Arc<User>, ApiError> {
        match self {
            Caller::Session(s) => Ok(Arc::clone(&s.auth.user)),
            Caller::Token(c) | Caller::CookieToken(c) => state
                .core
                .active_user(&c.sub)
                .await
                .map_err(|e| ApiError::from(e).with_bearer_challenge()),
        }
    }
}

/// The session secret from the request's cookie, if it has the issued shape.
pub fn session_secret(parts: &Parts, state: &AppState) -> Option<BearerSecret> {
    read_cookie(&parts.headers, state.settings.session_cookie_name()).and_then(BearerSecret::parse)
}

/// The Bearer token of the request: `Some(Err)` when an Authorization header
/// is present but is not a usable Bearer credential.
fn bearer_token(parts: &Parts) -> Option<Result<&str, ApiError>> {
    let value = parts.headers.get(header::AUTHORIZATION)?;
    let invalid = || ApiError::unauthenticated().with_bearer_challenge();
    let Ok(text) = value.to_str() else {
        return Some(Err(invalid()));
    };
    let Some((scheme, token)) = text.split_once(' ') else {
        return Some(Err(invalid()));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Some(Err(invalid()));
    }
    let token = token.trim();
    if token.is_empty() {
        return Some(Err(invalid()));
    }
    Some(Ok(token))
}

async fn session_caller(parts: &Parts, state: &AppState) -> Result<SessionCaller, ApiError> {
    let secret = session_secret(parts, state).ok_or_else(ApiError::unauthenticated)?;
    let auth = state.core.authenticate_session(&secret).await?;
    if is_unsafe(&parts.method) {
        check_session_request(
            &parts.headers,
            &state.settings.public_url.origin,
            &csrf_token_for(&secret),
        )?;
    }
    Ok(SessionCaller { auth, secret })
}

impl FromRequestParts<AppState> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        session_caller(parts, state).await
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(token) = bearer_token(parts) {
            let claims =
                state
                    .core
                    .verify_access_token(token?)
                    .await
                    .map_err(|reason| match reason {
                        TokenRejection::Unavailable => ApiError::from(CoreError::Unavailable),
                        reason => {
                            tracing::debug!(%reason, "bearer token refused");
                            ApiError::unauthenticated().with_bearer_challenge()
                        }
                    })?;
            return Ok(Caller::Token(claims));
        }
        if let Some(caller) = super::jwt_cookie::access_cookie_caller(parts, state).await? {
            return Ok(caller);
        }
        session_caller(parts, state).await.map(Caller::Session)
    }
}
