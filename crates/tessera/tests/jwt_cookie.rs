//! `TESSERA_BROWSER_MODE=jwt-cookie`: tokens in HttpOnly cookies, refresh by
//! cookie under the CSRF rules.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{ORIGIN, PASSWORD, Req, Resp, TestApp};
use serde_json::json;

const ACCESS: &str = "__Host-tessera_access";
const REFRESH: &str = "__Host-tessera_refresh";

struct Browser {
    access: String,
    refresh: String,
    csrf: String,
}

impl Browser {
    fn cookies(&self) -> String {
        format!("{ACCESS}={}; {REFRESH}={}", self.access, self.refresh)
    }

    fn absorb(&mut self, r: &Resp) {
        if let Some(c) = r.set_cookie(ACCESS) {
            self.access = c.value;
        }
        if let Some(c) = r.set_cookie(REFRESH) {
            self.refresh = c.value;
        }
    }
}

fn refresh_by_cookie(b: &Browser) -> Req {
    Req::post("/v1/token")
        .header("cookie", &b.cookies())
        .form(&[("grant_type", "refresh_token")])
}

async fn browser_login(t: &TestApp, email: &str) -> Browser {
    t.register(email).await;
    let r = t
        .send(
            Req::post("/v1/sessions")
                .header("origin", ORIGIN)
                .json(json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(
        r.set_cookie("__Host-tessera_session").is_none(),
        "no session cookie in this mode"
    );
    let access = r.set_cookie(ACCESS).expect("access cookie");
    let refresh = r.set_cookie(REFRESH).expect("refresh cookie");
    for (c, max_age) in [(&access, 600), (&refresh, 30 * 86_400)] {
        assert_eq!(c.attr("Path"), Some(Some("/")));
        assert_eq!(c.attr("HttpOnly"), Some(None));
        assert_eq!(c.attr("Secure"), Some(None));
        assert_eq!(c.attr("SameSite"), Some(Some("Lax")));
        assert_eq!(c.attr("Max-Age"), Some(Some(max_age.to_string().as_str())));
        assert_eq!(c.attr("Domain"), None);
    }
    let body = r.json();
    assert_eq!(body["user"]["email"], email);
    assert!(body["session"]["id"].as_str().unwrap().starts_with("fam_"));
    let text = r.text();
    assert!(
        !text.contains(&access.value) && !text.contains(&refresh.value),
        "tokens stay in cookies"
    );
    Browser {
        access: access.value,
        refresh: refresh.value,
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn browser_tokens_live_in_httponly_cookies() {
    let t = TestApp::with(&[("browser_mode", "jwt-cookie")]).await;
    let b = browser_login(&t, "oli@example.com").await;
    let me = t
        .send(Req::get("/v1/me").header("cookie", &b.cookies()))
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    assert_eq!(me.json()["auth"]["method"], "jwt");
    let v = t
        .send(Req::get("/v1/verify").header("cookie", &b.cookies()))
        .await;
    assert_eq!(v.status, StatusCode::OK);
    assert_eq!(v.header("x-auth-method"), Some("jwt"));
}

#[tokio::test]
async fn refresh_by_cookie_needs_csrf_and_rotates_both_cookies() {
    let t = TestApp::with(&[("browser_mode", "jwt-cookie")]).await;
    let mut b = browser_login(&t, "pia@example.com").await;

    t.send(refresh_by_cookie(&b))
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    t.send(refresh_by_cookie(&b).header("x-csrf-token", "forged"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    t.send(
        refresh_by_cookie(&b)
            .header("x-csrf-token", &b.csrf)
            .header("origin", "https://evil.example"),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "csrf_failed");

    t.advance(Duration::from_secs(11 * 60));
    t.send(Req::get("/v1/me").header("cookie", &b.cookies()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let old_refresh = b.refresh.clone();
    let r = t
        .send(
            refresh_by_cookie(&b)
                .header("x-csrf-token", &b.csrf)
                .header("origin", ORIGIN),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    assert_eq!(
        body["csrf_token"],
        b.csrf.as_str(),
        "the CSRF token is bound to the family"
    );
    b.absorb(&r);
    assert_ne!(b.refresh, old_refresh);
    assert_eq!(
        t.send(Req::get("/v1/me").header("cookie", &b.cookies()))
            .await
            .status,
        StatusCode::OK
    );

    // A stolen old refresh cookie replayed: the family dies.
    let thief = Browser {
        access: String::new(),
        refresh: old_refresh,
        csrf: b.csrf.clone(),
    };
    let r = t
        .send(refresh_by_cookie(&thief).header("x-csrf-token", &b.csrf))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    t.send(Req::get("/v1/me").header("cookie", &b.cookies()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn unsafe_requests_with_the_access_cookie_need_csrf_and_logout_clears_cookies() {
    let t = TestApp::with(&[("browser_mode", "jwt-cookie")]).await;
    let b = browser_login(&t, "raf@example.com").await;
    t.send(Req::post("/v1/logout-all").header("cookie", &b.cookies()))
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    t.send(
        Req::delete("/v1/session")
            .header("cookie", &b.cookies())
            .header("x-csrf-token", &b.csrf)
            .header("origin", "null"),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    let r = t
        .send(
            Req::delete("/v1/session")
                .header("cookie", &b.cookies())
                .header("x-csrf-token", &b.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    for name in [ACCESS, REFRESH] {
        let c = r.set_cookie(name).expect("cleared");
        assert_eq!(c.value, "");
        assert_eq!(c.attr("Max-Age"), Some(Some("0")));
    }
    t.send(Req::get("/v1/me").header("cookie", &b.cookies()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    t.send(refresh_by_cookie(&b).header("x-csrf-token", &b.csrf))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn refresh_by_cookie_is_off_in_session_mode() {
    let t = TestApp::new().await;
    t.send(
        Req::post("/v1/token")
            .header("cookie", &format!("{REFRESH}=x"))
            .form(&[("grant_type", "refresh_token")]),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}
