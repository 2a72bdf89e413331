//! Server-rendered HTML pages (`/login`, `/register`, `/forgot`, `/reset`,
//! `/account`, `/admin`).
//!
//! Plain HTML forms that work without JavaScript: each POSTs form-encoded
//! and answers with a 303 to a page (post/redirect/get), or re-renders its
//! page with the error. Pages sit on the same core as the API, so they keep
//! its guarantees (no fixation, same answer for unknown emails and wrong
//! passwords, revocation at once). Every response of this router carries a
//! strict CSP (no inline script or style, no framing), `nosniff`,
//! `Referrer-Policy: same-origin` (with `no-referrer` browsers would send
//! `Origin: null` on the pages' own posts) and `no-store`; the stylesheet is
//! served by Tessera itself and may be cached.
//!
//! The pages work in both browser modes: on a session cookie (`session`),
//! or on the access and refresh cookies (`jwt-cookie`), see [`browser`].

mod account;
mod admin;
mod auth;
pub mod brand;
mod browser;
mod reset;
mod support;
mod verify;

pub use brand::check_logo_url;
pub use support::{CSRF_FIELD, check_session_form, status_page};

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::AppState;
use crate::config::BrowserMode;

/// The pages' stylesheet, embedded in the binary.
const STYLESHEET: &str = include_str!("../../../static/tessera.css");

/// Where pages link the stylesheet (versioned so a new release is fetched
/// despite the hour of caching).
pub const STYLESHEET_PATH: &str = concat!("/static/tessera.css?v=", env!("CARGO_PKG_VERSION"));

/// The pages' routes, merged into the main router.
pub fn router(state: &AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(auth::root))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/register", get(auth::register_page).post(auth::register))
        .route("/logout", post(auth::logout))
        .route("/forgot", get(reset::forgot_page).post(reset::forgot))
        .route("/reset", get(reset::reset_page).post(reset::reset))
        .route("/verify-email", get(verify::page).post(verify::confirm))
        .route("/verify-email/resend", post(verify::resend))
        .route("/account", get(account::page))
        .route("/account/password", post(account::change_password))
        .route("/account/sessions/revoke", post(account::revoke_session))
        .route("/account/logout-all", post(account::logout_all))
        .route("/admin", get(admin::page))
        .route("/admin/users/roles", post(admin::set_roles))
        .route("/admin/users/status", post(admin::set_status))
        .route("/admin/users/revoke", post(admin::revoke_user))
        .route("/admin/users/create", post(admin::users::create))
        .route("/admin/users/invite", post(admin::invitations::create))
        .route("/admin/users/password", post(admin::users::set_password))
        .route("/admin/users/email", post(admin::users::set_email))
        .route("/admin/users/delete", post(admin::users::delete))
        .route("/admin/keys/rotate", post(admin::rotate_keys))
        .route("/admin/clients/create", post(admin::clients::create))
        .route("/admin/clients/status", post(admin::clients::set_status))
        .route("/admin/clients/secret", post(admin::clients::rotate_secret))
        .route("/admin/clients/delete", post(admin::clients::delete));
    // jwt-cookie mode: a page whose access cookie expired refreshes it.
    let pages = if state.settings.browser_mode == BrowserMode::JwtCookie {
        pages.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browser::refresh_expired_access,
        ))
    } else {
        pages
    };
    pages
        .route("/static/tessera.css", get(stylesheet))
        .layer(axum::middleware::map_response(security_headers))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// The headers every page response carries; `no-store` unless the handler
/// chose a cache policy (only the stylesheet does).
async fn security_headers(mut response: Response) -> Response {
    page_headers(response.headers_mut());
    response
}

/// The security headers of a page (see [`security_headers`]); also put on
/// the HTML 404 and 405 pages the fallback shows browsers. The CSP allows
/// the configured logo's origin ([`brand::content_security_policy`]).
pub(crate) fn page_headers(headers: &mut axum::http::HeaderMap) {
    // `logo_url` was checked at start to hold nothing a header cannot; the
    // strict policy should that ever fail.
    let csp = HeaderValue::from_str(&brand::content_security_policy())
        .unwrap_or_else(|_| HeaderValue::from_static(brand::CONTENT_SECURITY_POLICY));
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A page that chose a stricter policy keeps it (`/reset`, whose
    // address carries a token: `no-referrer`).
    if !headers.contains_key(header::REFERRER_POLICY) {
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
