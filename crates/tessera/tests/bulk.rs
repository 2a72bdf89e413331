//! Logging everyone out from the command line (`tessera sessions
//! revoke-all`) and one user (`tessera user revoke ID`), while a server runs
//! on the same database: its sessions, access tokens and refresh tokens stop
//! working, each user's revocation is audited, and the walk reports
//! progress.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Login, PASSWORD, Req, TestApp};
use tokio_util::sync::CancellationToken;

fn tessera(db_url: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    common::cli::run(common::cli::tessera(db_url).args(args), stdin)
}

/// A user signed in twice: a browser session and an API token pair.
struct Signed {
    login: Login,
    access: String,
    refresh: String,
}

async fn sign_in(t: &TestApp, email: &str) -> Signed {
    let login = t.signed_in(email).await;
    let pair = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", PASSWORD),
        ]))
        .await;
    assert_eq!(pair.status, StatusCode::OK, "{}", pair.text());
    let pair = pair.json();
    Signed {
        login,
        access: pair["access_token"].as_str().unwrap().to_owned(),
        refresh: pair["refresh_token"].as_str().unwrap().to_owned(),
    }
}

async fn me_with_cookie(t: &TestApp, s: &Signed) -> StatusCode {
    t.send(Req::get("/v1/me").session(&s.login)).await.status
}

async fn me_with_token(t: &TestApp, s: &Signed) -> StatusCode {
    t.send(Req::get("/v1/me").header("authorization", &format!("Bearer {}", s.access)))
        .await
        .status
}

/// Polls until both credentials answer `want` (the server follows other
/// processes' changes every 250 ms).
async fn wait_until(t: &TestApp, s: &Signed, want: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (cookie, token) = (me_with_cookie(t, s).await, me_with_token(t, s).await);
        if cookie == want && token == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cookie answers {cookie}, token {token}; wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn revoke_all_logs_everyone_out_of_a_running_server_with_progress() {
    let t = TestApp::new().await;
    let cancel = CancellationToken::new();
    let follower = t.app.spawn_background(cancel.clone());
    let mut everyone = Vec::new();
    for i in 0..4 {
        everyone.push(sign_in(&t, &format!("user{i}@example.com")).await);
    }
    for s in &everyone {
        assert_eq!(me_with_cookie(&t, s).await, StatusCode::OK);
        assert_eq!(me_with_token(&t, s).await, StatusCode::OK);
    }

    // Without a terminal it refuses to run without --yes, and ends nothing.
    let (code, out, err) = tessera(&t.db_url, &["sessions", "revoke-all"], "yes\n");
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("pass --yes"), "{err}");
    assert!(err.contains("all 4 users"), "{err}");
    for s in &everyone {
        assert_eq!(me_with_cookie(&t, s).await, StatusCode::OK);
    }

    let (code, out, err) = tessera(&t.db_url, &["sessions", "revoke-all", "--yes"], "");
    assert_eq!(code, 0, "{out}{err}");
    // No terminal: plain progress lines, then a summary.
    for n in 1..=4 {
        assert!(err.contains(&format!("revoked {n}/4 users\n")), "{err}");
    }
    assert!(out.contains("logged out 4 users in"), "{out}");

    for s in &everyone {
        wait_until(&t, s, StatusCode::UNAUTHORIZED).await;
        // The refresh token is dead too.
        let r = t
            .send(Req::post("/v1/token").form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &s.refresh),
            ]))
            .await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
        // Audited like the admin revoke.
        let events = t
            .app
            .core
            .audit_events(Some("logout_all"), Some(&s.login.user_id), 10)
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
    }

    // Signing in again works: it is a logout, not a lockout. (The command's
    // cut-off is on this machine's clock, and this app's manual clock
    // stands at the test's start: move it past the command first, as time
    // would have moved on a server.)
    t.advance(Duration::from_secs(60));
    let again = t.login("user0@example.com").await;
    assert_eq!(
        t.send(Req::get("/v1/me").session(&again)).await.status,
        StatusCode::OK
    );

    cancel.cancel();
    follower.await.unwrap();
}

#[tokio::test]
async fn revoke_all_on_an_empty_database_says_so() {
    let t = TestApp::new().await;
    let (code, out, err) = tessera(&t.db_url, &["sessions", "revoke-all"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no users"), "{out}");
}

#[tokio::test]
async fn user_revoke_logs_one_user_out_everywhere() {
    let t = TestApp::new().await;
    let cancel = CancellationToken::new();
    let follower = t.app.spawn_background(cancel.clone());
    let target = sign_in(&t, "target@example.com").await;
    let bystander = sign_in(&t, "bystander@example.com").await;

    let (code, out, err) = tessera(&t.db_url, &["user", "revoke", &target.login.user_id], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&target.login.user_id) && out.contains("target@example.com"),
        "{out}"
    );
    wait_until(&t, &target, StatusCode::UNAUTHORIZED).await;
    assert_eq!(me_with_cookie(&t, &bystander).await, StatusCode::OK);
    assert_eq!(me_with_token(&t, &bystander).await, StatusCode::OK);
    let events = t
        .app
        .core
        .audit_events(Some("logout_all"), Some(&target.login.user_id), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);

    let (code, _, err) = tessera(&t.db_url, &["user", "revoke", "usr_nope"], "");
    assert_ne!(code, 0);
    assert!(err.contains("no such user"), "{err}");

    cancel.cancel();
    follower.await.unwrap();
}

/// Runs `tessera ARGS` on a pseudo-terminal (under `script`), typing
/// `typed`; (success, what the terminal showed).
fn on_terminal(db_url: &str, args: &str, typed: &str) -> (bool, String) {
    assert!(
        Command::new("script").arg("--version").output().is_ok(),
        "`script` (util-linux) is needed for the terminal tests: apt-get install bsdutils"
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("typescript");
    let store: String = common::cli::store_env(db_url)
        .iter()
        .map(|(k, v)| format!("{k}='{v}' "))
        .collect();
    let inner = format!(
        "{store}TESSERA_HASH_THREADS=1 '{}' {args}",
        env!("CARGO_BIN_EXE_tessera")
    );
    // `script` writes the terminal's output to `log`.
    let (code, _, _) = common::cli::run(
        Command::new("script")
            .args(["-q", "-e", "-c", &inner])
            .arg(&log),
        typed,
    );
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    (code == 0, text)
}

/// On a terminal, revoke-all asks first, and draws an indicatif bar
/// instead of progress lines.
#[tokio::test]
async fn on_a_terminal_revoke_all_asks_and_draws_a_progress_bar() {
    let t = TestApp::new().await;
    let cancel = CancellationToken::new();
    let follower = t.app.spawn_background(cancel.clone());
    let s = sign_in(&t, "tty@example.com").await;

    let (ok, text) = on_terminal(&t.db_url, "sessions revoke-all", "no\n");
    assert!(!ok, "{text}");
    assert!(text.contains("Type \"yes\" to continue"), "{text}");
    assert!(text.contains("cancelled: nothing was revoked"), "{text}");
    assert_eq!(me_with_cookie(&t, &s).await, StatusCode::OK);

    let (ok, text) = on_terminal(&t.db_url, "sessions revoke-all", "yes\n");
    assert!(ok, "{text}");
    assert!(text.contains("logged out 1 user in"), "{text}");
    assert!(text.contains("revoked users ["), "no bar drawn: {text}");
    assert!(
        !text.contains("revoked 1/1 users\r\n"),
        "plain lines on a terminal: {text}"
    );
    wait_until(&t, &s, StatusCode::UNAUTHORIZED).await;

    cancel.cancel();
    follower.await.unwrap();
}
