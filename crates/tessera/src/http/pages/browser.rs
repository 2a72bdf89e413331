//! The browser's credential on the pages, in either browser mode.
//!
//! - `session` (the default): one opaque session cookie; every page looks
//!   the session up.
//! - `jwt-cookie`: the access token in `__Host-tessera_access` and the
//!   refresh token in `__Host-tessera_refresh` (both `HttpOnly`), as
//!   `POST /v1/sessions` delivers them. A page checks the access token
//!   (signature, claims, revocations) and reads the user through the user
//!   cache, so a suspension or a role change holds on the next page. The
//!   family's CSRF token (an HMAC of the family id) guards the forms; it
//!   survives every rotation, so an open page's forms keep working.
//!
//! An access token lives minutes, a page stays open longer. So in
//! jwt-cookie mode every page request whose access cookie is missing or
//! no longer valid, but which carries a refresh cookie, first rotates the
//! refresh token ([`refresh_expired_access`]): the page then sees the new
//! access token, and the response sets both new cookies. This is also what
//! brings a browser back from a proxy's `/login?return_to=…` once its
//! access cookie has expired. A refresh that fails (the family was
//! revoked, the account suspended, the token reused) drops both cookies.
//!
//! Several page requests of one browser can carry the same expired access
//! token at once (tabs restored together, an app's requests sent to
//! `/login` by a proxy). Rotating the same refresh token twice is reuse,
//! and reuse revokes the family; so on one node, requests presenting the
//! same refresh token within a few seconds share the one rotation
//! ([`Tessera::refresh_browser`](crate::core::Tessera::refresh_browser)).
//! A replay from elsewhere, or after that grace, is still reuse.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::support::{PageError, SignedIn};
use crate::config::BrowserMode;
use crate::core::accounts::{Password, User};
use crate::core::error::CoreError;
use crate::core::refresh::TokenPair;
use crate::core::secret::BearerSecret;
use crate::core::sessions::{Authenticated, ClientInfo, SessionRecord, csrf_token_for};
use crate::core::tokens::TokenRejection;
use crate::http::AppState;
use crate::http::caller::session_secret;
use crate::http::cookies::{clear_session_cookie, read_cookie, session_cookie};
use crate::http::csrf::{is_unsafe, request_provenance};
use crate::http::extract::Client;
use crate::http::jwt_cookie::{clear_pair_cookies, pair_cookies};

/// What a signed-in page request stands on.
pub enum Via {
    /// A server-side session (`session` mode).
    Session(Arc<SessionRecord>),
    /// An access token of this refresh family (`jwt-cookie` mode).
    Family(String),
}

impl Via {
    /// The session id or the family id: what `current` marks on /account.
    pub fn id(&self) -> &str {
        match self {
            Via::Session(s) => &s.id,
            Via::Family(id) => id,
        }
    }
}

fn jwt_cookie(state: &AppState) -> bool {
    state.settings.browser_mode == BrowserMode::JwtCookie
}

/// `Set-Cookie` headers that drop the browser's credential.
pub fn clearing_cookies(state: &AppState) -> Vec<HeaderValue> {
    if jwt_cookie(state) {
        clear_pair_cookies(state).into()
    } else {
        vec![clear_session_cookie(&state.settings)]
    }
}

/// Whether the request carries a credential cookie of this mode (valid or
/// not).
fn carries_credential(headers: &HeaderMap, state: &AppState) -> bool {
    let s = &state.settings;
    if jwt_cookie(state) {
        read_cookie(headers, s.access_cookie_name()).is_some()
            || read_cookie(headers, s.refresh_cookie_name()).is_some()
    } else {
        read_cookie(headers, s.session_cookie_name()).is_some()
    }
}

