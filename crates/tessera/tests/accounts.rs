//! `POST /v1/accounts` and input validation, through the real router.

mod common;

use axum::http::StatusCode;
use common::{PASSWORD, Req, TestApp};
use serde_json::json;

fn register(email: &str, password: &str) -> Req {
    Req::post("/v1/accounts").json(json!({"email": email, "password": password}))
}

#[tokio::test]
async fn registration_returns_the_user_object() {
    let t = TestApp::new().await;
    let r = t.send(register("Uma@Example.com", PASSWORD)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let user = &r.json()["user"];
    let id = user["id"].as_str().unwrap();
    assert!(id.starts_with("usr_") && id.len() == 26, "{id}");
    assert_eq!(user["email"], "Uma@Example.com");
    assert_eq!(user["roles"], json!([]));
    assert_eq!(user["status"], "active");
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    let text = r.text();
    assert!(
        !text.contains("password") && !text.contains("argon2"),
        "{text}"
    );
}

#[tokio::test]
async fn emails_are_unique_case_insensitively() {
    let t = TestApp::new().await;
    t.register("victor@example.com").await;
    for dup in [
        "victor@example.com",
        "VICTOR@EXAMPLE.COM",
        "  Victor@Example.com ",
    ] {
        t.send(register(dup, PASSWORD))
            .await
            .assert_error(StatusCode::CONFLICT, "conflict");
    }
}

#[tokio::test]
async fn bad_emails_and_passwords_are_refused_before_hashing() {
    let t = TestApp::new().await;
    for email in [
        "",
        "no-at-sign",
        "two@@example.com",
        "spaces in@example.com",
        "x'; DROP TABLE users;--@example.com",
        "' OR '1'='1' --@example.com",
        "\"quoted\"@example.com",
        "rtl\u{202e}moc.elpmaxe@example.com",
        "zero\u{200b}width@example.com",
        "nul\u{0}@example.com",
        "a@localhost",
    ] {
        t.send(register(email, PASSWORD))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    let long_email = format!("{}@example.com", "a".repeat(250));
    t.send(register(&long_email, PASSWORD))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    for password in ["", "short", "1234567", &"p".repeat(1025)] {
        t.send(register("wendy@example.com", password))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    // 1024 characters (multi-byte) is the maximum and is accepted.
    let r = t
        .send(register("wendy@example.com", &"é".repeat(1024)))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // Login checks the same policy before hashing.
    t.send(
        Req::post("/v1/sessions")
            .json(json!({"email": "wendy@example.com", "password": "p".repeat(1025)})),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn sql_looking_but_valid_emails_are_stored_verbatim() {
    let t = TestApp::new().await;
    for email in [
        "o'brien@example.com",
        "robert'--@example.com",
        "100%_off@example.com",
    ] {
        t.register(email).await;
        let login = t.login(email).await;
        assert_eq!(login.body["user"]["email"], email);
    }
    // LIKE wildcards in the email do not match other accounts.
    let users = t
        .app
        .core
        .list_users(&tessera::core::accounts::UserQuery {
            email_contains: Some("%_off".into()),
            limit: 10,
            after_id: None,
        })
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
    let none = t
        .app
        .core
        .list_users(&tessera::core::accounts::UserQuery {
            email_contains: Some("_".into()),
            limit: 10,
            after_id: None,
        })
        .await
        .unwrap();
    assert_eq!(none.len(), 1, "only the address with a literal underscore");
}

#[tokio::test]
async fn unicode_emails_are_accepted_and_fold_case() {
    let t = TestApp::new().await;
    t.register("Zoë@Exämple.org").await;
    let login = t.login("zoë@exämple.org").await;
    assert_eq!(login.body["user"]["email"], "Zoë@Exämple.org");
    t.send(register("ZOË@EXÄMPLE.ORG", PASSWORD))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
}
