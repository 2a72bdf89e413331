//! Sessions on the two ways of running Redis highly available, each real
//! (`common::redis`): a 3-primary Redis Cluster and a Sentinel-watched
//! primary with a replica. The session flows work on them, and a primary
//! killed under traffic either fails over (the sessions Redis acknowledged
//! survive) or fails closed (503), and never passes a session that was
//! revoked. And one server over TLS (`rediss://`) with a private CA and
//! client certificates.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::redis::{RedisCluster, RedisSentinel, TlsRedis, cli};
use common::{Login, Req, TestApp};
use tessera::store::StoreOptions;
use tokio_util::sync::CancellationToken;

async fn app_on(redis_url: &str) -> (TestApp, CancellationToken) {
    let t = TestApp::with(&[("redis_url", redis_url), ("redis_key_prefix", "ha:")]).await;
    let cancel = CancellationToken::new();
    let _follower = t.app.spawn_background(cancel.clone());
    (t, cancel)
}

async fn me(t: &TestApp, login: &Login) -> StatusCode {
    t.send(Req::get("/v1/me").session(login)).await.status
}

/// Two sessions of one user, the first ended: (ended, kept).
async fn one_ended_one_kept(t: &TestApp, email: &str) -> (Login, Login) {
    let ended = t.signed_in(email).await;
    let kept = t.login(email).await;
    let listed = t.send(Req::get("/v1/sessions").session(&kept)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(listed.json()["sessions"].as_array().map(Vec::len), Some(2));
    let r = t.send(Req::delete("/v1/session").session(&ended)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(me(t, &ended).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(t, &kept).await, StatusCode::OK);
    (ended, kept)
}

/// Sends requests with both sessions until `done` says stop (at most
/// `within`): the ended one must never pass, and no answer may be a 500.
/// Returns how many answers were 503 and when the kept one last passed.
async fn traffic_until(
    t: &TestApp,
    ended: &Login,
    kept: &Login,
    within: Duration,
    mut done: impl FnMut(StatusCode) -> bool,
) -> usize {
    let start = Instant::now();
    let mut unavailable = 0;
    loop {
        let e = me(t, ended).await;
        assert!(
            e == StatusCode::UNAUTHORIZED || e == StatusCode::SERVICE_UNAVAILABLE,
            "the ended session answered {e}"
        );
        let k = me(t, kept).await;
        assert!(
            k == StatusCode::OK || k == StatusCode::SERVICE_UNAVAILABLE,
            "the kept session answered {k}"
        );
        unavailable += usize::from(k == StatusCode::SERVICE_UNAVAILABLE);
        unavailable += usize::from(e == StatusCode::SERVICE_UNAVAILABLE);
        if done(k) {
            return unavailable;
        }
        assert!(start.elapsed() < within, "not settled within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The slot of the user's sessions (their hash tag) in a cluster.
fn slot_of_user(port: u16, user_id: &str) -> u16 {
    let tag = tessera::core::secret::session_tag(user_id);
    let key = format!("ha:{{{tag:02x}}}s:x");
    cli(port, &["CLUSTER", "KEYSLOT", &key])
        .parse()
        .expect("a slot number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_sessions_work_and_survive_a_primary_failover() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let (t, cancel) = app_on(&cluster.seed_urls()).await;
    let (ended, kept) = one_ended_one_kept(&t, "cleo@example.com").await;

    // Another user, logged out everywhere: every one of their sessions
    // goes, whichever slot.
    let other = t.signed_in("otto@example.com").await;
    let second = t.login("otto@example.com").await;
    let r = t.send(Req::post("/v1/logout-all").session(&other)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    for s in [&other, &second] {
        assert_eq!(me(&t, s).await, StatusCode::UNAUTHORIZED);
    }

    // The primary holding the user's sessions dies; its replica takes
    // over (cluster-node-timeout 2 s). Until then requests on that slot
    // fail closed or wait; afterwards the kept session passes again.
    let any_port = cluster.nodes()[0].port;
    let slot = slot_of_user(any_port, &kept.user_id);
    let killed = cluster.kill_primary_of_slot(slot);
    let killed_at = Instant::now();
    let unavailable = traffic_until(&t, &ended, &kept, Duration::from_secs(40), |k| {
        k == StatusCode::OK && killed_at.elapsed() > Duration::from_secs(8)
    })
    .await;
    cluster.wait_ok().await;
    eprintln!(
        "cluster: primary :{killed} killed; {unavailable} answers were 503 before the kept session passed again"
    );
    assert_eq!(me(&t, &kept).await, StatusCode::OK);
    assert_eq!(me(&t, &ended).await, StatusCode::UNAUTHORIZED);
    for s in [&other, &second] {
        assert_eq!(me(&t, s).await, StatusCode::UNAUTHORIZED);
    }
    let again = t.login("cleo@example.com").await;
    assert_eq!(me(&t, &again).await, StatusCode::OK);
    cancel.cancel();
}

/// Without replicas a dead primary cannot fail over: what needs its slot
/// fails closed (a login of its user: 503, never a 500), a session it
/// held may pass only from this node's cache (kept coherent through the
/// logs, so never once revoked), and the ended one never passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_without_replicas_a_dead_primary_fails_closed() {
    let mut cluster = RedisCluster::start(3, 0).await;
    let (t, cancel) = app_on(&cluster.seed_urls()).await;
    let (ended, kept) = one_ended_one_kept(&t, "nell@example.com").await;
    let port = cluster.nodes()[0].port;
    let slot = slot_of_user(port, &kept.user_id);
    cluster.kill_primary_of_slot(slot);
    let login = || {
        Req::post("/v1/sessions")
            .json(serde_json::json!({"email": "nell@example.com", "password": common::PASSWORD}))
    };
    let start = Instant::now();
    loop {
        let r = t.send(login()).await;
        assert_ne!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "logins still answer {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        t.send(login())
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        let e = me(&t, &ended).await;
        assert_ne!(e, StatusCode::OK, "the ended session passed");
        let k = me(&t, &kept).await;
        assert!(
            k == StatusCode::OK || k == StatusCode::SERVICE_UNAVAILABLE,
            "the kept session answered {k}"
        );
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sentinel_a_killed_primary_fails_over_and_nothing_revoked_comes_back() {
    let mut sentinel = RedisSentinel::start().await;
    let (t, cancel) = app_on(&sentinel.url()).await;
    let (ended, kept) = one_ended_one_kept(&t, "sid@example.com").await;
    let old = sentinel.kill_primary();
    let mut failed_over = false;
    let unavailable = traffic_until(&t, &ended, &kept, Duration::from_secs(30), |k| {
        failed_over = failed_over || k == StatusCode::SERVICE_UNAVAILABLE;
        failed_over && k == StatusCode::OK
    })
    .await;
    let new = sentinel.wait_failover().await;
    assert_ne!(new, old, "a replica was promoted");
    eprintln!(
        "Sentinel failover: {unavailable} answers were 503 before the kept session passed again"
    );
    // After the failover: the kept session (acknowledged by the replica
    // before the kill) passes, the ended one stays refused, logins work.
    assert_eq!(me(&t, &kept).await, StatusCode::OK);
    assert_eq!(me(&t, &ended).await, StatusCode::UNAUTHORIZED);
    let again = t.login("sid@example.com").await;
    assert_eq!(me(&t, &again).await, StatusCode::OK);
    cancel.cancel();
}

/// `rediss://` with a private CA and a client certificate (Redis's default
/// `tls-auth-clients yes`): the session flows work over TLS. Without the CA
/// file (the system's trust store does not know it) or without the client
/// certificate, the store does not open: never a fallback to plain text or
/// to an unchecked certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_private_ca_and_a_client_certificate() {
    let redis = TlsRedis::start().await;
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 temp path").to_owned();
    let (ca, cert, key) = (
        path(&redis.ca_file),
        path(&redis.cert_file),
        path(&redis.key_file),
    );
    let url = redis.url();
    let t = TestApp::with(&[
        ("redis_url", &url),
        ("redis_key_prefix", "tls:"),
        ("redis_tls_ca_file", &ca),
        ("redis_tls_cert_file", &cert),
        ("redis_tls_key_file", &key),
    ])
    .await;
    let (ended, kept) = one_ended_one_kept(&t, "tls@example.com").await;
    // The kept session is in this Redis (the harness reads it on the plain
    // port, which Tessera was not given).
    let keys = cli(redis.server.port(), &["--scan", "--pattern", "tls:{*}s:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    let r = t.send(Req::post("/v1/logout-all").session(&kept)).await;
    assert!(r.status.is_success(), "{}", r.text());
    assert_eq!(me(&t, &kept).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&t, &ended).await, StatusCode::UNAUTHORIZED);
    t.app.close().await;

    let files = |ca: Option<&std::path::Path>, client: bool| tessera::store::redis::tls::TlsFiles {
        ca_file: ca.map(std::path::Path::to_owned),
        cert_file: client.then(|| redis.cert_file.clone()),
        key_file: client.then(|| redis.key_file.clone()),
    };
    for (tls, why) in [
        (
            files(None, true),
            "the CA is not in the system's trust store",
        ),
        (
            files(Some(&redis.ca_file), false),
            "Redis asks for a client certificate",
        ),
    ] {
        let options = tessera::store::redis::RedisOptions {
            url: url.clone(),
            key_prefix: "tls:".into(),
            tls,
            timeout: std::time::Duration::from_secs(1),
        };
        let opened =
            tessera::store::redis::RedisStore::open(&options, &StoreOptions::default()).await;
        let Err(e) = opened else {
            panic!("Redis over TLS opened although {why}");
        };
        let text = e.to_string();
        // rustls's own words: UnknownIssuer, CertificateRequired.
        assert!(
            text.contains("cannot connect to Redis") && text.to_lowercase().contains("certificate"),
            "{why}: {text}"
        );
    }
}
