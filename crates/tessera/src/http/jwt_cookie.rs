//! The browser JWT-cookie mode (`TESSERA_BROWSER_MODE=jwt-cookie`): the
//! access token rides in `__Host-tessera_access` and the refresh token in
//! `__Host-tessera_refresh`, both `HttpOnly`, so page scripts never see
//! either. Cookie-carried credentials are ambient, so unsafe requests need the
//! family's CSRF token (an HMAC of the family id under a server key, checked
//! without any lookup) and a same-origin `Origin`, as with sessions.

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};

use super::AppState;
use super::caller::Caller;
use super::cookies::{clear_cookie, named_cookie, read_cookie};
use super::csrf::{check_session_request, is_unsafe};
use super::error::ApiError;
use crate::config::BrowserMode;
use crate::core::error::CoreError;
use crate::core::refresh::TokenPair;
use crate::core::tokens::TokenRejection;

/// In jwt-cookie mode, the caller identified by the access cookie, if any.
pub async fn access_cookie_caller(
    parts: &Parts,
    state: &AppState,
) -> Result<Option<Caller>, ApiError> {
    if state.settings.browser_mode != BrowserMode::JwtCookie {
        return Ok(None);
    }
    let Some(token) = read_cookie(&parts.headers, state.settings.access_cookie_name()) else {
        return Ok(None);
    };
    let claims = state
        .core
        .verify_access_token(token)
        .await
        .map_err(|reason| match reason {
            TokenRejection::Unavailable => ApiError::from(CoreError::Unavailable),
            _ => ApiError::unauthenticated(),
        })?;
    if is_unsafe(&parts.method) {
        check_family_csrf(&parts.headers, state, &claims.sid)?;
    }
    Ok(Some(Caller::CookieToken(claims)))
}

/// The CSRF rules for a credential carried by cookie and bound to a family.
pub fn check_family_csrf(
    headers: &HeaderMap,
    state: &AppState,
    family_id: &str,
) -> Result<(), ApiError> {
    let expected = state
        .core
        .family_csrf_token(family_id)
        .ok_or_else(ApiError::internal)?;
    check_session_request(headers, &state.settings.public_url.origin, &expected)
}

/// The two `Set-Cookie` headers delivering a token pair to a browser.
pub fn pair_cookies(state: &AppState, pair: &TokenPair) -> [HeaderValue; 2] {
    let settings = &state.settings;
    let refresh_age = (pair.refresh_expires_at - state.core.now()).whole_seconds();
    [
        named_cookie(
            settings,
            settings.access_cookie_name(),
            &pair.access.token,
            pair.access.expires_in,
        ),
        named_cookie(
            settings,
            settings.refresh_cookie_name(),
            pair.refresh.expose(),
            refresh_age,
        ),
    ]
}

/// `Set-Cookie` headers dropping both token cookies.
pub fn clear_pair_cookies(state: &AppState) -> [HeaderValue; 2] {
    let settings = &state.settings;
    [
        clear_cookie(settings, settings.access_cookie_name()),
        clear_cookie(settings, settings.refresh_cookie_name()),
    ]
}
