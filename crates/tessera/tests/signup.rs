//! Joining: email verification (`off | optional | required`), who may sign
//! up (`registration = open | invite | closed`, the allowed domains) and
//! invitations, against a real SMTP server (`aiosmtpd`, see
//! `common/smtp.rs`): links work once, expire, are bound to their user or
//! address, survive a restart, and never reach the log or the audit log.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::logs::Logs;
use common::smtp::{Delivered, SmtpServer};
use common::{ORIGIN, PASSWORD, Req, TestApp, password_grant};
use serde_json::{Value, json};

const VERIFY_SUBJECT: &str = "Confirm your email address for Tessera";
const INVITE_SUBJECT: &str = "You are invited to Tessera";

async fn app(smtp: &SmtpServer, pairs: &[(&str, &str)]) -> TestApp {
    let url = smtp.url();
    let mut all = vec![("smtp_url", url.as_str())];
    all.extend_from_slice(pairs);
    TestApp::with(&all).await
}

fn register(email: &str) -> Req {
    Req::post("/v1/accounts").json(json!({ "email": email, "password": PASSWORD }))
}

fn register_invited(email: &str, invitation: &str) -> Req {
    Req::post("/v1/accounts")
        .json(json!({ "email": email, "password": PASSWORD, "invitation": invitation }))
}

fn confirm(token: &str) -> Req {
    Req::post("/v1/email-verification/confirm").json(json!({ "token": token }))
}

fn login(email: &str) -> Req {
    Req::post("/v1/sessions").json(json!({ "email": email, "password": PASSWORD }))
}

fn token_after<'a>(link: &'a str, marker: &str) -> &'a str {
    link.split_once(marker).expect("the link's marker").1
}

async fn verification_mail(smtp: &SmtpServer, email: &str) -> Delivered {
    smtp.wait_for_subject(email, VERIFY_SUBJECT).await
}

async fn verification_token(smtp: &SmtpServer, email: &str) -> String {
    let m = verification_mail(smtp, email).await;
    let link = m
        .link_with("/verify-email?token=")
        .expect("a verification link");
    assert!(
        link.starts_with(&format!("{ORIGIN}/verify-email?token=")),
        "{link}"
    );
    token_after(&link, "/verify-email?token=").to_owned()
}

