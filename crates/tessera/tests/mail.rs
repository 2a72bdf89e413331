//! Outgoing mail and password reset, against a real SMTP server
//! (`aiosmtpd`, see `common/smtp.rs`): the link in the delivered message
//! works once and only once, expires, is bound to its user, survives a
//! restart, revokes everything the user was signed in with, points at the
//! public URL whatever `Host` the request named, and never appears in the
//! log or the audit log; asking answers the same for known and unknown
//! emails, within per-email limits.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::logs::Logs;
use common::smtp::SmtpServer;
use common::{ORIGIN, PASSWORD, Req, TestApp, password_grant};
use serde_json::json;

const NEW_PASSWORD: &str = "a brand new passphrase";

/// These tests count the messages an address received, so registrations
/// here send no verification mail (tests/signup.rs covers those).
async fn app_mailing_to(smtp: &SmtpServer) -> TestApp {
    TestApp::with(&[("smtp_url", &smtp.url()), ("email_verification", "off")]).await
}

fn ask(email: &str) -> Req {
    Req::post("/v1/password-reset").json(json!({ "email": email }))
}

fn confirm(token: &str, password: &str) -> Req {
    Req::post("/v1/password-reset/confirm").json(json!({ "token": token, "password": password }))
}

/// The token of a reset link.
fn token_of(link: &str) -> String {
    let (_, token) = link.split_once("/reset?token=").expect("a reset link");
    token.to_owned()
}

