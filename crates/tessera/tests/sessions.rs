//! Browser sessions through the real router and a real SQLite file.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{COOKIE, ORIGIN, PASSWORD, Req, TestApp};
use serde_json::json;
use tessera::core::accounts::UserStatus;

#[tokio::test]
async fn login_sets_the_contract_cookie_attribute_by_attribute() {
    let t = TestApp::new().await;
    t.register("alice@example.com").await;
    let r = t
        .send(
            Req::post("/v1/sessions")
                .json(json!({"email": "alice@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let c = r.set_cookie(COOKIE).expect("session cookie");
    // 256 bits in base64url without padding.
    assert_eq!(c.value.len(), 43);
    assert!(
        c.value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(c.attr("Path"), Some(Some("/")));
    assert_eq!(c.attr("HttpOnly"), Some(None));
    assert_eq!(c.attr("Secure"), Some(None));
    assert_eq!(c.attr("SameSite"), Some(Some("Lax")));
    let max_age: i64 = c
        .attr("Max-Age")
        .flatten()
        .expect("Max-Age")
        .parse()
        .unwrap();
    assert_eq!(max_age, 30 * 86_400);
    assert_eq!(c.attr("Domain"), None);
    assert_eq!(c.attr("Expires"), None);
    assert_eq!(c.attributes.len(), 5, "{:?}", c.attributes);

    let body = r.json();
    assert_eq!(body["user"]["email"], "alice@example.com");
    assert!(body["user"]["id"].as_str().unwrap().starts_with("usr_"));
    let session = &body["session"];
    assert!(session["id"].as_str().unwrap().starts_with("ses_"));
    for field in [
        "created_at",
        "last_seen_at",
        "expires_at",
        "idle_expires_at",
    ] {
        let s = session[field].as_str().expect(field);
        assert!(s.ends_with('Z'), "{field} is RFC 3339 UTC: {s}");
    }
    assert!(body["csrf_token"].as_str().unwrap().len() >= 43);
    // The cookie value never appears in the body, and the public id is not it.
    assert!(!r.text().contains(&c.value));
}

#[tokio::test]
async fn insecure_mode_and_strict_samesite_behave_as_documented() {
    let t = TestApp::with(&[("cookie_secure", "false"), ("cookie_samesite", "Strict")]).await;
    t.register("bob@example.com").await;
    let r = t
        .send(
            Req::post("/v1/sessions")
                .json(json!({"email": "bob@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.set_cookie(COOKIE).is_none());
    let c = r.set_cookie("tessera_session").expect("unprefixed cookie");
    assert_eq!(c.attr("Secure"), None);
    assert_eq!(c.attr("HttpOnly"), Some(None));
    assert_eq!(c.attr("SameSite"), Some(Some("Strict")));
    let me = t
        .send(Req::get("/v1/me").header("cookie", &format!("tessera_session={}", c.value)))
        .await;
    assert_eq!(me.status, StatusCode::OK);
    // The secure name is not read in insecure mode.
    let me = t
        .send(Req::get("/v1/me").header("cookie", &format!("{COOKIE}={}", c.value)))
        .await;
    me.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn login_accepts_form_bodies_and_case_insensitive_emails() {
    let t = TestApp::new().await;
    t.register("Carol@Example.com").await;
    let login = t
        .login_with(
            Req::post("/v1/sessions")
                .form(&[("email", "carol@example.COM"), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(login.body["user"]["email"], "Carol@Example.com");
}

#[tokio::test]
async fn session_endpoints_show_user_session_and_csrf_token() {
    let t = TestApp::new().await;
    let login = t.signed_in("dave@example.com").await;

    let r = t.send(Req::get("/v1/session").session(&login)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["session"]["id"], login.session_id.as_str());
    assert_eq!(body["csrf_token"], login.csrf.as_str());
    assert_eq!(body["user"]["id"], login.user_id.as_str());

    let me = t.send(Req::get("/v1/me").session(&login)).await.json();
    assert_eq!(me["user"]["id"], login.user_id.as_str());
    assert_eq!(me["auth"]["method"], "session");
    assert_eq!(me["auth"]["session_id"], login.session_id.as_str());
    assert!(me["auth"]["expires_at"].as_str().unwrap().ends_with('Z'));

    for path in ["/v1/session", "/v1/me", "/v1/sessions", "/v1/verify"] {
        t.send(Req::get(path))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        t.send(Req::get(path).header("cookie", &format!("{COOKIE}=not-a-session")))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        let forged = format!("{COOKIE}={}", "A".repeat(43));
        t.send(Req::get(path).header("cookie", &forged))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
}

#[tokio::test]
async fn a_new_login_destroys_the_session_it_carried() {
    let t = TestApp::new().await;
    t.register("erin@example.com").await;
    let first = t.login("erin@example.com").await;
    let second = t
        .login_with(
            Req::post("/v1/sessions")
                .header("cookie", &first.cookie)
                .json(json!({"email": "erin@example.com", "password": PASSWORD})),
        )
        .await;
    assert_ne!(first.cookie, second.cookie);
    assert_ne!(first.session_id, second.session_id);
    t.send(Req::get("/v1/me").session(&first))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(
        t.send(Req::get("/v1/me").session(&second)).await.status,
        StatusCode::OK
    );

    // Even a failed login destroys the carried session (no fixation).
    let r = t
        .send(
            Req::post("/v1/sessions")
                .header("cookie", &second.cookie)
                .json(json!({"email": "erin@example.com", "password": "wrong password!"})),
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    t.send(Req::get("/v1/me").session(&second))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn logout_deletes_the_session_and_a_replay_is_refused() {
    let t = TestApp::new().await;
    let login = t.signed_in("frank@example.com").await;
    let r = t.send(Req::delete("/v1/session").session(&login)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let cleared = r.set_cookie(COOKIE).expect("cookie cleared");
    assert_eq!(cleared.value, "");
    assert_eq!(cleared.attr("Max-Age"), Some(Some("0")));
    assert_eq!(cleared.attr("Path"), Some(Some("/")));
    // Replaying the old cookie: gone server-side, not just in the browser.
    for path in ["/v1/me", "/v1/session", "/v1/verify"] {
        t.send(Req::get(path).session(&login))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    t.send(Req::delete("/v1/session").session(&login))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn sessions_are_listed_with_current_and_one_can_be_revoked() {
    let t = TestApp::new().await;
    t.register("grace@example.com").await;
    let laptop = t
        .login_with(
            Req::post("/v1/sessions")
                .header("user-agent", "Laptop Browser/1.0")
                .json(json!({"email": "grace@example.com", "password": PASSWORD})),
        )
        .await;
    t.advance(Duration::from_secs(5));
    let phone = t
        .login_with(
            Req::post("/v1/sessions")
                .header("user-agent", "Phone Browser/2.0")
                .json(json!({"email": "grace@example.com", "password": PASSWORD})),
        )
        .await;

    let r = t.send(Req::get("/v1/sessions").session(&laptop)).await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    // Newest first; `current` marks the caller's own session.
    assert_eq!(list[0]["id"], phone.session_id.as_str());
    assert_eq!(list[0]["current"], false);
    assert_eq!(list[0]["user_agent"], "Phone Browser/2.0");
    assert_eq!(list[1]["id"], laptop.session_id.as_str());
    assert_eq!(list[1]["current"], true);
    for s in &list {
        for field in ["created_at", "last_seen_at", "expires_at"] {
            assert!(s[field].is_string(), "{field}");
        }
        assert!(s.get("ip").is_some());
    }

    // Another user cannot revoke Grace's session, and learns nothing.
    let mallory = t.signed_in("mallory@example.com").await;
    t.send(Req::delete(&format!("/v1/sessions/{}", phone.session_id)).session(&mallory))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    t.send(Req::delete("/v1/sessions/ses_doesnotexist").session(&laptop))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    let r = t
        .send(Req::delete(&format!("/v1/sessions/{}", phone.session_id)).session(&laptop))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.set_cookie(COOKIE).is_none(),
        "revoking another session keeps ours"
    );
    t.send(Req::get("/v1/me").session(&phone))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(
        t.send(Req::get("/v1/me").session(&laptop)).await.status,
        StatusCode::OK
    );
    let list = t
        .send(Req::get("/v1/sessions").session(&laptop))
        .await
        .json();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_caller_only() {
    let t = TestApp::new().await;
    t.register("heidi@example.com").await;
    let a = t.login("heidi@example.com").await;
    let b = t.login("heidi@example.com").await;
    let other = t.signed_in("ivan@example.com").await;
    let r = t.send(Req::post("/v1/logout-all").session(&b)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.set_cookie(COOKIE).unwrap().attr("Max-Age"),
        Some(Some("0"))
    );
    for s in [&a, &b] {
        t.send(Req::get("/v1/me").session(s))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    assert_eq!(
        t.send(Req::get("/v1/me").session(&other)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn idle_sessions_expire_and_activity_keeps_them_alive() {
    let t = TestApp::new().await; // idle 2h, absolute 30d
    let idle = t.signed_in("judy@example.com").await;
    t.advance(Duration::from_secs(2 * 3600 - 1));
    assert_eq!(
        t.send(Req::get("/v1/verify").session(&idle)).await.status,
        StatusCode::OK
    );
    // That request was activity: the idle clock restarts from it.
    t.advance(Duration::from_secs(2 * 3600 - 2));
    assert_eq!(
        t.send(Req::get("/v1/verify").session(&idle)).await.status,
        StatusCode::OK
    );
    t.advance(Duration::from_secs(2 * 3600));
    t.send(Req::get("/v1/me").session(&idle))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn absolute_lifetime_ends_even_an_active_session() {
    let t = TestApp::with(&[
        ("session_idle_timeout", "30m"),
        ("session_absolute_timeout", "1h"),
    ])
    .await;
    let login = t.signed_in("ken@example.com").await;
    let parse = |field: &str| {
        time::OffsetDateTime::parse(
            login.body["session"][field].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        parse("expires_at") - parse("created_at"),
        time::Duration::hours(1)
    );
    assert_eq!(
        parse("idle_expires_at") - parse("created_at"),
        time::Duration::minutes(30)
    );
    for _ in 0..5 {
        t.advance(Duration::from_secs(11 * 60));
        assert_eq!(
            t.send(Req::get("/v1/verify").session(&login)).await.status,
            StatusCode::OK
        );
    }
    t.advance(Duration::from_secs(5 * 60)); // 60 minutes since login
    t.send(Req::get("/v1/verify").session(&login))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn last_seen_is_written_at_most_once_a_minute() {
    let t = TestApp::new().await;
    let login = t.signed_in("leo@example.com").await;
    let created = login.body["session"]["last_seen_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let last_seen = |r: common::Resp| {
        r.json()["sessions"][0]["last_seen_at"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    t.advance(Duration::from_secs(30));
    for _ in 0..10 {
        assert_eq!(
            t.send(Req::get("/v1/verify").session(&login)).await.status,
            StatusCode::OK
        );
    }
    // The list reads the store, not the cache: no write happened yet.
    assert_eq!(
        last_seen(t.send(Req::get("/v1/sessions").session(&login)).await),
        created
    );

    t.advance(Duration::from_secs(31));
    assert_eq!(
        t.send(Req::get("/v1/verify").session(&login)).await.status,
        StatusCode::OK
    );
    let written = last_seen(t.send(Req::get("/v1/sessions").session(&login)).await);
    assert_ne!(written, created);
    assert!(written > created);
}

/// Activity is written behind the request; when that write finds the
/// session gone from the store (deleted behind the cache, as an expiry sweep
/// or another process can), the cached copy is dropped as well.
#[tokio::test]
async fn a_touch_that_finds_the_session_gone_drops_the_cached_copy() {
    let t = TestApp::new().await;
    let login = t.signed_in("ria@example.com").await;
    common::db::delete_all_sessions(&t.db_url).await;

    t.advance(Duration::from_secs(61));
    let mut status = t.send(Req::get("/v1/verify").session(&login)).await.status;
    for _ in 0..200 {
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = t.send(Req::get("/v1/verify").session(&login)).await.status;
    }
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    let t = TestApp::new().await;
    t.register("mia@example.com").await;
    let attempt = |email: &'static str, password: &'static str| {
        Req::post("/v1/sessions").json(json!({"email": email, "password": password}))
    };
    let mut wrong_times = Vec::new();
    let mut unknown_times = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let wrong = t.send(attempt("mia@example.com", "not the password")).await;
        wrong_times.push(started.elapsed());
        let started = std::time::Instant::now();
        let unknown = t
            .send(attempt("nobody@example.com", "not the password"))
            .await;
        unknown_times.push(started.elapsed());
        let malformed = t.send(attempt("not-an-email", "not the password")).await;
        for r in [&wrong, &unknown, &malformed] {
            r.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
            assert!(r.set_cookie(COOKIE).is_none());
        }
        bodies.push((
            wrong.body.clone(),
            unknown.body.clone(),
            malformed.body.clone(),
        ));
    }
    for (wrong, unknown, malformed) in &bodies {
        assert_eq!(
            wrong, unknown,
            "same body for unknown email and wrong password"
        );
        assert_eq!(wrong, malformed);
    }
    // Both paths pay for one argon2id verification (a dummy hash for unknown
    // emails); without it the unknown-email path would answer in microseconds.
    wrong_times.sort();
    unknown_times.sort();
    let (wrong, unknown) = (wrong_times[1], unknown_times[1]);
    assert!(
        unknown * 4 > wrong && wrong * 4 > unknown,
        "median wrong-password {wrong:?} vs unknown-email {unknown:?}"
    );
}

#[tokio::test]
async fn verify_reports_identity_in_headers_and_checks_roles() {
    let t = TestApp::new().await;
    let login = t.signed_in("nina@example.com").await;
    t.app
        .core
        .set_roles(&login.user_id, &["editor".into(), "billing:read".into()])
        .await
        .unwrap();
    let r = t.send(Req::get("/v1/verify").session(&login)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-auth-user"), Some(login.user_id.as_str()));
    assert_eq!(r.header("x-auth-roles"), Some("editor,billing:read"));
    assert_eq!(r.header("x-auth-method"), Some("session"));
    let ok = t
        .send(Req::get("/v1/verify?role=editor").session(&login))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    t.send(Req::get("/v1/verify?role=admin").session(&login))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    t.send(Req::get("/v1/verify?role=admin"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn role_changes_and_suspension_show_at_the_next_request() {
    let t = TestApp::new().await;
    // Another admin, so that olga is never the last active one (no one
    // can take the role from, or suspend, that one: `last_admin`).
    let other = t.register("ops@example.com").await;
    let other = other["id"].as_str().unwrap();
    t.app
        .core
        .set_roles(other, &["admin".into()])
        .await
        .unwrap();
    let login = t.signed_in("olga@example.com").await;
    // Warm every cache first.
    assert_eq!(
        t.send(Req::get("/v1/verify").session(&login))
            .await
            .header("x-auth-roles"),
        Some("")
    );

    t.app
        .core
        .set_roles(&login.user_id, &["admin".into()])
        .await
        .unwrap();
    let r = t
        .send(Req::get("/v1/verify?role=admin").session(&login))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-auth-roles"), Some("admin"));

    t.app.core.set_roles(&login.user_id, &[]).await.unwrap();
    t.send(Req::get("/v1/verify?role=admin").session(&login))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");

    t.app
        .core
        .set_status(&login.user_id, UserStatus::Suspended)
        .await
        .unwrap();
    t.send(Req::get("/v1/me").session(&login))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    // Logins are refused with a distinct code, but only after the password
    // is proven: a wrong password still gets invalid_credentials.
    t.send(
        Req::post("/v1/sessions").json(json!({"email": "olga@example.com", "password": PASSWORD})),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "account_suspended");
    t.send(
        Req::post("/v1/sessions")
            .json(json!({"email": "olga@example.com", "password": "wrong password"})),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");

    // Reactivation does not resurrect the old sessions.
    t.app
        .core
        .set_status(&login.user_id, UserStatus::Active)
        .await
        .unwrap();
    t.send(Req::get("/v1/me").session(&login))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    t.login("olga@example.com").await;
}

#[tokio::test]
async fn sessions_survive_a_restart_on_the_same_database() {
    let t = TestApp::new().await;
    let login = t.signed_in("pat@example.com").await;
    let t = t.restart(&[]).await;
    let r = t.send(Req::get("/v1/me").session(&login)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["user"]["email"], "pat@example.com");
    // And a logout after the restart still works.
    assert_eq!(
        t.send(Req::delete("/v1/session").session(&login))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn csrf_is_required_for_cookie_authenticated_unsafe_requests() {
    let t = TestApp::new().await;
    let login = t.signed_in("quinn@example.com").await;
    let unsafe_requests = || {
        vec![
            Req::delete("/v1/session"),
            Req::post("/v1/logout-all"),
            Req::delete(&format!("/v1/sessions/{}", login.session_id)),
        ]
    };
    for req in unsafe_requests() {
        // no token
        t.send(req.header("cookie", &login.cookie))
            .await
            .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    }
    for req in unsafe_requests() {
        // wrong token (another session's token is wrong too)
        t.send(
            req.header("cookie", &login.cookie)
                .header("x-csrf-token", "forged"),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    }
    for origin in [
        "https://evil.example",
        "null",
        "http://localhost:9999",
        "http://127.0.0.1:8080",
    ] {
        for req in unsafe_requests() {
            t.send(req.session(&login).header("origin", origin))
                .await
                .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
        }
    }
    // The session survived every refused attempt.
    assert_eq!(
        t.send(Req::get("/v1/me").session(&login)).await.status,
        StatusCode::OK
    );
    // Right token and our own origin: accepted.
    let r = t
        .send(
            Req::delete("/v1/session")
                .session(&login)
                .header("origin", ORIGIN),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn login_and_register_refuse_cross_site_requests() {
    let t = TestApp::new().await;
    t.register("rita@example.com").await;
    let login_body = json!({"email": "rita@example.com", "password": PASSWORD});
    let register_body = json!({"email": "sam@example.com", "password": PASSWORD});
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = t
            .send(
                Req::post("/v1/sessions")
                    .header(name, value)
                    .json(login_body.clone()),
            )
            .await;
        r.assert_error(StatusCode::FORBIDDEN, "csrf_failed");
        assert!(r.set_cookie(COOKIE).is_none());
        t.send(
            Req::post("/v1/accounts")
                .header(name, value)
                .json(register_body.clone()),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
        // Form-encoded login (what a cross-site HTML form sends) too.
        t.send(
            Req::post("/v1/sessions")
                .header(name, value)
                .form(&[("email", "rita@example.com"), ("password", PASSWORD)]),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    }
    // Same origin and same-site fetches are fine.
    t.login_with(
        Req::post("/v1/sessions")
            .header("origin", ORIGIN)
            .header("sec-fetch-site", "same-origin")
            .json(login_body.clone()),
    )
    .await;
    let r = t
        .send(
            Req::post("/v1/accounts")
                .header("origin", ORIGIN)
                .json(register_body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn changing_the_password_rotates_this_session_and_ends_the_others() {
    let t = TestApp::new().await;
    t.register("uli@example.com").await;
    let here = t.login("uli@example.com").await;
    let elsewhere = t.login("uli@example.com").await;
    let change = |current: &str, new: &str| {
        Req::post("/v1/account/password")
            .json(json!({"current_password": current, "new_password": new}))
    };
    t.send(change(PASSWORD, "a brand new password").header("cookie", &here.cookie))
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    t.send(change("not my password", "a brand new password").session(&here))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    t.send(change(PASSWORD, "short").session(&here))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    let r = t
        .send(change(PASSWORD, "a brand new password").session(&here))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let fresh = r.set_cookie(COOKIE).expect("a fresh session cookie");
    assert_ne!(format!("{COOKIE}={}", fresh.value), here.cookie);
    for old in [&here, &elsewhere] {
        t.send(Req::get("/v1/me").session(old))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    let me = t
        .send(Req::get("/v1/me").header("cookie", &format!("{COOKIE}={}", fresh.value)))
        .await;
    assert_eq!(me.status, StatusCode::OK);
    t.send(
        Req::post("/v1/sessions").json(json!({"email": "uli@example.com", "password": PASSWORD})),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let r = t
        .send(
            Req::post("/v1/sessions")
                .json(json!({"email": "uli@example.com", "password": "a brand new password"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let events = t
        .app
        .core
        .audit_events(Some("password_changed"), None, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let log =
        serde_json::to_string(&t.app.core.audit_events(None, None, 100).await.unwrap()).unwrap();
    for secret in [
        PASSWORD,
        "a brand new password",
        &fresh.value,
        here.cookie.split('=').nth(1).unwrap(),
    ] {
        assert!(!log.contains(secret), "a secret reached the audit log");
    }
}

/// A failed login is audited with the account it targeted when the email is
/// one (so an operator can see who is being guessed at), through every door,
/// and never with the password or the email as typed.
#[tokio::test]
async fn failed_logins_name_the_targeted_account() {
    let t = TestApp::new().await;
    let user_id = t.register("kim@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = "not the password at all";
    let attempts = [
        Req::post("/v1/sessions").json(json!({"email": "Kim@Example.com", "password": wrong})),
        Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", "kim@example.com"),
            ("password", wrong),
        ]),
        Req::post("/v1/sessions").json(json!({"email": "nobody@example.com", "password": wrong})),
    ];
    for attempt in attempts {
        assert_ne!(t.send(attempt).await.status, StatusCode::CREATED);
        t.advance(Duration::from_secs(1));
    }
    let events = t
        .app
        .core
        .audit_events(Some("login_failed"), None, 10)
        .await
        .unwrap();
    let named: Vec<(Option<&str>, &str)> = events
        .iter()
        .map(|e| (e.user_id.as_deref(), e.detail["via"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        named,
        [
            (None, "session"),
            (Some(user_id.as_str()), "token"),
            (Some(user_id.as_str()), "session"),
        ],
        "newest first"
    );
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(wrong) && !text.contains("nobody@") && !text.contains("Kim@"));
}

/// Issue #19, 12: a user's live sessions were not capped, so a script
/// logging in for ever grew the device list without bound. Past
/// `max_sessions_per_user` a login ends the oldest, revoked and audited.
#[tokio::test]
async fn a_login_past_the_per_user_cap_ends_the_oldest_session() {
    let t = TestApp::with(&[("max_sessions_per_user", "3")]).await;
    t.register("cap@example.com").await;
    let mut logins = Vec::new();
    for _ in 0..3 {
        logins.push(t.login("cap@example.com").await);
        t.advance(Duration::from_secs(1));
    }
    let newest = t.login("cap@example.com").await;
    t.send(Req::get("/v1/me").session(&logins[0]))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    for login in logins[1..].iter().chain([&newest]) {
        assert_eq!(
            t.send(Req::get("/v1/me").session(login)).await.status,
            StatusCode::OK
        );
    }
    let list = t
        .send(Req::get("/v1/sessions").session(&newest))
        .await
        .json();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 3);
    let revoked = t
        .app
        .core
        .audit_events(Some("session_revoked"), None, 10)
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].detail["session"], logins[0].session_id.as_str());
    assert_eq!(revoked[0].detail["reason"], "session_cap");
}

/// A session the store gives back after it ended (a restored backup, or a
/// Redis replica promoted before it had the delete) is still refused: every
/// ending revokes the session's id in the durable log, and the session path
/// checks it.
#[tokio::test]
async fn an_ended_session_that_the_store_gives_back_is_refused() {
    let t = TestApp::new().await;
    let login = t.signed_in("una@example.com").await;
    let other = t.login("una@example.com").await;
    let snapshot = common::db::snapshot_sessions(&t.db_url).await;
    let r = t.send(Req::delete("/v1/session").session(&login)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    common::db::restore_sessions(&t.db_url, snapshot).await;
    // A fresh app on the same store (nothing cached), as another node.
    let t = t.restart(&[]).await;
    assert_eq!(
        t.send(Req::get("/v1/me").session(&login)).await.status,
        StatusCode::UNAUTHORIZED,
        "the ended session came back"
    );
    assert_eq!(
        t.send(Req::get("/v1/me").session(&other)).await.status,
        StatusCode::OK,
        "the session that did not end is fine"
    );

    // A logout everywhere, then the store gives every session back: none
    // passes, and signing in again works. (The cut-off ends sessions made
    // before its moment; this test's clock stands still unless moved.)
    t.advance(Duration::from_secs(1));
    let snapshot = common::db::snapshot_sessions(&t.db_url).await;
    let r = t.send(Req::post("/v1/logout-all").session(&other)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    common::db::restore_sessions(&t.db_url, snapshot).await;
    let t = t.restart(&[]).await;
    for s in [&login, &other] {
        assert_eq!(
            t.send(Req::get("/v1/me").session(s)).await.status,
            StatusCode::UNAUTHORIZED,
            "a session ended everywhere came back"
        );
    }
    let again = t.login("una@example.com").await;
    assert_eq!(
        t.send(Req::get("/v1/me").session(&again)).await.status,
        StatusCode::OK
    );
}

/// `session_cache_entries = 0` turns the session cache off (every check
/// reads the store: on Redis, one round trip): logins, checks, activity and
/// logouts still work, and a logout is refused at once without a cache to
/// evict.
#[tokio::test]
async fn without_a_session_cache_sessions_still_log_in_verify_and_log_out() {
    let t = TestApp::with(&[("session_cache_entries", "0")]).await;
    let login = t.signed_in("nocache@example.com").await;
    let other = t.login("nocache@example.com").await;
    for _ in 0..2 {
        let r = t.send(Req::get("/v1/verify").session(&login)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.header("x-auth-user"), Some(login.user_id.as_str()));
    }
    // Past the touch interval: the check writes activity, straight to the store.
    t.advance(Duration::from_secs(120));
    let r = t.send(Req::get("/v1/me").session(&login)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = t.send(Req::delete("/v1/session").session(&login)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    t.send(Req::get("/v1/verify").session(&login))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(
        t.send(Req::get("/v1/verify").session(&other)).await.status,
        StatusCode::OK,
        "the other session is untouched"
    );
}
