//! Test harness: the real application (router, core, SQLite file) built
//! in-process with a manual clock, and small helpers to talk to it.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use tessera::app::App;
use tessera::config::Settings;
use tessera::core::clock::ManualClock;
use tower::ServiceExt;

pub mod db;
pub mod logs;
pub mod node;
pub mod postgres;
pub mod redis;
pub mod smtp;

pub const ORIGIN: &str = "http://localhost:8080";
pub const PASSWORD: &str = "correct horse battery staple";
pub const COOKIE: &str = "__Host-tessera_session";

pub struct TestApp {
    pub app: App,
    pub router: tessera::http::Endpoint,
    pub clock: ManualClock,
    pub db_url: String,
    pub dir: TempDir,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(&[]).await
    }

    /// An app on a fresh database (of the backend `TEST_STORE` names, see
    /// [`fresh_store_url`]) with these settings over the defaults.
    pub async fn with(pairs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_url = fresh_store_url(dir.path()).await;
        let clock = ManualClock::starting_now();
        let app = open_app(&db_url, pairs, &clock).await;
        let router = app.router();
        Self {
            app,
            router,
            clock,
            db_url,
            dir,
        }
    }

    /// Closes this app and opens a new one on the same database file, as a
    /// server restart would.
    pub async fn restart(self, pairs: &[(&str, &str)]) -> Self {
        let TestApp {
            app,
            clock,
            db_url,
            dir,
            ..
        } = self;
        app.close().await;
        let app = open_app(&db_url, pairs, &clock).await;
        let router = app.router();
        Self {
            app,
            router,
            clock,
            db_url,
            dir,
        }
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn send(&self, req: Req) -> Resp {
        let response = self
            .router
            .clone()
            .oneshot(req.build())
            .await
            .expect("router is infallible");
        Resp::read(response).await
    }

    pub async fn register(&self, email: &str) -> Value {
        let r = self
            .send(
                Req::post("/v1/accounts")
                    .json(serde_json::json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "register {email}: {}",
            r.text()
        );
        r.json()["user"].clone()
    }

    pub async fn login(&self, email: &str) -> Login {
        self.login_with(
            Req::post("/v1/sessions")
                .json(serde_json::json!({"email": email, "password": PASSWORD})),
        )
        .await
    }

    pub async fn login_with(&self, req: Req) -> Login {
        Login::from_response(&self.send(req).await)
    }

    /// Registers a fresh user and returns its password grant's response
    /// (`access_token`, `refresh_token`, …).
    pub async fn tokens_for(&self, email: &str) -> Value {
        self.register(email).await;
        let r = self.send(password_grant(email)).await;
        assert_eq!(r.status, StatusCode::OK, "password grant: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        r.json()
    }

    /// Registers and logs in a fresh user.
    pub async fn signed_in(&self, email: &str) -> Login {
        self.register(email).await;
        self.login(email).await
    }
}

/// The store configuration the suite runs on, from the environment
/// variable `TEST_STORE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStore {
    /// Unset or `sqlite`: a SQLite file in the test's directory.
    Sqlite,
    /// `postgres`: a fresh database on the shared PostgreSQL cluster.
    Postgres,
    /// `postgres+redis`: that, with sessions and the push in the shared
    /// Redis under a key prefix of the database's own.
    PostgresRedis,
}

pub fn test_store() -> TestStore {
    match std::env::var("TEST_STORE").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "sqlite") => TestStore::Sqlite,
        Ok("postgres") => TestStore::Postgres,
        Ok("postgres+redis") => TestStore::PostgresRedis,
        other => {
            panic!("TEST_STORE must be `sqlite`, `postgres` or `postgres+redis`, not {other:?}")
        }
    }
}

/// The database URL for a test's store ([`test_store`]): a SQLite file in
/// `dir`, or a fresh database on the shared PostgreSQL cluster
/// ([`postgres::fresh_postgres_url`]).
pub async fn fresh_store_url(dir: &std::path::Path) -> String {
    match test_store() {
        TestStore::Sqlite => format!("sqlite://{}", dir.join("tessera.db").display()),
        TestStore::Postgres | TestStore::PostgresRedis => postgres::fresh_postgres_url().await,
    }
}

/// The settings that put an app on `db_url` as the suite runs: the
/// database, and under `postgres+redis` the shared Redis with a key prefix
/// made from the database's URL (so every app, restart and node on that
/// database shares its sessions, and no other test's).
pub async fn store_settings(db_url: &str) -> Vec<(String, String)> {
    let mut out = vec![("database_url".to_owned(), db_url.to_owned())];
    if test_store() == TestStore::PostgresRedis && db_url.starts_with("postgres") {
        out.push(("redis_url".to_owned(), redis::shared_redis_url().await));
        out.push(("redis_key_prefix".to_owned(), redis_prefix_for(db_url)));
    }
    out
}

