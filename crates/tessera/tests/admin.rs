//! The administration API and the audit log.

mod common;

use axum::http::StatusCode;
use common::{Login, PASSWORD, Req, TestApp};
use serde_json::{Value, json};

async fn admin(t: &TestApp, email: &str) -> Login {
    let login = t.signed_in(email).await;
    t.app
        .core
        .set_roles(&login.user_id, &["admin".into()])
        .await
        .unwrap();
    login
}

fn patch(id: &str, body: Value) -> Req {
    Req::new(axum::http::Method::PATCH, &format!("/v1/admin/users/{id}")).json(body)
}

fn set_password(id: &str, body: Value) -> Req {
    Req::post(&format!("/v1/admin/users/{id}/password")).json(body)
}

fn delete_user(id: &str) -> Req {
    Req::delete(&format!("/v1/admin/users/{id}"))
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_role_and_csrf() {
    let t = TestApp::new().await;
    let plain = t.signed_in("pat@example.com").await;
    let boss = admin(&t, "boss@example.com").await;
    for req in [
        || Req::get("/v1/admin/users"),
        || Req::get("/v1/admin/audit"),
        || Req::get("/v1/admin/keys"),
        || Req::post("/v1/admin/keys/rotate"),
    ] {
        t.send(req())
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        t.send(req().session(&plain))
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
        assert!(t.send(req().session(&boss)).await.status.is_success());
    }
    t.send(patch(&plain.user_id, json!({"roles": ["x"]})).header("cookie", &boss.cookie))
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    t.send(
        Req::post(&format!("/v1/admin/users/{}/revoke", plain.user_id))
            .header("cookie", &boss.cookie),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
}

#[tokio::test]
async fn users_are_searched_and_paged() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    for i in 0..5 {
        t.register(&format!("member{i}@corp.example")).await;
    }
    let r = t
        .send(Req::get("/v1/admin/users?q=CORP.example&limit=2").session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut seen = Vec::new();
    let mut page = r.json();
    loop {
        let users = page["users"].as_array().unwrap().clone();
        assert!(users.len() <= 2);
        seen.extend(
            users
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
        let Some(cursor) = page["cursor"].as_str() else {
            break;
        };
        page = t
            .send(
                Req::get(&format!(
                    "/v1/admin/users?q=corp.example&limit=2&cursor={cursor}"
                ))
                .session(&boss),
            )
            .await
            .json();
    }
    seen.sort();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.iter().all(|e| e.ends_with("@corp.example")));
    t.send(Req::get("/v1/admin/users?limit=abc").session(&boss))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // Oversized parameters are the client's mistake, refused before any
    // store sees them (a 50 kB search used to be a 503 from SQLite's LIKE).
    let long = "a".repeat(50_000);
    for path in [
        format!("/v1/admin/users?q={long}"),
        format!("/v1/admin/users?cursor={long}"),
        format!("/v1/admin/audit?type={long}"),
        format!("/v1/admin/audit?user_id={long}"),
        format!("/v1/admin/audit?before={long}"),
    ] {
        let r = t.send(Req::get(&path).session(&boss)).await;
        r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    let longest_email = format!("{}@corp.example", "a".repeat(240));
    let r = t
        .send(Req::get(&format!("/v1/admin/users?q={longest_email}")).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn role_changes_suspension_and_revocation_apply_at_the_next_request() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let user = t.signed_in("sam@example.com").await;
    let token = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", "sam@example.com"),
            ("password", PASSWORD),
        ]))
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = |path: &str| Req::get(path).header("authorization", &format!("Bearer {token}"));
    assert_eq!(t.send(bearer("/v1/me")).await.status, StatusCode::OK);

    let r = t
        .send(patch(&user.user_id, json!({"roles": ["editor"]})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["user"]["roles"], json!(["editor"]));
    let v = t
        .send(Req::get("/v1/verify?role=editor").session(&user))
        .await;
    assert_eq!(
        v.status,
        StatusCode::OK,
        "the session sees the new role at once"
    );
    t.send(bearer("/v1/me"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");

    t.send(patch(&user.user_id, json!({"status": "paused"})).session(&boss))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    t.send(patch(&user.user_id, json!({"roles": ["Not Valid"]})).session(&boss))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    t.send(patch("usr_nobody", json!({"roles": []})).session(&boss))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    t.send(patch(&user.user_id, json!({"colour": "red"})).session(&boss))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    let r = t
        .send(patch(&user.user_id, json!({"status": "suspended"})).session(&boss))
        .await;
    assert_eq!(r.json()["user"]["status"], "suspended");
    t.send(Req::get("/v1/me").session(&user))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    t.send(
        Req::post("/v1/sessions").json(json!({"email": "sam@example.com", "password": PASSWORD})),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "account_suspended");
    let r = t
        .send(patch(&user.user_id, json!({"status": "active"})).session(&boss))
        .await;
    assert_eq!(r.json()["user"]["status"], "active");

    let again = t.login("sam@example.com").await;
    let r = t
        .send(Req::post(&format!("/v1/admin/users/{}/revoke", user.user_id)).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    t.send(Req::get("/v1/me").session(&again))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    t.send(Req::post("/v1/admin/users/usr_nobody/revoke").session(&boss))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    // The admin's own session is untouched.
    assert_eq!(
        t.send(Req::get("/v1/me").session(&boss)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_event_type_is_audited_without_any_secret() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let mut secrets: Vec<String> = vec![
        PASSWORD.into(),
        "a new password!!".into(),
        "wrong password!".into(),
    ];
    secrets.push(boss.cookie.split('=').nth(1).unwrap().into());
    secrets.push(boss.csrf.clone());

    let user = t.signed_in("uma@example.com").await;
    secrets.push(user.cookie.split('=').nth(1).unwrap().into());
    t.send(
        Req::post("/v1/sessions")
            .json(json!({"email": "uma@example.com", "password": "wrong password!"})),
    )
    .await;
    let pair = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", "uma@example.com"),
            ("password", PASSWORD),
        ]))
        .await
        .json();
    let (access, refresh) = (
        pair["access_token"].as_str().unwrap().to_owned(),
        pair["refresh_token"].as_str().unwrap().to_owned(),
    );
    secrets.extend([access.clone(), refresh.clone()]);
    let next = t
        .send(
            Req::post("/v1/token")
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]),
        )
        .await
        .json();
    secrets.extend([
        next["access_token"].as_str().unwrap().to_owned(),
        next["refresh_token"].as_str().unwrap().to_owned(),
    ]);
    t.send(
        Req::post("/v1/token")
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]),
    )
    .await;
    let fresh = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", "uma@example.com"),
            ("password", PASSWORD),
        ]))
        .await
        .json();
    let fresh_access = fresh["access_token"].as_str().unwrap().to_owned();
    secrets.extend([
        fresh_access.clone(),
        fresh["refresh_token"].as_str().unwrap().to_owned(),
    ]);
    let r = t
        .send(Req::post("/v1/token/revoke").form(&[("token", &fresh_access)]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let second = t.login("uma@example.com").await;
    secrets.push(second.cookie.split('=').nth(1).unwrap().into());
    t.send(Req::delete(&format!("/v1/sessions/{}", second.session_id)).session(&user))
        .await;
    let guess = "a wrong current password";
    secrets.push(guess.into());
    let r = t
        .send(
            Req::post("/v1/account/password")
                .session(&user)
                .json(json!({"current_password": guess, "new_password": "a new password!!"})),
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let r = t
        .send(
            Req::post("/v1/account/password")
                .session(&user)
                .json(json!({"current_password": PASSWORD, "new_password": "a new password!!"})),
        )
        .await;
    secrets.push(r.set_cookie(common::COOKIE).unwrap().value);
    let third = t
        .login_with(
            Req::post("/v1/sessions")
                .json(json!({"email": "uma@example.com", "password": "a new password!!"})),
        )
        .await;
    t.send(Req::delete("/v1/session").session(&third)).await;
    let fourth = t
        .login_with(
            Req::post("/v1/sessions")
                .json(json!({"email": "uma@example.com", "password": "a new password!!"})),
        )
        .await;
    t.send(Req::post("/v1/logout-all").session(&fourth)).await;
    t.send(
        patch(
            &user.user_id,
            json!({"roles": ["ops"], "status": "suspended"}),
        )
        .session(&boss),
    )
    .await;
    t.send(patch(&user.user_id, json!({"status": "active"})).session(&boss))
        .await;
    t.send(Req::post("/v1/admin/keys/rotate").session(&boss))
        .await;
    for _ in 0..7 {
        t.send(
            Req::post("/v1/sessions")
                .peer_ip("192.0.2.9")
                .json(json!({"email": "boss@example.com", "password": "bad password"})),
        )
        .await;
    }
    // An account's life from the admin's side: created with a password,
    // given another, deleted (`user_created`, `password_reset`,
    // `user_deleted`; neither password ever in the log).
    let (first, second) = ("made by the admin!", "set by the admin!!");
    secrets.extend([first.to_owned(), second.to_owned()]);
    let made = t
        .send(
            Req::post("/v1/admin/users")
                .session(&boss)
                .json(json!({"email": "made@example.com", "password": first})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
    let made_id = made.json()["user"]["id"].as_str().unwrap().to_owned();
    let r = t
        .send(set_password(&made_id, json!({"password": second})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = t.send(delete_user(&made_id).session(&boss)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let client = t.app.core.create_client("svc").await.unwrap();
    secrets.push(client.secret.expose().to_owned());
    let r = t
        .send(Req::post(&format!("/v1/admin/clients/{}/secret", client.client.id)).session(&boss))
        .await;
    secrets.push(r.json()["client_secret"].as_str().unwrap().to_owned());
    // An email changed, an address vouched for, an invitation made
    // (`email_changed`, `email_verified`, `invitation_created`; the
    // invitation's link never in the log).
    let r = t
        .send(patch(&user.user_id, json!({"email": "uma.new@example.com"})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = t
        .send(patch(&user.user_id, json!({"email_verified": true})).session(&boss))
        .await;
    assert_eq!(r.json()["user"]["email_verified"], true, "{}", r.text());
    let r = t
        .send(
            Req::post("/v1/admin/invitations")
                .session(&boss)
                .json(json!({"email": "guest@example.com", "mail": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let url = r.json()["url"].as_str().unwrap().to_owned();
    secrets.push(url.split_once("invitation=").unwrap().1.to_owned());
    // A mail given up: reported as the outbox reports it after its last
    // attempt (tests/mail.rs delivers to a real, then a closed, SMTP port;
    // here the retries' 15 s are not waited for).
    {
        use tessera::mail::Report;
        let report = tessera::core::links::CoreReport(std::sync::Arc::downgrade(&t.app.core));
        report
            .failed(
                "password_reset",
                Some(&boss.user_id),
                5,
                "SMTP: connection refused",
            )
            .await;
    }

    let r = t
        .send(Req::get("/v1/admin/audit?limit=200").session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = r.json()["events"].as_array().unwrap().clone();
    let types: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in tessera::core::audit::AUDIT_TYPES {
        assert!(types.contains(expected), "missing {expected}: {types:?}");
    }
    // A rotation is recorded in the rotation's own transaction, with the
    // family's user and id filled in by the store.
    let rotated = events
        .iter()
        .find(|e| e["type"] == "refresh_rotated")
        .unwrap();
    assert!(rotated["user_id"].as_str().unwrap().starts_with("usr_"));
    assert!(
        rotated["detail"]["family"]
            .as_str()
            .is_some_and(|f| !f.is_empty())
    );
    for e in &events {
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        assert!(e["at"].as_str().unwrap().ends_with('Z'));
        assert!(e["detail"].is_object());
    }
    // Newest first, filters and paging.
    let ats: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]));
    let mine = t
        .send(
            Req::get(&format!(
                "/v1/admin/audit?user_id={}&type=login_succeeded",
                user.user_id
            ))
            .session(&boss),
        )
        .await
        .json();
    let mine = mine["events"].as_array().unwrap();
    assert!(!mine.is_empty());
    assert!(
        mine.iter()
            .all(|e| e["type"] == "login_succeeded" && e["user_id"] == user.user_id.as_str())
    );
    let page1 = t
        .send(Req::get("/v1/admin/audit?limit=3").session(&boss))
        .await
        .json();
    let cursor = page1["cursor"].as_str().unwrap();
    let page2 = t
        .send(Req::get(&format!("/v1/admin/audit?limit=3&before={cursor}")).session(&boss))
        .await
        .json();
    assert_eq!(page2["events"][0]["id"], events[3]["id"]);

    // No secret anywhere in the stored audit log (read from the file itself).
    let rows = common::db::text_rows(
        &t.db_url,
        "SELECT type, user_agent, CAST(detail AS TEXT) FROM audit_events",
    )
    .await;
    let stored = format!("{rows:?}");
    for secret in &secrets {
        assert!(
            !stored.contains(secret.as_str()),
            "a secret reached the audit log"
        );
    }
}

#[tokio::test]
async fn audit_events_past_retention_are_swept() {
    let t = TestApp::with(&[("audit_retention", "1d")]).await;
    t.signed_in("old@example.com").await;
    assert!(
        !t.app
            .core
            .audit_events(None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    t.advance(std::time::Duration::from_secs(86_400 + 1));
    t.app.core.sweep().await;
    let left = t
        .app
        .core
        .audit_events(Some("login_succeeded"), None, 10)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

// --- account lifecycle: create, set a password, delete, the last admin ------

/// A user's credentials from the outside: a browser session, and an access
/// and refresh token from the password grant.
struct Credentials {
    session: Login,
    access: String,
    refresh: String,
}

async fn credentials(t: &TestApp, email: &str, password: &str) -> Credentials {
    let session = t
        .login_with(Req::post("/v1/sessions").json(json!({"email": email, "password": password})))
        .await;
    let r = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", password),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let pair = r.json();
    Credentials {
        session,
        access: pair["access_token"].as_str().unwrap().to_owned(),
        refresh: pair["refresh_token"].as_str().unwrap().to_owned(),
    }
}

fn bearer(path: &str, access: &str) -> Req {
    Req::get(path).header("authorization", &format!("Bearer {access}"))
}

/// Every credential of the user is refused: the cookie session, the
/// access token (also where no lookup of the user happens, `/v1/verify`,
/// and at introspection), the refresh token.
async fn assert_all_refused(t: &TestApp, c: &Credentials) {
    t.send(Req::get("/v1/me").session(&c.session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    for path in ["/v1/me", "/v1/verify"] {
        t.send(bearer(path, &c.access))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    let client = t.app.core.create_client("checker").await.unwrap();
    let r = t
        .send(
            Req::post("/v1/token/introspect")
                .header(
                    "authorization",
                    &common::basic_auth(&client.client.id, client.secret.expose()),
                )
                .form(&[("token", &c.access)]),
        )
        .await;
    assert_eq!(r.json()["active"], false);
    t.send(Req::post("/v1/token").form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &c.refresh),
    ]))
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

fn login(email: &str, password: &str) -> Req {
    Req::post("/v1/sessions").json(json!({"email": email, "password": password}))
}

#[tokio::test]
async fn the_new_user_endpoints_need_the_admin_role_and_csrf() {
    let t = TestApp::new().await;
    let plain = t.signed_in("pat@example.com").await;
    let boss = admin(&t, "boss@example.com").await;
    let body = json!({"email": "new@example.com", "password": PASSWORD});
    let requests = [
        || {
            Req::post("/v1/admin/users")
                .json(json!({"email": "new@example.com", "password": PASSWORD}))
        },
        || Req::post("/v1/admin/users/usr_x/password").json(json!({"password": PASSWORD})),
        || delete_user("usr_x"),
    ];
    for req in requests {
        t.send(req())
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        t.send(req().session(&plain))
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
        t.send(req().header("cookie", &boss.cookie))
            .await
            .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    }
    // A non-admin's token changes nothing either.
    let tokens = t.tokens_for("tom@example.com").await;
    let access = tokens["access_token"].as_str().unwrap();
    t.send(delete_user(&plain.user_id).header("authorization", &format!("Bearer {access}")))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    t.send(
        set_password(&plain.user_id, json!({"password": "hijacked password"}))
            .header("authorization", &format!("Bearer {access}")),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        t.send(Req::get("/v1/me").session(&plain)).await.status,
        StatusCode::OK,
        "nothing happened to the user"
    );
    assert!(t.app.core.find_user("new@example.com").await.is_err());
    // The admin's own token does it (issued a second after the role
    // change's cut-off).
    t.advance(std::time::Duration::from_secs(1));
    let admin_tokens = credentials(&t, "boss@example.com", PASSWORD).await;
    let r = t
        .send(
            Req::post("/v1/admin/users")
                .header("authorization", &format!("Bearer {}", admin_tokens.access))
                .json(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn admins_create_users_with_a_password() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let create = |body: Value| Req::post("/v1/admin/users").session(&boss).json(body);
    let r = t
        .send(create(json!({
            "email": "Nia@Example.com",
            "roles": ["ops", "billing:read"],
            "password": "given by the admin",
        })))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let user = r.json()["user"].clone();
    let id = user["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("usr_"));
    assert_eq!(user["email"], "Nia@Example.com");
    assert_eq!(user["roles"], json!(["ops", "billing:read"]));
    assert_eq!(user["status"], "active");
    let nia = t
        .login_with(login("nia@example.com", "given by the admin"))
        .await;
    let r = t.send(Req::get("/v1/verify?role=ops").session(&nia)).await;
    assert_eq!(r.status, StatusCode::OK);

    let created = t
        .app
        .core
        .audit_events(Some("user_created"), Some(&id), 10)
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].detail["actor"], boss.user_id.as_str());
    assert_eq!(created[0].detail["email"], "Nia@Example.com");
    assert_eq!(created[0].detail["roles"], json!(["ops", "billing:read"]));
    // Self-registration is audited as well, without an actor.
    let pat = t.register("pat@example.com").await;
    let registered = t
        .app
        .core
        .audit_events(Some("user_created"), pat["id"].as_str(), 10)
        .await
        .unwrap();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].detail["via"], "registration");
    assert!(registered[0].detail.get("actor").is_none());

    t.send(create(
        json!({"email": "NIA@example.com", "password": "another password"}),
    ))
    .await
    .assert_error(StatusCode::CONFLICT, "conflict");
    // No password: created with one nobody knows, and mailed a link to set
    // one (tests/mail.rs reads the mail; here the log mailer takes it).
    let r = t.send(create(json!({"email": "later@example.com"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        t.send(login("later@example.com", PASSWORD)).await.status,
        StatusCode::UNAUTHORIZED
    );
    for bad in [
        json!({"email": "not an email", "password": PASSWORD}),
        json!({"email": "x@example.com", "password": "short"}),
        json!({"email": "x@example.com", "password": PASSWORD, "roles": ["Not Valid"]}),
        json!({"email": "x@example.com", "password": PASSWORD, "status": "active"}),
        json!({"email": 7, "password": PASSWORD}),
    ] {
        t.send(create(bad.clone()))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    assert!(t.app.core.find_user("x@example.com").await.is_err());
}

#[tokio::test]
async fn an_admin_sets_a_password_and_everything_of_the_user_ends() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let sam = t.register("sam@example.com").await;
    let sam_id = sam["id"].as_str().unwrap().to_owned();
    let before = credentials(&t, "sam@example.com", PASSWORD).await;
    let second = credentials(&t, "sam@example.com", PASSWORD).await;
    assert_eq!(
        t.send(bearer("/v1/verify", &before.access)).await.status,
        StatusCode::OK
    );
    // The access tokens must be issued before the cut-off's second.
    t.advance(std::time::Duration::from_secs(1));

    let new = "the admin's new one";
    let r = t
        .send(set_password(&sam_id, json!({"password": new})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_all_refused(&t, &before).await;
    assert_all_refused(&t, &second).await;
    t.send(login("sam@example.com", PASSWORD))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    // New tokens are issued from the second after the cut-off on.
    t.advance(std::time::Duration::from_secs(1));
    let after = credentials(&t, "sam@example.com", new).await;
    assert_eq!(
        t.send(Req::get("/v1/me").session(&after.session))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        t.send(bearer("/v1/me", &after.access)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.send(Req::get("/v1/me").session(&boss)).await.status,
        StatusCode::OK,
        "the admin's own session is untouched"
    );
    let reset = t
        .app
        .core
        .audit_events(Some("password_reset"), Some(&sam_id), 10)
        .await
        .unwrap();
    assert_eq!(reset.len(), 1);
    assert_eq!(reset[0].detail["actor"], boss.user_id.as_str());

    // A suspended account can be given a password too (the leaked
    // credentials procedure: suspend, set, reactivate).
    let r = t
        .send(patch(&sam_id, json!({"status": "suspended"})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = t
        .send(set_password(&sam_id, json!({"password": "third password"})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    t.send(login("sam@example.com", "third password"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "account_suspended");

    // Refusals change nothing.
    let r = t
        .send(set_password(&sam_id, json!({"password": "short"})).session(&boss))
        .await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(r.text().contains("at least 8"), "{}", r.text());
    for bad in [
        json!({}),
        json!({"password": PASSWORD, "note": "x"}),
        json!({"password": 12345678}),
        json!({"password": PASSWORD, "send_reset": true}),
    ] {
        t.send(set_password(&sam_id, bad).session(&boss))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    t.send(set_password("usr_nobody", json!({"password": PASSWORD})).session(&boss))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let r = t
        .send(patch(&sam_id, json!({"status": "active"})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        t.send(login("sam@example.com", "third password"))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn the_last_active_admin_cannot_be_demoted_suspended_or_deleted() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let last_admin = |r: &common::Resp| {
        r.assert_error(StatusCode::CONFLICT, "last_admin");
        assert!(r.text().contains("last active admin"), "{}", r.text());
    };
    last_admin(
        &t.send(patch(&boss.user_id, json!({"roles": ["ops"]})).session(&boss))
            .await,
    );
    last_admin(
        &t.send(patch(&boss.user_id, json!({"status": "suspended"})).session(&boss))
            .await,
    );
    last_admin(&t.send(delete_user(&boss.user_id).session(&boss)).await);
    // The operator's door too (the CLI calls these).
    assert!(matches!(
        t.app.core.set_roles(&boss.user_id, &[]).await,
        Err(tessera::core::error::CoreError::LastAdmin)
    ));
    assert!(matches!(
        t.app.core.delete_user_by(None, &boss.user_id).await,
        Err(tessera::core::error::CoreError::LastAdmin)
    ));
    let me = t.send(Req::get("/v1/me").session(&boss)).await;
    assert_eq!(me.status, StatusCode::OK, "refusals change nothing");
    assert_eq!(me.json()["user"]["roles"], json!(["admin"]));

    // A suspended admin is no second admin.
    let deputy = admin(&t, "deputy@example.com").await;
    let r = t
        .send(patch(&deputy.user_id, json!({"status": "suspended"})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    last_admin(
        &t.send(patch(&boss.user_id, json!({"roles": []})).session(&boss))
            .await,
    );
    // Once there is a second active admin, the first may go.
    let r = t
        .send(patch(&deputy.user_id, json!({"status": "active"})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let deputy = t.login("deputy@example.com").await;
    let r = t
        .send(patch(&boss.user_id, json!({"roles": ["ops"]})).session(&deputy))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["user"]["roles"], json!(["ops"]));
    // Now the deputy is the last one, even for themselves.
    last_admin(&t.send(delete_user(&deputy.user_id).session(&deputy)).await);
    last_admin(
        &t.send(patch(&deputy.user_id, json!({"status": "suspended"})).session(&deputy))
            .await,
    );
    // Give the role back: boss may now suspend, then delete, the deputy.
    let r = t
        .send(patch(&boss.user_id, json!({"roles": ["admin"]})).session(&deputy))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let boss = t.login("boss@example.com").await;
    let r = t
        .send(patch(&deputy.user_id, json!({"status": "suspended"})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = t.send(delete_user(&deputy.user_id).session(&boss)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

#[tokio::test]
async fn deleting_a_user_ends_everything_and_the_log_forgets_the_email() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let zed = t.register("Zed.Doe@Example.com").await;
    let zed_id = zed["id"].as_str().unwrap().to_owned();
    let before = credentials(&t, "zed.doe@example.com", PASSWORD).await;
    t.send(login("ZED.DOE@example.com", "a wrong password"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let r = t
        .send(patch(&zed_id, json!({"roles": ["ops"]})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    t.advance(std::time::Duration::from_secs(1));
    let before_roles = credentials(&t, "zed.doe@example.com", PASSWORD).await;
    t.advance(std::time::Duration::from_secs(1));
    // Their events name the email now (the registration).
    let rows = |t: &TestApp| {
        let url = t.db_url.clone();
        async move {
            common::db::text_rows(
                &url,
                "SELECT user_id, user_agent, CAST(detail AS TEXT) FROM audit_events",
            )
            .await
        }
    };
    let mentions_zed = |rows: &[Vec<Option<String>>]| {
        rows.iter()
            .filter(|row| row[0].as_deref() == Some(zed_id.as_str()))
            .filter(|row| {
                format!("{row:?}")
                    .to_lowercase()
                    .contains("zed.doe@example.com")
            })
            .count()
    };
    assert!(mentions_zed(&rows(&t).await) > 0, "the test sees the email");

    let r = t.send(delete_user(&zed_id).session(&boss)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_all_refused(&t, &before).await;
    assert_all_refused(&t, &before_roles).await;
    t.send(login("zed.doe@example.com", PASSWORD))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    // Gone for every admin door.
    t.send(delete_user(&zed_id).session(&boss))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    t.send(patch(&zed_id, json!({"roles": []})).session(&boss))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    t.send(set_password(&zed_id, json!({"password": PASSWORD})).session(&boss))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let list = t
        .send(Req::get("/v1/admin/users?q=zed").session(&boss))
        .await
        .json();
    assert_eq!(list["users"], json!([]));

    // The audit log keeps the id, loses the email, says who deleted.
    let events = t
        .send(Req::get(&format!("/v1/admin/audit?user_id={zed_id}&limit=200")).session(&boss))
        .await
        .json();
    let events = events["events"].as_array().unwrap().clone();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in [
        "user_created",
        "login_succeeded",
        "login_failed",
        "roles_changed",
        "user_deleted",
    ] {
        assert!(types.contains(&expected), "{expected} kept: {types:?}");
    }
    assert_eq!(events[0]["type"], "user_deleted");
    assert_eq!(events[0]["detail"]["actor"], boss.user_id.as_str());
    let created = events.iter().find(|e| e["type"] == "user_created").unwrap();
    assert_eq!(created["detail"]["email"], "[deleted]");
    let served = serde_json::to_string(&events).unwrap().to_lowercase();
    assert!(!served.contains("zed.doe@example.com"), "{served}");
    // And in the database itself.
    let stored = rows(&t).await;
    assert_eq!(mentions_zed(&stored), 0, "{stored:?}");
    assert!(
        stored
            .iter()
            .any(|row| row[0].as_deref() == Some(zed_id.as_str()))
    );

    // The email can register again: a new account, a new id.
    let again = t.register("zed.doe@example.com").await;
    assert_ne!(again["id"], zed_id.as_str());
    let fresh = credentials(&t, "zed.doe@example.com", PASSWORD).await;
    assert_eq!(
        t.send(bearer("/v1/me", &fresh.access)).await.status,
        StatusCode::OK
    );
    // The admin may delete their own account while another admin remains.
    let deputy = admin(&t, "deputy@example.com").await;
    let r = t.send(delete_user(&deputy.user_id).session(&deputy)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    t.send(Req::get("/v1/me").session(&deputy))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

// --- service clients --------------------------------------------------------

fn client_path(id: &str) -> String {
    format!("/v1/admin/clients/{id}")
}

fn patch_client(id: &str, body: Value) -> Req {
    Req::new(axum::http::Method::PATCH, &client_path(id)).json(body)
}

/// Introspection of `token` with a client's Basic credentials.
fn introspect(id: &str, secret: &str, token: &str) -> Req {
    Req::post("/v1/token/introspect")
        .header("authorization", &common::basic_auth(id, secret))
        .form(&[("token", token)])
}

/// The refusal a service client gets: 401 `invalid_client` with the Basic
/// challenge; returns the body so callers can compare refusals.
fn assert_refused(r: &common::Resp) -> String {
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="tessera""#)
    );
    r.text()
}

#[tokio::test]
async fn service_clients_are_listed_disabled_rotated_and_deleted() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let billing = t.app.core.create_client("billing").await.unwrap();
    t.advance(std::time::Duration::from_millis(5));
    let search = t.app.core.create_client("search").await.unwrap();
    let id = billing.client.id.clone();
    let secret = billing.secret.expose().to_owned();
    let access = t.tokens_for("uma@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown = assert_refused(
        &t.send(introspect("cli_AAAAAAAAAAAAAAAAAAAAAA", &secret, &access))
            .await,
    );

    // The list: every client, oldest first, in the contract's shape.
    let r = t.send(Req::get("/v1/admin/clients").session(&boss)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let listed = r.json()["clients"].as_array().unwrap().clone();
    let ids: Vec<&str> = listed
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str(), search.client.id.as_str()]);
    assert_eq!(listed[0]["name"], "billing");
    assert_eq!(listed[0]["disabled"], false);
    assert!(listed[0]["created_at"].as_str().unwrap().ends_with('Z'));
    let keys: Vec<&String> = listed[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["client_id", "created_at", "disabled", "name"]);
    assert!(!r.text().contains(&secret));
    assert_eq!(
        t.send(introspect(&id, &secret, &access)).await.json()["active"],
        true
    );

    // Disabled: refused exactly as an unknown client, on every Basic door;
    // the other client is untouched.
    let r = t
        .send(patch_client(&id, json!({"disabled": true})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["client"]["client_id"], id.as_str());
    assert_eq!(r.json()["client"]["disabled"], true);
    let disabled = assert_refused(&t.send(introspect(&id, &secret, &access)).await);
    assert_eq!(
        disabled, unknown,
        "a disabled client is refused like an unknown one"
    );
    let wrong = assert_refused(&t.send(introspect(&id, "not the secret", &access)).await);
    assert_eq!(wrong, unknown);
    assert_refused(
        &t.send(
            Req::get("/v1/revocations").header("authorization", &common::basic_auth(&id, &secret)),
        )
        .await,
    );
    let other = t
        .send(introspect(
            &search.client.id,
            search.secret.expose(),
            &access,
        ))
        .await;
    assert_eq!(other.json()["active"], true);
    let listed = t
        .send(Req::get("/v1/admin/clients").session(&boss))
        .await
        .json();
    assert_eq!(listed["clients"][0]["disabled"], true);
    assert_eq!(listed["clients"][1]["disabled"], false);
    // Disabling again changes (and records) nothing.
    let r = t
        .send(patch_client(&id, json!({"disabled": true})).session(&boss))
        .await;
    assert_eq!(r.json()["client"]["disabled"], true);

    // Enabled again: the same secret works.
    let r = t
        .send(patch_client(&id, json!({"disabled": false})).session(&boss))
        .await;
    assert_eq!(r.json()["client"]["disabled"], false);
    assert_eq!(
        t.send(introspect(&id, &secret, &access)).await.json()["active"],
        true
    );

    // Bad bodies and unknown ids.
    for body in [
        json!({}),
        json!({"disabled": "yes"}),
        json!({"disabled": null}),
        json!({"disabled": true, "name": "x"}),
        json!([true]),
    ] {
        t.send(patch_client(&id, body.clone()).session(&boss))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    t.send(
        Req::new(axum::http::Method::PATCH, &client_path(&id))
            .session(&boss)
            .raw("application/json", "{\"disabled\":"),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    for unknown_id in [
        "cli_AAAAAAAAAAAAAAAAAAAAAA",
        "nope",
        "usr_AAAAAAAAAAAAAAAAAAAAAA",
        "cli_%00",
    ] {
        t.send(patch_client(unknown_id, json!({"disabled": true})).session(&boss))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
        t.send(Req::post(&format!("{}/secret", client_path(unknown_id))).session(&boss))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
        t.send(Req::delete(&client_path(unknown_id)).session(&boss))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }

    // A new secret: returned once, not cacheable; the old one is refused
    // from the next request on.
    let r = t
        .send(Req::post(&format!("{}/secret", client_path(&id))).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    assert_eq!(body["client_id"], id.as_str());
    let rotated = body["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(rotated.len(), 43);
    assert_ne!(rotated, secret);
    assert_refused(&t.send(introspect(&id, &secret, &access)).await);
    assert_eq!(
        t.send(introspect(&id, &rotated, &access)).await.json()["active"],
        true
    );
    // The secret is stored hashed only: the database never contains it.
    let db = common::db::at_rest(&t.db_url);
    assert!(!db.windows(rotated.len()).any(|w| w == rotated.as_bytes()));

    // Rotating a disabled client keeps it disabled (rotate, then let it in).
    t.send(patch_client(&id, json!({"disabled": true})).session(&boss))
        .await;
    let r = t
        .send(Req::post(&format!("{}/secret", client_path(&id))).session(&boss))
        .await;
    let third = r.json()["client_secret"].as_str().unwrap().to_owned();
    assert_refused(&t.send(introspect(&id, &third, &access)).await);
    t.send(patch_client(&id, json!({"disabled": false})).session(&boss))
        .await;
    assert_eq!(
        t.send(introspect(&id, &third, &access)).await.json()["active"],
        true
    );
    assert_refused(&t.send(introspect(&id, &rotated, &access)).await);

    // Deleted: refused, and gone from every admin door.
    let r = t.send(Req::delete(&client_path(&id)).session(&boss)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let deleted = assert_refused(&t.send(introspect(&id, &third, &access)).await);
    assert_eq!(
        deleted, unknown,
        "a deleted client is refused like an unknown one"
    );
    t.send(Req::delete(&client_path(&id)).session(&boss))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    t.send(patch_client(&id, json!({"disabled": false})).session(&boss))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    t.send(Req::post(&format!("{}/secret", client_path(&id))).session(&boss))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let listed = t
        .send(Req::get("/v1/admin/clients").session(&boss))
        .await
        .json();
    assert_eq!(listed["clients"].as_array().unwrap().len(), 1);
    assert_eq!(listed["clients"][0]["client_id"], search.client.id.as_str());

    // Audited: who did what to which client, and never a secret.
    let events = t
        .send(Req::get("/v1/admin/audit?type=client_changed&limit=50").session(&boss))
        .await
        .json()["events"]
        .as_array()
        .unwrap()
        .clone();
    // (All at one instant of the test's clock: the log orders those by id.)
    let mut changes: Vec<&str> = events
        .iter()
        .map(|e| e["detail"]["change"].as_str().unwrap())
        .collect();
    changes.sort_unstable();
    assert_eq!(
        changes,
        [
            "deleted",
            "disabled",
            "disabled",
            "enabled",
            "enabled",
            "secret_rotated",
            "secret_rotated"
        ],
        "one event per change, none for the repeated disable"
    );
    for e in &events {
        assert_eq!(e["user_id"], boss.user_id.as_str());
        assert_eq!(e["detail"]["actor"], boss.user_id.as_str());
        assert_eq!(e["detail"]["client_id"], id.as_str());
        assert_eq!(e["detail"]["name"], "billing");
    }
    let created = t
        .send(Req::get("/v1/admin/audit?type=client_created").session(&boss))
        .await
        .json();
    let created = created["events"].as_array().unwrap();
    assert_eq!(created.len(), 2);
    assert!(
        created
            .iter()
            .any(|e| e["detail"]["client_id"] == id.as_str())
    );
    let log = common::db::text_rows(
        &t.db_url,
        "SELECT type, CAST(detail AS TEXT) FROM audit_events",
    )
    .await;
    let log = format!("{log:?}");
    for s in [&secret, &rotated, &third] {
        assert!(
            !log.contains(s.as_str()),
            "a client secret reached the audit log"
        );
    }
}

#[tokio::test]
async fn client_administration_needs_the_admin_role_and_csrf() {
    let t = TestApp::new().await;
    let plain = t.signed_in("pat@example.com").await;
    let boss = admin(&t, "boss@example.com").await;
    let client = t.app.core.create_client("billing").await.unwrap();
    let id = client.client.id.clone();
    let secret_path = format!("{}/secret", client_path(&id));
    let requests: [fn(&str) -> Req; 4] = [
        |_| Req::get("/v1/admin/clients"),
        |id| patch_client(id, json!({"disabled": true})),
        |id| Req::post(&format!("/v1/admin/clients/{id}/secret")),
        |id| Req::delete(&format!("/v1/admin/clients/{id}")),
    ];
    for req in requests {
        t.send(req(&id))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        t.send(req(&id).session(&plain))
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    // A cookie without the CSRF header changes nothing.
    for req in [
        patch_client(&id, json!({"disabled": true})),
        Req::post(&secret_path),
        Req::delete(&client_path(&id)),
    ] {
        t.send(req.header("cookie", &boss.cookie))
            .await
            .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    }
    // Nothing changed: the client is there, enabled, with its secret.
    let found = t.app.core.client(&id).await.unwrap();
    assert!(!found.disabled());
    let access = t.tokens_for("uma@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = t
        .send(introspect(&id, client.secret.expose(), &access))
        .await;
    assert_eq!(r.json()["active"], true);
    let changed = t
        .app
        .core
        .audit_events(Some("client_changed"), None, 10)
        .await
        .unwrap();
    assert!(changed.is_empty(), "{changed:?}");

    // An admin's Bearer token works (no CSRF for Bearer). Granting the
    // role cut off the admin's earlier tokens in this second of the test's
    // clock: a new one is issued from the next.
    t.advance(std::time::Duration::from_secs(1));
    let grant = t.send(common::password_grant("boss@example.com")).await;
    assert_eq!(grant.status, StatusCode::OK, "{}", grant.text());
    let token = grant.json()["access_token"].as_str().unwrap().to_owned();
    let r = t
        .send(
            patch_client(&id, json!({"disabled": true}))
                .header("authorization", &format!("Bearer {token}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["client"]["disabled"], true);
}

/// An open revocation-feed stream ends once its client is disabled (on a
/// second's re-check), so disabling a client cuts off a live follower too.
#[tokio::test]
async fn an_open_feed_stream_ends_when_its_client_is_disabled() {
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::ServiceExt;

    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let client = t.app.core.create_client("edge").await.unwrap();
    let open = || async {
        let req = Req::get("/v1/revocations")
            .header(
                "authorization",
                &common::basic_auth(&client.client.id, client.secret.expose()),
            )
            .header("accept", "text/event-stream")
            .build();
        let response = t.router.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body()
    };
    /// Whether the stream ends (or fails) within `wait`.
    async fn ends(body: &mut axum::body::Body, wait: Duration) -> bool {
        tokio::time::timeout(wait, async {
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
        })
        .await
        .is_ok()
    }

    let mut body = open().await;
    // It stays open past a re-check while the client is fine.
    assert!(!ends(&mut body, Duration::from_millis(1600)).await);
    let r = t
        .send(patch_client(&client.client.id, json!({"disabled": true})).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        ends(&mut body, Duration::from_secs(5)).await,
        "the stream outlived its client's disabling"
    );

    // The same for a new secret: the stream opened with the old one ends.
    t.send(patch_client(&client.client.id, json!({"disabled": false})).session(&boss))
        .await;
    let mut body = open().await;
    let r = t
        .send(Req::post(&format!("{}/secret", client_path(&client.client.id))).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        ends(&mut body, Duration::from_secs(5)).await,
        "the stream outlived its client's old secret"
    );
}

#[tokio::test]
async fn an_unknown_audit_type_is_refused_naming_the_known_ones() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let r = t
        .send(Req::get("/v1/admin/audit?type=login_success").session(&boss))
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let description = r.json()["error_description"].as_str().unwrap().to_owned();
    assert!(description.contains("login_success"), "{description}");
    for known in tessera::core::audit::AUDIT_TYPES {
        assert!(
            description.contains(known),
            "{known} not named: {description}"
        );
    }
    // A known type without events is an empty page, not an error.
    let r = t
        .send(Req::get("/v1/admin/audit?type=client_created").session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["events"], json!([]));
    // An empty type is no filter.
    let r = t
        .send(Req::get("/v1/admin/audit?type=").session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!r.json()["events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_admin_signing_a_user_out_everywhere_is_named_as_the_actor() {
    let t = TestApp::new().await;
    let boss = admin(&t, "boss@example.com").await;
    let user = t.signed_in("user@example.com").await;
    let r = t
        .send(Req::post(&format!("/v1/admin/users/{}/revoke", user.user_id)).session(&boss))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let events = t
        .app
        .core
        .audit_events(Some("logout_all"), Some(&user.user_id), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].detail["actor"], boss.user_id.as_str());
    // The user's own "sign out everywhere" names no actor.
    let again = t.login("user@example.com").await;
    let r = t.send(Req::post("/v1/logout-all").session(&again)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let events = t
        .app
        .core
        .audit_events(Some("logout_all"), Some(&user.user_id), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    let unnamed = events.iter().filter(|e| e.detail.get("actor").is_none());
    assert_eq!(unnamed.count(), 1, "{events:?}");
}

#[tokio::test]
async fn the_first_signing_key_is_audited_as_created_and_later_ones_as_rotated() {
    let t = TestApp::new().await;
    let core = &t.app.core;
    let created = core
        .audit_events(Some("key_created"), None, 10)
        .await
        .unwrap();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].detail["previous"], Value::Null);
    assert!(
        core.audit_events(Some("key_rotated"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    core.rotate_keys_with(None, false).await.unwrap();
    let rotated = core
        .audit_events(Some("key_rotated"), None, 10)
        .await
        .unwrap();
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0].detail["previous"], created[0].detail["kid"]);
}
