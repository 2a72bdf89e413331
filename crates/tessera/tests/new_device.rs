//! Passwords worth having (issue #20, item 6), against the real app and a
//! real SMTP server (`aiosmtpd`, see `common/smtp.rs`):
//!
//! - with `notify_new_device` on, a password sign-in from a device (its
//!   `User-Agent`) the account has not used before mails the user, naming
//!   the device, the address and the time and where to reset the password,
//!   and nothing secret; the account's first device and a known one are
//!   not mailed; sessions and the password grant alike; off (the default),
//!   nothing is mailed;
//! - registration refuses a common password, or one made from the email,
//!   with 422 `validation_failed` naming the rule.
//!
//! Absence of a notice is checked against a fence: the outbox sends in
//! order, and a notice is queued before its login answers, so once a mail
//! queued after the logins (a reset link) has arrived, any notice those
//! logins queued has arrived too.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::smtp::{Delivered, SmtpServer};
use common::{ORIGIN, PASSWORD, Req, TestApp};
use serde_json::json;

const NOTICE: &str = "New sign-in to your Tessera account";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
const PHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \
                     (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const CLI: &str = "backup-tool/2.3 (linux)";

fn session_login(email: &str, user_agent: &str) -> Req {
    Req::post("/v1/sessions")
        .header("user-agent", user_agent)
        .json(json!({ "email": email, "password": PASSWORD }))
}

fn password_grant_from(email: &str, user_agent: &str) -> Req {
    Req::post("/v1/token")
        .header("user-agent", user_agent)
        .form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", PASSWORD),
        ])
}

/// The new-device notices `email` received so far.
fn notices(smtp: &SmtpServer, email: &str) -> Vec<Delivered> {
    smtp.messages_to(email)
        .into_iter()
        .filter(|m| m.subject == NOTICE)
        .collect()
}

