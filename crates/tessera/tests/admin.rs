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
    let client = t.app.core.create_client("svc").await.unwrap();
    secrets.push(client.secret.expose().to_owned());

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
