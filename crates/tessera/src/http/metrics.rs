//! `GET /metrics` and the middleware that measures every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::cookies::read_cookie;

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
fn credential_kind(req: &Request, state: &AppState) -> &'static str {
    let headers = req.headers();
    if headers.contains_key(header::AUTHORIZATION)
        || read_cookie(headers, state.settings.access_cookie_name()).is_some()
    {
        "jwt"
    } else if read_cookie(headers, state.settings.session_cookie_name()).is_some() {
        "session"
    } else {
        "none"
    }
}

/// Records latency by route (the route template, never the raw path, so
/// label cardinality stays bounded) and verification outcomes.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = req.method().as_str().to_owned();
    let verification =
        matches!(route.as_str(), "/v1/verify" | "/v1/me").then(|| credential_kind(&req, &state));
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let telemetry = &state.core.telemetry;
    telemetry.observe_request(&route, &method, status, started.elapsed().as_secs_f64());
    if let Some(kind) = verification {
        let outcome = match status {
            200 => "ok",
            401 => "unauthenticated",
            403 => "forbidden",
            429 => "rate_limited",
            _ => "error",
        };
        telemetry.count(
            "tessera_verifications_total",
            &[("method", kind), ("outcome", outcome)],
        );
    }
    response
}