/// Waits until `email` has received `n` new-device notices; returns them.
async fn wait_for_notices(smtp: &SmtpServer, email: &str, n: usize) -> Vec<Delivered> {
    let started = Instant::now();
    loop {
        let got = notices(smtp, email);
        if got.len() >= n {
            return got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{email} received {} notices, not {n}, within 15 s",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A fence (see the module's doc): asks for a reset link for `email` and
/// waits for it; every mail queued before has been delivered then.
async fn fence(t: &TestApp, smtp: &SmtpServer, email: &str) {
    let resets = |smtp: &SmtpServer| {
        smtp.messages_to(email)
            .iter()
            .filter(|m| m.subject == "Reset your Tessera password")
            .count()
    };
    let before = resets(smtp);
    let r = t
        .send(Req::post("/v1/password-reset").json(json!({ "email": email })))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let started = Instant::now();
    while resets(smtp) <= before {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the fence's reset mail did not arrive within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_sign_in_from_a_new_device_is_mailed_and_the_first_and_known_ones_are_not() {
    let smtp = SmtpServer::start();
    let t = TestApp::with(&[("smtp_url", &smtp.url()), ("notify_new_device", "true")]).await;
    let email = "dana@example.com";
    t.register(email).await;

    // The account's first device is recorded without a mail; signing in
    // from it again (a session, then the password grant) is no news.
    let first = t.login_with(session_login(email, FIREFOX)).await;
    t.login_with(session_login(email, FIREFOX)).await;
    let r = t.send(password_grant_from(email, FIREFOX)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    fence(&t, &smtp, email).await;
    assert!(notices(&smtp, email).is_empty(), "no notice yet");

    // Another device: one notice, naming it, the address and the time.
    let at = t.app.core.now();
    let phone = t
        .login_with(session_login(email, PHONE).peer_ip("203.0.113.9"))
        .await;
    let got = wait_for_notices(&smtp, email, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    let notice = &got[0];
    assert_eq!(notice.envelope_to, [email]);
    let when = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    for body in [&notice.text, &notice.html] {
        assert!(body.contains("203.0.113.9"), "{body}");
        assert!(body.contains(&when), "{when} not in {body}");
        assert!(body.contains(&format!("{ORIGIN}/forgot")), "{body}");
        // Nothing secret: no password, cookie, CSRF token, session id or
        // link with a token.
        for secret in [
            PASSWORD,
            first.cookie.split_once('=').unwrap().1,
            phone.cookie.split_once('=').unwrap().1,
            &phone.csrf,
            &phone.session_id,
            &first.session_id,
            "ses_",
            "token=",
        ] {
            assert!(!body.contains(secret), "{secret:?} in {body}");
        }
    }
    assert!(notice.text.contains(PHONE), "{}", notice.text);
    assert!(!notice.text.contains(FIREFOX), "{}", notice.text);

    // The phone is known now; the first device still is.
    t.login_with(session_login(email, PHONE)).await;
    t.login_with(session_login(email, FIREFOX)).await;
    fence(&t, &smtp, email).await;
    assert_eq!(notices(&smtp, email).len(), 1);

    // The password grant is a password sign-in too: a new client is news.
    let r = t.send(password_grant_from(email, CLI)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = wait_for_notices(&smtp, email, 2).await;
    assert!(got[1].text.contains(CLI), "{}", got[1].text);
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    for secret in [&access, &refresh] {
        assert!(!got[1].text.contains(secret.as_str()) && !got[1].html.contains(secret.as_str()));
    }

    // A wrong password from yet another device records and mails nothing.
    let r = t
        .send(
            Req::post("/v1/sessions")
                .header("user-agent", "somebody-else/1.0")
                .json(json!({ "email": email, "password": "not the password at all" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    fence(&t, &smtp, email).await;
    assert_eq!(notices(&smtp, email).len(), 2);

    // Another account's devices are its own: its first one is not news,
    // whichever device dana used.
    let other = "eli@example.com";
    t.register(other).await;
    t.login_with(session_login(other, PHONE)).await;
    fence(&t, &smtp, other).await;
    assert!(notices(&smtp, other).is_empty());
}

#[tokio::test]
async fn with_the_setting_off_no_device_is_mailed() {
    let smtp = SmtpServer::start();
    let t = TestApp::with(&[("smtp_url", &smtp.url())]).await;
    let email = "fay@example.com";
    t.register(email).await;
    for ua in [FIREFOX, PHONE, CLI] {
        t.login_with(session_login(email, ua)).await;
    }
    let r = t
        .send(password_grant_from(email, "yet-another-client/1.0"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    fence(&t, &smtp, email).await;
    assert!(notices(&smtp, email).is_empty());
    // Nothing was recorded either: turned on later, the next sign-in is
    // the account's first device, not news.
    let url = smtp.url();
    let t = t
        .restart(&[("smtp_url", &url), ("notify_new_device", "true")])
        .await;
    t.login_with(session_login(email, PHONE)).await;
    t.login_with(session_login(email, PHONE)).await;
    fence(&t, &smtp, email).await;
    assert!(notices(&smtp, email).is_empty());
    t.login_with(session_login(email, FIREFOX)).await;
    assert!(
        wait_for_notices(&smtp, email, 1).await[0]
            .text
            .contains(FIREFOX)
    );
}

#[tokio::test]
async fn registration_refuses_a_guessable_password_naming_the_rule() {
    let t = TestApp::new().await;
    let register = |email: &str, password: &str| {
        Req::post("/v1/accounts").json(json!({ "email": email, "password": password }))
    };
    let r = t.send(register("gus@example.com", "password1")).await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let message = r.json()["error_description"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("password is too easy to guess: ")
            && message.contains("very common password"),
        "{message}"
    );
    let r = t.send(register("gus@example.com", "qwertyuiop")).await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        r.json()["error_description"],
        "password is too easy to guess: This is a top-100 common password. \
         Add another word or two. Uncommon words are better."
    );
    // Made from the email: refused for this account, fine for another.
    let r = t
        .send(register("gus.harlow@example.com", "gusharlow2024"))
        .await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("made from your email address"),
        "{}",
        r.text()
    );
    // Never quoted back.
    assert!(!r.text().contains("gusharlow2024"));
    let r = t.send(register("ida@example.com", "gusharlow2024")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // Nothing was created by the refusals: the same email registers with
    // a good password.
    let r = t.send(register("gus@example.com", PASSWORD)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // The length rule still comes first, with its own words.
    let r = t.send(register("hal@example.com", "short")).await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(r.text().contains("at least 8 characters"), "{}", r.text());
}