async fn me(t: &TestApp, email: &str) -> Value {
    let tokens = t.send(password_grant(email)).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let access = tokens.json()["access_token"].as_str().unwrap().to_owned();
    let r = t
        .send(Req::get("/v1/me").header("authorization", &format!("Bearer {access}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

async fn admin_token(t: &TestApp, email: &str) -> String {
    let user = t.app.core.find_user(email).await;
    if user.is_err() {
        t.app
            .core
            .register(tessera::core::accounts::NewAccount {
                email: email.to_owned(),
                password: tessera::core::accounts::Password::new(PASSWORD.to_owned()),
                roles: vec!["admin".to_owned()],
            })
            .await
            .unwrap();
    }
    let id = t.app.core.find_user(email).await.unwrap().id;
    t.app.core.verify_email_by(None, &id).await.unwrap();
    let r = t.send(password_grant(email)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn bearer(req: Req, access: &str) -> Req {
    req.header("authorization", &format!("Bearer {access}"))
}

#[tokio::test]
async fn registration_mails_a_link_that_verifies_the_address_once() {
    let (logs, _guard) = Logs::capture(tracing::Level::TRACE);
    let smtp = SmtpServer::start();
    let t = app(&smtp, &[]).await;
    let email = "vera@example.com";
    let r = t.send(register(email)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["user"]["email_verified"], false);
    // `optional`: an unverified account signs in.
    assert_eq!(t.send(login(email)).await.status, StatusCode::CREATED);
    assert_eq!(me(&t, email).await["user"]["email_verified"], false);

    let message = verification_mail(&smtp, email).await;
    assert!(message.text.contains("24 hours"), "{}", message.text);
    assert!(message.text.contains(email));
    let token = verification_token(&smtp, email).await;
    assert!(token.len() >= 43, "at least 256 bits: {token}");
    let r = t.send(confirm(&token)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(me(&t, email).await["user"]["email_verified"], true);
    // Once only; unknown and malformed tokens are refused alike.
    for bad in [token.clone(), "A".repeat(43), "nope".to_owned()] {
        t.send(confirm(&bad))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_token");
    }
    let events = t
        .app
        .core
        .audit_events(Some("email_verified"), None, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].detail["via"], "verification_link");
    // The token is in the mail only: not in the log, not in the audit log.
    let audit =
        serde_json::to_string(&t.app.core.audit_events(None, None, 1000).await.unwrap()).unwrap();
    assert!(
        !audit.contains(&token),
        "the verification token is in the audit log"
    );
    assert!(
        !logs.text().contains(&token),
        "the verification token is in the log"
    );
    // The admin list shows it too.
    let access = admin_token(&t, "root@example.com").await;
    let r = t
        .send(bearer(Req::get("/v1/admin/users?q=vera"), &access))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["users"][0]["email_verified"], true);
}

#[tokio::test]
async fn required_verification_refuses_logins_and_tokens_until_the_link_is_used() {
    let smtp = SmtpServer::start();
    let t = app(&smtp, &[("email_verification", "required")]).await;
    let email = "rita@example.com";
    assert_eq!(t.send(register(email)).await.status, StatusCode::CREATED);

    t.send(login(email))
        .await
        .assert_error(StatusCode::FORBIDDEN, "email_not_verified");
    t.send(password_grant(email))
        .await
        .assert_error(StatusCode::FORBIDDEN, "email_not_verified");
    // A wrong password says nothing about verification.
    t.send(Req::post("/v1/sessions").json(json!({"email": email, "password": "not the password"})))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let failed = t
        .app
        .core
        .audit_events(Some("login_failed"), None, 10)
        .await
        .unwrap();
    assert!(
        failed
            .iter()
            .any(|e| e.detail["reason"] == "email_not_verified"),
        "{failed:?}"
    );

    // Resend: the same 202 for a stranger and for the account.
    for who in [email, "nobody@example.com"] {
        let r = t
            .send(Req::post("/v1/email-verification").json(json!({ "email": who })))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        assert_eq!(
            r.json()["message"],
            "if an account has this email and it is not verified yet, a link to verify it is on its way"
        );
    }
    smtp.wait_for(email, 2).await;
    assert!(smtp.messages_to("nobody@example.com").is_empty());
    // Either link works (the newest is used here); then the account signs in.
    let token = verification_token(&smtp, email).await;
    assert_eq!(t.send(confirm(&token)).await.status, StatusCode::NO_CONTENT);
    assert_eq!(t.send(login(email)).await.status, StatusCode::CREATED);
    assert_eq!(t.send(password_grant(email)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_verification_link_expires_survives_a_restart_and_is_bound_to_its_user() {
    let smtp = SmtpServer::start();
    let url = smtp.url();
    let t = app(&smtp, &[]).await;
    t.send(register("early@example.com")).await;
    t.send(register("late@example.com")).await;
    let early = verification_token(&smtp, "early@example.com").await;
    let late = verification_token(&smtp, "late@example.com").await;

    // Across a restart, a link still works, for its own user only.
    let t = t.restart(&[("smtp_url", &url)]).await;
    assert_eq!(t.send(confirm(&early)).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        me(&t, "early@example.com").await["user"]["email_verified"],
        true
    );
    assert_eq!(
        me(&t, "late@example.com").await["user"]["email_verified"],
        false
    );

    // 24 hours later the other link is dead.
    t.advance(Duration::from_secs(24 * 3600 + 1));
    t.send(confirm(&late))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_token");
    assert_eq!(
        me(&t, "late@example.com").await["user"]["email_verified"],
        false
    );
}

#[tokio::test]
async fn a_signed_in_user_asks_for_a_link_to_their_own_address() {
    let smtp = SmtpServer::start();
    let t = app(&smtp, &[]).await;
    let email = "self@example.com";
    let session = t.signed_in(email).await;
    verification_mail(&smtp, email).await;
    // A session needs its CSRF token; no body at all.
    let r = t
        .send(Req::post("/v1/email-verification").session(&session))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    smtp.wait_for(email, 2).await;
    // Neither an email nor credentials: 401.
    t.send(Req::post("/v1/email-verification"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn the_per_email_limit_holds_for_verification_mail() {
    let smtp = SmtpServer::start();
    let t = app(&smtp, &[("email_verification", "off")]).await;
    let mut limited = false;
    for _ in 0..20 {
        let r = t
            .send(Req::post("/v1/email-verification").json(json!({"email": "flood@example.com"})))
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            assert!(r.header("retry-after").is_some());
            limited = true;
            break;
        }
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    }
    assert!(limited, "the per-email limit never answered 429");
}

#[tokio::test]
async fn off_sends_no_verification_mail_and_changes_nothing() {
    let smtp = SmtpServer::start();
    let t = app(&smtp, &[("email_verification", "off")]).await;
    t.signed_in("quiet@example.com").await;
    let r = t
        .send(Req::post("/v1/email-verification").json(json!({"email": "quiet@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // A password reset is the next mail it gets: nothing came before it.
    let r = t
        .send(Req::post("/v1/password-reset").json(json!({"email": "quiet@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let got = smtp.wait_for("quiet@example.com", 1).await;
    assert_eq!(got[0].subject, "Reset your Tessera password");
}

#[tokio::test]
async fn a_reset_link_verifies_the_address_it_reached() {
    let smtp = SmtpServer::start();
    let t = app(&smtp, &[("email_verification", "required")]).await;
    let email = "forgetful@example.com";
    t.send(register(email)).await;
    let r = t
        .send(Req::post("/v1/password-reset").json(json!({"email": email})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let m = smtp
        .wait_for_subject(email, "Reset your Tessera password")
        .await;
    let link = m.link_with("/reset?token=").unwrap();
    let r = t
        .send(Req::post("/v1/password-reset/confirm").json(
            json!({"token": token_after(&link, "/reset?token="), "password": "a brand new passphrase"}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = t
        .send(
            Req::post("/v1/sessions")
                .json(json!({"email": email, "password": "a brand new passphrase"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn an_email_change_unverifies_voids_old_links_and_mails_the_new_address() {
    let smtp = SmtpServer::start();
    let t = app(&smtp, &[]).await;
    let access = admin_token(&t, "root@example.com").await;
    let user = t.register("old@example.com").await;
    let id = user["id"].as_str().unwrap();
    let old_token = verification_token(&smtp, "old@example.com").await;

    let r = t
        .send(bearer(
            Req::new(Method::PATCH, &format!("/v1/admin/users/{id}"))
                .json(json!({"email": "New@Example.com"})),
            &access,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["user"]["email"], "New@Example.com");
    assert_eq!(r.json()["user"]["email_verified"], false);
    // The old address's link no longer verifies anything.
    t.send(confirm(&old_token))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_token");
    // The new address is the login, in any case, and gets its own link.
    assert_eq!(
        t.send(login("new@example.com")).await.status,
        StatusCode::CREATED
    );
    t.send(login("old@example.com"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let token = verification_token(&smtp, "New@Example.com").await;
    assert_eq!(t.send(confirm(&token)).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        me(&t, "new@example.com").await["user"]["email_verified"],
        true
    );
    // Taken emails conflict; `email_verified: false` is refused; `true`
    // vouches.
    t.register("taken@example.com").await;
    let r = t
        .send(bearer(
            Req::new(Method::PATCH, &format!("/v1/admin/users/{id}"))
                .json(json!({"email": "TAKEN@example.com"})),
            &access,
        ))
        .await;
    r.assert_error(StatusCode::CONFLICT, "conflict");
    let r = t
        .send(bearer(
            Req::new(Method::PATCH, &format!("/v1/admin/users/{id}"))
                .json(json!({"email_verified": false})),
            &access,
        ))
        .await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let taken = t.app.core.find_user("taken@example.com").await.unwrap();
    let r = t
        .send(bearer(
            Req::new(Method::PATCH, &format!("/v1/admin/users/{}", taken.id))
                .json(json!({"email_verified": true})),
            &access,
        ))
        .await;
    assert_eq!(r.json()["user"]["email_verified"], true);
    let events = t
        .app
        .core
        .audit_events(Some("email_changed"), Some(id), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let admin_id = t.app.core.find_user("root@example.com").await.unwrap().id;
    assert_eq!(events[0].detail["actor"], admin_id.as_str());
}

#[tokio::test]
async fn closed_registration_refuses_everyone_but_administrators() {
    let smtp = SmtpServer::start();
    let t = app(&smtp, &[("registration", "closed")]).await;
    t.send(register("stranger@example.com"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "registration_closed");
    let page = t.send(Req::get("/register")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.text().contains("Registration is closed"));
    assert!(!page.text().contains("register-form"));
    // The login page does not offer an account.
    assert!(
        !t.send(Req::get("/login"))
            .await
            .text()
            .contains("Create an account")
    );
    // Administrators still create accounts.
    let access = admin_token(&t, "root@example.com").await;
    let r = t
        .send(bearer(
            Req::post("/v1/admin/users")
                .json(json!({"email": "made@example.com", "password": "made by the admin"})),
            &access,
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // And an invitation does not open a closed server.
    let r = t
        .send(bearer(
            Req::post("/v1/admin/invitations").json(json!({"email": "guest@example.com"})),
            &access,
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let url = r.json()["url"].as_str().unwrap().to_owned();
    t.send(register_invited(
        "guest@example.com",
        token_after(&url, "invitation="),
    ))
    .await
    .assert_error(StatusCode::FORBIDDEN, "registration_closed");
}

#[tokio::test]
async fn allowed_domains_limit_self_registration() {
    let smtp = SmtpServer::start();
    let t = app(
        &smtp,
        &[("allowed_email_domains", "example.com, *.corp.example.org")],
    )
    .await;
    for ok in [
        "a@example.com",
        "b@EXAMPLE.COM",
        "c@corp.example.org",
        "d@eu.corp.example.org",
    ] {
        let r = t.send(register(ok)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{ok}: {}", r.text());
    }
    for refused in [
        "e@mail.example.com",
        "f@example.org",
        "g@notcorp.example.org",
        "h@example.com.evil.io",
    ] {
        let r = t.send(register(refused)).await;
        r.assert_error(StatusCode::FORBIDDEN, "registration_closed");
        assert!(
            r.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("example.com, *.corp.example.org"),
            "{}",
            r.text()
        );
    }
    // A domain list that is not a list of domains is a configuration error.
    let e = tessera::config::Settings::from_pairs(&[(
        "allowed_email_domains",
        "example.com, not a domain",
    )])
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("TESSERA_ALLOWED_EMAIL_DOMAINS"),
        "{e:#}"
    );
}

#[tokio::test]
async fn invitations_register_once_only_their_address_with_their_roles() {
    let smtp = SmtpServer::start();
    let (logs, _guard) = Logs::capture(tracing::Level::TRACE);
    let t = app(
        &smtp,
        &[
            ("registration", "invite"),
            ("allowed_email_domains", "example.com"),
        ],
    )
    .await;
    // Without an invitation: refused, on the API and the page.
    t.send(register("walkin@example.com"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "registration_closed");
    let page = t.send(Req::get("/register")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.text().contains("needs an invitation"));

    let access = admin_token(&t, "root@example.com").await;
    // An invitation admits its address even outside the domain list.
    let r = t
        .send(bearer(
            Req::post("/v1/admin/invitations")
                .json(json!({"email": "Guest@Partner.io", "roles": ["editor"]})),
            &access,
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = r.json();
    assert_eq!(body["mailed"], true);
    let url = body["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{ORIGIN}/register?invitation=")),
        "{url}"
    );
    let token = token_after(&url, "invitation=").to_owned();
    assert!(token.len() >= 43);
    // It was mailed, with the same link.
    let mailed = smtp
        .wait_for_subject("Guest@Partner.io", INVITE_SUBJECT)
        .await;
    assert_eq!(mailed.link_with("/register?invitation="), Some(url.clone()));
    assert!(mailed.text.contains("7 days"), "{}", mailed.text);

    // The page shows the address it is for.
    let page = t
        .send(Req::get(&format!("/register?invitation={token}")))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("Guest@Partner.io"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));

    // Another address cannot use it.
    t.send(register_invited("other@example.com", &token))
        .await
        .assert_error(StatusCode::FORBIDDEN, "registration_closed");
    // Its own address can, in any case, once.
    let r = t.send(register_invited("guest@partner.io", &token)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let user = r.json()["user"].clone();
    assert_eq!(user["roles"], json!(["editor"]));
    // A mailed invitation proves the address.
    assert_eq!(user["email_verified"], true);
    t.send(register_invited("guest@partner.io", &token))
        .await
        .assert_error(StatusCode::FORBIDDEN, "registration_closed");

    // Audited, never with the link.
    let created = t
        .app
        .core
        .audit_events(Some("invitation_created"), None, 10)
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].detail["roles"], json!(["editor"]));
    let joined = t
        .app
        .core
        .audit_events(Some("user_created"), user["id"].as_str(), 10)
        .await
        .unwrap();
    assert_eq!(joined[0].detail["via"], "invitation");
    // The two events are matched by the invitation's reference, and the
    // invitation's own event does not carry the address (a deleted user's
    // events lose it; this one is not theirs).
    let reference = created[0].detail["invitation"].as_str().unwrap();
    assert_eq!(reference.len(), 12);
    assert_eq!(joined[0].detail["invitation"], reference);
    assert!(
        !serde_json::to_string(&created[0])
            .unwrap()
            .to_lowercase()
            .contains("partner.io")
    );
    let audit =
        serde_json::to_string(&t.app.core.audit_events(None, None, 1000).await.unwrap()).unwrap();
    assert!(
        !audit.contains(&token),
        "the invitation token is in the audit log"
    );
    assert!(
        !logs.text().contains(&token),
        "the invitation token is in the log"
    );

    // One not mailed: the new account's address is not verified by it.
    let r = t
        .send(bearer(
            Req::post("/v1/admin/invitations")
                .json(json!({"email": "handed@example.com", "mail": false})),
            &access,
        ))
        .await;
    assert_eq!(r.json()["mailed"], false);
    let handed = r.json()["url"].as_str().unwrap().to_owned();
    let r = t
        .send(register_invited(
            "handed@example.com",
            token_after(&handed, "invitation="),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["user"]["email_verified"], false);
    assert!(
        smtp.messages_to("handed@example.com")
            .iter()
            .all(|m| m.subject != INVITE_SUBJECT)
    );

    // An invitation for an address with an account is a conflict.
    let r = t
        .send(bearer(
            Req::post("/v1/admin/invitations").json(json!({"email": "handed@example.com"})),
            &access,
        ))
        .await;
    r.assert_error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn an_invitation_expires() {
    let smtp = SmtpServer::start();
    let t = app(
        &smtp,
        &[("registration", "invite"), ("invitation_ttl", "2h")],
    )
    .await;
    let access = admin_token(&t, "root@example.com").await;
    let r = t
        .send(bearer(
            Req::post("/v1/admin/invitations")
                .json(json!({"email": "slow@example.com", "mail": false})),
            &access,
        ))
        .await;
    let url = r.json()["url"].as_str().unwrap().to_owned();
    t.advance(Duration::from_secs(2 * 3600 + 1));
    t.send(register_invited(
        "slow@example.com",
        token_after(&url, "invitation="),
    ))
    .await
    .assert_error(StatusCode::FORBIDDEN, "registration_closed");
    let page = t
        .send(Req::get(&format!(
            "/register?{}",
            url.split_once('?').unwrap().1
        )))
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.text().contains("invalid, used or expired"));
}

#[tokio::test]
async fn opening_a_verification_link_does_not_spend_it() {
    let smtp = SmtpServer::start();
    let t = app(&smtp, &[]).await;
    t.send(register("scanned@example.com")).await;
    let token = verification_token(&smtp, "scanned@example.com").await;
    // A mail scanner fetching the link gets the page with a button, and the
    // token stays unused (and out of any Referer).
    for _ in 0..2 {
        let page = t
            .send(Req::get(&format!("/verify-email?token={token}")))
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text().contains("verify-form"));
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    }
    assert_eq!(
        me(&t, "scanned@example.com").await["user"]["email_verified"],
        false
    );
    assert_eq!(t.send(confirm(&token)).await.status, StatusCode::NO_CONTENT);
}
