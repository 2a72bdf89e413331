//! Real `tessera serve` processes ("nodes") for tests about several servers
//! sharing one database: each node is the built binary on `127.0.0.1:0`,
//! found through its banner (`tessera listening on http://ADDR`) and ready
//! once `/healthz` answers. Every node of a test gets the same public URL
//! ([`ORIGIN`]), so one `Origin` passes the CSRF check everywhere, and the
//! same database URL.
//!
//! Requests go through a plain `reqwest::Client` without a cookie store:
//! cookies, `Origin` and `X-CSRF-Token` are sent explicitly, as
//! [`super::Req::session`] does in-process. Answers come back as
//! [`super::Resp`], so the same assertions work on both.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::{Login, ORIGIN, PASSWORD, Resp};

/// How long a node may take from spawn to a 200 on `/healthz` (a loaded
/// 2-core box, migrations on a fresh database).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The end of a node's stderr kept for failure messages.
const LOG_KEEP: usize = 256 * 1024;

/// The settings every node of these tests runs with, beyond the database
/// and public URL: cheap password hashing (tests log in hundreds of times),
/// no per-IP limit (every request comes from 127.0.0.1), a queue deep
/// enough for the concurrent logins tests make.
const NODE_ENV: [(&str, &str); 5] = [
    ("TESSERA_ARGON2_MEMORY_KIB", "7168"),
    ("TESSERA_ARGON2_ITERATIONS", "1"),
    ("TESSERA_IP_RATE_LIMIT", "0"),
    ("TESSERA_HASH_QUEUE", "256"),
    ("TESSERA_LOG", "warn"),
];

/// Which backend a test's nodes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// One SQLite file; the processes follow each other through the
    /// polled change log.
    Sqlite,
    /// One PostgreSQL database.
    Postgres,
    /// One PostgreSQL database, sessions and the push in one Redis (the
    /// suite's shared one, under a prefix of the database's own).
    PostgresRedis,
}

impl Store {
    /// A fresh, empty database: a file in `dir`, or a new database on the
    /// cluster this test process shares ([`super::postgres::fresh_postgres_url`]).
    pub async fn fresh_url(self, dir: &Path) -> String {
        match self {
            Store::Sqlite => format!("sqlite://{}", dir.join("tessera.db").display()),
            Store::Postgres => super::postgres::fresh_postgres_url().await,
            Store::PostgresRedis => {
                let url = super::postgres::fresh_postgres_url().await;
                super::keep_sessions_in_redis(&url, &super::redis::shared_redis_url().await);
                url
            }
        }
    }
}

/// A running `tessera serve`.
pub struct Node {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
}

/// A password grant's answer.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    /// From a token endpoint's JSON answer.
    pub fn from_json(v: &Value) -> Self {
        let field = |name: &str| {
            v[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {v}"))
                .to_owned()
        };
        Self {
            access: field("access_token"),
            refresh: field("refresh_token"),
        }
    }
}

impl Node {
    /// A node on `db_url` with the tests' settings ([`NODE_ENV`]).
    pub async fn start(db_url: &str) -> Self {
        Self::start_with(db_url, &[]).await
    }

