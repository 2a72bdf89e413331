//! `tessera doctor --url`: the real binary examines servers on ephemeral
//! loopback ports: the real application (well configured: exit 0, and the
//! login it makes is undone), a fake deployment that answers like a broken
//! one (a private key in the JWKS, a skewed clock, a bad cookie, no security
//! headers, logout that does not log out: exit 1 with each finding), and
//! nothing at all (a clear error, no panic).

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::{PASSWORD, TestApp};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Runs the `tessera` binary with `stdin`; (exit code, stdout, stderr).
async fn tessera(
    db_url: &str,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.envs(common::cli::store_env(db_url))
        .env("TESSERA_HASH_THREADS", "1")
        .env_remove("RUST_LOG")
        .env_remove("TESSERA_PUBLIC_URL")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tessera");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Serves `service` on `listener` in the background, as `tessera serve`
/// does.
fn serve(listener: TcpListener, service: impl tessera::listener::ConnectionService) {
    tokio::spawn(tessera::listener::serve(
        listener,
        service,
        tessera::listener::HEADER_READ_TIMEOUT,
        std::future::pending(),
    ));
}

#[tokio::test]
async fn a_well_configured_server_passes_and_the_doctor_leaves_nothing_behind() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let t = TestApp::with(&[("public_url", &url)]).await;
    let user = t.register("doctor@example.com").await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    serve(listener, t.router.clone());

    let (code, out, err) = tessera(
        &t.db_url,
        &[("TESSERA_PUBLIC_URL", &url)],
        &[
            "doctor",
            "--url",
            &url,
            "--email",
            "doctor@example.com",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    if common::redis_url_for(&t.db_url).is_some() {
        // The suite's Redis keeps nothing on disk, which doctor warns of.
        assert!(out.contains("0 dangerous, 1 warnings"), "{out}");
        assert!(out.contains("keeps nothing on disk"), "{out}");
    } else {
        assert!(out.contains("0 dangerous, 0 warnings"), "{out}");
    }
    for expected in [
        format!("server at {url}:").as_str(),
        "JWKS: 1 key(s), EdDSA, public parameters only",
        format!("metadata: issuer {url}, endpoints under it").as_str(),
        "the server's clock (HTTP Date) agrees with this machine's",
        if t.db_url.starts_with("postgres") {
            "clock (PostgreSQL"
        } else {
            "the database's clock (SQLite"
        },
        "/login: CSP, no framing, nosniff in place",
        "login: cookie(s) __Host-tessera_session are __Host-, Secure, HttpOnly",
        "login and logout: the session ended server-side",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    if t.db_url.starts_with("postgres") {
        // The PostgreSQL checks: version, and the pool against the server's
        // connection limit (the test cluster is local, so no TLS finding).
        assert!(out.contains("info: PostgreSQL 1"), "{out}");
        assert!(out.contains("leaves room for"), "{out}");
    }
    let all = format!("{out}{err}");
    assert!(!all.contains(PASSWORD), "password printed");
    assert!(!all.contains("tessera_session="), "cookie value printed");

    // It signed in and out for real: audited, and no session is left.
    let sessions = t.app.core.sessions_of(&user_id).await.unwrap();
    assert!(sessions.is_empty(), "{sessions:?}");
    let events = t
        .app
        .core
        .audit_events(None, Some(&user_id), 10)
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert!(types.contains(&"login_succeeded"), "{types:?}");
    assert!(types.contains(&"logout"), "{types:?}");

    // A login the server refuses as invalid (422: a password past the
    // policy's 1024 characters) is blamed on the account given to the
    // doctor, with the server's reason, not on the proxy's routing.
    let (_, out, err) = tessera(
        &t.db_url,
        &[("TESSERA_PUBLIC_URL", &url)],
        &[
            "doctor",
            "--url",
            &url,
            "--email",
            "doctor@example.com",
            "--password-stdin",
        ],
        &format!("{}\n", "x".repeat(2000)),
    )
    .await;
    assert!(
        out.contains("login: POST /v1/sessions answered 422"),
        "{out}{err}"
    );
    assert!(
        out.contains(
            "fix: give --email an account's email address and its password (the server said: "
        ),
        "{out}"
    );
    assert!(!out.contains("check that the proxy routes POST"), "{out}");

    // A configuration that disagrees with the server (checked from a machine
    // without its database) is a warning, not a danger.
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, out, err) = tessera(
        &format!("sqlite://{}", elsewhere.path().join("none.db").display()),
        &[("TESSERA_TOKEN_ALG", "ES256")],
        &["doctor", "--url", &format!("{url}/")],
        "",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("TESSERA_TOKEN_ALG=ES256"), "{out}");
    assert!(out.contains("0 dangerous, 1 warnings"), "{out}");
}

/// What the fake deployment saw of the doctor's logout.
#[derive(Default)]
struct Seen {
    logout_cookie: Option<String>,
    logout_csrf: Option<String>,
    login_body: Option<String>,
}

const FAKE_SESSION: &str = "fake-session-value-0123456789";
const FAKE_CSRF: &str = "fake-csrf-token-0123456789";

/// A deployment gone wrong, the way a misconfigured proxy or a hand-made
/// JWKS would show it.
fn broken_deployment(seen: Arc<Mutex<Seen>>) -> Router {
    let jwks = || async {
        axum::Json(serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "key_leaked", "alg": "EdDSA", "use": "sig",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
        }]}))
    };
    let metadata = || async {
        axum::Json(serde_json::json!({
            "issuer": "http://auth.example.com",
            "jwks_uri": "http://auth.example.com/.well-known/jwks.json",
            "token_endpoint": "http://auth.example.com/v1/token",
            "response_types_supported": [],
        }))
    };
    let login_page = || async { axum::response::Html("<form method=post></form>") };
    let login = {
        let seen = seen.clone();
        move |body: String| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().login_body = Some(body);
                (
                    StatusCode::CREATED,
                    [(
                        header::SET_COOKIE,
                        format!(
                            "tessera_session={FAKE_SESSION}; Domain=example.com; Path=/v1; SameSite=None; Max-Age=99999999"
                        ),
                    )],
                    axum::Json(serde_json::json!({"csrf_token": FAKE_CSRF})),
                )
            }
        }
    };
    let logout = {
        let seen = seen.clone();
        move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let text = |name| {
                    headers
                        .get(name)
                        .and_then(|v: &HeaderValue| v.to_str().ok())
                        .map(str::to_owned)
                };
                let mut seen = seen.lock().unwrap();
                seen.logout_cookie = text("cookie");
                seen.logout_csrf = text("x-csrf-token");
                StatusCode::NO_CONTENT
            }
        }
    };
    // The session "survives" logout, as behind a cache that answers for it.
    let current = || async { axum::Json(serde_json::json!({"csrf_token": FAKE_CSRF})) };
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/login", get(login_page))
        .route(
            "/v1/sessions",
            axum::routing::post(login),
        )
        .route("/v1/session", get(current).delete(logout))
        .layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async move {
                // A clock ten minutes fast (hyper keeps a Date it is given).
                let fast = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
                let date = fast
                    .format(time::macros::format_description!(
                        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
                    ))
                    .unwrap();
                response
                    .headers_mut()
                    .insert(header::DATE, HeaderValue::from_str(&date).unwrap());
                response.into_response()
            },
        ))
}

