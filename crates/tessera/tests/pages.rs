//! The HTML pages through the real router: security headers, CSRF refusals
//! of page forms, login answers that do not reveal accounts, the admin
//! guard, and malformed input that never panics or 500s.

mod common;

use axum::http::StatusCode;
use common::logs::Logs;
use common::{COOKIE, Login, ORIGIN, PASSWORD, Req, Resp, TestApp, form_field as field};

/// The text of the page's error box.
fn error_box(html: &str) -> String {
    let start = html.find("id=\"form-error\">").expect("an error box") + 16;
    let end = html[start..].find('<').expect("end of box") + start;
    html[start..end].to_owned()
}

fn location(r: &Resp) -> &str {
    r.header("location").expect("a Location header")
}

fn assert_html(r: &Resp) {
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/html")),
        "an HTML page: {:?}",
        r.header("content-type")
    );
}

fn assert_page_headers(r: &Resp) {
    let csp = r.header("content-security-policy").expect("CSP");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("same-origin"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

/// Signs in through the login form; the cookie header to send afterwards.
async fn form_login(t: &TestApp, email: &str, password: &str) -> Resp {
    t.send(
        Req::post("/login")
            .header("origin", ORIGIN)
            .header("sec-fetch-site", "same-origin")
            .form(&[("email", email), ("password", password)]),
    )
    .await
}

/// A signed-in browser as the pages see it: cookie and the form token.
struct Browser {
    cookie: String,
    csrf: String,
}

async fn page_session(t: &TestApp, login: &Login) -> Browser {
    let r = t
        .send(Req::get("/account").header("cookie", &login.cookie))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    Browser {
        cookie: login.cookie.clone(),
        csrf: field(&r.text(), "csrf_token"),
    }
}

async fn alive(t: &TestApp, cookie: &str) -> bool {
    t.send(Req::get("/v1/me").header("cookie", cookie))
        .await
        .status
        == StatusCode::OK
}

#[tokio::test]
async fn every_page_sends_the_security_headers() {
    let t = TestApp::new().await;
    let user = t.signed_in("alice@example.com").await;
    let boss = t.signed_in("boss@example.com").await;
    t.app
        .core
        .set_roles(&boss.user_id, &["admin".into()])
        .await
        .unwrap();
    for (path, cookie, status) in [
        ("/login", None, StatusCode::OK),
        ("/register", None, StatusCode::OK),
        ("/", None, StatusCode::SEE_OTHER),
        ("/account", None, StatusCode::SEE_OTHER),
        ("/account", Some(&user.cookie), StatusCode::OK),
        ("/admin", Some(&user.cookie), StatusCode::FORBIDDEN),
        ("/admin", Some(&boss.cookie), StatusCode::OK),
    ] {
        let mut req = Req::get(path);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = t.send(req).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_page_headers(&r);
        if status != StatusCode::SEE_OTHER {
            assert_html(&r);
            let html = r.text();
            assert!(!html.contains("style="), "{path}: no inline styles");
            assert!(!html.contains("<script"), "{path}: no scripts");
            assert!(html.contains("/static/tessera.css"), "{path}");
        }
    }
    // Error pages too (a CSRF refusal).
    let r = t
        .send(
            Req::post("/login")
                .header("origin", "http://evil.example")
                .form(&[("email", "a@example.com"), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_page_headers(&r);

    let css = t.send(Req::get("/static/tessera.css")).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/css"))
    );
    assert_eq!(css.header("cache-control"), Some("public, max-age=3600"));
    assert_eq!(css.header("x-content-type-options"), Some("nosniff"));
    assert!(css.text().contains(".card"));
}

#[tokio::test]
async fn root_sends_visitors_to_login_and_members_to_their_account() {
    let t = TestApp::new().await;
    let r = t.send(Req::get("/")).await;
    assert_eq!(location(&r), "/login");
    let user = t.signed_in("alice@example.com").await;
    let r = t.send(Req::get("/").header("cookie", &user.cookie)).await;
    assert_eq!(location(&r), "/account");
    let r = t
        .send(Req::get("/login").header("cookie", &user.cookie))
        .await;
    assert_eq!(location(&r), "/account");
    // A dead cookie is dropped on the way to the login page.
    let dead = format!("{COOKIE}={}", "A".repeat(43));
    let r = t.send(Req::get("/account").header("cookie", &dead)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let cleared = r.set_cookie(COOKIE).expect("cookie cleared");
    assert_eq!(cleared.attr("Max-Age"), Some(Some("0")));
    // Signed-out visitors of /admin come back there after login.
    let r = t.send(Req::get("/admin")).await;
    assert_eq!(location(&r), "/login?next=%2Fadmin");
}

#[tokio::test]
async fn login_form_signs_in_with_the_contract_cookie() {
    let t = TestApp::new().await;
    t.register("alice@example.com").await;
    let r = form_login(&t, "Alice@Example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(location(&r), "/account");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let c = r.set_cookie(COOKIE).expect("session cookie");
    assert_eq!(c.value.len(), 43);
    assert_eq!(c.attr("Path"), Some(Some("/")));
    assert_eq!(c.attr("HttpOnly"), Some(None));
    assert_eq!(c.attr("Secure"), Some(None));
    assert_eq!(c.attr("SameSite"), Some(Some("Lax")));
    assert_eq!(c.attr("Domain"), None);
    let cookie = format!("{COOKIE}={}", c.value);
    let page = t.send(Req::get("/account").header("cookie", &cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("alice@example.com"));
    assert!(html.contains("This device"));
    // The page never shows the cookie value.
    assert!(!html.contains(&c.value));

    // `next` only ever leads to our own pages.
    let r = t
        .send(Req::post("/login").form(&[
            ("email", "alice@example.com"),
            ("password", PASSWORD),
            ("next", "https://evil.example/"),
        ]))
        .await;
    assert_eq!(location(&r), "/account");
    let r = t
        .send(Req::post("/login").form(&[
            ("email", "alice@example.com"),
            ("password", PASSWORD),
            ("next", "/admin"),
        ]))
        .await;
    assert_eq!(location(&r), "/admin");
}

#[tokio::test]
async fn login_form_says_the_same_for_unknown_emails_and_wrong_passwords() {
    let t = TestApp::new().await;
    t.register("alice@example.com").await;
    let wrong_password = form_login(&t, "alice@example.com", "not the password").await;
    let unknown_email = form_login(&t, "nobody@example.com", PASSWORD).await;
    let malformed_email = form_login(&t, "nobody", PASSWORD).await;
    for r in [&wrong_password, &unknown_email, &malformed_email] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        assert_html(r);
        assert_page_headers(r);
        assert!(r.set_cookie(COOKIE).is_none());
        assert_eq!(error_box(&r.text()), "The email or password is incorrect.");
        assert!(
            !r.text().contains("not the password"),
            "passwords are never echoed"
        );
        assert!(!r.text().contains(PASSWORD), "passwords are never echoed");
    }
    // The email is kept in the form (escaped); nothing else differs.
    assert!(
        unknown_email
            .text()
            .contains("value=\"nobody@example.com\"")
    );
    assert_eq!(
        wrong_password.text().replace("alice@example.com", "EMAIL"),
        unknown_email.text().replace("nobody@example.com", "EMAIL")
    );

    // Empty fields and a too-short password: a clear message, no 500.
    let r = form_login(&t, "", "").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_box(&r.text()), "Enter your email and your password.");
    let r = form_login(&t, "alice@example.com", "short").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_box(&r.text()).contains("at least 8 characters"));

    // Escaping: markup in the email comes back inert.
    let r = form_login(&t, "<b>x</b>@example.com", PASSWORD).await;
    assert!(!r.text().contains("<b>x</b>"));
    assert!(
        r.text()
            .contains("value=\"&#60;b&#62;x&#60;/b&#62;@example.com\"")
    );
}

#[tokio::test]
async fn suspended_accounts_are_told_only_after_the_right_password() {
    let t = TestApp::new().await;
    let user = t.register("sam@example.com").await;
    let id = user["id"].as_str().unwrap();
    t.app
        .core
        .set_status(id, tessera::core::accounts::UserStatus::Suspended)
        .await
        .unwrap();
    let r = form_login(&t, "sam@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(error_box(&r.text()), "This account is suspended.");
    let r = form_login(&t, "sam@example.com", "wrong password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_box(&r.text()), "The email or password is incorrect.");
}

#[tokio::test]
async fn login_and_register_forms_refuse_foreign_posts() {
    let t = TestApp::new().await;
    t.register("alice@example.com").await;
    for path in ["/login", "/register"] {
        for (name, value) in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://localhost:9999"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let r = t
                .send(Req::post(path).header(name, value).form(&[
                    ("email", "alice@example.com"),
                    ("password", PASSWORD),
                    ("confirm_password", PASSWORD),
                ]))
                .await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path} {name}: {value}");
            assert_html(&r);
            assert!(r.text().contains("csrf_failed"));
            assert!(r.set_cookie(COOKIE).is_none());
        }
    }
    // Same-origin and same-site posts (and clients sending neither header)
    // are fine.
    let r = t
        .send(
            Req::post("/login")
                .header("origin", ORIGIN)
                .header("sec-fetch-site", "same-site")
                .form(&[("email", "alice@example.com"), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn register_form_creates_the_account_and_signs_in() {
    let t = TestApp::new().await;
    let r = t
        .send(Req::post("/register").header("origin", ORIGIN).form(&[
            ("email", "new@example.com"),
            ("password", PASSWORD),
            ("confirm_password", PASSWORD),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(location(&r), "/account?done=welcome");
    let c = r.set_cookie(COOKIE).expect("signed in");
    let cookie = format!("{COOKIE}={}", c.value);
    let page = t
        .send(Req::get("/account?done=welcome").header("cookie", &cookie))
        .await;
    assert!(page.text().contains("Welcome to Tessera"));

    let again = |email: &'static str, password: &'static str, confirm: &'static str| {
        Req::post("/register").form(&[
            ("email", email),
            ("password", password),
            ("confirm_password", confirm),
        ])
    };
    let r = t.send(again("NEW@example.com", PASSWORD, PASSWORD)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(error_box(&r.text()).contains("already exists"));
    let r = t
        .send(again("b@example.com", PASSWORD, "something else"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_box(&r.text()), "The two passwords do not match.");
    let r = t.send(again("b@example.com", "short", "short")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_box(&r.text()),
        "Password must be at least 8 characters."
    );
    let r = t.send(again("not-an-email", PASSWORD, PASSWORD)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_box(&r.text()).starts_with("Email is not valid"));
    assert!(r.set_cookie(COOKIE).is_none());
}

#[tokio::test]
async fn signed_in_forms_need_the_token_and_our_origin() {
    let t = TestApp::new().await;
    let login = t.signed_in("alice@example.com").await;
    let b = page_session(&t, &login).await;
    // The form token is the session's CSRF token (the API's).
    assert_eq!(b.csrf, login.csrf);
    let forms: [(&str, Vec<(&str, &str)>); 4] = [
        ("/logout", vec![]),
        ("/account/logout-all", vec![]),
        (
            "/account/password",
            vec![
                ("current_password", PASSWORD),
                ("new_password", "a brand new passphrase"),
                ("confirm_password", "a brand new passphrase"),
            ],
        ),
        (
            "/account/sessions/revoke",
            vec![("session_id", login.session_id.as_str())],
        ),
    ];
    for (path, fields) in &forms {
        let with = |token: Option<&str>| {
            let mut all = fields.clone();
            if let Some(token) = token {
                all.push(("csrf_token", token));
            }
            Req::post(path).header("cookie", &b.cookie).form(&all)
        };
        let wrong = format!("{}x", &b.csrf[..b.csrf.len() - 1]);
        for (what, req) in [
            ("no token", with(None)),
            ("empty token", with(Some(""))),
            ("wrong token", with(Some(&wrong))),
            (
                "API header instead of field",
                with(None).header("x-csrf-token", &b.csrf),
            ),
            (
                "foreign origin",
                with(Some(&b.csrf)).header("origin", "http://localhost:9999"),
            ),
            ("null origin", with(Some(&b.csrf)).header("origin", "null")),
            (
                "cross-site fetch",
                with(Some(&b.csrf)).header("sec-fetch-site", "cross-site"),
            ),
        ] {
            let r = t.send(req).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{path}, {what}: {}",
                r.text()
            );
            assert_html(&r);
            assert_page_headers(&r);
            assert!(r.text().contains("csrf_failed"), "{path}, {what}");
            assert!(r.set_cookie(COOKIE).is_none());
            assert!(
                alive(&t, &b.cookie).await,
                "{path}, {what}: still signed in"
            );
        }
        // A repeated token field is refused too.
        let mut twice = fields.clone();
        twice.push(("csrf_token", &b.csrf));
        twice.push(("csrf_token", &b.csrf));
        let r = t
            .send(Req::post(path).header("cookie", &b.cookie).form(&twice))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}, repeated token");
    }
    // Password unchanged: the old one still logs in.
    t.login("alice@example.com").await;

    // With the token and our origin, sign-out works and ends the session.
    let r = t
        .send(
            Req::post("/logout")
                .header("cookie", &b.cookie)
                .header("origin", ORIGIN)
                .form(&[("csrf_token", b.csrf.as_str())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login?done=signed_out");
    assert_eq!(
        r.set_cookie(COOKIE).unwrap().attr("Max-Age"),
        Some(Some("0"))
    );
    assert!(!alive(&t, &b.cookie).await);
    // A form posted after the session ended goes to the login page.
    let r = t
        .send(
            Req::post("/account/logout-all")
                .header("cookie", &b.cookie)
                .form(&[("csrf_token", b.csrf.as_str())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login"));
}

#[tokio::test]
async fn account_forms_revoke_sessions_and_change_the_password() {
    let t = TestApp::new().await;
    let login = t.signed_in("alice@example.com").await;
    let other = t.login("alice@example.com").await;
    let b = page_session(&t, &login).await;
    let page = t
        .send(Req::get("/account").header("cookie", &b.cookie))
        .await
        .text();
    assert!(page.contains(&other.session_id), "both sessions listed");
    assert_eq!(page.matches("class=\"session-row").count(), 2);

    let post = |path: &str, fields: &[(&str, &str)]| {
        let mut all = fields.to_vec();
        all.push(("csrf_token", b.csrf.as_str()));
        Req::post(path)
            .header("cookie", &b.cookie)
            .header("origin", ORIGIN)
            .form(&all)
    };
    // Sign out the other device.
    let r = t
        .send(post(
            "/account/sessions/revoke",
            &[("session_id", &other.session_id)],
        ))
        .await;
    assert_eq!(location(&r), "/account?done=session_revoked");
    assert!(!alive(&t, &other.cookie).await);
    assert!(alive(&t, &b.cookie).await);
    // Someone else's or an unknown session: nothing happens.
    let r = t
        .send(post(
            "/account/sessions/revoke",
            &[("session_id", "ses_nope")],
        ))
        .await;
    assert_eq!(location(&r), "/account?done=session_gone");

    // Password change: wrong current password, mismatch, too short.
    let third = t.login("alice@example.com").await;
    for (current, new, confirm, status, message) in [
        (
            "wrong password!",
            "a brand new passphrase",
            "a brand new passphrase",
            StatusCode::UNPROCESSABLE_ENTITY,
            "The current password is incorrect.",
        ),
        (
            PASSWORD,
            "a brand new passphrase",
            "another passphrase",
            StatusCode::UNPROCESSABLE_ENTITY,
            "The two new passwords do not match.",
        ),
        (
            PASSWORD,
            "short",
            "short",
            StatusCode::UNPROCESSABLE_ENTITY,
            "The new password must be at least 8 characters.",
        ),
    ] {
        let r = t
            .send(post(
                "/account/password",
                &[
                    ("current_password", current),
                    ("new_password", new),
                    ("confirm_password", confirm),
                ],
            ))
            .await;
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(error_box(&r.text()), message);
        assert!(!r.text().contains(current) || current == PASSWORD);
        assert!(alive(&t, &third.cookie).await);
    }
    let r = t
        .send(post(
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "a brand new passphrase"),
                ("confirm_password", "a brand new passphrase"),
            ],
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(location(&r), "/account?done=password");
    let fresh = r.set_cookie(COOKIE).expect("rotated session cookie");
    let fresh = format!("{COOKIE}={}", fresh.value);
    assert_ne!(fresh, b.cookie);
    assert!(alive(&t, &fresh).await);
    assert!(!alive(&t, &b.cookie).await, "the old cookie is rotated out");
    assert!(
        !alive(&t, &third.cookie).await,
        "other devices are signed out"
    );
    let r = form_login(&t, "alice@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = form_login(&t, "alice@example.com", "a brand new passphrase").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    // Sign out everywhere.
    let b2 = Browser {
        csrf: field(
            &t.send(Req::get("/account").header("cookie", &fresh))
                .await
                .text(),
            "csrf_token",
        ),
        cookie: fresh,
    };
    let r = t
        .send(
            Req::post("/account/logout-all")
                .header("cookie", &b2.cookie)
                .header("origin", ORIGIN)
                .form(&[("csrf_token", b2.csrf.as_str())]),
        )
        .await;
    assert_eq!(location(&r), "/login?done=signed_out_everywhere");
    assert!(!alive(&t, &b2.cookie).await);
    assert!(
        t.app
            .core
            .sessions_of(&login.user_id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn admin_page_is_for_admins_only_and_its_forms_work() {
    let t = TestApp::new().await;
    let user = t.signed_in("pat@example.com").await;
    let boss = t.signed_in("boss@example.com").await;
    t.app
        .core
        .set_roles(&boss.user_id, &["admin".into()])
        .await
        .unwrap();

    // Non-admins: 403 page for the page and for every admin form.
    let r = t
        .send(Req::get("/admin").header("cookie", &user.cookie))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_html(&r);
    assert!(r.text().contains("admin role"));
    let user_b = page_session(&t, &user).await;
    for (path, fields) in [
        (
            "/admin/users/roles",
            vec![("user_id", user.user_id.as_str()), ("roles", "admin")],
        ),
        (
            "/admin/users/status",
            vec![("user_id", boss.user_id.as_str()), ("status", "suspended")],
        ),
        (
            "/admin/users/revoke",
            vec![("user_id", boss.user_id.as_str())],
        ),
        ("/admin/keys/rotate", vec![]),
    ] {
        let mut all = fields.clone();
        all.push(("csrf_token", user_b.csrf.as_str()));
        let r = t
            .send(Req::post(path).header("cookie", &user_b.cookie).form(&all))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    let me = t
        .send(Req::get("/v1/me").header("cookie", &user.cookie))
        .await;
    assert_eq!(me.json()["user"]["roles"], serde_json::json!([]));

    // The admin sees users, keys and the audit log.
    let b = page_session(&t, &boss).await;
    let r = t.send(Req::get("/admin").header("cookie", &b.cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    assert!(html.contains("pat@example.com") && html.contains("boss@example.com"));
    assert!(html.contains("key_"), "signing keys listed");
    assert!(html.contains("login_succeeded"), "audit log shown");

    let post = |path: &str, fields: &[(&str, &str)]| {
        let mut all = fields.to_vec();
        all.push(("csrf_token", b.csrf.as_str()));
        Req::post(path)
            .header("cookie", &b.cookie)
            .header("origin", ORIGIN)
            .form(&all)
    };
    // Admin forms are CSRF-checked like every other.
    let r = t
        .send(
            Req::post("/admin/users/status")
                .header("cookie", &b.cookie)
                .form(&[("user_id", user.user_id.as_str()), ("status", "suspended")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(alive(&t, &user.cookie).await);

    // Roles.
    let r = t
        .send(post(
            "/admin/users/roles",
            &[
                ("user_id", &user.user_id),
                ("roles", "billing:read, support"),
                ("q", "pat"),
            ],
        ))
        .await;
    assert_eq!(location(&r), "/admin?done=roles&q=pat");
    let me = t
        .send(Req::get("/v1/me").header("cookie", &user.cookie))
        .await;
    assert_eq!(
        me.json()["user"]["roles"],
        serde_json::json!(["billing:read", "support"])
    );
    let r = t
        .send(post(
            "/admin/users/roles",
            &[("user_id", &user.user_id), ("roles", "Bad Role!")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("is not valid"));
    // The last active admin keeps the role (the core's rule, the page's
    // words).
    let r = t
        .send(post(
            "/admin/users/roles",
            &[("user_id", &boss.user_id), ("roles", "")],
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "no demotion of the last admin"
    );
    assert!(
        r.text().contains(
            "You are the last active administrator: you cannot remove your own admin role."
        ),
        "{}",
        r.text()
    );
    let r = t
        .send(post(
            "/admin/users/roles",
            &[("user_id", "usr_nobody"), ("roles", "x")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Suspend: the user's session dies at once; reactivate.
    let r = t
        .send(post(
            "/admin/users/status",
            &[("user_id", &user.user_id), ("status", "suspended")],
        ))
        .await;
    assert_eq!(location(&r), "/admin?done=suspended");
    assert!(!alive(&t, &user.cookie).await);
    let r = t
        .send(Req::get("/account").header("cookie", &user.cookie))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = t
        .send(post(
            "/admin/users/status",
            &[("user_id", &boss.user_id), ("status", "suspended")],
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "no suspension of the last admin"
    );
    assert!(
        r.text().contains(
            "You are the last active administrator: you cannot suspend your own account."
        ),
        "{}",
        r.text()
    );
    assert!(alive(&t, &boss.cookie).await);
    let r = t
        .send(post(
            "/admin/users/status",
            &[("user_id", &user.user_id), ("status", "deleted")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = t
        .send(post(
            "/admin/users/status",
            &[("user_id", &user.user_id), ("status", "active")],
        ))
        .await;
    assert_eq!(location(&r), "/admin?done=reactivated");
    let again = t.login("pat@example.com").await;

    // Revoke everything of a user.
    let r = t
        .send(post("/admin/users/revoke", &[("user_id", &user.user_id)]))
        .await;
    assert_eq!(location(&r), "/admin?done=revoked");
    assert!(!alive(&t, &again.cookie).await);

    // Keys.
    let before = t.app.core.key_list().await.unwrap().len();
    let r = t.send(post("/admin/keys/rotate", &[])).await;
    assert_eq!(location(&r), "/admin?done=rotated");
    assert_eq!(t.app.core.key_list().await.unwrap().len(), before + 1);

    // Audit filters by type and user.
    let r = t
        .send(
            Req::get(&format!("/admin?type=user_suspended&user={}", user.user_id))
                .header("cookie", &b.cookie),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    assert_eq!(html.matches("class=\"audit-row\"").count(), 1, "{html}");
    assert!(html.contains("data-type=\"user_suspended\""));
    let r = t
        .send(Req::get("/admin?type=key_rotated").header("cookie", &b.cookie))
        .await;
    assert!(r.text().contains("data-type=\"key_rotated\""));
    assert!(!r.text().contains("data-type=\"login_succeeded\""));
    // Search.
    let r = t
        .send(Req::get("/admin?q=PAT").header("cookie", &b.cookie))
        .await;
    let html = r.text();
    assert_eq!(html.matches("class=\"user-row\"").count(), 1);
    assert!(html.contains("pat@example.com"));
}

/// The secret a page shows once (`client_secret: <code>…</code>`).
fn shown_secret(html: &str) -> String {
    let start = html
        .find("client_secret: <code>")
        .unwrap_or_else(|| panic!("no secret shown: {html}"))
        + "client_secret: <code>".len();
    let end = html[start..].find("</code>").expect("end of the secret") + start;
    html[start..end].to_owned()
}

/// The table row of a client on the admin page.
fn client_row<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let start = html.find(&format!("data-client=\"{id}\""))?;
    let end = html[start..].find("</tr>").expect("end of the row") + start;
    Some(&html[start..end])
}

#[tokio::test]
async fn admin_page_manages_service_clients() {
    let t = TestApp::new().await;
    let user = t.signed_in("pat@example.com").await;
    let boss = t.signed_in("boss@example.com").await;
    t.app
        .core
        .set_roles(&boss.user_id, &["admin".into()])
        .await
        .unwrap();
    let existing = t.app.core.create_client("billing").await.unwrap();
    let id = existing.client.id.clone();
    let access = t.tokens_for("uma@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let introspect = |id: &str, secret: &str| {
        Req::post("/v1/token/introspect")
            .header("authorization", &common::basic_auth(id, secret))
            .form(&[("token", &access)])
    };
    let works = |id: String, secret: String| {
        let t = &t;
        let req = introspect(&id, &secret);
        async move { t.send(req).await.status == StatusCode::OK }
    };

    // Non-admins: a 403 page for every client form, and nothing changes.
    let user_b = page_session(&t, &user).await;
    for (path, fields) in [
        ("/admin/clients/create", vec![("name", "sneaky")]),
        (
            "/admin/clients/status",
            vec![("client_id", id.as_str()), ("disabled", "true")],
        ),
        ("/admin/clients/secret", vec![("client_id", id.as_str())]),
        (
            "/admin/clients/delete",
            vec![("client_id", id.as_str()), ("confirm", "yes")],
        ),
    ] {
        let mut all = fields.clone();
        all.push(("csrf_token", user_b.csrf.as_str()));
        let r = t
            .send(Req::post(path).header("cookie", &user_b.cookie).form(&all))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(!r.text().contains("client_secret"), "{path}");
    }
    assert_eq!(t.app.core.list_clients().await.unwrap().len(), 1);
    assert!(works(id.clone(), existing.secret.expose().to_owned()).await);

    // The section lists the client.
    let b = page_session(&t, &boss).await;
    let r = t.send(Req::get("/admin").header("cookie", &b.cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    assert!(html.contains("id=\"clients\"") && html.contains("Service clients"));
    let row = client_row(&html, &id).expect("the client is listed");
    assert!(
        row.contains("billing") && row.contains(">enabled<"),
        "{row}"
    );
    assert!(!html.contains(existing.secret.expose()));

    let post = |path: &str, fields: &[(&str, &str)]| {
        let mut all = fields.to_vec();
        all.push(("csrf_token", b.csrf.as_str()));
        Req::post(path)
            .header("cookie", &b.cookie)
            .header("origin", ORIGIN)
            .form(&all)
    };

    // Disabling needs the form's token and our origin.
    let disable = [("client_id", id.as_str()), ("disabled", "true")];
    let wrong = format!("{}x", &b.csrf[..b.csrf.len() - 1]);
    for (what, req) in [
        (
            "no token",
            Req::post("/admin/clients/status")
                .header("cookie", &b.cookie)
                .form(&disable),
        ),
        (
            "wrong token",
            Req::post("/admin/clients/status")
                .header("cookie", &b.cookie)
                .form(&[disable[0], disable[1], ("csrf_token", &wrong)]),
        ),
        (
            "foreign origin",
            post("/admin/clients/status", &disable).header("origin", "http://evil.example"),
        ),
    ] {
        let r = t.send(req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}");
        assert!(r.text().contains("csrf_failed"), "{what}");
    }
    assert!(!t.app.core.client(&id).await.unwrap().disabled());
    assert!(works(id.clone(), existing.secret.expose().to_owned()).await);

    // With them: disabled at once, shown so; enabled again.
    let r = t.send(post("/admin/clients/status", &disable)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(location(&r), "/admin?done=client_disabled#clients");
    assert!(!works(id.clone(), existing.secret.expose().to_owned()).await);
    let html = t
        .send(Req::get(location(&r)).header("cookie", &b.cookie))
        .await
        .text();
    assert!(
        html.contains("Service client disabled"),
        "the result is said"
    );
    let row = client_row(&html, &id).unwrap();
    assert!(
        row.contains(">disabled<") && row.contains(">Enable<"),
        "{row}"
    );
    let r = t
        .send(post(
            "/admin/clients/status",
            &[("client_id", &id), ("disabled", "false")],
        ))
        .await;
    assert_eq!(location(&r), "/admin?done=client_enabled#clients");
    assert!(works(id.clone(), existing.secret.expose().to_owned()).await);
    let r = t
        .send(post(
            "/admin/clients/status",
            &[("client_id", &id), ("disabled", "maybe")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = t
        .send(post(
            "/admin/clients/status",
            &[
                ("client_id", "cli_AAAAAAAAAAAAAAAAAAAAAA"),
                ("disabled", "true"),
            ],
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("No such client."));

    // Creating: the secret is shown on the answer to the post, once.
    let r = t
        .send(post("/admin/clients/create", &[("name", "search")]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_html(&r);
    assert_page_headers(&r);
    let html = r.text();
    let secret = shown_secret(&html);
    assert_eq!(secret.len(), 43);
    let created = t
        .app
        .core
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "search")
        .expect("created");
    assert!(html.contains(&created.id));
    assert!(works(created.id.clone(), secret.clone()).await);
    let again = t
        .send(Req::get("/admin").header("cookie", &b.cookie))
        .await
        .text();
    assert!(client_row(&again, &created.id).is_some());
    assert!(!again.contains(&secret), "shown only once");
    let r = t
        .send(post("/admin/clients/create", &[("name", "  ")]))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("1 to 100 printable characters"));

    // A new secret: shown once, the old one refused at once.
    let r = t
        .send(post("/admin/clients/secret", &[("client_id", &id)]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_page_headers(&r);
    let rotated = shown_secret(&r.text());
    assert!(r.text().contains("The old secret no longer works"));
    assert!(!works(id.clone(), existing.secret.expose().to_owned()).await);
    assert!(works(id.clone(), rotated.clone()).await);

    // Deleting asks first; nothing is deleted until confirmed.
    let r = t
        .send(post("/admin/clients/delete", &[("client_id", &id)]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = r.text();
    assert!(html.contains("id=\"confirm-delete\""), "{html}");
    assert!(html.contains("name=\"confirm\" value=\"yes\""));
    assert!(works(id.clone(), rotated.clone()).await);
    let r = t
        .send(post(
            "/admin/clients/delete",
            &[("client_id", &id), ("confirm", "yes")],
        ))
        .await;
    assert_eq!(location(&r), "/admin?done=client_deleted#clients");
    assert!(!works(id.clone(), rotated.clone()).await);
    let html = t
        .send(Req::get("/admin").header("cookie", &b.cookie))
        .await
        .text();
    assert!(client_row(&html, &id).is_none());
    assert!(client_row(&html, &created.id).is_some());
    let r = t
        .send(post(
            "/admin/clients/delete",
            &[("client_id", &id), ("confirm", "yes")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Every change is in the audit log, by this admin, without a secret.
    let events = t
        .app
        .core
        .audit_events(Some("client_changed"), None, 20)
        .await
        .unwrap();
    let mut changes: Vec<&str> = events
        .iter()
        .map(|e| e.detail["change"].as_str().unwrap())
        .collect();
    changes.sort_unstable();
    assert_eq!(
        changes,
        ["deleted", "disabled", "enabled", "secret_rotated"]
    );
    assert!(
        events
            .iter()
            .all(|e| e.detail["actor"] == boss.user_id.as_str())
    );
    let created_events = t
        .app
        .core
        .audit_events(Some("client_created"), Some(&boss.user_id), 20)
        .await
        .unwrap();
    assert_eq!(created_events.len(), 1);
    let html = t
        .send(Req::get("/admin?type=client_changed").header("cookie", &b.cookie))
        .await
        .text();
    assert!(html.contains("data-type=\"client_changed\""));
    for s in [existing.secret.expose(), secret.as_str(), rotated.as_str()] {
        assert!(!html.contains(s));
    }
}

#[tokio::test]
async fn admin_user_forms_create_set_passwords_and_delete() {
    let t = TestApp::new().await;
    let user = t.signed_in("pat@example.com").await;
    let boss = t.signed_in("boss@example.com").await;
    t.app
        .core
        .set_roles(&boss.user_id, &["admin".into()])
        .await
        .unwrap();
    let b = page_session(&t, &boss).await;
    let html = t
        .send(Req::get("/admin").header("cookie", &b.cookie))
        .await
        .text();
    for form in [
        "action=\"/admin/users/create\"",
        "action=\"/admin/users/password\"",
        "action=\"/admin/users/delete\"",
    ] {
        assert!(html.contains(form), "{form} on the page");
    }
    let post = |path: &str, fields: &[(&str, &str)]| {
        let mut all = fields.to_vec();
        all.push(("csrf_token", b.csrf.as_str()));
        Req::post(path)
            .header("cookie", &b.cookie)
            .header("origin", ORIGIN)
            .form(&all)
    };
    let new_user = [
        ("email", "Nell@Example.com"),
        ("roles", "ops, billing:read"),
        ("password", "picked by the admin"),
        ("confirm_password", "picked by the admin"),
        ("q", "nell"),
    ];

    // Non-admins, missing or wrong tokens, foreign origins: refused, and
    // nothing happens.
    let pat = page_session(&t, &user).await;
    for path in [
        "/admin/users/create",
        "/admin/users/password",
        "/admin/users/delete",
        "/admin/users/email",
        "/admin/users/invite",
    ] {
        let fields = [
            ("user_id", user.user_id.as_str()),
            ("password", "hijacked password"),
            ("confirm_password", "hijacked password"),
            ("confirm", "yes"),
            ("email", "evil@example.com"),
        ];
        let mut with_token = fields.to_vec();
        with_token.push(("csrf_token", pat.csrf.as_str()));
        let r = t
            .send(
                Req::post(path)
                    .header("cookie", &pat.cookie)
                    .form(&with_token),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: not an admin");
        let r = t
            .send(Req::post(path).header("cookie", &b.cookie).form(&fields))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: no token");
        let mut wrong = fields.to_vec();
        wrong.push(("csrf_token", pat.csrf.as_str()));
        let r = t
            .send(Req::post(path).header("cookie", &b.cookie).form(&wrong))
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{path}: another session's token"
        );
        let mut ours = fields.to_vec();
        ours.push(("csrf_token", b.csrf.as_str()));
        let r = t
            .send(
                Req::post(path)
                    .header("cookie", &b.cookie)
                    .header("origin", "https://evil.example")
                    .form(&ours),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: foreign origin");
    }
    assert!(alive(&t, &user.cookie).await);
    assert!(t.app.core.find_user("evil@example.com").await.is_err());
    assert_eq!(
        t.app.core.user(&user.user_id).await.unwrap().email,
        "pat@example.com"
    );
    assert!(
        t.app
            .core
            .audit_events(Some("invitation_created"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Create.
    let r = t.send(post("/admin/users/create", &new_user)).await;
    assert_eq!(location(&r), "/admin?done=created&q=nell");
    let nell = t
        .send(Req::post("/v1/sessions").json(
            serde_json::json!({"email": "nell@example.com", "password": "picked by the admin"}),
        ))
        .await;
    assert_eq!(nell.status, StatusCode::CREATED, "{}", nell.text());
    assert_eq!(
        nell.json()["user"]["roles"],
        serde_json::json!(["ops", "billing:read"])
    );
    let r = t
        .send(Req::get("/admin?done=created&q=nell").header("cookie", &b.cookie))
        .await;
    assert!(r.text().contains("User created."));
    let r = t.send(post("/admin/users/create", &new_user)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("already exists"));
    let mut mismatch = new_user.to_vec();
    mismatch[0] = ("email", "other@example.com");
    mismatch[3] = ("confirm_password", "something else");
    let r = t.send(post("/admin/users/create", &mismatch)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("The two passwords do not match."));
    assert!(
        !r.text().contains("picked by the admin"),
        "no password echoed"
    );
    // A password typed once is a mismatch, not a request for a link.
    let r = t
        .send(post(
            "/admin/users/create",
            &[
                ("email", "later@example.com"),
                ("password", "typed only once"),
            ],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("The two passwords do not match."));
    let r = t
        .send(post(
            "/admin/users/create",
            &[("email", " "), ("password", ""), ("confirm_password", "")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text().contains("Enter the new user&#39;s email.")
            || r.text().contains("Enter the new user's email."),
        "{}",
        r.text()
    );
    assert!(t.app.core.find_user("other@example.com").await.is_err());
    assert!(t.app.core.find_user("later@example.com").await.is_err());

    // Set a password: the user's session ends, the new password works.
    let given = "given by the admin";
    let r = t
        .send(post(
            "/admin/users/password",
            &[
                ("user_id", &user.user_id),
                ("password", given),
                ("confirm_password", "typo"),
            ],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        alive(&t, &user.cookie).await,
        "a refused form changes nothing"
    );
    let r = t
        .send(post(
            "/admin/users/password",
            &[
                ("user_id", &user.user_id),
                ("password", "short"),
                ("confirm_password", "short"),
            ],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("at least 8"), "{}", r.text());
    let r = t
        .send(post(
            "/admin/users/password",
            &[
                ("user_id", &user.user_id),
                ("password", given),
                ("confirm_password", given),
                ("q", "pat"),
            ],
        ))
        .await;
    assert_eq!(location(&r), "/admin?done=password&q=pat");
    assert!(!alive(&t, &user.cookie).await);
    let old = form_login(&t, "pat@example.com", PASSWORD).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = form_login(&t, "pat@example.com", given).await;
    assert_eq!(new.status, StatusCode::SEE_OTHER);
    let pat_again = t
        .login_with(
            Req::post("/v1/sessions")
                .json(serde_json::json!({"email": "pat@example.com", "password": given})),
        )
        .await;

    // Delete: only once confirmed; never the last active admin.
    let r = t
        .send(post("/admin/users/delete", &[("user_id", &user.user_id)]))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("Tick the box"));
    assert!(alive(&t, &pat_again.cookie).await);
    let r = t
        .send(post(
            "/admin/users/delete",
            &[("user_id", &boss.user_id), ("confirm", "yes")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.text()
            .contains("You are the last active administrator: you cannot delete your own account."),
        "{}",
        r.text()
    );
    assert!(alive(&t, &boss.cookie).await);
    let r = t
        .send(post(
            "/admin/users/delete",
            &[("user_id", &user.user_id), ("confirm", "yes"), ("q", "pat")],
        ))
        .await;
    assert_eq!(location(&r), "/admin?done=deleted&q=pat");
    assert!(!alive(&t, &pat_again.cookie).await);
    assert!(t.app.core.user(&user.user_id).await.is_err());
    let r = t
        .send(post(
            "/admin/users/delete",
            &[("user_id", &user.user_id), ("confirm", "yes")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // With another active admin, an admin may give up their own role (the
    // admin page is not theirs any more), or delete their own account
    // (signed out, cookie dropped).
    let nell_id = t.app.core.find_user("nell@example.com").await.unwrap().id;
    t.app
        .core
        .set_roles(&nell_id, &["admin".into()])
        .await
        .unwrap();
    let r = t
        .send(post(
            "/admin/users/roles",
            &[("user_id", &boss.user_id), ("roles", "ops")],
        ))
        .await;
    assert_eq!(location(&r), "/account");
    let r = t.send(Req::get("/admin").header("cookie", &b.cookie)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    t.app
        .core
        .set_roles(&boss.user_id, &["admin".into()])
        .await
        .unwrap();
    let r = t
        .send(post(
            "/admin/users/delete",
            &[("user_id", &boss.user_id), ("confirm", "yes")],
        ))
        .await;
    assert_eq!(location(&r), "/login?done=signed_out_everywhere");
    let cleared = r.set_cookie(COOKIE).expect("the cookie is dropped");
    assert_eq!(cleared.attr("Max-Age"), Some(Some("0")));
    assert!(!alive(&t, &boss.cookie).await);
}

/// The admin page's "create a user" form with the password fields left
/// empty: the user is created with a password nobody knows and mailed
/// (through a real SMTP server) a link, in welcome words, with which they
/// choose their own; then that password signs them in.
#[tokio::test]
async fn admin_creates_a_user_without_a_password_who_chooses_one_by_mail() {
    let smtp = common::smtp::SmtpServer::start();
    let t = TestApp::with(&[("smtp_url", &smtp.url())]).await;
    let boss = t.signed_in("boss@example.com").await;
    t.app
        .core
        .set_roles(&boss.user_id, &["admin".into()])
        .await
        .unwrap();
    let b = page_session(&t, &boss).await;
    let html = t
        .send(Req::get("/admin").header("cookie", &b.cookie))
        .await
        .text();
    assert!(
        html.contains("leave empty to mail a link to set one"),
        "{html}"
    );
    // The password fields are optional in the form itself.
    for id in ["new-password", "new-confirm-password"] {
        let at = html.find(&format!("id=\"{id}\"")).expect("the field");
        let tag = &html[at..at + html[at..].find('>').unwrap()];
        assert!(!tag.contains("required"), "{tag}");
    }

    let r = t
        .send(
            Req::post("/admin/users/create")
                .header("cookie", &b.cookie)
                .header("origin", ORIGIN)
                .form(&[
                    ("email", "Quinn@Example.com"),
                    ("roles", "ops"),
                    ("password", ""),
                    ("confirm_password", ""),
                    ("q", "quinn"),
                    ("csrf_token", b.csrf.as_str()),
                ]),
        )
        .await;
    assert_eq!(location(&r), "/admin?done=created_mailed&q=quinn");
    let r = t
        .send(Req::get("/admin?done=created_mailed&q=quinn").header("cookie", &b.cookie))
        .await;
    assert!(
        r.text()
            .contains("They were mailed a link to choose their password"),
        "{}",
        r.text()
    );
    let quinn = t.app.core.find_user("quinn@example.com").await.unwrap();
    assert_eq!(quinn.roles, ["ops"]);
    let created = t
        .app
        .core
        .audit_events(Some("user_created"), Some(&quinn.id), 10)
        .await
        .unwrap();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].detail["actor"], boss.user_id.as_str());

    // The welcome message, not a reset's, with the link.
    let m = smtp
        .wait_for_subject(
            "quinn@example.com",
            "An account was created for you at Tessera",
        )
        .await;
    assert!(
        m.text.contains("An account was created for you at Tessera"),
        "{}",
        m.text
    );
    assert!(m.text.contains("choose your password"), "{}", m.text);
    assert!(m.text.contains("30 minutes"), "{}", m.text);
    assert!(!m.text.contains("asked to reset"), "{}", m.text);
    let link = m.link_with("/reset?token=").expect("a link in the message");
    let path = link.strip_prefix(ORIGIN).expect("built on the public URL");
    // No password works before the user chose one.
    assert_eq!(
        form_login(&t, "quinn@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );

    // The link's page sets the password; it then signs in, once only.
    let page = t.send(Req::get(path)).await;
    assert_eq!(page.status, StatusCode::OK);
    let token = field(&page.text(), "token");
    let chosen = "quinn chose this passphrase";
    let set = Req::post("/reset")
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("token", token.as_str()),
            ("password", chosen),
            ("confirm_password", chosen),
        ]);
    let r = t.send(set).await;
    assert_eq!(location(&r), "/login?done=password_reset");
    assert_eq!(
        form_login(&t, "quinn@example.com", chosen).await.status,
        StatusCode::SEE_OTHER
    );

    // Counted under its own kind.
    let started = std::time::Instant::now();
    loop {
        let metrics = t.send(Req::get("/metrics")).await.text();
        if metrics.contains("tessera_mail_sent_total{kind=\"welcome\"} 1") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn malformed_page_requests_get_4xx_pages_never_500() {
    let t = TestApp::new().await;
    let login = t.signed_in("alice@example.com").await;
    let b = page_session(&t, &login).await;
    // Wrong or missing content type.
    for path in ["/login", "/register", "/logout", "/account/password"] {
        let r = t
            .send(
                Req::post(path)
                    .header("cookie", &b.cookie)
                    .raw("application/json", "{\"email\":\"a\"}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
        assert_html(&r);
        let r = t.send(Req::post(path).header("cookie", &b.cookie)).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
    }
    // Repeated fields, broken encodings, binary junk.
    for body in [
        "email=a%40example.com&email=b%40example.com&password=x",
        "%%%&&&===",
        "email=%FF%FE&password=%00%00%00%00%00%00%00%00",
        "\u{0}\u{1}\u{2}",
    ] {
        let r = t
            .send(Req::post("/login").raw("application/x-www-form-urlencoded", body))
            .await;
        assert!(
            r.status.is_client_error(),
            "{body:?}: {} {}",
            r.status,
            r.text()
        );
        assert_html(&r);
    }
    let body = format!("csrf_token={}&session_id=ses_x&session_id=ses_y", b.csrf);
    let r = t
        .send(
            Req::post("/account/sessions/revoke")
                .header("cookie", &b.cookie)
                .raw("application/x-www-form-urlencoded", body),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Too large.
    let big = format!("email={}", "a".repeat(70 * 1024));
    let r = t
        .send(Req::post("/login").raw("application/x-www-form-urlencoded", big))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Malformed query strings.
    for path in [
        "/login?next=a&next=b",
        "/account?done=a&done=b",
        "/admin?q=a&q=b",
    ] {
        let r = t.send(Req::get(path).header("cookie", &b.cookie)).await;
        assert!(
            r.status.is_client_error() || r.status.is_redirection(),
            "{path}"
        );
        assert_ne!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    // Huge and odd search values on the admin page.
    t.app
        .core
        .set_roles(&login.user_id, &["admin".into()])
        .await
        .unwrap();
    for q in [
        "q=%25%5F%5C",
        "after=not-an-id",
        "type=DROP%20TABLE",
        "user=%00",
        "q=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        let r = t
            .send(Req::get(&format!("/admin?{q}")).header("cookie", &b.cookie))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text());
    }
}

#[tokio::test]
async fn rate_limited_logins_get_a_429_page_with_retry_after() {
    let t = TestApp::with(&[("ip_rate_limit", "2")]).await;
    t.register("alice@example.com").await;
    let attempt = || {
        Req::post("/login").peer_ip("198.51.100.9").form(&[
            ("email", "alice@example.com"),
            ("password", "wrong password"),
        ])
    };
    let mut last = t.send(attempt()).await;
    for _ in 0..5 {
        if last.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        last = t.send(attempt()).await;
    }
    assert_eq!(
        last.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        last.text()
    );
    assert_html(&last);
    assert!(last.header("retry-after").is_some());
    assert!(error_box(&last.text()).starts_with("Too many attempts."));
    // Registration from that address is held back too.
    let r = t
        .send(Req::post("/register").peer_ip("198.51.100.9").form(&[
            ("email", "bob@example.com"),
            ("password", PASSWORD),
            ("confirm_password", PASSWORD),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

// ---------------------------------------------------------------------------
// Refusals that say what to do, and sign-ins whose cookie does not come back

/// The text of the page's error alert (`role="alert"`).
fn alert_text(html: &str) -> String {
    let start = html
        .find("role=\"alert\"")
        .and_then(|i| html[i..].find('>').map(|j| i + j + 1))
        .unwrap_or_else(|| panic!("an alert in the page: {html}"));
    let end = html[start..].find("</div>").expect("end of alert") + start;
    html[start..end].to_owned()
}

#[tokio::test]
async fn a_form_from_another_address_of_this_server_is_refused_with_the_fix() {
    let t = TestApp::new().await;
    t.register("alice@example.com").await;
    // The browser opened the listen address, not the public URL.
    let r = t
        .send(
            Req::post("/login")
                .header("origin", "http://127.0.0.1:8080")
                .header("sec-fetch-site", "same-origin")
                .form(&[("email", "alice@example.com"), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_html(&r);
    assert_page_headers(&r);
    assert!(r.set_cookie(COOKIE).is_none());
    let html = r.text();
    assert!(html.contains("Request refused") && html.contains("csrf_failed"));
    let alert = alert_text(&html);
    for needed in [
        "sent from a page at http://127.0.0.1:8080",
        "its public URL, http://localhost:8080",
        "reloading will not help",
        "open http://localhost:8080 in your browser",
        "set TESSERA_PUBLIC_URL to http://127.0.0.1:8080",
    ] {
        assert!(alert.contains(needed), "{needed:?} in {alert}");
    }
    // Its button leads to the public URL, not back to the wrong address.
    assert!(
        html.contains("href=\"http://localhost:8080/\" id=\"continue-to\""),
        "{html}"
    );
    // A page on another site is not this server under another name: no
    // advice to make it the public URL.
    let r = t
        .send(
            Req::post("/login")
                .header("origin", "https://evil.example")
                .form(&[("email", "alice@example.com"), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let alert = alert_text(&r.text());
    assert!(
        alert.contains("sent from a page at https://evil.example"),
        "{alert}"
    );
    assert!(!alert.contains("TESSERA_PUBLIC_URL"), "{alert}");

    // `Origin: null`: `Referer` tells where the page was, and only its
    // scheme, host and port are repeated.
    let r = t
        .send(
            Req::post("/login")
                .header("origin", "null")
                .header(
                    "referer",
                    "http://127.0.0.1:8080/login?token=s3cr3t&x=<b>bold</b>",
                )
                .form(&[("email", "alice@example.com"), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let html = r.text();
    assert!(
        alert_text(&html).contains("sent from a page at http://127.0.0.1:8080,"),
        "{html}"
    );
    for never in ["s3cr3t", "/login?", "bold", "<b>"] {
        assert!(!html.contains(never), "{never:?} echoed: {html}");
    }
    // Markup in `Origin` never reaches the page: only a parsed origin is
    // shown, and what does not parse is not shown at all.
    for (origin, shown) in [
        (
            "http://evil.example/\"><script>alert(1)</script>",
            Some("http://evil.example"),
        ),
        ("http://<img src=x>/", None),
        ("javascript:alert(1)", None),
    ] {
        let r = t
            .send(
                Req::post("/register")
                    .header("origin", origin)
                    .form(&[("email", "x@example.com")]),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin}");
        let html = r.text();
        for never in ["<script", "alert(1)", "<img", "src=x"] {
            assert!(!html.contains(never), "{never:?} echoed: {html}");
        }
        let alert = alert_text(&html);
        match shown {
            Some(o) => assert!(
                alert.contains(&format!("sent from a page at {o},")),
                "{alert}"
            ),
            None => assert!(alert.contains("sent from another origin"), "{alert}"),
        }
        assert!(alert.contains("open http://localhost:8080 in your browser"));
    }

    // A signed-in form from the wrong address reads the same.
    let login = t.login("alice@example.com").await;
    let b = page_session(&t, &login).await;
    let r = t
        .send(
            Req::post("/logout")
                .header("cookie", &b.cookie)
                .header("origin", "http://127.0.0.1:8080")
                .form(&[("csrf_token", b.csrf.as_str())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let alert = alert_text(&r.text());
    assert!(
        alert.contains("sent from a page at http://127.0.0.1:8080"),
        "{alert}"
    );
    assert!(
        alert.contains("open http://localhost:8080 in your browser"),
        "{alert}"
    );
    assert!(alive(&t, &b.cookie).await);
}

#[tokio::test]
async fn api_csrf_refusals_name_the_origin_the_public_url_and_the_fix() {
    let t = TestApp::new().await;
    let login = t.signed_in("alice@example.com").await;
    let from_listen_address = |req: Req| req.header("origin", "http://127.0.0.1:8080");
    for req in [
        // No session yet: login and account creation.
        from_listen_address(
            Req::post("/v1/sessions")
                .json(serde_json::json!({"email": "alice@example.com", "password": PASSWORD})),
        ),
        from_listen_address(
            Req::post("/v1/accounts")
                .json(serde_json::json!({"email": "bob@example.com", "password": PASSWORD})),
        ),
        // Cookie-authenticated, with the right CSRF token.
        from_listen_address(Req::delete("/v1/session").session(&login)),
    ] {
        let r = t.send(req).await;
        r.assert_error(StatusCode::FORBIDDEN, "csrf_failed");
        let d = r.json()["error_description"].as_str().unwrap().to_owned();
        for needed in [
            "comes from http://127.0.0.1:8080",
            "public URL http://localhost:8080",
            "open http://localhost:8080 in the browser",
            "TESSERA_PUBLIC_URL=http://127.0.0.1:8080",
        ] {
            assert!(d.contains(needed), "{needed:?} in {d}");
        }
    }
    assert!(alive(&t, &login.cookie).await);
    // Only the origin is repeated, never the rest of what was sent.
    let r = t
        .send(
            Req::post("/v1/sessions")
                .header("origin", "null")
                .header("referer", "https://other.example/p?code=s3cr3t")
                .json(serde_json::json!({"email": "alice@example.com", "password": PASSWORD})),
        )
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    let d = r.json()["error_description"].as_str().unwrap().to_owned();
    assert!(d.contains("comes from https://other.example,"), "{d}");
    assert!(!d.contains("s3cr3t") && !d.contains("/p"), "{d}");
}

#[tokio::test]
async fn a_refused_origin_is_logged_once_a_minute_naming_both_origins() {
    // Addresses no other test uses: the rate limit is per process.
    let public = "http://localhost:18471";
    let t = TestApp::with(&[("public_url", public)]).await;
    let (logs, _guard) = Logs::capture(tracing::Level::INFO);
    let refused = |origin: &str| {
        Req::post("/login")
            .header("origin", origin)
            .form(&[("email", "alice@example.com"), ("password", PASSWORD)])
    };
    for _ in 0..2 {
        let r = t.send(refused("http://127.0.0.1:18471")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    // An API call with the same wrong origin is the same refusal.
    let r = t
        .send(
            Req::post("/v1/sessions")
                .header("origin", "http://127.0.0.1:18471")
                .json(serde_json::json!({"email": "a@example.com", "password": PASSWORD})),
        )
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    let warned = |origin: &str| -> Vec<String> {
        logs.lines()
            .into_iter()
            .filter(|l| {
                l.contains("WARN") && l.contains(&format!("refused a request from {origin}"))
            })
            .collect()
    };
    let lines = warned("http://127.0.0.1:18471");
    assert_eq!(lines.len(), 1, "{:#?}", logs.lines());
    let line = &lines[0];
    assert!(line.contains(&format!("public URL is {public}")), "{line}");
    assert!(
        line.contains(&format!(
            "browsers must open {public}, not http://127.0.0.1:18471"
        )),
        "{line}"
    );
    assert!(
        line.contains("TESSERA_PUBLIC_URL=http://127.0.0.1:18471"),
        "{line}"
    );
    // Another origin gets its own line.
    let r = t.send(refused("http://127.0.0.2:18471")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        warned("http://127.0.0.2:18471").len(),
        1,
        "{:#?}",
        logs.lines()
    );
    assert_eq!(warned("http://127.0.0.1:18471").len(), 1);
}

/// The sign-in marker's `Set-Cookie`, if the response has one.
const MARKER: &str = "tessera_signed_in";

#[tokio::test]
async fn a_sign_in_whose_cookie_does_not_come_back_is_explained() {
    // Plain HTTP on a host other than localhost: no browser keeps the
    // `Secure` session cookie.
    let public = "http://tessera.test:8080";
    let t = TestApp::with(&[("public_url", public)]).await;
    t.register("alice@example.com").await;
    let r = t
        .send(
            Req::post("/login")
                .header("origin", public)
                .form(&[("email", "alice@example.com"), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(location(&r), "/account");
    let session = r.set_cookie(COOKIE).expect("the session cookie");
    assert_eq!(session.attr("Secure"), Some(None));
    // The marker: no secret, not Secure (so it survives plain HTTP),
    // short-lived, invisible to scripts.
    let marker = r.set_cookie(MARKER).expect("the sign-in marker");
    assert_eq!(marker.value, "1");
    assert_eq!(marker.attr("Secure"), None);
    assert_eq!(marker.attr("Max-Age"), Some(Some("60")));
    assert_eq!(marker.attr("HttpOnly"), Some(None));
    assert_eq!(marker.attr("Path"), Some(Some("/")));
    let marker_cookie = format!("{MARKER}=1");

    // The browser dropped the session cookie and kept the marker.
    let r = t
        .send(Req::get("/account").header("cookie", &marker_cookie))
        .await;
    assert_eq!(location(&r), "/login");
    let r = t
        .send(Req::get("/login").header("cookie", &marker_cookie))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_page_headers(&r);
    let html = r.text();
    assert!(html.contains("id=\"cookie-refused\""), "{html}");
    for needed in [
        "your browser refused the session cookie",
        "plain HTTP",
        public,
        "<code>Secure</code>",
        "HTTPS",
        "TESSERA_COOKIE_SECURE=false",
        "which this is not",
    ] {
        assert!(html.contains(needed), "{needed:?} in {html}");
    }
    // Shown once: the page drops the marker.
    let cleared = r.set_cookie(MARKER).expect("the marker is dropped");
    assert_eq!(cleared.attr("Max-Age"), Some(Some("0")));
    // The form is still there.
    assert!(html.contains("id=\"login-form\""));

    // Not shown without the marker, after signing out, with a session
    // cookie (live or dead), or with the cookie dropped by the server.
    let r = t.send(Req::get("/login")).await;
    assert!(!r.text().contains("cookie-refused"));
    let r = t
        .send(Req::get("/login?done=signed_out").header("cookie", &marker_cookie))
        .await;
    assert!(!r.text().contains("cookie-refused"));
    let login = t.login("alice@example.com").await;
    let r = t
        .send(Req::get("/login").header("cookie", &format!("{}; {marker_cookie}", login.cookie)))
        .await;
    assert_eq!(location(&r), "/account");
    let dead = format!("{COOKIE}={}; {marker_cookie}", "A".repeat(43));
    let r = t.send(Req::get("/login").header("cookie", &dead)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.text().contains("cookie-refused"));
    let r = t.send(Req::get("/account").header("cookie", &dead)).await;
    assert_eq!(location(&r), "/login");
    assert_eq!(
        r.set_cookie(MARKER)
            .expect("marker dropped with the dead session")
            .attr("Max-Age"),
        Some(Some("0"))
    );

    // Registering signs in too, and gets the same help.
    let r = t
        .send(Req::post("/register").header("origin", public).form(&[
            ("email", "bob@example.com"),
            ("password", PASSWORD),
            ("confirm_password", PASSWORD),
        ]))
        .await;
    assert_eq!(location(&r), "/account?done=welcome");
    assert!(r.set_cookie(MARKER).is_some());
}

#[tokio::test]
async fn the_sign_in_marker_is_only_used_where_a_browser_may_refuse_the_cookie() {
    // On http://localhost, Chromium and Firefox keep Secure cookies, Safari
    // does not: the marker is set and the explanation names Safari.
    let t = TestApp::new().await;
    t.register("alice@example.com").await;
    let r = form_login(&t, "alice@example.com", PASSWORD).await;
    assert!(r.set_cookie(MARKER).is_some());
    let r = t
        .send(Req::get("/login").header("cookie", &format!("{MARKER}=1")))
        .await;
    let html = r.text();
    assert!(html.contains("id=\"cookie-refused\""), "{html}");
    assert!(html.contains("Safari"), "{html}");
    assert!(html.contains("TESSERA_COOKIE_SECURE=false"), "{html}");

    // Over HTTPS, or with cookies that are not Secure, there is nothing to
    // explain: no marker, and a planted one changes nothing.
    for pairs in [
        vec![("public_url", "https://auth.example.com")],
        vec![
            ("public_url", "http://tessera.test:8080"),
            ("cookie_secure", "false"),
        ],
    ] {
        let t = TestApp::with(&pairs).await;
        t.register("alice@example.com").await;
        let origin = pairs[0].1;
        let r = t
            .send(
                Req::post("/login")
                    .header("origin", origin)
                    .form(&[("email", "alice@example.com"), ("password", PASSWORD)]),
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{pairs:?}: {}", r.text());
        assert!(r.set_cookie(MARKER).is_none(), "{pairs:?}");
        let r = t
            .send(Req::get("/login").header("cookie", &format!("{MARKER}=1")))
            .await;
        assert!(!r.text().contains("cookie-refused"), "{pairs:?}");
    }
}

/// The ids of the audit rows on an admin page, top to bottom.
fn audit_ids(html: &str) -> Vec<String> {
    html.split("data-event=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').expect("end of the id")].to_owned())
        .collect()
}

/// The target of the audit pager's link labelled `label`, unescaped.
fn audit_pager_link(html: &str, label: &str) -> Option<String> {
    let start = html.find("id=\"audit-pager\"").expect("the audit pager");
    let pager = &html[start..start + html[start..].find("</div>").expect("end of pager")];
    let at = pager.find(label)?;
    let href_start = pager[..at].rfind("href=\"").expect("the link's href") + "href=\"".len();
    let href_end = href_start + pager[href_start..].find('"').expect("end of href");
    Some(
        pager[href_start..href_end]
            .replace("&#38;", "&")
            .replace("&amp;", "&"),
    )
}

#[tokio::test]
async fn the_admin_audit_log_pages_and_refuses_an_unknown_filter() {
    let t = TestApp::new().await;
    let boss = t.signed_in("boss@example.com").await;
    t.app
        .core
        .set_roles(&boss.user_id, &["admin".into()])
        .await
        .unwrap();
    let pat = t.signed_in("pat@example.com").await;
    // 60 events of one type: more than a page (50).
    for _ in 0..60 {
        t.app.core.logout_all(&pat.user_id).await.unwrap();
    }
    let b = page_session(&t, &boss).await;
    let get = |path: &str| Req::get(path).header("cookie", &b.cookie);

    let r = t.send(get("/admin?type=logout_all")).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    let first = audit_ids(&html);
    assert_eq!(first.len(), 50, "a page is 50 events");
    assert!(audit_pager_link(&html, "Newest events").is_none());
    let older = audit_pager_link(&html, "Older events").expect("a link to older events");
    assert!(
        older.starts_with("/admin?type=logout_all&before=evt_") && older.ends_with("#audit"),
        "{older}"
    );
    // The page after it: the 10 older ones, the filter kept, no further page.
    let path = older.trim_end_matches("#audit");
    let r = t.send(get(path)).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    let second = audit_ids(&html);
    assert_eq!(second.len(), 10, "{second:?}");
    assert_eq!(html.matches("data-type=\"logout_all\"").count(), 10);
    assert!(second.iter().all(|id| !first.contains(id)), "pages overlap");
    assert!(audit_pager_link(&html, "Older events").is_none());
    let newest = audit_pager_link(&html, "Newest events").expect("back to the newest");
    assert_eq!(newest, "/admin?type=logout_all#audit");
    // The same order as the API's pages.
    let mut all = first.clone();
    all.extend(second);
    let api: Vec<String> = t
        .app
        .core
        .audit_events(Some("logout_all"), Some(&pat.user_id), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all, api);

    // An unknown type: the page with a clear message naming the known
    // ones, not a table of nothing.
    let r = t.send(get("/admin?type=login_success")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_html(&r);
    let html = r.text();
    assert!(html.contains("id=\"audit-error\""), "{html}");
    assert!(html.contains("unknown audit event type"), "{html}");
    assert!(html.contains("login_success") && html.contains("login_succeeded, login_failed"));
    assert!(!html.contains("No audit events"));
    assert!(audit_ids(&html).is_empty());
    // A garbage `before` is ignored (the newest page).
    let r = t.send(get("/admin?type=logout_all&before=nonsense")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(audit_ids(&r.text()), first);

    // "Sign out all" on the page names the admin as the actor.
    let r = t
        .send(
            Req::post("/admin/users/revoke")
                .header("cookie", &b.cookie)
                .header("origin", ORIGIN)
                .form(&[("user_id", pat.user_id.as_str()), ("csrf_token", &b.csrf)]),
        )
        .await;
    assert_eq!(location(&r), "/admin?done=revoked");
    let events = t
        .app
        .core
        .audit_events(Some("logout_all"), Some(&pat.user_id), 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 61);
    let by_admin: Vec<_> = events
        .iter()
        .filter(|e| e.detail["actor"] == boss.user_id.as_str())
        .collect();
    assert_eq!(by_admin.len(), 1, "{events:?}");
}

#[tokio::test]
async fn the_admin_page_rotates_and_retires_the_previous_keys_after_confirmation() {
    let t = TestApp::new().await;
    let boss = t.signed_in("boss@example.com").await;
    t.app
        .core
        .set_roles(&boss.user_id, &["admin".into()])
        .await
        .unwrap();
    let b = page_session(&t, &boss).await;
    let grant = t.tokens_for("app@example.com").await;
    let bearer = format!("Bearer {}", grant["access_token"].as_str().unwrap());
    let r = t.send(Req::get("/admin").header("cookie", &b.cookie)).await;
    let html = r.text();
    assert!(html.contains("Rotate and retire the previous keys"));
    assert!(html.contains("For a leaked or compromised signing key only"));
    assert!(html.contains("name=\"retire_previous\" value=\"yes\""));
    let keys_before = t.app.core.key_list().await.unwrap();
    assert!(keys_before.iter().all(|k| k.status.as_str() != "retired"));
    let post = |fields: &[(&str, &str)]| {
        Req::post("/admin/keys/rotate")
            .header("cookie", &b.cookie)
            .header("origin", ORIGIN)
            .form(fields)
    };

    // Without the form token: refused, nothing changes.
    let r = t
        .send(post(&[("retire_previous", "yes"), ("confirm", "yes")]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // With a wrong one neither.
    let r = t
        .send(post(&[
            ("retire_previous", "yes"),
            ("confirm", "yes"),
            ("csrf_token", "not-the-token"),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Without the confirmation box: the page again, saying so.
    let r = t
        .send(post(&[("retire_previous", "yes"), ("csrf_token", &b.csrf)]))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("Tick the box to confirm"), "{}", r.text());
    assert_eq!(
        t.app.core.key_list().await.unwrap().len(),
        keys_before.len()
    );
    let me = t
        .send(Req::get("/v1/me").header("authorization", &bearer))
        .await;
    assert_eq!(me.status, StatusCode::OK, "the old key still verifies");

    // Confirmed: a new active key, every earlier one retired at once.
    let r = t
        .send(post(&[
            ("retire_previous", "yes"),
            ("confirm", "yes"),
            ("csrf_token", &b.csrf),
        ]))
        .await;
    assert_eq!(location(&r), "/admin?done=rotated_retired");
    let keys = t.app.core.key_list().await.unwrap();
    assert_eq!(keys.len(), keys_before.len() + 1);
    for k in &keys_before {
        let now = keys.iter().find(|n| n.kid == k.kid).expect("still listed");
        assert_eq!(now.status.as_str(), "retired", "{}", now.kid);
    }
    let me = t
        .send(Req::get("/v1/me").header("authorization", &bearer))
        .await;
    assert_eq!(
        me.status,
        StatusCode::UNAUTHORIZED,
        "its tokens are refused now"
    );
    let r = t
        .send(Req::get("/admin?done=rotated_retired").header("cookie", &b.cookie))
        .await;
    assert!(r.text().contains("the earlier keys are retired"));
    // Audited with the admin as actor.
    let events = t
        .app
        .core
        .audit_events(Some("key_rotated"), None, 10)
        .await
        .unwrap();
    let event = events
        .iter()
        .find(|e| e.detail["previous_retired_now"] == true)
        .expect("the rotation is audited");
    assert_eq!(event.user_id.as_deref(), Some(boss.user_id.as_str()));
    assert_eq!(event.detail["actor"], boss.user_id.as_str());

    // The plain rotation stays what it was: earlier keys keep verifying.
    let r = t.send(post(&[("csrf_token", &b.csrf)])).await;
    assert_eq!(location(&r), "/admin?done=rotated");
    let keys = t.app.core.key_list().await.unwrap();
    assert_eq!(
        keys.iter()
            .filter(|k| k.status.as_str() == "retiring")
            .count(),
        1,
        "{keys:?}"
    );
}

/// The admin page invites (the link shown once, mailed when ticked) and
/// changes a user's email (unverified, a link mailed to the new address);
/// users whose address is not verified carry an "unverified" badge.
#[tokio::test]
async fn admin_page_invites_and_changes_emails() {
    let smtp = common::smtp::SmtpServer::start();
    let t = TestApp::with(&[("smtp_url", &smtp.url()), ("registration", "invite")]).await;
    let boss_id = t
        .app
        .core
        .register(tessera::core::accounts::NewAccount {
            email: "boss@example.com".into(),
            password: tessera::core::accounts::Password::new(PASSWORD.into()),
            roles: vec!["admin".into()],
        })
        .await
        .unwrap()
        .id;
    t.app.core.verify_email_by(None, &boss_id).await.unwrap();
    let pat_id = t
        .app
        .core
        .register(tessera::core::accounts::NewAccount {
            email: "pat@example.com".into(),
            password: tessera::core::accounts::Password::new(PASSWORD.into()),
            roles: vec![],
        })
        .await
        .unwrap()
        .id;
    let boss = t.login("boss@example.com").await;
    let b = page_session(&t, &boss).await;
    let html = t
        .send(Req::get("/admin").header("cookie", &b.cookie))
        .await
        .text();
    assert!(html.contains("action=\"/admin/users/invite\""));
    assert!(html.contains("action=\"/admin/users/email\""));
    // Pat's address is not verified; the boss's is.
    assert_eq!(
        html.matches("class=\"badge badge-muted unverified\"")
            .count(),
        1
    );
    let post = |path: &str, fields: &[(&str, &str)]| {
        let mut all = fields.to_vec();
        all.push(("csrf_token", b.csrf.as_str()));
        Req::post(path)
            .header("cookie", &b.cookie)
            .header("origin", ORIGIN)
            .form(&all)
    };

    // An invitation, mailed: the page shows its link once.
    let r = t
        .send(post(
            "/admin/users/invite",
            &[
                ("email", "guest@example.com"),
                ("roles", "editor"),
                ("mail", "yes"),
            ],
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let page = r.text();
    let start = page
        .find("/register?invitation=")
        .expect("the link is shown");
    let shown: String = page[start..].chars().take_while(|c| *c != '<').collect();
    let mailed = smtp
        .wait_for_subject("guest@example.com", "You are invited to Tessera")
        .await;
    assert_eq!(
        mailed.link_with("/register?invitation="),
        Some(format!("{ORIGIN}{shown}"))
    );
    // Unticked: not mailed, still shown.
    let r = t
        .send(post(
            "/admin/users/invite",
            &[("email", "handed@example.com")],
        ))
        .await;
    assert!(
        r.text().contains("Give it to them yourself"),
        "{}",
        r.text()
    );
    // An address with an account: the page says so.
    let r = t
        .send(post(
            "/admin/users/invite",
            &[("email", "PAT@example.com"), ("mail", "yes")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());

    // A new email for Pat: their login from now on, a link mailed to it.
    let r = t
        .send(post(
            "/admin/users/email",
            &[("user_id", &pat_id), ("email", "pat.new@example.com")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let user = t.app.core.user(&pat_id).await.unwrap();
    assert_eq!(user.email, "pat.new@example.com");
    assert!(!user.email_verified);
    smtp.wait_for_subject(
        "pat.new@example.com",
        "Confirm your email address for Tessera",
    )
    .await;
    let r = t
        .send(post(
            "/admin/users/email",
            &[("user_id", &pat_id), ("email", "boss@EXAMPLE.com")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("already exists"));
}

// ---------------------------------------------------------------------------
// Browser niceties: HTML 404/405, the device in hand first, product name and
// logo

/// What Chromium sends when it navigates to an address.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,\
                              image/avif,image/webp,*/*;q=0.8";

fn assert_json_error(r: &Resp, status: StatusCode, code: &str) {
    r.assert_error(status, code);
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{:?}",
        r.header("content-type")
    );
}

#[tokio::test]
async fn unknown_addresses_are_an_html_page_for_browsers_and_json_for_the_rest() {
    let t = TestApp::new().await;
    for path in ["/nope", "/static/nope.css", "/account/nope"] {
        let r = t
            .send(Req::get(path).header("accept", BROWSER_ACCEPT))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_html(&r);
        assert_page_headers(&r);
        let html = r.text();
        assert!(
            html.contains("<title>Page not found · Tessera</title>"),
            "{html}"
        );
        assert!(html.contains("Error 404"), "{html}");
        assert!(
            html.contains("<a class=\"btn btn-primary\" href=\"/\">Continue to Tessera</a>"),
            "{html}"
        );
        assert!(html.contains("<code>not_found</code>"), "{html}");
        assert!(r.header("vary").is_some_and(|v| v.contains("accept")));
    }
    // Not a browser navigation: the contract's JSON, as before.
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("application/json, text/html"),
        Some("text/html;q=0.5, application/json"),
        Some("text/*"),
        Some("text/html;q=0"),
    ] {
        let mut req = Req::get("/nope");
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = t.send(req).await;
        assert_json_error(&r, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{accept:?}");
    }
    // A tie goes to the first listed; HTML above */* wins.
    for accept in ["text/html, application/json", "text/html, */*"] {
        let r = t.send(Req::get("/nope").header("accept", accept)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_html(&r);
    }
    // The API's addresses answer JSON whatever the client accepts.
    for path in [
        "/v1/nope",
        "/v1",
        "/.well-known/nope",
        "/healthz/x",
        "/metrics/x",
        "/openapi.json/x",
    ] {
        let r = t
            .send(Req::get(path).header("accept", BROWSER_ACCEPT))
            .await;
        assert_json_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    // A page's own 404 stays itself; an API 404 under /v1 stays JSON.
    let r = t
        .send(Req::get("/v1/admin/users/usr_nope").header("accept", BROWSER_ACCEPT))
        .await;
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json"))
    );
}

#[tokio::test]
async fn wrong_methods_are_an_html_page_for_browsers_and_json_for_the_rest_with_allow() {
    let t = TestApp::new().await;
    let r = t
        .send(Req::new(axum::http::Method::PUT, "/login").header("accept", BROWSER_ACCEPT))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_html(&r);
    assert_page_headers(&r);
    let allow = r.header("allow").expect("Allow").to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let html = r.text();
    assert!(
        html.contains("<title>Method not allowed · Tessera</title>"),
        "{html}"
    );
    assert!(html.contains("href=\"/\""), "{html}");

    let r = t
        .send(Req::new(axum::http::Method::PUT, "/login").header("accept", "*/*"))
        .await;
    assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
    assert_eq!(r.header("allow"), Some(allow.as_str()));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // The API's wrong methods stay JSON for browsers too.
    for path in ["/v1/accounts", "/healthz", "/.well-known/jwks.json"] {
        let r = t
            .send(Req::delete(path).header("accept", BROWSER_ACCEPT))
            .await;
        assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
        assert!(r.header("allow").is_some(), "{path}");
    }
}

/// The `data-session` ids of the account page's rows, in order.
fn session_rows(html: &str) -> Vec<String> {
    html.split("data-session=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').expect("quote")].to_owned())
        .collect()
}

#[tokio::test]
async fn the_account_page_lists_this_device_first_then_the_newest() {
    let t = TestApp::new().await;
    t.register("erin@example.com").await;
    let oldest = t.login("erin@example.com").await;
    t.advance(std::time::Duration::from_secs(120));
    let middle = t.login("erin@example.com").await;
    t.advance(std::time::Duration::from_secs(120));
    let newest = t.login("erin@example.com").await;

    let r = t
        .send(Req::get("/account").header("cookie", &middle.cookie))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    assert_eq!(
        session_rows(&html),
        [
            middle.session_id.clone(),
            newest.session_id.clone(),
            oldest.session_id.clone()
        ]
    );
    let first = &html[html.find("class=\"session-row").unwrap()..];
    let first = &first[..first.find("</tr>").unwrap()];
    assert!(
        first.starts_with("class=\"session-row current\""),
        "{first}"
    );
    assert!(first.contains("This device"), "{first}");
    assert_eq!(html.matches("This device").count(), 1);

    let r = t
        .send(Req::get("/account").header("cookie", &oldest.cookie))
        .await;
    assert_eq!(
        session_rows(&r.text()),
        [
            oldest.session_id.clone(),
            newest.session_id.clone(),
            middle.session_id.clone()
        ]
    );
}

#[tokio::test]
async fn pages_show_the_configured_product_name_and_logo() {
    let logo = "https://cdn.example.com/brand/logo.png?v=2";
    let t = TestApp::with(&[("product_name", "Acme <Login> & Co"), ("logo_url", logo)]).await;
    let user = t.signed_in("fay@example.com").await;
    for (path, cookie, title) in [
        ("/login", None, "Sign in"),
        ("/register", None, "Create account"),
        ("/account", Some(&user.cookie), "Your account"),
        ("/nope", None, "Page not found"),
    ] {
        let mut req = Req::get(path).header("accept", BROWSER_ACCEPT);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = t.send(req).await;
        let html = r.text();
        assert!(
            html.contains(&format!(
                "<title>{title} · Acme &#60;Login&#62; &#38; Co</title>"
            )) || html.contains(&format!(
                "<title>{title} · Acme &lt;Login&gt; &amp; Co</title>"
            )),
            "{path}: {html}"
        );
        assert!(!html.contains("Acme <Login>"), "{path}: escaped");
        assert!(
            html.contains("<img class=\"logo\" src=\"https://cdn.example.com/brand/logo.png?v=2\"")
                || html.contains(
                    "<img class=\"logo\" src=\"https://cdn.example.com/brand/logo.png?v&#61;2\""
                ),
            "{path}: {html}"
        );
        assert!(html.contains("alt=\"Acme &"), "{path}: {html}");
        assert!(
            !html.contains("class=\"mark\""),
            "{path}: the logo replaces the mark"
        );
        let csp = r.header("content-security-policy").expect("CSP");
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(
            csp.ends_with("; img-src 'self' https://cdn.example.com"),
            "{path}: exactly the logo's origin: {csp}"
        );
    }
    // The API's answers do not change.
    let r = t.send(Req::get("/nope")).await;
    assert_json_error(&r, StatusCode::NOT_FOUND, "not_found");

    // A logo on this server needs nothing more than 'self'.
    let t = TestApp::with(&[("logo_url", "/static/tessera.css")]).await;
    let r = t.send(Req::get("/login")).await;
    assert_page_headers(&r);
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    );
    let html = r.text();
    assert!(html.contains("<img class=\"logo\" src=\"/static/tessera.css\" alt=\"Tessera\">"));
    assert!(html.contains("<title>Sign in · Tessera</title>"));
}

#[test]
fn bad_logo_urls_and_product_names_are_refused_at_start_naming_the_setting() {
    for bad in [
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "http://cdn.example.com/logo.png",
        "//cdn.example.com/logo.png",
        "https://cdn.example.com/logo.png\" onerror=\"alert(1)",
        "https://cdn.example.com/it's.png",
        "logo.png",
    ] {
        let e = tessera::config::Settings::from_pairs(&[("logo_url", bad)])
            .expect_err(bad)
            .to_string();
        assert!(e.contains("TESSERA_LOGO_URL"), "{bad}: {e}");
    }
    let long = "x".repeat(61);
    for bad in [long.as_str(), "Acme\u{7}"] {
        let e = tessera::config::Settings::from_pairs(&[("product_name", bad)])
            .expect_err(bad)
            .to_string();
        assert!(e.contains("TESSERA_PRODUCT_NAME"), "{bad:?}: {e}");
    }
    let s = tessera::config::Settings::from_pairs(&[]).expect("defaults");
    assert_eq!(s.product_name, "Tessera");
    assert_eq!(s.logo_url, None);
}
