//! Who is calling: the session cookie turned into one verified identity.
//!
//! The extractor does the whole check (cookie shape, session lookup, expiry,
//! user status) and, for unsafe methods, the CSRF check, so a handler that
//! takes a [`SessionCaller`] cannot forget either.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::cookies::read_cookie;
use super::csrf::{check_session_request, is_unsafe};
use super::error::ApiError;
use crate::core::secret::BearerSecret;
use crate::core::sessions::{Authenticated, csrf_token_for};

/// A request authenticated by a live session cookie (and CSRF-checked when
/// its method is unsafe).
pub struct SessionCaller {
    pub auth: Authenticated,
    pub csrf_token: String,
}

/// The session secret from the request's cookie, if it has the issued shape.
pub fn session_secret(parts: &Parts, state: &AppState) -> Option<BearerSecret> {
    read_cookie(&parts.headers, state.settings.session_cookie_name()).and_then(BearerSecret::parse)
}

impl FromRequestParts<AppState> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = session_secret(parts, state).ok_or_else(ApiError::unauthenticated)?;
        let auth = state.core.authenticate_session(&secret).await?;
        let csrf_token = csrf_token_for(&secret);
        if is_unsafe(&parts.method) {
            check_session_request(
                &parts.headers,
                &state.settings.public_url.origin,
                &csrf_token,
            )?;
        }
        Ok(SessionCaller { auth, csrf_token })
    }
}