/// The signed-in browser of the request: `Ok(Ok(who))` when signed in,
/// `Ok(Err(dead))` when not (`dead`: it carries credential cookies that no
/// longer work and should be dropped), `Err` when a store cannot tell
/// (fail closed).
pub async fn current(parts: &Parts, state: &AppState) -> Result<Result<SignedIn, bool>, PageError> {
    if jwt_cookie(state) {
        return current_by_token(parts, state).await;
    }
    let carries_cookie = carries_credential(&parts.headers, state);
    let Some(secret) = session_secret(parts, state) else {
        return Ok(Err(carries_cookie));
    };
    match state.core.authenticate_session(&secret).await {
        Ok(Authenticated { user, session }) => Ok(Ok(SignedIn {
            user,
            via: Via::Session(session),
            csrf_token: csrf_token_for(&secret),
        })),
        Err(CoreError::Unauthenticated) => Ok(Err(true)),
        Err(e) => Err(PageError::core(e)),
    }
}

/// jwt-cookie mode: the access cookie's token, checked as any access token
/// is, and its user as the store has it now.
async fn current_by_token(
    parts: &Parts,
    state: &AppState,
) -> Result<Result<SignedIn, bool>, PageError> {
    let dead = carries_credential(&parts.headers, state);
    let Some(token) = read_cookie(&parts.headers, state.settings.access_cookie_name()) else {
        return Ok(Err(dead));
    };
    let claims = match state.core.verify_access_token(token).await {
        Ok(claims) => claims,
        Err(TokenRejection::Unavailable) => return Err(PageError::core(CoreError::Unavailable)),
        Err(_) => return Ok(Err(true)),
    };
    let user = match state.core.active_user(&claims.sub).await {
        Ok(user) => user,
        Err(CoreError::Unauthenticated) => return Ok(Err(true)),
        Err(e) => return Err(PageError::core(e)),
    };
    let Some(csrf_token) = state.core.family_csrf_token(&claims.sid) else {
        tracing::error!("jwt-cookie mode without a CSRF key: pages cannot check forms");
        return Err(PageError::core(CoreError::Unavailable));
    };
    Ok(Ok(SignedIn {
        user,
        via: Via::Family(claims.sid.clone()),
        csrf_token,
    }))
}

impl SignedIn {
    /// Ends this browser's session, or its refresh family and the access
    /// tokens issued from it.
    pub async fn sign_out(&self, state: &AppState) -> Result<(), CoreError> {
        match &self.via {
            Via::Session(session) => {
                let auth = Authenticated {
                    user: Arc::clone(&self.user),
                    session: Arc::clone(session),
                };
                state.core.logout(&auth).await
            }
            Via::Family(id) => state.core.end_sid(&self.user.id, id).await,
        }
    }
}

/// A page sign-in that did not work, with the cookies to drop (what the
/// browser carried was ended first, even though the sign-in then failed).
pub struct SignInFailed {
    pub error: CoreError,
    pub clear: Vec<HeaderValue>,
}

/// Signs a browser in with a password: ends whatever credential it
/// carried (no fixation), then starts a session or (jwt-cookie) a refresh
/// family, and returns the `Set-Cookie` headers that deliver it.
pub async fn sign_in(
    state: &AppState,
    headers: &HeaderMap,
    email: &str,
    password: Password,
    client: ClientInfo,
) -> Result<Vec<HeaderValue>, SignInFailed> {
    let carried =
        read_cookie(headers, state.settings.session_cookie_name()).and_then(BearerSecret::parse);
    let failed = |error| SignInFailed {
        error,
        clear: if carries_credential(headers, state) {
            clearing_cookies(state)
        } else {
            Vec::new()
        },
    };
    if !jwt_cookie(state) {
        let new = state
            .core
            .login(email, password, carried.as_ref(), client)
            .await
            .map_err(failed)?;
        let max_age = (new.auth.session.expires_at - state.core.now()).whole_seconds();
        return Ok(vec![session_cookie(
            &state.settings,
            new.secret.expose(),
            max_age,
        )]);
    }
    if let Some(refresh) = read_cookie(headers, state.settings.refresh_cookie_name()) {
        state
            .core
            .revoke_presented_token(refresh, Some("refresh_token"), &client)
            .await
            .map_err(failed)?;
    }
    let pair = state
        .core
        .login_with_tokens(email, password, carried.as_ref(), &client)
        .await
        .map_err(failed)?;
    Ok(pair_cookies(state, &pair).into())
}

