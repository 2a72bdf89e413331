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

// ---------------------------------------------------------------------------
// The pages in jwt-cookie mode

/// Every `Set-Cookie` of `name` in a response, as sent.
fn set_cookies_named(r: &Resp, name: &str) -> Vec<common::SetCookie> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(common::parse_set_cookie)
        .filter(|c| c.name == name)
        .collect()
}

/// A browser signed in through the login form: its cookies as the pages
/// set them.
async fn page_login(t: &TestApp, email: &str) -> Browser {
    let r = t
        .send(
            Req::post("/login")
                .header("origin", ORIGIN)
                .header("sec-fetch-site", "same-origin")
                .form(&[("email", email), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.header("location"), Some("/account"));
    assert!(r.set_cookie("__Host-tessera_session").is_none());
    let access = r.set_cookie(ACCESS).expect("the access cookie");
    let refresh = r.set_cookie(REFRESH).expect("the refresh cookie");
    assert_eq!(access.attr("HttpOnly"), Some(None));
    assert_eq!(refresh.attr("Max-Age"), Some(Some("2592000")));
    let mut b = Browser {
        access: access.value,
        refresh: refresh.value,
        csrf: String::new(),
    };
    let page = t
        .send(Req::get("/account").header("cookie", &b.cookies()))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    b.csrf = common::form_field(&page.text(), "csrf_token");
    b
}

fn page_form(path: &str, b: &Browser, fields: &[(&str, &str)]) -> Req {
    let mut pairs = vec![("csrf_token", b.csrf.as_str())];
    pairs.extend_from_slice(fields);
    Req::post(path)
        .header("cookie", &b.cookies())
        .header("origin", ORIGIN)
        .header("sec-fetch-site", "same-origin")
        .form(&pairs)
}

fn assert_cleared(r: &Resp) {
    for name in [ACCESS, REFRESH] {
        let set = set_cookies_named(r, name);
        assert_eq!(set.len(), 1, "one Set-Cookie for {name}");
        assert_eq!(set[0].value, "", "{name} dropped");
        assert_eq!(set[0].attr("Max-Age"), Some(Some("0")));
    }
}

#[tokio::test]
async fn the_pages_sign_in_and_out_with_the_token_cookies() {
    let t = TestApp::with(&[("browser_mode", "jwt-cookie")]).await;
    t.register("ada@example.com").await;
    let r = t.send(Req::get("/login")).await;
    assert!(r.text().contains("id=\"login-form\""), "the form is there");
    assert!(!r.text().contains("through the API"));

    let b = page_login(&t, "ada@example.com").await;
    // The page's form token is the family's, as the API gives it.
    let api = t
        .send(Req::get("/v1/session").header("cookie", &b.cookies()))
        .await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.text());
    assert_eq!(api.json()["csrf_token"], b.csrf.as_str());
    let family = api.json()["session"]["id"].as_str().unwrap().to_owned();
    let page = t
        .send(Req::get("/account").header("cookie", &b.cookies()))
        .await;
    let html = page.text();
    assert!(html.contains("ada@example.com"));
    assert!(html.contains(&format!("data-session=\"{family}\"")));
    assert!(html.contains("This device"));
    // Signed in: the login page sends the browser on.
    let r = t
        .send(Req::get("/login").header("cookie", &b.cookies()))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/account"));
    // Not an admin.
    let r = t
        .send(Req::get("/admin").header("cookie", &b.cookies()))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A form without the family's token is refused.
    let forged = Browser {
        csrf: "forged".into(),
        ..Browser {
            access: b.access.clone(),
            refresh: b.refresh.clone(),
            csrf: String::new(),
        }
    };
    let r = t.send(page_form("/logout", &forged, &[])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = t.send(page_form("/logout", &b, &[])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.header("location"), Some("/login?done=signed_out"));
    assert_cleared(&r);
    // The family is over: its access token and its refresh token.
    let r = t
        .send(Req::get("/account").header("cookie", &b.cookies()))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/login"));
    assert_cleared(&r);
    t.send(refresh_by_cookie(&b).header("x-csrf-token", &b.csrf))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn registering_on_the_page_signs_in_with_the_token_cookies() {
    let t = TestApp::with(&[("browser_mode", "jwt-cookie")]).await;
    let r = t
        .send(Req::post("/register").header("origin", ORIGIN).form(&[
            ("email", "bea@example.com"),
            ("password", PASSWORD),
            ("confirm_password", PASSWORD),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.header("location"), Some("/account?done=welcome"));
    let b = Browser {
        access: r.set_cookie(ACCESS).expect("access cookie").value,
        refresh: r.set_cookie(REFRESH).expect("refresh cookie").value,
        csrf: String::new(),
    };
    let page = t
        .send(Req::get("/account?done=welcome").header("cookie", &b.cookies()))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("bea@example.com"));
}

#[tokio::test]
async fn a_page_refreshes_an_expired_access_cookie() {
    let t = TestApp::with(&[("browser_mode", "jwt-cookie")]).await;
    t.register("cy@example.com").await;
    let mut b = page_login(&t, "cy@example.com").await;
    t.advance(Duration::from_secs(11 * 60));
    t.send(Req::get("/v1/me").header("cookie", &b.cookies()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");

    // Two tabs at once with the expired cookie: both pages work, on one
    // rotation, and the family lives on.
    let (one, two) = tokio::join!(
        t.send(Req::get("/account").header("cookie", &b.cookies())),
        t.send(Req::get("/account").header("cookie", &b.cookies())),
    );
    for r in [&one, &two] {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(set_cookies_named(r, ACCESS).len(), 1);
        assert_eq!(set_cookies_named(r, REFRESH).len(), 1);
    }
    assert_eq!(
        one.set_cookie(REFRESH).unwrap().value,
        two.set_cookie(REFRESH).unwrap().value,
        "one rotation, shared"
    );
    assert_eq!(
        common::form_field(&one.text(), "csrf_token"),
        b.csrf,
        "the form token survives the rotation"
    );
    let old = b.refresh.clone();
    b.absorb(&one);
    assert_ne!(b.refresh, old);
    assert_eq!(
        t.send(Req::get("/v1/me").header("cookie", &b.cookies()))
            .await
            .status,
        StatusCode::OK
    );

    // A form posted from a page left open past the access token's life.
    t.advance(Duration::from_secs(11 * 60));
    // The new family's token waits for the second after the password
    // change's cut-off (`past_user_cut_off`: at most until the next whole
    // second, in real time), and this clock only moves by hand. Start on a
    // whole second, so that wait is a full second, and move the clock on
    // by whole seconds while the request runs.
    let into_second = t.app.core.now().nanosecond();
    t.advance(Duration::from_nanos(1_000_000_000 - u64::from(into_second)));
    let change = t.send(page_form(
        "/account/password",
        &b,
        &[
            ("current_password", PASSWORD),
            ("new_password", "a different passphrase entirely"),
            ("confirm_password", "a different passphrase entirely"),
        ],
    ));
    tokio::pin!(change);
    let r = loop {
        tokio::select! {
            r = &mut change => break r,
            () = tokio::time::sleep(Duration::from_millis(200)) => t.advance(Duration::from_secs(1)),
        }
    };
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.header("location"), Some("/account?done=password"));
    // The password change revoked every family; the page's new one wins
    // over the refreshed one.
    let access = set_cookies_named(&r, ACCESS);
    let refresh = set_cookies_named(&r, REFRESH);
    assert_eq!((access.len(), refresh.len()), (1, 1), "one pair only");
    let fresh = Browser {
        access: access[0].value.clone(),
        refresh: refresh[0].value.clone(),
        csrf: String::new(),
    };
    let page = t
        .send(Req::get("/account?done=password").header("cookie", &fresh.cookies()))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_ne!(common::form_field(&page.text(), "csrf_token"), b.csrf);
    // The earlier family is gone: its cookies lead to the login page.
    let r = t
        .send(Req::get("/account").header("cookie", &b.cookies()))
        .await;
    assert_eq!(r.header("location"), Some("/login"));
}

#[tokio::test]
async fn a_revoked_or_suspended_browser_is_signed_out_on_its_next_page() {
    let t = TestApp::with(&[("browser_mode", "jwt-cookie")]).await;
    t.register("dee@example.com").await;
    let b = page_login(&t, "dee@example.com").await;
    let other = page_login(&t, "dee@example.com").await;
    // "Sign out" of the other browser from this one's device list.
    let page = t
        .send(Req::get("/account").header("cookie", &b.cookies()))
        .await;
    assert_eq!(page.text().matches("class=\"session-row").count(), 2);
    let other_family = t
        .send(Req::get("/v1/session").header("cookie", &other.cookies()))
        .await
        .json()["session"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = t
        .send(page_form(
            "/account/sessions/revoke",
            &b,
            &[("session_id", &other_family)],
        ))
        .await;
    assert_eq!(r.header("location"), Some("/account?done=session_revoked"));
    let r = t
        .send(Req::get("/account").header("cookie", &other.cookies()))
        .await;
    assert_eq!(r.header("location"), Some("/login"));
    assert_cleared(&r);
    // Someone else's family, or one already over, is not theirs to end.
    let r = t
        .send(page_form(
            "/account/sessions/revoke",
            &b,
            &[("session_id", &other_family)],
        ))
        .await;
    assert_eq!(r.header("location"), Some("/account?done=session_gone"));

    // Suspended: the next page, access cookie still unexpired, signs out.
    let user_id = t
        .send(Req::get("/v1/me").header("cookie", &b.cookies()))
        .await
        .json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.app
        .core
        .set_status_by(
            None,
            &user_id,
            tessera::core::accounts::UserStatus::Suspended,
        )
        .await
        .unwrap();
    let r = t
        .send(Req::get("/account").header("cookie", &b.cookies()))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/login"));
    assert_cleared(&r);
}

#[tokio::test]
async fn the_api_lists_and_ends_families_in_jwt_cookie_mode() {
    let t = TestApp::with(&[("browser_mode", "jwt-cookie")]).await;
    t.register("eve@example.com").await;
    let b = page_login(&t, "eve@example.com").await;
    let other = page_login(&t, "eve@example.com").await;
    let list = t
        .send(Req::get("/v1/sessions").header("cookie", &b.cookies()))
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    let sessions = list.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let theirs = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(theirs.starts_with("fam_"));
    let r = t
        .send(
            Req::delete(&format!("/v1/sessions/{theirs}"))
                .header("cookie", &b.cookies())
                .header("x-csrf-token", &b.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    t.send(Req::get("/v1/me").header("cookie", &other.cookies()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    t.send(
        Req::delete(&format!("/v1/sessions/{theirs}"))
            .header("cookie", &b.cookies())
            .header("x-csrf-token", &b.csrf),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_proxy_sends_an_expired_browser_to_login_and_gets_it_back_refreshed() {
    let t = TestApp::with(&[("browser_mode", "jwt-cookie")]).await;
    t.register("fay@example.com").await;
    let b = page_login(&t, "fay@example.com").await;
    t.advance(Duration::from_secs(11 * 60));
    t.send(Req::get("/v1/verify").header("cookie", &b.cookies()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    // What the recipes' `error_page 401` does next.
    let r = t
        .send(Req::get("/login?return_to=%2Fapp%2F").header("cookie", &b.cookies()))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.header("location"), Some("/app/"));
    let mut b = b;
    b.absorb(&r);
    let v = t
        .send(Req::get("/v1/verify").header("cookie", &b.cookies()))
        .await;
    assert_eq!(v.status, StatusCode::OK);
    assert_eq!(v.header("x-auth-method"), Some("jwt"));
}