#[tokio::test]
async fn a_broken_deployment_is_dangerous_and_each_pitfall_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let seen = Arc::new(Mutex::new(Seen::default()));
    serve(listener, broken_deployment(seen.clone()));
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("none.db");
    let db = format!("sqlite://{}", db_path.display());

    let (code, out, err) = tessera(
        &db,
        &[],
        &[
            "doctor",
            "--url",
            &url,
            "--email",
            "someone@example.com",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let danger = |needle: &str| {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with("danger:") && l.contains(needle)),
            "no danger about {needle:?} in:\n{out}"
        );
    };
    let warning = |needle: &str| {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with("warning:") && l.contains(needle)),
            "no warning about {needle:?} in:\n{out}"
        );
    };
    danger("JWKS: key \"key_leaked\" publishes private key material (d)");
    danger("the server's clock (HTTP Date) is");
    danger("issuer http://auth.example.com is plain HTTP on a non-local host");
    danger("/login: any site can frame the page");
    danger("no Cache-Control: no-store");
    danger("login cookie tessera_session: no HttpOnly");
    danger("login cookie tessera_session: has a Domain attribute");
    danger("the session still works after DELETE /v1/session");
    warning("/login: no Content-Security-Policy");
    warning("SameSite=None");
    warning("Path is \"/v1\"");
    warning("beyond the 400 days");
    warning("does not clear cookie tessera_session");
    assert!(out.contains("fix: "), "{out}");
    assert!(err.contains("dangerous finding(s)"), "{err}");

    // Secrets stay inside: the password went only into the login body, the
    // cookie and CSRF token only back to the server.
    let all = format!("{out}{err}");
    for secret in [PASSWORD, FAKE_SESSION, FAKE_CSRF] {
        assert!(!all.contains(secret), "{secret} printed");
    }
    let seen = seen.lock().unwrap();
    assert!(seen.login_body.as_deref().unwrap().contains(PASSWORD));
    assert_eq!(
        seen.logout_cookie.as_deref(),
        Some(format!("tessera_session={FAKE_SESSION}").as_str())
    );
    assert_eq!(seen.logout_csrf.as_deref(), Some(FAKE_CSRF));
    // The doctor does not create a database that was not there.
    assert!(!db_path.exists());
    assert!(err.contains("no database at"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let url = format!("http://127.0.0.1:{port}");
    let (code, out, err) = tessera(&db, &[], &["doctor", "--url", &url], "").await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("cannot reach {url}")), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.contains("dangerous"),
        "the configuration part still ran: {out}"
    );
    // The summary line says the server was not examined.
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.contains(&format!("the server at {url} cannot be reached")),
        "{out}"
    );

    // A --url that is not an http(s) URL stops the doctor before any check.
    for bad in ["ftp://example.com", "not a url"] {
        let (code, out, err) = tessera(&db, &[], &["doctor", "--url", bad], "").await;
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("--url"), "{err}");
        assert!(
            out.is_empty(),
            "checks ran before the URL was checked: {out}"
        );
    }
    let (_, _, err) = tessera(&db, &[], &["doctor", "--url", "ftp://example.com"], "").await;
    assert!(err.contains("only http:// and https://"), "{err}");
    let (code, _, err) = tessera(&db, &[], &["doctor", "--email", "a@example.com"], "").await;
    assert_eq!(code, 2, "--email needs --url");
    assert!(err.contains("--url"), "{err}");
}