    /// A node on `db_url` with `env` (`TESSERA_…` settings) over the tests'
    /// settings.
    pub async fn start_with(db_url: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = super::cli::tessera(db_url);
        cmd.args(["serve", "--addr", "127.0.0.1:0"])
            .env("TESSERA_PUBLIC_URL", ORIGIN);
        for (k, v) in NODE_ENV.iter().chain(env) {
            cmd.env(k, v);
        }
        // Killed with the thread that started it if the test process dies
        // without dropping the node (a runner's timeout, Ctrl-C). Start nodes
        // from the test's own task, not from `spawn_blocking` (those threads
        // end when idle).
        // SAFETY: prctl is async-signal-safe and the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tessera serve");

        // A thread drains stderr for the node's whole life (a full pipe
        // would block its logging), keeps the end of it, and hands over the
        // address from the banner.
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let pipe = child.stderr.take().expect("piped stderr");
        let kept = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("tessera listening on http://").nth(1)
                    && let Some(addr) = rest.split_whitespace().next()
                    && let Ok(addr) = addr.parse()
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
                if kept.len() > 2 * LOG_KEEP {
                    let cut = kept.len() - LOG_KEEP;
                    let cut = (cut..kept.len())
                        .find(|&i| kept.is_char_boundary(i))
                        .unwrap_or(cut);
                    kept.drain(..cut);
                }
            }
        });

        // From here on the node is owned: a panic, or this future dropped
        // half-way (another node of a `join!` failed), kills the process.
        let mut node = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            child: Some(child),
            stderr,
        };
        let started = Instant::now();
        node.addr = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(addr)) => addr,
            outcome => {
                let status = node.child.as_mut().map(|c| {
                    let _ = c.kill();
                    c.wait()
                });
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "tessera serve on {db_url} gave no banner ({}; {status:?}):\n{}",
                    if outcome.is_err() {
                        "timed out"
                    } else {
                        "exited"
                    },
                    node.log()
                );
            }
        };
        let addr = node.addr;
        loop {
            match node.client.get(node.url("/healthz")).send().await {
                Ok(r) if r.status() == StatusCode::OK => break,
                _ if started.elapsed() < START_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("{addr}/healthz: {other:?}\n{}", node.log()),
            }
        }
        node
    }

    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The end of what the node wrote on stderr.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reaps it: no shutdown, nothing drained.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process stands still (a long pause), connections open.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`Node::freeze`].
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        let pid = self.pid().expect("the node runs");
        kill(Pid::from_raw(pid as i32), signal).expect("signal the node");
    }

    /// SIGTERM (graceful shutdown), and waits for a clean exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for tessera") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} still running {STOP_TIMEOUT:?} after SIGTERM:\n{}",
                    self.addr,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(status.success(), "{}: {status}\n{}", self.addr, self.log());
    }

    // ---- requests -------------------------------------------------------

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).header("origin", ORIGIN)
    }

    /// `DELETE path`, from the public origin.
    pub fn client_delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path)).header("origin", ORIGIN)
    }

    /// `PATCH path`, from the public origin.
    pub fn client_patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.patch(self.url(path)).header("origin", ORIGIN)
    }

    /// Sends and reads the whole answer; `Err` on a transport failure (a
    /// node killed or refusing connections).
    pub async fn try_send(&self, request: reqwest::RequestBuilder) -> reqwest::Result<Resp> {
        let r = request.send().await?;
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.bytes().await?;
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// As [`Node::try_send`]; a transport failure panics with the node's log.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        match self.try_send(request).await {
            Ok(r) => r,
            Err(e) => panic!("{}: {e:?}\n{}", self.addr, self.log()),
        }
    }

    /// `GET path` with the session cookie.
    pub async fn get_with_cookie(&self, path: &str, login: &Login) -> Resp {
        self.send(self.get(path).header("cookie", &login.cookie))
            .await
    }

    /// `GET path` with `Authorization: Bearer`.
    pub async fn get_with_bearer(&self, path: &str, access_token: &str) -> Resp {
        self.send(self.get(path).bearer_auth(access_token)).await
    }

    /// `POST path` as the signed-in browser: cookie, `Origin`, CSRF token.
    pub async fn post_with_session(&self, path: &str, login: &Login) -> Resp {
        self.send(
            self.post(path)
                .header("cookie", &login.cookie)
                .header("x-csrf-token", &login.csrf),
        )
        .await
    }

    /// `POST path` with a form body.
    pub fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(pairs).expect("form"))
    }

    // ---- the common steps ----------------------------------------------

    /// Registers `email` with [`PASSWORD`]; returns the user id.
    pub async fn register(&self, email: &str) -> String {
        let r = self
            .send(
                self.post("/v1/accounts")
                    .json(&json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "register {email}: {}",
            r.text()
        );
        r.json()["user"]["id"].as_str().expect("user id").to_owned()
    }

    /// Logs `email` in: cookie, CSRF token, session and user ids.
    pub async fn login(&self, email: &str) -> Login {
        let r = self
            .send(
                self.post("/v1/sessions")
                    .json(&json!({"email": email, "password": PASSWORD})),
            )
            .await;
        Login::from_response(&r)
    }

    /// `POST /v1/token` with the password grant for `email`.
    pub async fn password_grant(&self, email: &str) -> Tokens {
        let r = self
            .send(self.post_form(
                "/v1/token",
                &[
                    ("grant_type", "password"),
                    ("username", email),
                    ("password", PASSWORD),
                ],
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "password grant: {}", r.text());
        Tokens::from_json(&r.json())
    }

    /// The refresh grant's request (for callers that race or expect failure).
    pub fn refresh_request(&self, refresh_token: &str) -> reqwest::RequestBuilder {
        self.post_form(
            "/v1/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
    }

    /// `POST /v1/token` with the refresh grant: the whole answer.
    pub async fn refresh(&self, refresh_token: &str) -> Resp {
        self.send(self.refresh_request(refresh_token)).await
    }

    /// A refresh that must succeed: the new pair.
    pub async fn refreshed(&self, refresh_token: &str) -> Tokens {
        let r = self.refresh(refresh_token).await;
        assert_eq!(r.status, StatusCode::OK, "refresh: {}", r.text());
        Tokens::from_json(&r.json())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
