//! CORS for single-page apps on other origins, exactly as the contract
//! states it: `TESSERA_CORS_ORIGINS` lists the origins whose pages may call
//! the JWKS, the metadata documents, `/v1/token` and `/v1/me` from a
//! browser. Only those four routes carry this layer (`http::router`), and
//! only when the list is not empty.
//!
//! - A request whose `Origin` is in the list gets that origin echoed in
//!   `Access-Control-Allow-Origin` (never `*`), and the error responses too,
//!   so the page can read why it was refused; `WWW-Authenticate` and
//!   `Retry-After` are exposed to it.
//! - A preflight from such an origin (`OPTIONS` with
//!   `Access-Control-Request-Method`) is answered here, `204` with the
//!   methods (`GET, POST, OPTIONS`), the request headers (`Authorization`,
//!   `Content-Type`) and `Access-Control-Max-Age: 600`; it never reaches
//!   the handler.
//! - `Access-Control-Allow-Credentials` is never sent: cookies are not for
//!   other origins, tokens travel in `Authorization`.
//! - Any other origin, or none, gets no CORS header at all and the route's
//!   answer as without this layer (an `OPTIONS` is the router's `405` with
//!   `Allow`, so a foreign preflight fails in the browser).
//! - Every response of these routes says `Vary: Origin` while the list is
//!   set, allowed origin or not: a cache must not hand a response without
//!   `Access-Control-Allow-Origin` (the JWKS fetched by a service) to a
//!   page, nor one with it to another origin.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// What a preflight allows: the four routes' methods.
pub const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// What a preflight allows: a Bearer token and a JSON or form body.
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type";
/// How long a browser may reuse a preflight's answer, in seconds.
pub const MAX_AGE_SECONDS: &str = "600";
/// Response headers a page may read beyond the CORS-safelisted ones.
pub const EXPOSE_HEADERS: &str = "WWW-Authenticate, Retry-After";

/// The CORS layer of the cross-origin routes (see the module).
pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let allowed = allowed_origin(req.headers(), &state.settings.cors_origins);
    let Some(origin) = allowed else {
        let mut response = next.run(req).await;
        vary_origin(response.headers_mut());
        return response;
    };
    let is_preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if is_preflight {
        let mut preflight = StatusCode::NO_CONTENT.into_response();
        let headers = preflight.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECONDS),
        );
        preflight
    } else {
        let mut response = next.run(req).await;
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    vary_origin(headers);
    response
}

/// The request's `Origin` when it is exactly one of `allowed` (one header,
/// byte for byte: browsers serialize origins as the setting stores them).
fn allowed_origin(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let origin = values.next()?;
    if values.next().is_some() {
        return None;
    }
    allowed
        .iter()
        .any(|a| a.as_bytes() == origin.as_bytes())
        .then(|| origin.clone())
}

/// Adds `Origin` to the response's `Vary` unless it is there already.
fn vary_origin(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|f| f.trim() == "*" || f.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}