/// `tessera doctor` with sessions in the Redis at `redis_url`, and no
/// database yet (so the configuration and Redis are what is checked).
async fn doctor_with_redis(redis_url: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("none.db").display());
    tessera(&db, &[("TESSERA_REDIS_URL", redis_url)], &["doctor"], "").await
}

/// The fix printed under the first `severity` finding that contains
/// `needle`, or `None`.
fn fix_of(out: &str, severity: &str, needle: &str) -> Option<String> {
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&format!("{severity}:")) && l.contains(needle))?;
    lines
        .get(at + 1)
        .and_then(|l| l.trim_start().strip_prefix("fix: "))
        .map(str::to_owned)
}

/// The `redis_version` a server reports.
fn redis_version(port: u16) -> String {
    let info = common::redis::cli(port, &["INFO", "server"]);
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("redis_version in INFO")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_healthy_redis_is_named_with_its_version_and_policy_and_its_password_stays_hidden() {
    let redis = common::redis::RedisServer::start().await;
    let port = redis.port();
    let version = redis_version(port);
    common::redis::cli(port, &["CONFIG", "SET", "requirepass", "sekret"]);

    let (code, out, err) = doctor_with_redis(&format!("redis://:sekret@127.0.0.1:{port}")).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("danger:"), "{out}");
    for expected in [
        format!("info: Redis {version} at 127.0.0.1:{port}"),
        format!("info: maxmemory-policy noeviction at 127.0.0.1:{port}"),
        "info: round trip from this machine to Redis".to_owned(),
        format!("info: Redis at 127.0.0.1:{port} has no replica"),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    // The harness's Redis keeps nothing on disk: a warning, safe, with its fix.
    let fix = fix_of(&out, "warning", "keeps nothing on disk").expect(&out);
    assert!(fix.contains("appendonly yes"), "{fix}");
    assert!(out.contains("0 dangerous, 1 warnings"), "{out}");
    let all = format!("{out}{err}");
    assert!(!all.contains("sekret"), "password printed:\n{all}");

    // A wrong password: cannot be reached, and neither password printed.
    let (code, out, err) =
        doctor_with_redis(&format!("redis://:wr0ng-pass@127.0.0.1:{port}")).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("redis://:redacted@127.0.0.1"), "{out}");
    let all = format!("{out}{err}");
    assert!(
        !all.contains("wr0ng-pass") && !all.contains("sekret"),
        "{all}"
    );
}