/// Databases whose apps keep sessions in Redis whatever `TEST_STORE` says
/// (tests that choose their store themselves, such as `many_nodes`): the
/// database URL and its Redis URL.
static REDIS_BACKED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Makes every app and command on `db_url` keep sessions in `redis_url`.
pub fn keep_sessions_in_redis(db_url: &str, redis_url: &str) {
    if let Ok(mut backed) = REDIS_BACKED.lock() {
        backed.push((db_url.to_owned(), redis_url.to_owned()));
    }
}

/// The Redis URL the apps on `db_url` use, if they use one: the one it
/// was registered with, or under `postgres+redis` the suite's for the
/// suite's databases (PostgreSQL; a SQLite file there is a test's own
/// choice, without Redis).
pub fn redis_url_for(db_url: &str) -> Option<String> {
    let chosen = REDIS_BACKED
        .lock()
        .ok()
        .and_then(|b| b.iter().find(|(d, _)| d == db_url).map(|(_, r)| r.clone()));
    chosen.or_else(|| {
        let suites = test_store() == TestStore::PostgresRedis && db_url.starts_with("postgres");
        suites.then(|| {
            std::env::var(redis::SHARED_URL_VAR).unwrap_or_else(|_| {
                panic!(
                    "TEST_STORE=postgres+redis needs {} (scripts/test sets it)",
                    redis::SHARED_URL_VAR
                )
            })
        })
    })
}

/// The Redis key prefix of the apps on `db_url` under `postgres+redis`.
pub fn redis_prefix_for(db_url: &str) -> String {
    // FNV-1a: stable across processes, unlike std's hasher.
    let hash = db_url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("t{hash:016x}:")
}

pub async fn open_app(db_url: &str, pairs: &[(&str, &str)], clock: &ManualClock) -> App {
    let store = store_settings(db_url).await;
    let mut all: Vec<(&str, &str)> = store
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.push(("hash_threads", "2"));
    all.extend_from_slice(pairs);
    let settings = Settings::from_pairs(&all).expect("test settings");
    App::open(settings, Arc::new(clock.clone()))
        .await
        .expect("app opens")
}

/// `POST /v1/token` with the password grant for `email` and [`PASSWORD`].
pub fn password_grant(email: &str) -> Req {
    Req::post("/v1/token").form(&[
        ("grant_type", "password"),
        ("username", email),
        ("password", PASSWORD),
    ])
}

/// A signed-in browser: its cookie header and CSRF token.
#[derive(Debug, Clone)]
pub struct Login {
    pub cookie: String,
    pub csrf: String,
    pub session_id: String,
    pub user_id: String,
    pub body: Value,
}

impl Login {
    /// The login a `201` answer to `POST /v1/sessions` carries.
    pub fn from_response(r: &Resp) -> Self {
        assert_eq!(r.status, StatusCode::CREATED, "login: {}", r.text());
        let set = r.set_cookie(COOKIE).expect("login sets the session cookie");
        let body = r.json();
        Login {
            cookie: format!("{COOKIE}={}", set.value),
            csrf: body["csrf_token"].as_str().expect("csrf_token").to_owned(),
            session_id: body["session"]["id"]
                .as_str()
                .expect("session id")
                .to_owned(),
            user_id: body["user"]["id"].as_str().expect("user id").to_owned(),
            body,
        }
    }
}

/// A request under construction.
pub struct Req {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Body,
    peer: Option<std::net::SocketAddr>,
}

impl Req {
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Body::empty(),
            peer: None,
        }
    }
    /// As if sent over TCP from this address (what `serve` records).
    pub fn peer_ip(mut self, ip: &str) -> Self {
        self.peer = Some(std::net::SocketAddr::new(ip.parse().expect("ip"), 40000));
        self
    }
    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn post(path: &str) -> Self {
        Self::new(Method::POST, path)
    }
    pub fn delete(path: &str) -> Self {
        Self::new(Method::DELETE, path)
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn json(self, v: Value) -> Self {
        self.raw("application/json", v.to_string())
    }
    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        let body = serde_urlencoded::to_string(pairs).expect("form");
        self.raw("application/x-www-form-urlencoded", body)
    }
    pub fn raw(mut self, content_type: &str, body: impl Into<Body>) -> Self {
        self.headers
            .push(("content-type".to_owned(), content_type.to_owned()));
        self.body = body.into();
        self
    }
    /// Sends the session cookie and, for unsafe methods, the CSRF token.
    pub fn session(self, login: &Login) -> Self {
        let unsafe_method = !matches!(self.method, Method::GET | Method::HEAD);
        let r = self.header("cookie", &login.cookie);
        if unsafe_method {
            r.header("x-csrf-token", &login.csrf)
        } else {
            r
        }
    }
    pub fn build(self) -> Request<Body> {
        let mut b = Request::builder().method(self.method).uri(self.path);
        for (k, v) in self.headers {
            b = b.header(k, v);
        }
        if let Some(peer) = self.peer {
            b = b.extension(axum::extract::ConnectInfo(peer));
        }
        b.body(self.body).expect("request")
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// Reads a whole response.
    pub async fn read(response: axum::response::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Self {
            status,
            headers,
            body,
        }
    }
}

