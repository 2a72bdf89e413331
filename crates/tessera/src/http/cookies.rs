//! Reading the session cookie and writing `Set-Cookie` exactly as the contract
//! spells it (`Path=/; HttpOnly; Secure; SameSite=…; Max-Age=…`, no `Domain`).

use axum::http::{HeaderMap, HeaderValue, header};

use crate::config::Settings;

/// The value of cookie `name` in the request, if present. Several `Cookie`
/// headers are searched in order; the first match wins.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    tessera_wire::cookie::find(values, name)
}

/// `Set-Cookie` for a session that lives `max_age_secs` more seconds.
pub fn session_cookie(settings: &Settings, value: &str, max_age_secs: i64) -> HeaderValue {
    build(
        settings,
        settings.session_cookie_name(),
        value,
        max_age_secs.max(0),
    )
}

/// `Set-Cookie` that makes the browser drop the session cookie.
pub fn clear_session_cookie(settings: &Settings) -> HeaderValue {
    build(settings, settings.session_cookie_name(), "", 0)
}

/// `Set-Cookie` for any of Tessera's cookies (same attributes for all).
pub fn named_cookie(
    settings: &Settings,
    name: &str,
    value: &str,
    max_age_secs: i64,
) -> HeaderValue {
    build(settings, name, value, max_age_secs.max(0))
}

/// `Set-Cookie` that makes the browser drop cookie `name`.
pub fn clear_cookie(settings: &Settings, name: &str) -> HeaderValue {
    build(settings, name, "", 0)
}

fn build(settings: &Settings, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; Path=/; HttpOnly{secure}; SameSite={}; Max-Age={max_age}",
        settings.cookie_samesite.as_str()
    );
    // Every part is ASCII from our own alphabet; the fallback is unreachable
    // but keeps this path panic-free.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3;d=\"4\""));
        assert_eq!(read_cookie(&h, "b"), Some("2"));
        assert_eq!(read_cookie(&h, "c"), Some("3"));
        assert_eq!(read_cookie(&h, "d"), Some("4"));
        assert_eq!(read_cookie(&h, "e"), None);
    }

    #[test]
    fn set_cookie_has_the_contract_attributes() {
        let s = Settings::from_pairs(&[]).unwrap();
        let c = session_cookie(&s, "abc", 42);
        assert_eq!(
            c.to_str().unwrap(),
            "__Host-tessera_session=abc; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=42"
        );
        let s = Settings::from_pairs(&[("cookie_secure", "false"), ("cookie_samesite", "Strict")])
            .unwrap();
        assert_eq!(
            clear_session_cookie(&s).to_str().unwrap(),
            "tessera_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }
}
