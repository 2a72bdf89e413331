//! Redis going away under a running app: every session check fails closed
//! (503, never a pass, never a 500), `/readyz` names Redis, a revocation made
//! while the subscription is down is enforced before any request passes,
//! and the app heals by itself when Redis is back (no restart). A Redis that
//! stops answering fails checks within `redis_timeout`, never hangs them.
//!
//! Each test has a private Redis (`common::redis::RedisServer`), which it
//! stops, kills or disconnects; the durable store is the suite's default
//! for the in-process apps, PostgreSQL for the `serve` node under load.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::redis::{RedisServer, cli};
use common::{Req, TestApp};
use tokio_util::sync::CancellationToken;

async fn app_on(redis: &RedisServer) -> (TestApp, CancellationToken) {
    let url = redis.url();
    let t = TestApp::with(&[("redis_url", &url), ("redis_key_prefix", "faults:")]).await;
    let cancel = CancellationToken::new();
    let _follower = t.app.spawn_background(cancel.clone());
    (t, cancel)
}

/// Polls `GET path` with `req` until it answers `want`; panics after 10 s.
async fn until(t: &TestApp, what: &str, want: StatusCode, req: impl Fn() -> Req) {
    let start = Instant::now();
    loop {
        let r = t.send(req()).await;
        if r.status == want {
            return;
        }
        assert!(
            r.status != StatusCode::INTERNAL_SERVER_ERROR,
            "{what}: a 500: {}",
            r.text()
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: still {} after 10 s: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_and_the_app_heals_without_a_restart() {
    let mut redis = RedisServer::start().await;
    let (t, cancel) = app_on(&redis).await;
    let login = t.signed_in("ada@example.com").await;
    assert_eq!(
        t.send(Req::get("/v1/me").session(&login)).await.status,
        StatusCode::OK
    );

    redis.kill();
    // The cached session is not trusted once the subscription is gone.
    until(
        &t,
        "session with Redis down",
        StatusCode::SERVICE_UNAVAILABLE,
        || Req::get("/v1/me").session(&login),
    )
    .await;
    let ready = t.send(Req::get("/readyz")).await;
    ready.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(ready.text().contains("Redis"), "{}", ready.text());
    for _ in 0..20 {
        let r = t.send(Req::get("/v1/me").session(&login)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    }
    let r = t
        .send(
            Req::post("/v1/sessions").json(
                serde_json::json!({"email": "ada@example.com", "password": common::PASSWORD}),
            ),
        )
        .await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");

    // Back (empty: this Redis keeps nothing on disk): the old session is
    // gone, not passed; a new login works; no restart.
    redis.restart().await;
    until(&t, "readiness after Redis returns", StatusCode::OK, || {
        Req::get("/readyz")
    })
    .await;
    until(&t, "the lost session", StatusCode::UNAUTHORIZED, || {
        Req::get("/v1/me").session(&login)
    })
    .await;
    let again = t.login("ada@example.com").await;
    assert_eq!(
        t.send(Req::get("/v1/me").session(&again)).await.status,
        StatusCode::OK
    );

    // What holds instead of one commit (SessionStore::insert_session): every
    // stored session has its login event; the login refused while Redis was
    // down left an event for a session that was never stored.
    let events = t
        .app
        .core
        .audit_events(Some("login_succeeded"), Some(&login.user_id), 10)
        .await
        .unwrap();
    let audited: Vec<String> = events
        .iter()
        .filter_map(|e| e.detail["session"].as_str().map(str::to_owned))
        .collect();
    let listed = t
        .send(Req::get("/v1/sessions").session(&again))
        .await
        .json();
    let stored: Vec<String> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, std::slice::from_ref(&again.session_id));
    assert!(audited.contains(&again.session_id), "{audited:?}");
    assert_eq!(
        audited.len(),
        3,
        "ada's first login, the refused one, and this one: {audited:?}"
    );
    cancel.cancel();
}

/// `CLIENT KILL TYPE pubsub`: the app notices, distrusts what it cached,
/// and a logout made by another process meanwhile (written to the logs
/// behind this app's back) is enforced before any request passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_is_noticed_and_caught_up_from_the_log() {
    let redis = RedisServer::start().await;
    let (t, cancel) = app_on(&redis).await;
    let login = t.signed_in("bob@example.com").await;
    let tokens = t.tokens_for("eve@example.com").await;
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    let me = t
        .send(Req::get("/v1/me").header("authorization", &bearer))
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    let eve = me.json()["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        t.send(Req::get("/v1/me").session(&login)).await.status,
        StatusCode::OK
    );
    let killed = cli(redis.port(), &["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed, "1", "one subscription killed");
    // A command without the servers' Redis settings would end sessions in
    // the database, where there are none: it stops and says so.
    let (code, out, err) = common::cli::run(
        common::cli::tessera(&t.db_url).args(["user", "revoke", &login.user_id]),
        "",
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("keep sessions in redis faults:") && err.contains("TESSERA_REDIS_URL"),
        "{err}"
    );
    // Meanwhile another process (the CLI, on the same stores) logs both
    // users out everywhere: its announcements may reach nobody.
    for user in [&login.user_id, &eve] {
        let (code, out, err) = common::cli::run(
            common::cli::tessera(&t.db_url)
                .env("TESSERA_REDIS_URL", redis.url())
                .env("TESSERA_REDIS_KEY_PREFIX", "faults:")
                .args(["user", "revoke", user]),
            "",
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    // The session: the dropped subscription emptied the cache, so the very
    // first request after the logout reads Redis, and never passes.
    for _ in 0..50 {
        let s = t.send(Req::get("/v1/me").session(&login)).await.status;
        assert_ne!(s, StatusCode::OK, "the revoked session passed");
    }
    until(&t, "the revoked session", StatusCode::UNAUTHORIZED, || {
        Req::get("/v1/me").session(&login)
    })
    .await;
    // The token: refused once the node has read the revocation log (by the
    // renewed subscription's wake-up, or its poll), and from then on.
    until(&t, "the revoked token", StatusCode::UNAUTHORIZED, || {
        Req::get("/v1/me").header("authorization", &bearer)
    })
    .await;
    for _ in 0..50 {
        let b = t
            .send(Req::get("/v1/me").header("authorization", &bearer))
            .await
            .status;
        assert_eq!(b, StatusCode::UNAUTHORIZED, "the revoked token");
    }
    // The metrics say what happened (process-wide counters: at least).
    let metrics = t.send(Req::get("/metrics")).await.text();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert!(value("tessera_redis_reconnects_total") >= 1.0);
    assert!(value("tessera_redis_fanout_lag_seconds_count") >= 1.0);
    assert!(value("tessera_redis_fanout_lag_seconds_sum") >= 0.0);
    value("tessera_redis_errors_total");
    cancel.cancel();
}

/// The resident memory of a process, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Under load, against a real `tessera serve` on PostgreSQL + Redis: Redis
/// stopped for a few seconds gives 503s (never a 200 for the revoked
/// session, never a 500), the node's memory stays bounded while requests
/// pile up against the outage, and Redis restarted heals the node without
/// a restart of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_under_load_fails_closed_with_bounded_memory_and_heals() {
    use common::node::{Node, Store};
    let mut redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = Store::Postgres.fresh_url(dir.path()).await;
    common::keep_sessions_in_redis(&db_url, &redis.url());
    let node = Node::start(&db_url).await;
    node.register("lou@example.com").await;
    let live = node.login("lou@example.com").await;
    let revoked = node.login("lou@example.com").await;
    let r = node
        .send(
            node.client_delete("/v1/session")
                .header("cookie", &revoked.cookie)
                .header("x-csrf-token", &revoked.csrf),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let pid = node.pid().expect("the node runs");
    let before = rss_kib(pid);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        (bool, u16),
        u64,
    >::new()));
    let mut load = Vec::new();
    for worker in 0..8 {
        let (client, url) = (node.client.clone(), node.url("/v1/me"));
        let cookie = if worker % 2 == 0 {
            live.cookie.clone()
        } else {
            revoked.cookie.clone()
        };
        let (stop, counts) = (stop.clone(), counts.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = match client.get(&url).header("cookie", &cookie).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                *counts
                    .lock()
                    .unwrap()
                    .entry((worker % 2 == 0, status))
                    .or_default() += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop().await;
    let mut peak = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(pid));
    }
    redis.restart().await;
    // Healed: the node answers for sessions again (this Redis kept nothing,
    // so the live session is gone too: signed out, never in).
    let start = Instant::now();
    loop {
        let r = node.get_with_cookie("/v1/me", &live).await;
        if r.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not healed: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let again = node.login("lou@example.com").await;
    assert_eq!(
        node.get_with_cookie("/v1/me", &again).await.status,
        StatusCode::OK
    );
    let counts = counts.lock().unwrap().clone();
    eprintln!(
        "answers (live?, status): {counts:?}; RSS {before} KiB before, {peak} KiB peak while Redis was down"
    );
    assert!(
        !counts.contains_key(&(false, 200)),
        "the revoked session passed: {counts:?}"
    );
    assert!(
        counts.keys().all(|(_, s)| *s != 500 && *s != 0),
        "{counts:?}"
    );
    assert!(
        counts.get(&(true, 503)).copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    assert!(
        counts.get(&(true, 200)).copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    assert!(
        peak < before + 64 * 1024,
        "RSS grew from {before} KiB to {peak} KiB while Redis was down"
    );
}

/// A Redis that stops answering without closing its connections (a stopped
/// process, a stalled host): each check that needs it fails closed within
/// `redis_timeout` instead of hanging, and passes again once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_fails_closed_within_the_timeout() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let redis = RedisServer::start().await;
    let url = redis.url();
    // No session cache: every check is a Redis round trip.
    let t = TestApp::with(&[
        ("redis_url", &url),
        ("redis_key_prefix", "silent:"),
        ("redis_timeout", "200ms"),
        ("session_cache_entries", "0"),
    ])
    .await;
    let login = t.signed_in("grace@example.com").await;
    assert_eq!(
        t.send(Req::get("/v1/me").session(&login)).await.status,
        StatusCode::OK
    );

    let pid = Pid::from_raw(i32::try_from(redis.pid()).expect("a PID fits i32"));
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP Redis");
    for _ in 0..3 {
        let start = Instant::now();
        let r = t.send(Req::get("/v1/me").session(&login)).await;
        let took = start.elapsed();
        r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        // 200 ms and a retry on a fresh connection at most, with room for a
        // busy machine; a hang would be the 5 s statement timeout or more.
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    kill(pid, Signal::SIGCONT).expect("SIGCONT Redis");
    until(&t, "the session once Redis answers", StatusCode::OK, || {
        Req::get("/v1/me").session(&login)
    })
    .await;
}