/// Asks for a reset of `email` and returns the link of the `n`th message
/// `email` received.
async fn reset_link(t: &TestApp, smtp: &SmtpServer, email: &str, n: usize) -> String {
    let r = t.send(ask(email)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let got = smtp.wait_for(email, n).await;
    let m = &got[n - 1];
    assert_eq!(m.subject, "Reset your Tessera password");
    m.link_with("/reset?token=")
        .expect("the message has a link")
}

async fn login_status(t: &TestApp, email: &str, password: &str) -> StatusCode {
    t.send(Req::post("/v1/sessions").json(json!({ "email": email, "password": password })))
        .await
        .status
}

#[tokio::test]
async fn a_reset_link_works_once_and_revokes_every_session_and_token() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    let email = "alice@example.com";
    let browser = t.signed_in(email).await;
    let other_browser = t.login(email).await;
    let tokens = t.send(password_grant(email)).await.json();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let link = reset_link(&t, &smtp, email, 1).await;
    let message = &smtp.messages_to(email)[0];
    assert_eq!(message.from, "Tessera <noreply@localhost>");
    assert!(message.text.contains("30 minutes"), "{}", message.text);
    assert!(
        message.html.contains(&link.replace('&', "&amp;")),
        "{}",
        message.html
    );
    assert!(
        link.starts_with(&format!("{ORIGIN}/reset?token=")),
        "{link}"
    );
    let token = token_of(&link);
    assert!(token.len() >= 43, "at least 256 bits: {token}");

    let r = t.send(confirm(&token, NEW_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    // Once only.
    let r = t.send(confirm(&token, "yet another passphrase")).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_token");

    // Every session, refresh family and access token of the user is gone.
    for b in [&browser, &other_browser] {
        let r = t.send(Req::get("/v1/session").session(b)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    }
    let r = t
        .send(Req::get("/v1/me").header("authorization", &format!("Bearer {access}")))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let r = t
        .send(
            Req::post("/v1/token")
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]),
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");

    // The new password works, the old one does not.
    assert_eq!(
        login_status(&t, email, NEW_PASSWORD).await,
        StatusCode::CREATED
    );
    assert_eq!(
        login_status(&t, email, PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );

    // The user is told.
    let got = smtp.wait_for(email, 2).await;
    assert_eq!(got[1].subject, "Your Tessera password was changed");
    assert!(
        got[1].text.contains(&format!("{ORIGIN}/forgot")),
        "{}",
        got[1].text
    );
    assert!(got[1].link_with("token=").is_none());

    // Audited, without the token.
    let events = t
        .app
        .core
        .audit_events(Some("password_reset"), Some(&browser.user_id), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].detail["via"], "reset_link");
    assert_eq!(events[0].detail["sessions"], 2);
}

#[tokio::test]
async fn of_two_racing_confirms_exactly_one_wins() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    t.register("race@example.com").await;
    let token = token_of(&reset_link(&t, &smtp, "race@example.com", 1).await);
    let (a, b) = tokio::join!(
        t.send(confirm(&token, "first racer passphrase")),
        t.send(confirm(&token, "second racer passphrase")),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::NO_CONTENT, StatusCode::BAD_REQUEST]);
    let winner = if a.status == StatusCode::NO_CONTENT {
        "first racer passphrase"
    } else {
        "second racer passphrase"
    };
    assert_eq!(
        login_status(&t, "race@example.com", winner).await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_reset_link_expires() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    t.register("late@example.com").await;
    let token = token_of(&reset_link(&t, &smtp, "late@example.com", 1).await);
    t.advance(Duration::from_secs(30 * 60 + 1));
    let r = t.send(confirm(&token, NEW_PASSWORD)).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_token");
    assert_eq!(
        login_status(&t, "late@example.com", PASSWORD).await,
        StatusCode::CREATED
    );

    // A shorter lifetime is a setting.
    let t = TestApp::with(&[
        ("smtp_url", &smtp.url()),
        ("password_reset_ttl", "5m"),
        ("email_verification", "off"),
    ])
    .await;
    t.register("later@example.com").await;
    let link = reset_link(&t, &smtp, "later@example.com", 1).await;
    assert!(
        smtp.messages_to("later@example.com")[0]
            .text
            .contains("5 minutes")
    );
    t.advance(Duration::from_secs(5 * 60 + 1));
    let r = t.send(confirm(&token_of(&link), NEW_PASSWORD)).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_token");
}

#[tokio::test]
async fn a_reset_link_survives_a_restart_and_is_bound_to_its_user() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    let alice = t.register("alice@example.com").await;
    t.register("bob@example.com").await;
    let alice_link = reset_link(&t, &smtp, "alice@example.com", 1).await;
    let url = smtp.url();
    let t = t
        .restart(&[("smtp_url", &url), ("email_verification", "off")])
        .await;
    let r = t.send(confirm(&token_of(&alice_link), NEW_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    // Alice's link changed Alice's password, and nobody else's.
    assert_eq!(
        login_status(&t, "alice@example.com", NEW_PASSWORD).await,
        StatusCode::CREATED
    );
    assert_eq!(
        login_status(&t, "bob@example.com", PASSWORD).await,
        StatusCode::CREATED
    );
    assert_eq!(
        login_status(&t, "bob@example.com", NEW_PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    let events = t
        .app
        .core
        .audit_events(Some("password_reset"), None, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].user_id.as_deref(), alice["id"].as_str());
    // And a used link stays used after another restart.
    let t = t
        .restart(&[("smtp_url", &url), ("email_verification", "off")])
        .await;
    let r = t
        .send(confirm(&token_of(&alice_link), "yet another passphrase"))
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_token");
}

#[tokio::test]
async fn a_reset_ends_the_users_other_links_and_bad_tokens_are_refused_alike() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    t.register("carol@example.com").await;
    let first = token_of(&reset_link(&t, &smtp, "carol@example.com", 1).await);
    let second = token_of(&reset_link(&t, &smtp, "carol@example.com", 2).await);
    assert_ne!(first, second);
    // A password the policy refuses: 422 naming the rule, the link kept.
    let r = t.send(confirm(&second, "short")).await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(r.text().contains("at least 8 characters"), "{}", r.text());
    let r = t.send(confirm(&second, NEW_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    // The earlier link died with the reset.
    let r = t.send(confirm(&first, "yet another passphrase")).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_token");
    // Unknown, malformed: the same answer.
    for bad in ["A".repeat(43), "not a token".to_owned(), String::new()] {
        let r = t.send(confirm(&bad, NEW_PASSWORD)).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_token");
    }
}

#[tokio::test]
async fn the_link_is_built_from_the_public_url_whatever_host_the_request_names() {
    let smtp = SmtpServer::start();
    let public = "https://auth.example.com";
    let t = TestApp::with(&[
        ("smtp_url", &smtp.url()),
        ("public_url", public),
        ("email_verification", "off"),
    ])
    .await;
    t.register("dave@example.com").await;
    let r = t
        .send(
            ask("dave@example.com")
                .header("host", "evil.example")
                .header("x-forwarded-host", "evil.example")
                .header("forwarded", "host=evil.example;proto=http"),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let got = smtp.wait_for("dave@example.com", 1).await;
    let link = got[0].link_with("/reset?token=").unwrap();
    assert!(
        link.starts_with(&format!("{public}/reset?token=")),
        "{link}"
    );
    assert!(!got[0].text.contains("evil") && !got[0].html.contains("evil"));
    assert_eq!(got[0].from, "Tessera <noreply@auth.example.com>");
    assert_eq!(got[0].envelope_from, "noreply@auth.example.com");
}

#[tokio::test]
async fn known_and_unknown_emails_get_the_same_answer_and_only_accounts_get_mail() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    t.register("erin@example.com").await;
    let known = t.send(ask("erin@example.com")).await;
    let unknown = t.send(ask("nobody@example.com")).await;
    assert_eq!(known.status, StatusCode::ACCEPTED);
    assert_eq!(unknown.status, known.status);
    assert_eq!(unknown.body, known.body);
    assert_eq!(unknown.header("content-type"), known.header("content-type"));
    smtp.wait_for("erin@example.com", 1).await;
    // Any mail for the unknown address would have been queued before
    // Erin's second one, which arrives after it.
    let r = t.send(ask("ERIN@example.com")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    smtp.wait_for("erin@example.com", 2).await;
    assert!(smtp.messages_to("nobody@example.com").is_empty());
    assert_eq!(smtp.messages().len(), 2);
    // A malformed email is a validation error, which says nothing about
    // accounts.
    let r = t.send(ask("not an email")).await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn the_per_email_limit_holds_across_addresses_and_says_nothing_about_accounts() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    t.register("frank@example.com").await;
    for email in ["frank@example.com", "ghost@example.com"] {
        for i in 0..5 {
            let r = t
                .send(ask(email).peer_ip(&format!("192.0.2.{}", i + 1)))
                .await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{email} #{i}: {}", r.text());
        }
        let r = t.send(ask(email).peer_ip("192.0.2.77")).await;
        r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!(r.header("retry-after").is_some());
    }
    smtp.wait_for("frank@example.com", 5).await;
    // An hour later, one more.
    t.advance(Duration::from_secs(3600));
    let r = t.send(ask("frank@example.com").peer_ip("192.0.2.78")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    smtp.wait_for("frank@example.com", 6).await;
}

#[tokio::test]
async fn the_request_follows_the_logins_origin_rules() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    let r = t
        .send(ask("x@example.com").header("origin", "https://attacker.example"))
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    let r = t.send(ask("x@example.com").header("origin", ORIGIN)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn the_reset_token_never_appears_in_the_log_or_the_audit_log() {
    let (logs, _guard) = Logs::capture(tracing::Level::TRACE);
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    let user = t.register("gina@example.com").await;
    let link = reset_link(&t, &smtp, "gina@example.com", 1).await;
    let token = token_of(&link);
    // Through the page too, where the token is in the query string.
    let r = t.send(Req::get(&format!("/reset?token={token}"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = t.send(confirm(&token, NEW_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = t.send(confirm(&token, NEW_PASSWORD)).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_token");
    smtp.wait_for("gina@example.com", 2).await;
    let logged = logs.text();
    assert!(logged.contains("password reset with a link"), "{logged}");
    assert!(
        !logged.contains(&token),
        "the token is in the log:\n{logged}"
    );
    let events = t.app.core.audit_events(None, None, 100).await.unwrap();
    assert!(
        events.iter().any(
            |e| e.event_type == "password_reset" && e.user_id.as_deref() == user["id"].as_str()
        )
    );
    let audit = serde_json::to_string(&events).unwrap();
    assert!(
        !audit.contains(&token),
        "the token is in the audit log: {audit}"
    );
}

#[tokio::test]
async fn without_smtp_the_log_mailer_writes_the_message_with_its_link() {
    let (logs, _guard) = Logs::capture(tracing::Level::TRACE);
    let t = TestApp::new().await;
    t.register("hank@example.com").await;
    let r = t.send(ask("hank@example.com")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let started = std::time::Instant::now();
    // The message's first line is the event's (level, target, fields); the
    // body, link included, follows.
    let logged = loop {
        let text = logs.text();
        if let Some(at) = text.find("tessera::mail")
            && text[at..].contains("/reset?token=")
        {
            break text[text[..at].rfind('\n').map_or(0, |i| i + 1)..].to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{text}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let first = logged.lines().next().unwrap();
    assert!(
        first.contains(" INFO ") && first.contains("tessera::mail"),
        "{first}"
    );
    assert!(logged.contains("to=hank@example.com"), "{logged}");
    let link = logged
        .split_whitespace()
        .find(|w| w.contains("/reset?token="))
        .unwrap()
        .to_owned();
    assert!(
        link.starts_with(&format!("{ORIGIN}/reset?token=")),
        "{link}"
    );
    let r = t.send(confirm(&token_of(&link), NEW_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

#[tokio::test]
async fn mail_that_cannot_be_delivered_is_retried_then_counted_and_audited() {
    // A loopback port nothing listens on: every attempt is refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = TestApp::with(&[
        ("smtp_url", &format!("smtp://127.0.0.1:{port}")),
        ("email_verification", "off"),
    ])
    .await;
    let user = t.register("ivan@example.com").await;
    let r = t.send(ask("ivan@example.com")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // 5 attempts, 1 + 2 + 4 + 8 s apart.
    let started = std::time::Instant::now();
    let failed = loop {
        let events = t
            .app
            .core
            .audit_events(Some("mail_failed"), None, 10)
            .await
            .unwrap();
        if let Some(e) = events.into_iter().next() {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no mail_failed event"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(failed.user_id.as_deref(), user["id"].as_str());
    assert_eq!(failed.detail["kind"], "password_reset");
    assert_eq!(failed.detail["attempts"], 5);
    assert!(
        !failed.detail.to_string().contains("token"),
        "{}",
        failed.detail
    );
    let r = t.send(Req::get("/metrics")).await;
    let metrics = r.text();
    assert!(
        metrics.contains("tessera_mail_failed_total{kind=\"password_reset\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sent_mail_is_counted() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    t.register("judy@example.com").await;
    reset_link(&t, &smtp, "judy@example.com", 1).await;
    let started = std::time::Instant::now();
    loop {
        let metrics = t.send(Req::get("/metrics")).await.text();
        if metrics.contains("tessera_mail_sent_total{kind=\"password_reset\"} 1") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{metrics}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_cli_prints_a_one_time_reset_link() {
    let t = TestApp::with(&[("public_url", "https://auth.example.com")]).await;
    t.register("kim@example.com").await;
    let mut cmd = common::cli::tessera(&t.db_url);
    cmd.args(["user", "reset-link", "KIM@example.com"])
        .env("TESSERA_PUBLIC_URL", "https://auth.example.com");
    let (code, out, err) = common::cli::run(&mut cmd, "");
    assert_eq!(code, 0, "{out}{err}");
    let link = out.lines().next().unwrap().trim().to_owned();
    assert!(
        link.starts_with("https://auth.example.com/reset?token="),
        "{out}"
    );
    assert!(
        out.contains("kim@example.com") && out.contains("30m"),
        "{out}"
    );
    let token = token_of(&link);
    let r = t.send(confirm(&token, NEW_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = t.send(confirm(&token, NEW_PASSWORD)).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_token");
    assert_eq!(
        login_status(&t, "kim@example.com", NEW_PASSWORD).await,
        StatusCode::CREATED
    );
}

/// The `value` of the form field `name` in `html`.
fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at..];
    let start = rest.find("value=\"").expect("a value") + "value=\"".len();
    rest[start..start + rest[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn the_pages_ask_for_a_link_and_set_the_new_password_without_javascript() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    let browser = t.signed_in("lena@example.com").await;

    let login = t.send(Req::get("/login")).await;
    assert!(
        login.text().contains("href=\"/forgot\""),
        "{}",
        login.text()
    );
    let page = t.send(Req::get("/forgot")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("action=\"/forgot\""));
    assert!(!page.text().contains("<script"));

    // The same page whether or not the email has an account.
    let forgot = |email: &str| {
        Req::post("/forgot")
            .header("origin", ORIGIN)
            .form(&[("email", email)])
    };
    let known = t.send(forgot("lena@example.com")).await;
    let unknown = t.send(forgot("nobody@example.com")).await;
    assert_eq!(known.status, StatusCode::OK);
    assert_eq!(unknown.status, known.status);
    assert_eq!(unknown.body, known.body);
    assert!(
        known
            .text()
            .contains("a link to reset its password is on its way")
    );
    // From another site: refused, as the login is.
    let r = t
        .send(
            Req::post("/forgot")
                .header("origin", "https://attacker.example")
                .form(&[("email", "lena@example.com")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let got = smtp.wait_for("lena@example.com", 1).await;
    let link = got[0].link_with("/reset?token=").unwrap();
    let token = token_of(&link);
    let path = link.strip_prefix(ORIGIN).unwrap();
    let page = t.send(Req::get(path)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(field(&page.text(), "token"), token);
    assert!(!page.text().contains("<script"));

    let set = |token: &str, password: &str, again: &str| {
        Req::post("/reset")
            // What a browser sends from a `no-referrer` page.
            .header("origin", "null")
            .header("sec-fetch-site", "same-origin")
            .form(&[
                ("token", token),
                ("password", password),
                ("confirm_password", again),
            ])
    };
    // Passwords that differ: the form again, the link kept.
    let r = t.send(set(&token, NEW_PASSWORD, "something else")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field(&r.text(), "token"), token);
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    // A cross-site post is refused.
    let r = t
        .send(
            Req::post("/reset")
                .header("origin", "null")
                .header("sec-fetch-site", "cross-site")
                .form(&[
                    ("token", token.as_str()),
                    ("password", NEW_PASSWORD),
                    ("confirm_password", NEW_PASSWORD),
                ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = t.send(set(&token, NEW_PASSWORD, NEW_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.header("location"), Some("/login?done=password_reset"));
    let done = t.send(Req::get("/login?done=password_reset")).await;
    assert!(
        done.text().contains("Your new password is set"),
        "{}",
        done.text()
    );
    // The browser that was signed in is signed out; the new password works.
    let r = t.send(Req::get("/v1/session").session(&browser)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login_status(&t, "lena@example.com", NEW_PASSWORD).await,
        StatusCode::CREATED
    );

    // The link again: refused, saying how to get a new one.
    let r = t
        .send(set(
            &token,
            "yet another passphrase",
            "yet another passphrase",
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("href=\"/forgot\""), "{}", r.text());
    let r = t.send(Req::get("/reset")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// An administrator's forced reset (`{"send_reset": true}`): the leaked
/// password stops working at once, everything the user was signed in with
/// ends, and the mailed link sets a new password.
#[tokio::test]
async fn an_administrator_forces_a_reset_and_the_user_sets_a_new_password_by_mail() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    let admin = t.signed_in("root@example.com").await;
    t.app
        .core
        .set_roles(&admin.user_id, &["admin".to_owned()])
        .await
        .unwrap();
    let admin = t.login("root@example.com").await;
    let email = "leaky@example.com";
    let victim = t.signed_in(email).await;
    let path = format!("/v1/admin/users/{}/password", victim.user_id);

    let r = t
        .send(
            Req::post(&path)
                .session(&admin)
                .json(json!({"send_reset": true, "password": NEW_PASSWORD})),
        )
        .await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let r = t
        .send(Req::post(&path).session(&admin).json(json!({})))
        .await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(login_status(&t, email, PASSWORD).await, StatusCode::CREATED);

    let r = t
        .send(
            Req::post(&path)
                .session(&admin)
                .json(json!({"send_reset": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    // The old password is dead at once, and so is every session.
    assert_eq!(
        login_status(&t, email, PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    let r = t.send(Req::get("/v1/session").session(&victim)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());

    let got = smtp.wait_for(email, 1).await;
    assert_eq!(got[0].subject, "Reset your Tessera password");
    let link = got[0].link_with("/reset?token=").expect("a reset link");
    let r = t.send(confirm(&token_of(&link), NEW_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(
        login_status(&t, email, NEW_PASSWORD).await,
        StatusCode::CREATED
    );
    let events = t
        .app
        .core
        .audit_events(Some("password_reset"), Some(&victim.user_id), 10)
        .await
        .unwrap();
    assert_eq!(
        events.len(),
        2,
        "the forced reset and the reset by link: {events:?}"
    );
    // Newest first, but both may share a millisecond: find each by its detail.
    assert!(
        events
            .iter()
            .any(|e| e.detail["actor"] == admin.user_id.as_str()),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.detail["via"] == "reset_link"),
        "{events:?}"
    );
}

/// A user an administrator creates without a password is mailed a link to
/// set one; no password works before that.
#[tokio::test]
async fn a_user_created_without_a_password_sets_one_by_mail() {
    let smtp = SmtpServer::start();
    let t = app_mailing_to(&smtp).await;
    let boss = t.signed_in("boss@example.com").await;
    t.app
        .core
        .set_roles(&boss.user_id, &["admin".to_owned()])
        .await
        .unwrap();
    let boss = t.login("boss@example.com").await;
    let email = "newcomer@example.com";
    let r = t
        .send(
            Req::post("/v1/admin/users")
                .session(&boss)
                .json(json!({"email": email})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let got = smtp.wait_for(email, 1).await;
    // Its own words, not a reset's: nobody asked for anything.
    assert_eq!(got[0].subject, "An account was created for you at Tessera");
    assert!(
        got[0].text.contains("choose your password"),
        "{}",
        got[0].text
    );
    let link = got[0]
        .link_with("/reset?token=")
        .expect("a link to set a password");
    let r = t.send(confirm(&token_of(&link), NEW_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(
        login_status(&t, email, NEW_PASSWORD).await,
        StatusCode::CREATED
    );
}

/// A recipient the SMTP server refuses for good (`550` at `RCPT TO`): the
/// message is given up after its one attempt, with no backoff retries (as a
/// refused connection gets, above), counted and audited with the attempts
/// made; mail to other recipients still goes.
#[tokio::test]
async fn mail_refused_for_good_is_given_up_at_once_then_counted_and_audited() {
    let smtp = SmtpServer::start_rejecting("gone.example");
    let t = app_mailing_to(&smtp).await;
    let user = t.register("olga@gone.example").await;
    t.register("pia@example.com").await;
    let r = t.send(ask("olga@gone.example")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let started = std::time::Instant::now();
    let failed = loop {
        let events = t
            .app
            .core
            .audit_events(Some("mail_failed"), None, 10)
            .await
            .unwrap();
        if let Some(e) = events.into_iter().next() {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no mail_failed event; refused so far: {:?}",
            smtp.rejected()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // The event is written once the outbox has given the message up: the
    // server saw the one attempt, and no other is coming.
    assert_eq!(smtp.rejected(), ["olga@gone.example"]);
    assert!(smtp.messages_to("olga@gone.example").is_empty());
    assert_eq!(failed.user_id.as_deref(), user["id"].as_str());
    assert_eq!(failed.detail["kind"], "password_reset");
    assert_eq!(failed.detail["attempts"], 1);
    let error = failed.detail["error"].as_str().unwrap();
    assert!(
        error.contains("permanent") && error.contains("550"),
        "{error}"
    );
    assert!(!failed.detail.to_string().contains("token"), "{error}");
    let metrics = t.send(Req::get("/metrics")).await.text();
    assert!(
        metrics.contains("tessera_mail_failed_total{kind=\"password_reset\"} 1"),
        "{metrics}"
    );
    // Another recipient on the same server still gets their mail.
    let r = t.send(ask("pia@example.com")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    smtp.wait_for_subject("pia@example.com", "Reset your Tessera password")
        .await;
    assert_eq!(smtp.rejected().len(), 1);
}

#[tokio::test]
async fn the_messages_say_the_configured_product_name() {
    let smtp = SmtpServer::start();
    let t = TestApp::with(&[
        ("smtp_url", &smtp.url()),
        ("email_verification", "off"),
        ("product_name", "Acme <Accounts>"),
    ])
    .await;
    t.register("hal@example.com").await;
    let r = t.send(ask("hal@example.com")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let got = smtp.wait_for("hal@example.com", 1).await;
    let m = &got[0];
    assert_eq!(m.subject, "Reset your Acme <Accounts> password");
    assert!(m.text.contains("Acme <Accounts>"), "{}", m.text);
    assert!(m.html.contains("Acme &#60;Accounts&#62;"), "{}", m.html);
    assert!(!m.text.contains("Tessera") && !m.html.contains("Tessera"));
}
