//! Cross-cutting request and response rules: size limits checked before
//! anything is parsed, every error in the contract's JSON shape, `no-store` on
//! everything the API returns, metrics, request logs without secrets.

use std::any::Any;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::extract::MAX_BODY_BYTES;

/// Largest `Cookie` or `Authorization` header accepted (8 KiB).
pub const MAX_CREDENTIAL_HEADER_BYTES: usize = 8 * 1024;

/// Everything every request goes through, as one middleware: each axum
/// middleware layer costs a boxed service clone and a boxed future per
/// request, which a verify endpoint answering in microseconds notices.
/// In order: size limits checked before anything is parsed, the handler,
/// the contract's error shape and response headers, latency and
/// verification metrics, and a debug-level request log (method, path
/// without the query, status, latency; never headers). The direct
/// `GET /v1/verify` path (`api::identity::verify_direct`) goes through the
/// same steps by calling [`Arrival`] and [`refuse_oversized`] itself.
pub async fn edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let seen = Arrival::of(&req, route, &state);
    let response = match refuse_oversized(&req) {
        Some(refused) => refused,
        None => next.run(req).await,
    };
    seen.depart(&state, route, response)
}

/// The access log's target: one line per request at `info`; silenced with
/// `TESSERA_LOG=info,tessera::access=warn`.
pub const ACCESS_LOG: &str = "tessera::access";

/// What `edge` notes about a request before running it, to measure and log
/// it afterwards.
pub(super) struct Arrival {
    started: Instant,
    method: Method,
    verification: Option<&'static str>,
    logged_path: Option<String>,
}

impl Arrival {
    pub(super) fn of<B>(req: &axum::http::Request<B>, route: &str, state: &AppState) -> Self {
        let mut seen = Self::unlabelled(req);
        if matches!(route, "/v1/verify" | "/v1/me") {
            seen.verification = Some(super::metrics::credential_kind(req.headers(), state));
        }
        seen
    }

    /// An arrival whose credential kind the caller sets once it knows it
    /// (with [`Arrival::verified_with`]), instead of reading it from the
    /// headers up front.
    pub(super) fn unlabelled<B>(req: &axum::http::Request<B>) -> Self {
        Self {
            started: Instant::now(),
            method: req.method().clone(),
            verification: None,
            logged_path: tracing::enabled!(target: ACCESS_LOG, tracing::Level::DEBUG)
                .then(|| req.uri().path().to_owned()),
        }
    }

    /// Counts the request as a verification with this kind of credential.
    pub(super) fn verified_with(&mut self, kind: &'static str) {
        self.verification = Some(kind);
    }

    /// The contract's error shape and response headers, then metrics and
    /// the request log.
    pub(super) fn depart(self, state: &AppState, route: &str, response: Response) -> Response {
        let response = contract_errors(response);
        let status = response.status();
        let elapsed = self.started.elapsed();
        let method = &self.method;
        super::metrics::observe(state, route, method, status, elapsed, self.verification);
        if status.is_server_error() {
            tracing::error!(%method, route, status = status.as_u16(), "request failed");
        }
        // The access log: the route's template, never the raw path or the
        // query string, which may carry a token (an unmatched path is
        // logged as `unmatched`). The raw path joins it at debug level.
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        match self.logged_path {
            Some(path) => tracing::info!(
                target: ACCESS_LOG,
                %method,
                route = %route,
                path,
                status = status.as_u16(),
                latency_us,
                "request"
            ),
            None => tracing::info!(
                target: ACCESS_LOG,
                %method,
                route = %route,
                status = status.as_u16(),
                latency_us,
                "request"
            ),
        }
        response
    }
}

/// Refuses oversized credentials headers and declared-oversized bodies before
/// any handler parses them.
pub(super) fn refuse_oversized<B: http_body::Body>(
    req: &axum::http::Request<B>,
) -> Option<Response> {
    let headers = req.headers();
    let cookie_bytes: usize = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.len())
        .sum();
    if cookie_bytes > MAX_CREDENTIAL_HEADER_BYTES {
        return Some(
            ApiError::invalid_request("the Cookie header is larger than 8 KiB").into_response(),
        );
    }
    let authorization_bytes: usize = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(|v| v.len())
        .sum();
    if authorization_bytes > MAX_CREDENTIAL_HEADER_BYTES {
        return Some(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the Authorization header is larger than 8 KiB",
            )
            .with_bearer_challenge()
            .into_response(),
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .max(http_body::Body::size_hint(req.body()).lower());
    if declared > MAX_BODY_BYTES as u64 {
        return Some(ApiError::payload_too_large().into_response());
    }
    None
}

/// Whether a response already has a deliberate body (JSON errors from
/// handlers, HTML error pages) rather than the bare or plain-text body that
/// routing and extractor rejections produce.
fn has_own_body(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| !ct.starts_with("text/plain"))
}

/// Rewrites any error that is not already contract JSON (a 405 from routing,
/// a 413 from a body limit) and marks API responses as not cacheable.
fn contract_errors(response: Response) -> Response {
    let status = response.status();
    let mut response =
        if (status.is_client_error() || status.is_server_error()) && !has_own_body(&response) {
            let allow = response.headers().get(header::ALLOW).cloned();
            let mut fixed = ApiError::for_status(status).into_response();
            if let Some(allow) = allow {
                fixed.headers_mut().insert(header::ALLOW, allow);
            }
            fixed
        } else {
            response
        };
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A panic is a bug; the client gets the contract's `internal` error with no
/// details, and the log says where.
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = err
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %detail, "request handler panicked");
    ApiError::internal().into_response()
}
