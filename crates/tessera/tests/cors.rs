//! CORS for single-page apps on other origins (`TESSERA_CORS_ORIGINS`),
//! through the real router: the JWKS, the metadata document, `/v1/token`
//! and `/v1/me` answer an allowed origin with that origin echoed (never
//! `*`), `Vary: Origin` and never `Access-Control-Allow-Credentials`;
//! preflights from it are answered; any other origin, and any other route,
//! gets no CORS header at all. The real browser's side is in
//! `tests/browser.rs` (`a_single_page_app_on_an_allowed_origin_…`).

mod common;

use axum::http::{Method, StatusCode};
use common::{Req, Resp, TestApp, password_grant};
use tessera::config::Settings;

const APP: &str = "https://app.example.com";
const DEV: &str = "http://localhost:3000";
const FOREIGN: &str = "https://evil.example.net";

async fn app() -> TestApp {
    TestApp::with(&[("cors_origins", &format!("{APP}, {DEV}"))]).await
}

/// The four cross-origin routes, each with a request that succeeds.
async fn requests(t: &TestApp, email: &str) -> Vec<(&'static str, Req)> {
    let tokens = t.tokens_for(email).await;
    let access = tokens["access_token"].as_str().expect("access_token");
    vec![
        ("/.well-known/jwks.json", Req::get("/.well-known/jwks.json")),
        (
            "/.well-known/oauth-authorization-server",
            Req::get("/.well-known/oauth-authorization-server"),
        ),
        ("/v1/token", password_grant(email)),
        (
            "/v1/me",
            Req::get("/v1/me").header("authorization", &format!("Bearer {access}")),
        ),
    ]
}

fn preflight(path: &str, origin: &str, method: &str, headers: &str) -> Req {
    Req::new(Method::OPTIONS, path)
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
}

fn cors_headers(r: &Resp) -> Vec<String> {
    r.headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

fn varies_on_origin(r: &Resp) -> bool {
    r.headers.get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap()
            .split(',')
            .any(|f| f.trim().eq_ignore_ascii_case("origin"))
    })
}

/// What every answer to an allowed origin carries.
fn assert_allowed(r: &Resp, origin: &str, what: &str) {
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{what}: {:?}",
        r.headers
    );
    assert_eq!(
        r.headers
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1,
        "{what}"
    );
    assert!(varies_on_origin(r), "{what}: {:?}", r.headers);
    assert!(
        r.header("access-control-allow-credentials").is_none(),
        "{what}: no credentials"
    );
}

#[tokio::test]
async fn an_allowed_origin_reads_the_four_routes() {
    let t = app().await;
    for (i, origin) in [APP, DEV].into_iter().enumerate() {
        let email = format!("spa{i}@example.com");
        for (path, req) in requests(&t, &email).await {
            let r = t.send(req.header("origin", origin)).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
            assert_allowed(&r, origin, path);
            assert_eq!(
                r.header("access-control-expose-headers"),
                Some("WWW-Authenticate, Retry-After"),
                "{path}"
            );
            // Preflight-only headers stay on preflights.
            assert!(r.header("access-control-allow-methods").is_none());
        }
    }
}

