//! Cross-cutting request and response rules: size limits checked before
//! anything is parsed, every error in the contract's JSON shape, `no-store` on
//! everything the API returns, request logs without secrets.

use std::any::Any;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;

use super::error::ApiError;
use super::extract::MAX_BODY_BYTES;

/// Largest `Cookie` or `Authorization` header accepted (8 KiB).
pub const MAX_CREDENTIAL_HEADER_BYTES: usize = 8 * 1024;

/// Refuses oversized credentials headers and declared-oversized bodies before
/// any handler parses them.
pub async fn request_limits(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let cookie_bytes: usize = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.len())
        .sum();
    if cookie_bytes > MAX_CREDENTIAL_HEADER_BYTES {
        return ApiError::invalid_request("the Cookie header is larger than 8 KiB").into_response();
    }
    let authorization_bytes: usize = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(|v| v.len())
        .sum();
    if authorization_bytes > MAX_CREDENTIAL_HEADER_BYTES {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the Authorization header is larger than 8 KiB",
        )
        .with_bearer_challenge()
        .into_response();
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .max(http_body::Body::size_hint(req.body()).lower());
    if declared > MAX_BODY_BYTES as u64 {
        return ApiError::payload_too_large().into_response();
    }
    next.run(req).await
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
pub async fn contract_errors(response: Response) -> Response {
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

/// Request logs: method, path (never the query string, never headers),
/// status and latency, at debug level so the hot path stays quiet.
pub fn trace_layer()
-> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, impl Fn(&Request) -> tracing::Span + Clone>
{
    TraceLayer::new_for_http().make_span_with(|req: &Request| {
        tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
    })
}