/// The cookies of a new credential for `user`, whose password just
/// changed (everything of theirs was revoked): a new refresh family in
/// jwt-cookie mode. (In session mode the core rotates the session itself.)
pub async fn fresh_family_cookies(
    state: &AppState,
    user: &User,
) -> Result<Vec<HeaderValue>, CoreError> {
    let pair = state.core.start_browser_family(user.clone()).await?;
    Ok(pair_cookies(state, &pair).into())
}

// ---------------------------------------------------------------------------
// Refreshing an expired access cookie on a page request

/// Middleware of the pages in jwt-cookie mode (see the module docs).
pub async fn refresh_expired_access(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let Some(presented) = refresh_needed(&parts, &state).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let Ok(Client(client)) = Client::from_request_parts(&mut parts, &state).await;
    let outcome = state.core.refresh_browser(&presented, &client).await;
    match outcome {
        Ok(pair) => {
            let cookies = pair_cookies(&state, &pair);
            replace_credential_cookies(&mut parts.headers, &state, &pair);
            let response = next.run(Request::from_parts(parts, body)).await;
            set_unless_handled(response, &state, cookies.into())
        }
        // The refresh token is spent, expired or its family revoked: the
        // page goes on signed out, and the browser drops both cookies.
        Err(CoreError::InvalidGrant(_)) => {
            let response = next.run(Request::from_parts(parts, body)).await;
            set_unless_handled(response, &state, clearing_cookies(&state))
        }
        // Fail closed: a store down, too many refreshes from this address.
        Err(e) => PageError::core(e).into_response(),
    }
}

/// The refresh token to rotate before this page request, if any: only when
/// the access cookie is missing or refused, and, for a form post, only
/// when the post comes from this server's own pages (the form's CSRF token
/// is checked by the page itself afterwards).
async fn refresh_needed(parts: &Parts, state: &AppState) -> Option<String> {
    let settings = &state.settings;
    let refresh = read_cookie(&parts.headers, settings.refresh_cookie_name())?;
    if let Some(access) = read_cookie(&parts.headers, settings.access_cookie_name()) {
        match state.core.verify_access_token(access).await {
            Ok(_) => return None,
            // The page itself fails closed on the same check.
            Err(TokenRejection::Unavailable) => return None,
            Err(_) => {}
        }
    }
    if is_unsafe(&parts.method)
        && request_provenance(&parts.headers, &settings.public_url.origin).is_err()
    {
        return None;
    }
    Some(refresh.to_owned())
}

/// Puts the new tokens in the request's `Cookie` header in place of the
/// old ones, so the page and its extractors see them.
fn replace_credential_cookies(headers: &mut HeaderMap, state: &AppState, pair: &TokenPair) {
    let settings = &state.settings;
    let (access, refresh) = (
        settings.access_cookie_name(),
        settings.refresh_cookie_name(),
    );
    let mut kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n).trim();
            !pair.is_empty() && name != access && name != refresh
        })
        .map(str::to_owned)
        .collect();
    kept.push(format!("{access}={}", pair.access.token));
    kept.push(format!("{refresh}={}", pair.refresh.expose()));
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
        headers.insert(header::COOKIE, value);
    }
}

/// Appends `cookies` to the response unless the page set or cleared
/// Tessera's cookies itself (a sign-out, a new sign-in): its word is last.
fn set_unless_handled(
    mut response: Response,
    state: &AppState,
    cookies: Vec<HeaderValue>,
) -> Response {
    let settings = &state.settings;
    let names = [
        settings.access_cookie_name(),
        settings.refresh_cookie_name(),
    ];
    let handled = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| names.iter().any(|n| v.starts_with(&format!("{n}="))));
    if !handled {
        for cookie in cookies {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    response
}
