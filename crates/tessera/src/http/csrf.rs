//! CSRF defence, exactly as the contract states it.
//!
//! - A request authenticated by the session cookie with an unsafe method must
//!   carry `X-CSRF-Token` equal to the session's token (compared in constant
//!   time), and any `Origin` it has must be the public URL's; `Origin: null`
//!   is foreign.
//! - Requests that have no session yet (login, register) are refused when
//!   `Origin` is present and foreign, or `Sec-Fetch-Site` is `cross-site`:
//!   this stops login CSRF (signing a victim into the attacker's account).
//! - Bearer-authenticated requests carry no ambient credentials and are exempt.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};

use super::AppState;
use super::error::ApiError;
use crate::core::secret::secrets_equal;

pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

fn origin_is_foreign(headers: &HeaderMap, public_origin: &str) -> bool {
    headers.get_all(axum::http::header::ORIGIN).iter().any(|o| {
        !o.to_str()
            .is_ok_and(|o| o.eq_ignore_ascii_case(public_origin))
    })
}

/// For login and register: no session exists yet, so only the request's
/// provenance can be checked.
pub fn check_fresh_request(headers: &HeaderMap, public_origin: &str) -> Result<(), ApiError> {
    if origin_is_foreign(headers, public_origin) {
        return Err(ApiError::csrf_failed(
            "the request comes from another origin",
        ));
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    if cross_site {
        return Err(ApiError::csrf_failed("the request comes from another site"));
    }
    Ok(())
}

/// Extractor form of [`check_fresh_request`], placed before the body
/// extractor so a cross-site request is refused before its body is read.
pub struct FreshRequest;

impl FromRequestParts<AppState> for FreshRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        check_fresh_request(&parts.headers, &state.settings.public_url.origin)?;
        Ok(FreshRequest)
    }
}

/// For unsafe requests authenticated by the session cookie.
pub fn check_session_request(
    headers: &HeaderMap,
    public_origin: &str,
    expected_token: &str,
) -> Result<(), ApiError> {
    if origin_is_foreign(headers, public_origin) {
        return Err(ApiError::csrf_failed(
            "the request comes from another origin",
        ));
    }
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match presented {
        Some(token) if secrets_equal(token, expected_token) => Ok(()),
        Some(_) => Err(ApiError::csrf_failed("the X-CSRF-Token header is wrong")),
        None => Err(ApiError::csrf_failed("the X-CSRF-Token header is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ORIGIN: &str = "https://auth.example.com";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fresh_requests_refuse_foreign_origins_and_cross_site_fetches() {
        assert!(check_fresh_request(&headers(&[]), ORIGIN).is_ok());
        assert!(check_fresh_request(&headers(&[("origin", ORIGIN)]), ORIGIN).is_ok());
        assert!(
            check_fresh_request(&headers(&[("sec-fetch-site", "same-origin")]), ORIGIN).is_ok()
        );
        for bad in [
            headers(&[("origin", "https://evil.example")]),
            headers(&[("origin", "null")]),
            headers(&[("origin", "https://auth.example.com:8443")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("origin", ORIGIN), ("origin", "https://evil.example")]),
        ] {
            let e = check_fresh_request(&bad, ORIGIN).unwrap_err();
            assert_eq!(e.code, "csrf_failed");
        }
    }

    #[test]
    fn session_requests_need_the_token_and_a_matching_origin() {
        let ok = headers(&[("x-csrf-token", "tok"), ("origin", ORIGIN)]);
        assert!(check_session_request(&ok, ORIGIN, "tok").is_ok());
        assert!(check_session_request(&headers(&[("x-csrf-token", "tok")]), ORIGIN, "tok").is_ok());
        for bad in [
            headers(&[]),
            headers(&[("x-csrf-token", "wrong")]),
            headers(&[("x-csrf-token", "tok"), ("origin", "null")]),
            headers(&[("x-csrf-token", "tok"), ("origin", "https://evil.example")]),
        ] {
            assert!(check_session_request(&bad, ORIGIN, "tok").is_err());
        }
    }

    #[test]
    fn unsafe_methods() {
        assert!(!is_unsafe(&Method::GET));
        assert!(!is_unsafe(&Method::HEAD));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_unsafe(&m));
        }
    }
}