#[tokio::test]
async fn an_allowed_origin_reads_the_errors_too() {
    let t = app().await;
    // A refused token is readable, with its challenge exposed.
    let r = t
        .send(
            Req::get("/v1/me")
                .header("origin", APP)
                .header("authorization", "Bearer not-a-token"),
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_allowed(&r, APP, "401");
    assert!(r.header("www-authenticate").is_some());
    // A wrong password at the token endpoint.
    t.register("spa@example.com").await;
    let r = t
        .send(Req::post("/v1/token").header("origin", APP).form(&[
            ("grant_type", "password"),
            ("username", "spa@example.com"),
            ("password", "wrong password entirely"),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_allowed(&r, APP, "invalid_grant");
    // A method the route does not have: the router's 405, rewritten to the
    // contract's JSON, keeps the CORS headers.
    let r = t.send(Req::delete("/v1/me").header("origin", APP)).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_allowed(&r, APP, "405");
    assert_eq!(r.header("allow"), Some("GET,HEAD"));
}

#[tokio::test]
async fn preflights_from_an_allowed_origin_are_answered() {
    let t = app().await;
    for (path, method, headers) in [
        ("/.well-known/jwks.json", "GET", "authorization"),
        ("/.well-known/oauth-authorization-server", "GET", ""),
        ("/v1/token", "POST", "content-type"),
        ("/v1/me", "GET", "authorization"),
    ] {
        for origin in [APP, DEV] {
            let r = t.send(preflight(path, origin, method, headers)).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{path}: {}", r.text());
            assert_allowed(&r, origin, path);
            assert_eq!(
                r.header("access-control-allow-methods"),
                Some("GET, POST, OPTIONS")
            );
            assert_eq!(
                r.header("access-control-allow-headers"),
                Some("Authorization, Content-Type")
            );
            assert_eq!(r.header("access-control-max-age"), Some("600"));
            assert!(r.body.is_empty(), "{path}");
        }
    }
}

/// A foreign origin, or none, gets no CORS header: the answer is the
/// route's own, and an `OPTIONS` (a preflight) is the router's 405 with
/// `Allow`, exactly as without the setting.
#[tokio::test]
async fn another_origin_gets_no_cors_headers() {
    let t = app().await;
    let plain = TestApp::new().await;
    for (origin, email) in [
        (Some(FOREIGN), "f1@example.com"),
        // Near misses: another scheme, another port, a path, `null`.
        (Some("http://app.example.com"), "f2@example.com"),
        (Some("https://app.example.com:8443"), "f3@example.com"),
        (Some("https://app.example.com/"), "f4@example.com"),
        (Some("null"), "f5@example.com"),
        (None, "f6@example.com"),
    ] {
        for (path, req) in requests(&t, email).await {
            let req = match origin {
                Some(o) => req.header("origin", o),
                None => req,
            };
            let r = t.send(req).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
            assert_eq!(cors_headers(&r), Vec::<String>::new(), "{path} {origin:?}");
            // Responses that differ by Origin say so, to caches too.
            assert!(varies_on_origin(&r), "{path}");
        }
        for path in [
            "/.well-known/jwks.json",
            "/.well-known/oauth-authorization-server",
            "/v1/token",
            "/v1/me",
        ] {
            let r = t
                .send(preflight(
                    path,
                    origin.unwrap_or(FOREIGN),
                    "GET",
                    "authorization",
                ))
                .await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_eq!(cors_headers(&r), Vec::<String>::new(), "{path}");
            let without = plain
                .send(preflight(
                    path,
                    origin.unwrap_or(FOREIGN),
                    "GET",
                    "authorization",
                ))
                .await;
            assert_eq!(without.status, r.status, "{path}: as without the setting");
            assert_eq!(without.header("allow"), r.header("allow"), "{path}");
            assert_eq!(without.error_code(), r.error_code(), "{path}");
        }
    }
    // Two Origin headers are nobody's.
    let r = t
        .send(
            Req::get("/.well-known/jwks.json")
                .header("origin", APP)
                .header("origin", DEV),
        )
        .await;
    assert_eq!(cors_headers(&r), Vec::<String>::new());
}

/// Routes outside the four never answer with CORS headers, not even to an
/// allowed origin, and their preflights stay 405.
#[tokio::test]
async fn other_routes_never_get_cors_headers() {
    let t = app().await;
    t.register("other@example.com").await;
    let login = t.login("other@example.com").await;
    for req in [
        Req::post("/v1/sessions").json(serde_json::json!({
            "email": "other@example.com",
            "password": common::PASSWORD,
        })),
        Req::get("/v1/sessions").session(&login),
        Req::get("/v1/session").session(&login),
        Req::get("/healthz"),
        Req::get("/openapi.json"),
        Req::post("/v1/token/revoke").form(&[("token", "x")]),
        Req::get("/v1/verify").session(&login),
        Req::get("/login"),
        Req::get("/nowhere"),
    ] {
        let r = t.send(req.header("origin", APP)).await;
        assert_eq!(cors_headers(&r), Vec::<String>::new(), "{:?}", r.status);
        assert!(!varies_on_origin(&r));
    }
    for path in [
        "/v1/sessions",
        "/v1/session",
        "/v1/token/introspect",
        "/v1/verify",
    ] {
        let r = t.send(preflight(path, APP, "GET", "authorization")).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(cors_headers(&r), Vec::<String>::new(), "{path}");
    }
}

/// Unset (the default), nothing changes: no CORS header, no `Vary: Origin`.
#[tokio::test]
async fn without_the_setting_there_is_no_cors() {
    let t = TestApp::new().await;
    for (path, req) in requests(&t, "plain@example.com").await {
        let r = t.send(req.header("origin", APP)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(cors_headers(&r), Vec::<String>::new(), "{path}");
        assert!(!varies_on_origin(&r), "{path}");
        let r = t.send(preflight(path, APP, "GET", "authorization")).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(cors_headers(&r), Vec::<String>::new(), "{path}");
    }
}

#[test]
fn origins_are_validated_and_stored_as_browsers_send_them() {
    let s = Settings::from_pairs(&[(
        "cors_origins",
        " HTTPS://App.Example.com:443 ,http://localhost:3000,, http://[::1]:8081,https://b\u{fc}cher.example",
    )])
    .unwrap();
    assert_eq!(
        s.cors_origins,
        [
            "https://app.example.com",
            "http://localhost:3000",
            "http://[::1]:8081",
            "https://xn--bcher-kva.example",
        ]
    );
    assert!(Settings::from_pairs(&[]).unwrap().cors_origins.is_empty());
    assert!(
        Settings::from_pairs(&[("cors_origins", "")])
            .unwrap()
            .cors_origins
            .is_empty()
    );
    for bad in [
        "*",
        "null",
        "https://app.example.com/",
        "https://app.example.com/spa",
        "https://app.example.com?x=1",
        "https://app.example.com#top",
        "https://user@app.example.com",
        "https://*.example.com",
        "app.example.com",
        "//app.example.com",
        "ftp://app.example.com",
        "file:///tmp/x",
        "https://",
        "https://app.example.com:99999",
        "https://app.example.com, *",
        "https://ok.example.com, https://bad.example.com/",
    ] {
        let e = Settings::from_pairs(&[("cors_origins", bad)])
            .expect_err(bad)
            .0;
        assert!(
            e.starts_with("invalid setting TESSERA_CORS_ORIGINS"),
            "{bad}: {e}"
        );
        assert!(e.contains("scheme://host[:port]"), "{bad}: {e}");
    }
}