/// One parsed `Set-Cookie` header.
#[derive(Debug)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// Attributes in order, names as sent, values if any.
    pub attributes: Vec<(String, Option<String>)>,
}

impl SetCookie {
    pub fn attr(&self, name: &str) -> Option<Option<&str>> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(
            v["error_description"].is_string(),
            "error without description: {v}"
        );
        v["error"].as_str().unwrap_or_default().to_owned()
    }
    /// Asserts the contract's error shape and code.
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.error_code(), code, "body: {}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "errors are JSON"
        );
    }
    pub fn set_cookie(&self, name: &str) -> Option<SetCookie> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(parse_set_cookie)
            .find(|c| c.name == name)
    }
}

/// The value of the first `name="<field>" value="…"` in a page.
pub fn form_field(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no field {name} in the page: {html}"))
        + needle.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_owned()
}

pub fn parse_set_cookie(s: &str) -> SetCookie {
    let mut parts = s.split(';').map(str::trim);
    let (name, value) = parts
        .next()
        .and_then(|p| p.split_once('='))
        .expect("name=value");
    let attributes = parts
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (p.to_owned(), None),
        })
        .collect();
    SetCookie {
        name: name.to_owned(),
        value: value.to_owned(),
        attributes,
    }
}

/// Tokens and the test's own forging tools.
/// `Authorization: Basic` for a client's id and secret.
pub fn basic_auth(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{id}:{secret}")
        )
    )
}

/// Opens `GET /v1/revocations` as an event stream, as a newly registered
/// client, on a server listening at `addr`; returns the open response.
pub async fn revocation_stream(t: &TestApp, addr: std::net::SocketAddr) -> reqwest::Response {
    let client = t.app.core.create_client("edge-verifier").await.unwrap();
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/v1/revocations"))
        .header(
            "authorization",
            basic_auth(&client.client.id, client.secret.expose()),
        )
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

pub mod jwt {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;

    pub fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn b64_decode(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).expect("base64url")
    }

    pub fn decode_part(token: &str, index: usize) -> Value {
        let part = token.split('.').nth(index).expect("segment");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
    }

    /// The active signing key straight from the database: (kid, PKCS#8).
    pub async fn active_key(db_url: &str) -> (String, Vec<u8>) {
        super::db::active_key(db_url).await
    }

    /// A token with any header and claims, signed with the Ed25519 key.
    pub fn sign_ed25519(header: &Value, claims: &Value, pkcs8: &[u8]) -> String {
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8).expect("key");
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = pair.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }

    /// A token with any header and claims and the given raw signature bytes.
    pub fn with_signature(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes()),
            b64(signature)
        )
    }

    pub fn hmac_sha256(key: &[u8], input: &str) -> Vec<u8> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
        aws_lc_rs::hmac::sign(&key, input.as_bytes())
            .as_ref()
            .to_vec()
    }
}

/// Running the real `tessera` binary, as an operator would.
pub mod cli {
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// `tessera` against the database at `db_url`, with one hashing thread
    /// and no inherited log filter.
    pub fn tessera(db_url: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.envs(store_env(db_url))
            .env("TESSERA_HASH_THREADS", "1")
            .env_remove("RUST_LOG");
        cmd
    }

    /// The environment that puts a command on `db_url` as the suite runs
    /// (under `postgres+redis`, the shared Redis of `scripts/test`, with
    /// the prefix the in-process apps on that database use).
    pub fn store_env(db_url: &str) -> Vec<(String, String)> {
        let mut env = vec![("TESSERA_DATABASE_URL".to_owned(), db_url.to_owned())];
        if let Some(redis) = super::redis_url_for(db_url) {
            env.push(("TESSERA_REDIS_URL".to_owned(), redis));
            env.push((
                "TESSERA_REDIS_KEY_PREFIX".to_owned(),
                super::redis_prefix_for(db_url),
            ));
        }
        env
    }

    /// Runs `cmd` with `stdin` as its input: (exit code, stdout, stderr).
    pub fn run(cmd: &mut Command, stdin: &str) -> (i32, String, String) {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tessera");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
