//! `GET /metrics` and the middleware that measures every request.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::cookies::read_cookie;
use crate::config::BrowserMode;

/// Prometheus text exposition format 0.0.4.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.core.render_metrics().await;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Which credential a request presented, for the verification counters.
///
/// The one that decides, as [`super::caller::Caller`] picks it: an
/// `Authorization` header, else the access-token cookie when browsers are on
/// tokens, else the session cookie.
pub(super) fn credential_kind(headers: &HeaderMap, state: &AppState) -> &'static str {
    let access_cookie = || {
        state.settings.browser_mode == BrowserMode::JwtCookie
            && read_cookie(headers, state.settings.access_cookie_name()).is_some()
    };
    if headers.contains_key(header::AUTHORIZATION) || access_cookie() {
        "jwt"
    } else if read_cookie(headers, state.settings.session_cookie_name()).is_some() {
        "session"
    } else {
        "none"
    }
}

/// The method as a metrics label: clients may send any extension method, and
/// each distinct label value is a new time series kept for ever.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Records latency by route (the route template, never the raw path, so
/// label cardinality stays bounded) and verification outcomes.
pub(super) fn observe(
    state: &AppState,
    route: &str,
    method: &Method,
    status: StatusCode,
    elapsed: Duration,
    verification: Option<&'static str>,
) {
    let telemetry = &state.core.telemetry;
    telemetry.observe_request(route, method_label(method), status.as_u16(), elapsed);
    if let Some(kind) = verification {
        telemetry.count_verification(kind, status.as_u16());
    }
}