#[tokio::test]
async fn an_evicting_redis_is_dangerous_with_the_fix() {
    let redis = common::redis::RedisServer::start().await;
    let port = redis.port();
    common::redis::cli(port, &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);

    let (code, out, err) = doctor_with_redis(&redis.url()).await;
    assert_eq!(code, 1, "{out}{err}");
    let fix = fix_of(
        &out,
        "danger",
        &format!("maxmemory-policy allkeys-lru at 127.0.0.1:{port}"),
    )
    .unwrap_or_else(|| panic!("no danger about the policy in:\n{out}"));
    assert!(out.contains("logout-everywhere misses"), "{out}");
    assert!(
        fix.contains("CONFIG SET maxmemory-policy noeviction"),
        "{fix}"
    );
    assert!(fix.contains("redis.conf"), "{fix}");
    assert!(out.contains("1 dangerous, 1 warnings"), "{out}");
    assert!(err.contains("1 dangerous finding(s)"), "{err}");
}

#[tokio::test]
async fn a_stopped_redis_fails_the_doctor_and_the_summary_says_so() {
    let mut redis = common::redis::RedisServer::start().await;
    let port = redis.port();
    redis.stop().await;

    let (code, out, err) = doctor_with_redis(&format!("redis://:sekret@127.0.0.1:{port}")).await;
    assert_eq!(code, 1, "{out}{err}");
    let reached = format!("Redis at redis://:redacted@127.0.0.1:{port} cannot be reached");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("danger:")
            && l.contains(&reached)
            && l.contains("refused")),
        "{out}"
    );
    let summary = out.lines().last().unwrap_or_default();
    assert_eq!(
        summary,
        format!("1 dangerous, 0 warnings; {reached}"),
        "{out}"
    );
    assert!(err.contains(&reached), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!format!("{out}{err}").contains("sekret"));
}

#[tokio::test]
async fn sentinel_names_a_primary_that_is_one_and_a_replica_to_promote() {
    let setup = common::redis::RedisSentinel::start().await;
    let primary = setup.primary_port();
    let replica = setup.replica_port();

    let (code, out, err) = doctor_with_redis(&setup.url()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("danger:"), "{out}");
    let version = redis_version(primary);
    for expected in [
        format!(
            "info: Sentinel: 3 of 3 sentinels answer and name 127.0.0.1:{primary} (which says it is the primary) as the primary \"tessera\", with 1 replica; quorum 2, a failover can be authorised"
        ),
        // The primary and the replica it may become: one line for both.
        format!("info: Redis {version} at 127.0.0.1:{primary} and 127.0.0.1:{replica}"),
        format!("info: maxmemory-policy noeviction at 127.0.0.1:{primary} and 127.0.0.1:{replica}"),
        format!("(median of 5 PINGs to 127.0.0.1:{primary})"),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
}

#[tokio::test]
async fn a_cluster_is_read_through_its_seeds_and_a_dead_seed_is_named() {
    let cluster = common::redis::RedisCluster::start(3, 0).await;
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("{},redis://127.0.0.1:{gone}", cluster.seed_urls());

    let (code, out, err) = doctor_with_redis(&url).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("danger:"), "{out}");
    assert!(
        out.contains(
            "info: Redis Cluster (cluster_state:ok): 3 primaries, 0 replicas; 3 of 4 seeds answer"
        ),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l
            .trim_start()
            .starts_with("warning: 1 of the 4 cluster seeds")
            && l.contains(&format!("127.0.0.1:{gone}"))),
        "{out}"
    );
    // One line per rule for the three primaries.
    assert_eq!(
        out.matches("maxmemory-policy noeviction at").count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("(median of 5 PINGs to each of 3 servers"),
        "{out}"
    );
}

/// A database that cannot be reached is a danger (exit 1) naming the
/// setting, never its password.
#[tokio::test]
async fn an_unreachable_database_fails_the_doctor() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://tessera:sekret@127.0.0.1:{port}/tessera");
    let (code, out, err) = tessera(&url, &[], &["doctor"], "").await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("danger:")
            && l.contains("the database cannot be opened")),
        "{out}"
    );
    assert!(out.contains("TESSERA_DATABASE_URL"), "{out}");
    assert!(!format!("{out}{err}").contains("sekret"));
}
