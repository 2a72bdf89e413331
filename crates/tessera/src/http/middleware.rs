//! Cross-cutting request and response rules: size limits checked before
//! anything is parsed, every error in the contract's JSON shape (but a
//! browser's 404 and 405 outside the API's paths: an HTML page, see
//! [`wants_error_page`]), `no-store` on everything the API returns, metrics,
//! request logs without secrets.

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
        // The pages' templates read `product_name` and `logo_url` from here.
        None => super::pages::brand::scope(state.settings.clone(), next.run(req)).await,
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
    /// A browser navigating to a page address: its 404 and 405 are HTML
    /// ([`wants_error_page`]).
    browser_page: bool,
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
            browser_page: wants_error_page(req.uri().path(), req.headers()),
        }
    }

    /// Counts the request as a verification with this kind of credential.
    pub(super) fn verified_with(&mut self, kind: &'static str) {
        self.verification = Some(kind);
    }

    /// The contract's error shape and response headers, then metrics and
    /// the request log.
    pub(super) fn depart(self, state: &AppState, route: &str, response: Response) -> Response {
        let response = if self.browser_page {
            browser_error_page(state, route, response)
        } else {
            response
        };
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

/// Addresses that are the API's whatever the client accepts: their errors
/// are always the contract's JSON.
const API_PREFIXES: [&str; 6] = [
    "/v1",
    "/.well-known",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

/// Whether an unknown address or a wrong method should be answered with
/// the HTML error page rather than the contract's JSON: the path is not
/// the API's ([`API_PREFIXES`]) and `Accept` prefers `text/html`, naming it
/// explicitly with a higher quality than `application/json` (or the same,
/// listed first). `*/*` alone (curl, most HTTP libraries) is not enough.
pub(super) fn wants_error_page(path: &str, headers: &axum::http::HeaderMap) -> bool {
    let is_api = API_PREFIXES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    !is_api && prefers_html(headers)
}

/// `Accept` names `text/html` and ranks it above JSON. JSON's rank is that
/// of the most specific range matching `application/json` (`*/*` included);
/// a tie goes to the one listed first.
fn prefers_html(headers: &axum::http::HeaderMap) -> bool {
    // (quality, specificity, position) of the best range for each.
    let mut html: Option<(u16, u8, usize)> = None;
    let mut json: Option<(u16, u8, usize)> = None;
    let ranges = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for (position, range) in ranges.enumerate() {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        // No `q`: 1; a malformed one drops the range.
        let quality = match parts.find_map(|p| {
            let p = p.trim();
            p.strip_prefix("q=").or(p.strip_prefix("Q="))
        }) {
            None => 1000,
            Some(q) => match parse_quality(q) {
                Some(q) => q,
                None => continue,
            },
        };
        let note = |best: &mut Option<(u16, u8, usize)>, specificity: u8| {
            if best.is_none_or(|(_, s, _)| specificity > s) {
                *best = Some((quality, specificity, position));
            }
        };
        match media.as_str() {
            "text/html" => note(&mut html, 2),
            "application/json" => note(&mut json, 2),
            "application/*" => note(&mut json, 1),
            "*/*" => note(&mut json, 0),
            _ => {}
        }
    }
    match (html, json) {
        (None | Some((0, _, _)), _) => false,
        (Some(_), None) => true,
        (Some((h, _, hp)), Some((j, _, jp))) => h > j || (h == j && hp < jp),
    }
}

/// An Accept quality (`0` to `1`, three decimals) in thousandths.
fn parse_quality(s: &str) -> Option<u16> {
    let (whole, fraction) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A browser's 404 for an address no route has, or 405 for a method its
/// route does not take (routing's bare answer), as the HTML error page:
/// status, `Allow` and the pages' security headers kept.
fn browser_error_page(state: &AppState, route: &str, response: Response) -> Response {
    let status = response.status();
    let unknown_address = status == StatusCode::NOT_FOUND && route == "unmatched";
    let wrong_method = status == StatusCode::METHOD_NOT_ALLOWED && !has_own_body(&response);
    if !unknown_address && !wrong_method {
        return response;
    }
    let mut page = super::pages::status_page(&state.settings, status);
    let headers = page.headers_mut();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        headers.insert(header::ALLOW, allow.clone());
    }
    headers.append(header::VARY, HeaderValue::from_static("accept"));
    page
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
            let mut fixed = ApiError::for_status(status).into_response();
            // What routing and the CORS layer said stays: `Allow`, `Vary`
            // and the `Access-Control-*` headers (`http::cors`).
            for (name, value) in response.headers() {
                if name == header::ALLOW
                    || name == header::VARY
                    || name.as_str().starts_with("access-control-")
                {
                    fixed.headers_mut().append(name, value.clone());
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(values: &[&'static str]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_an_accept_ranking_html_above_json_gets_the_page() {
        for yes in [
            &["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"][..],
            &["text/html"],
            &["text/html, */*"],
            &["application/json;q=0.5, text/html"],
            &["text/html;q=0.9, application/json;q=0.8"],
            &["TEXT/HTML; Q=1.0"],
            &["image/png", "text/html"],
        ] {
            assert!(prefers_html(&accepting(yes)), "{yes:?}");
        }
        for no in [
            &[][..],
            &["*/*"],
            &["application/json"],
            &["application/json, text/html"],
            &["text/html;q=0.5, */*"],
            &["text/html;q=0.5, application/*"],
            &["text/html;q=0"],
            &["text/*"],
            &["text/html;q=2, application/json;q=0.1"],
        ] {
            assert!(!prefers_html(&accepting(no)), "{no:?}");
        }
    }

    #[test]
    fn api_paths_never_get_the_page() {
        let browser = accepting(&["text/html,*/*;q=0.8"]);
        for api in [
            "/v1",
            "/v1/x",
            "/.well-known/x",
            "/healthz",
            "/metrics",
            "/openapi.json/x",
        ] {
            assert!(!wants_error_page(api, &browser), "{api}");
        }
        for page in ["/", "/nope", "/v1x", "/healthzz", "/static/x.css"] {
            assert!(wants_error_page(page, &browser), "{page}");
        }
    }

    #[test]
    fn qualities_parse_as_the_grammar_says() {
        assert_eq!(parse_quality("1"), Some(1000));
        assert_eq!(parse_quality("1.000"), Some(1000));
        assert_eq!(parse_quality("0.8"), Some(800));
        assert_eq!(parse_quality("0.05"), Some(50));
        assert_eq!(parse_quality("0"), Some(0));
        for bad in ["1.5", "2", "0.0001", "x", "-1", "0.a"] {
            assert_eq!(parse_quality(bad), None, "{bad}");
        }
    }
}
