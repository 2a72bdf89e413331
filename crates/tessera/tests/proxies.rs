//! The forward-auth recipes of `docs/deploying.md` under the real proxies
//! (issue #21 item 7): Debian's nginx and Caddy run each recipe as the page
//! writes it, read from the page itself (only the addresses and the TLS
//! lines are changed), in front of Tessera and an upstream that echoes the
//! request headers it received. Through each proxy:
//!
//! - an anonymous browser asking for the app is sent to
//!   `/login?return_to=<that URL>`, whose form carries it back;
//! - a signed-in browser (session from Tessera's API, through the proxy,
//!   with the right `Origin`) reaches the app as its user, `X-Auth-Method:
//!   session`, with forged `X-Auth-*` headers gone and without Tessera's
//!   cookies (session, and jwt-cookie mode's access and refresh; other
//!   cookies kept);
//! - a Bearer token reaches it with `X-Auth-Method: jwt`;
//! - the `admin` part answers 403 to a user without the role, and lets an
//!   admin through;
//! - `/metrics` is not reachable.
//!
//! nginx and Caddy run as plain processes with their own temporary
//! directory, configuration, pid and logs, on ephemeral loopback ports, and
//! are ended by their process id when the test ends.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use common::PASSWORD;
use serde_json::{Value, json};
use tempfile::TempDir;
use tessera::app::App;
use tessera::config::Settings;
use tessera::core::accounts::{NewAccount, Password};
use tessera::core::clock::SystemClock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const NGINX: &str = "/usr/sbin/nginx";
const INSTALL: &str = "install: apt-get install --no-install-recommends nginx caddy";
const COOKIE: &str = "__Host-tessera_session";
/// The addresses the recipes are written with.
const DOC_TESSERA: &str = "127.0.0.1:8080";
const DOC_APP: &str = "127.0.0.1:3000";
const DOC_HOST: &str = "example.com";

/// The fenced block of `docs/deploying.md` in this language (exactly one).
fn recipe(lang: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deploying.md");
    let text = std::fs::read_to_string(path).expect("docs/deploying.md");
    let fence = format!("```{lang}\n");
    let mut blocks = text.split(&fence).skip(1).map(|rest| {
        rest.split_once("\n```")
            .expect("a closed fence")
            .0
            .to_owned()
    });
    let block = blocks
        .next()
        .unwrap_or_else(|| panic!("no ```{lang} block"));
    assert!(blocks.next().is_none(), "more than one ```{lang} block");
    block
}

/// `text` with every `from` replaced, which must occur.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the recipe no longer mentions {from}");
    text.replace(from, to)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

// ---------------------------------------------------------------------------
// Tessera and the upstream, in process

struct Backends {
    app: App,
    tessera: SocketAddr,
    upstream: SocketAddr,
    cancel: CancellationToken,
    _dir: TempDir,
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Echoes the request: its path and query, and its headers as JSON (a
/// repeated header's values joined with `, `).
async fn echo(uri: axum::http::Uri, headers: HeaderMap) -> axum::Json<Value> {
    let mut seen = BTreeMap::<String, String>::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        seen.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    axum::Json(json!({"uri": uri.to_string(), "headers": seen}))
}

/// Tessera with the public URL `http://127.0.0.1:<proxy_port>` (the proxy
/// is trusted) and the echoing upstream.
async fn start_backends(proxy_port: u16) -> Backends {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("tessera.db").display());
    let public = format!("http://127.0.0.1:{proxy_port}");
    let settings = Settings::from_pairs(&[
        ("database_url", db.as_str()),
        ("public_url", public.as_str()),
        ("trusted_proxies", "127.0.0.1"),
        ("hash_threads", "2"),
    ])
    .expect("settings");
    let app = App::open(settings, Arc::new(SystemClock))
        .await
        .expect("app opens");
    let cancel = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tessera = listener.local_addr().expect("addr");
    tokio::spawn(tessera::listener::serve(
        listener,
        app.router(),
        tessera::listener::HEADER_READ_TIMEOUT,
        cancel.clone().cancelled_owned(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let router = axum::Router::new().fallback(echo);
    let stop = cancel.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    for (email, roles) in [
        ("alice@example.com", vec![]),
        ("root@example.com", vec!["admin".to_owned()]),
    ] {
        app.core
            .create_user_by(
                None,
                NewAccount {
                    email: email.to_owned(),
                    password: Password::new(PASSWORD.to_owned()),
                    roles,
                },
            )
            .await
            .expect("user created");
    }
    Backends {
        app,
        tessera,
        upstream,
        cancel,
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------
// The proxies, as plain processes

/// A proxy process, ended (by its id) with its process group when dropped.
struct Proxy {
    name: &'static str,
    child: Child,
    dir: TempDir,
    port: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Its own process group (nginx's workers too), by id.
        let pid = self.child.id() as i32;
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "error.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join(name)) {
                out.push_str(&format!("--- {name}\n{text}\n"));
            }
        }
        out
    }

    /// Waits until the proxy answers on its port.
    /// `Err` with its logs if it exited because its port was taken
    /// meanwhile (the port was free when chosen); panics on other failures.
    async fn ready(mut self) -> Result<Self, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let logs = self.logs();
                if logs.contains("in use") {
                    return Err(logs);
                }
                panic!("{} exited ({status}):\n{logs}", self.name);
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(self);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn(name: &'static str, mut command: Command, dir: TempDir, port: u16) -> Proxy {
    use std::os::unix::process::CommandExt;
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
    let child = command
        .stdin(Stdio::null())
        .stdout(stderr.try_clone().expect("log file"))
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} does not start ({e}); {INSTALL}"));
    Proxy {
        name,
        child,
        dir,
        port,
    }
}

/// nginx running the docs' recipe on `127.0.0.1:<port>`.
fn start_nginx(port: u16, backends: &Backends) -> Proxy {
    assert!(Path::new(NGINX).exists(), "no {NGINX}; {INSTALL}");
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = dir.path();
    let mut recipe = recipe("nginx");
    recipe = swap(&recipe, DOC_TESSERA, &backends.tessera.to_string());
    recipe = swap(&recipe, DOC_APP, &backends.upstream.to_string());
    recipe = swap(
        &recipe,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{port};"),
    );
    recipe = swap(
        &recipe,
        &format!("server_name {DOC_HOST};"),
        "server_name 127.0.0.1;",
    );
    // Plain HTTP on loopback instead of TLS.
    let recipe: String = recipe
        .lines()
        .filter(|l| !l.trim_start().starts_with("ssl_"))
        .map(|l| format!("        {l}\n"))
        .collect();
    for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(prefix.join("tmp").join(sub)).expect("temp dirs");
    }
    let p = prefix.display();
    // As root, the workers would switch to `nobody`, which cannot use the
    // private temporary directory.
    let user = if nix::unistd::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        "{user}
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
{recipe}}}
"
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let mut command = Command::new(NGINX);
    command
        .arg("-p")
        .arg(prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"]);
    spawn("nginx", command, dir, port)
}

/// Caddy running the docs' recipe on `127.0.0.1:<port>` (plain HTTP, no
/// admin endpoint, its state in its temporary directory).
fn start_caddy(port: u16, backends: &Backends) -> Proxy {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut recipe = recipe("caddyfile");
    recipe = swap(&recipe, DOC_TESSERA, &backends.tessera.to_string());
    recipe = swap(&recipe, DOC_APP, &backends.upstream.to_string());
    recipe = swap(
        &recipe,
        &format!("{DOC_HOST} {{"),
        &format!("http://127.0.0.1:{port} {{"),
    );
    let conf = format!("{{\n    admin off\n    auto_https off\n}}\n\n{recipe}\n");
    let conf_path = dir.path().join("Caddyfile");
    std::fs::write(&conf_path, conf).expect("write Caddyfile");
    let mut command = Command::new("caddy");
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf_path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    spawn("caddy", command, dir, port)
}

// ---------------------------------------------------------------------------
// The checks, the same for every recipe

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("form")
}

/// The upstream's echo of a request that reached it.
async fn upstream_saw(name: &str, r: reqwest::Response) -> Value {
    let status = r.status();
    let text = r.text().await.expect("body");
    assert_eq!(status, 200, "{name}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not the upstream: {text}"))
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name].as_str()
}

/// Signs in through the proxy with Tessera's API: the session cookie.
async fn sign_in(http: &reqwest::Client, base: &str, email: &str) -> (String, String) {
    let r = http
        .post(format!("{base}/v1/sessions"))
        .header("origin", base)
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 201, "login through the proxy");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{COOKIE}=")))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    let body: Value = r.json().await.expect("json");
    let user = body["user"]["id"].as_str().expect("user id").to_owned();
    (format!("{COOKIE}={cookie}"), user)
}

async fn check_recipe(proxy: &Proxy, backends: &Backends) {
    let name = proxy.name;
    let base = format!("http://127.0.0.1:{}", proxy.port);
    let http = client();
    let forged = [
        ("x-auth-user", "usr_forged"),
        ("x-auth-roles", "admin"),
        ("x-auth-method", "jwt"),
    ];
    let with_forged = |mut req: reqwest::RequestBuilder| {
        for (k, v) in forged {
            req = req.header(k, v);
        }
        req
    };

    // Anonymous: to the login page, which carries the URL back.
    let asked = format!("{base}/app/page?x=1");
    let r = with_forged(http.get(&asked)).send().await.expect("get");
    assert_eq!(r.status(), 302, "{name}: anonymous\n{}", proxy.logs());
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let login = location.strip_prefix(&base).unwrap_or(&location);
    assert_eq!(login, format!("/login?return_to={asked}"), "{name}");
    let page = http
        .get(format!("{base}{login}"))
        .send()
        .await
        .expect("login page");
    assert_eq!(page.status(), 200, "{name}");
    let html = page.text().await.expect("html");
    assert!(
        html.contains(&format!("name=\"return_to\" value=\"{asked}\""))
            || html.contains(&format!(
                "name=\"return_to\" value=\"{}\"",
                asked.replace('/', "&#x2f;")
            )),
        "{name}: the form carries return_to: {html}"
    );
    // The form sends the browser there after sign-in.
    let r = http
        .post(format!("{base}/login"))
        .header("origin", &base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("email", "alice@example.com"),
            ("password", PASSWORD),
            ("return_to", asked.as_str()),
        ]))
        .send()
        .await
        .expect("login form");
    assert_eq!(r.status(), 303, "{name}: form login");
    assert_eq!(r.headers()["location"], asked.as_str(), "{name}");

    // A forged identity alone gets nowhere either.
    let r = with_forged(http.get(format!("{base}/app/")))
        .header("authorization", "Bearer forged")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 302, "{name}: forged headers only");

    // Signed in: the app sees the user, by session, and nothing forged.
    let (cookie, alice) = sign_in(&http, &base, "alice@example.com").await;
    let echo = upstream_saw(
        name,
        with_forged(http.get(format!("{base}/app/page?x=1")))
            .header("cookie", format!("theme=dark; {cookie}; lang=en"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(echo["uri"], "/app/page?x=1", "{name}");
    assert_eq!(
        header(&echo, "x-auth-user"),
        Some(alice.as_str()),
        "{name}: {echo}"
    );
    assert_eq!(
        header(&echo, "x-auth-method"),
        Some("session"),
        "{name}: {echo}"
    );
    assert!(
        matches!(header(&echo, "x-auth-roles"), None | Some("")),
        "{name}: alice has no roles: {echo}"
    );
    let cookies = header(&echo, "cookie").unwrap_or("");
    assert!(
        !cookies.contains(COOKIE),
        "{name}: the session cookie went upstream: {echo}"
    );
    assert!(
        cookies.contains("theme=dark") && cookies.contains("lang=en"),
        "{name}: other cookies kept: {echo}"
    );
    // The session cookie first, or alone; and jwt-cookie mode's two
    // cookies anywhere beside it (this server reads only the session one).
    let access = "__Host-tessera_access=eyJhbGciOiJFZERTQSJ9.e30.c2ln";
    let refresh = "__Host-tessera_refresh=Zm9vYmFyYmF6";
    for (sent, kept) in [
        (format!("{cookie}; lang=en"), "lang=en"),
        (cookie.clone(), ""),
        (format!("theme=dark; {cookie}"), "theme=dark"),
        (format!("{access}; {cookie}; {refresh}; lang=en"), "lang=en"),
        (
            format!("theme=dark; {refresh}; {cookie}; {access}"),
            "theme=dark",
        ),
        (format!("{cookie}; {access}; {refresh}"), ""),
        (
            format!("a=1; {access}; b=2; {cookie}; c=3; {refresh}; d=4"),
            "a=1; b=2; c=3; d=4",
        ),
    ] {
        let echo = upstream_saw(
            name,
            http.get(format!("{base}/app/"))
                .header("cookie", &sent)
                .send()
                .await
                .expect("get"),
        )
        .await;
        assert_eq!(
            header(&echo, "cookie").unwrap_or(""),
            kept,
            "{name}: {sent}"
        );
    }

    // Already signed in: /login?return_to= goes straight back.
    let r = http
        .get(format!("{base}{login}"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 303, "{name}");
    assert_eq!(r.headers()["location"], asked.as_str(), "{name}");

    // The admin part: 403 without the role, through for an admin.
    let r = with_forged(http.get(format!("{base}/app/admin/")))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403, "{name}: alice is no admin");
    let r = http
        .get(format!("{base}/app/admin/"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 302, "{name}: anonymous admin part");
    let (root_cookie, root) = sign_in(&http, &base, "root@example.com").await;
    let echo = upstream_saw(
        name,
        with_forged(http.get(format!("{base}/app/admin/x")))
            .header("cookie", &root_cookie)
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(header(&echo, "x-auth-user"), Some(root.as_str()), "{name}");
    assert_eq!(header(&echo, "x-auth-roles"), Some("admin"), "{name}");
    assert_eq!(header(&echo, "x-auth-method"), Some("session"), "{name}");

    // A Bearer token: X-Auth-Method jwt.
    let r = http
        .post(format!("{base}/v1/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "password"),
            ("username", "alice@example.com"),
            ("password", PASSWORD),
        ]))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200, "{name}: password grant");
    let tokens: Value = r.json().await.expect("json");
    let access = tokens["access_token"].as_str().expect("access token");
    let echo = upstream_saw(
        name,
        with_forged(http.get(format!("{base}/app/api")))
            .header("authorization", format!("Bearer {access}"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(header(&echo, "x-auth-user"), Some(alice.as_str()), "{name}");
    assert_eq!(
        header(&echo, "x-auth-method"),
        Some("jwt"),
        "{name}: {echo}"
    );

    // /metrics stays private (Tessera itself answers it directly).
    let direct = http
        .get(format!("http://{}/metrics", backends.tessera))
        .send()
        .await
        .expect("metrics");
    assert_eq!(direct.status(), 200, "the public listener serves /metrics");
    for path in ["/metrics", "/metrics?x=1", "//metrics", "/%6Detrics"] {
        let r = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_ne!(r.status(), 200, "{name}: {path} through the proxy");
    }
    // Tessera's own pages are served on the same host.
    let r = http
        .get(format!("{base}/static/tessera.css"))
        .send()
        .await
        .expect("css");
    assert_eq!(r.status(), 200, "{name}: Tessera's pages through the proxy");
    let _ = &backends.app;
}

/// Tessera, the upstream and a proxy in front on a free port (tried again
/// on another port if that one was taken before the proxy bound it).
async fn start_with(start: fn(u16, &Backends) -> Proxy) -> (Proxy, Backends) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let backends = start_backends(port).await;
        match start(port, &backends).ready().await {
            Ok(proxy) => return (proxy, backends),
            Err(logs) => last = logs,
        }
    }
    panic!("no free port for the proxy after 5 tries:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nginx_recipe_works_as_documented() {
    let (nginx, backends) = start_with(start_nginx).await;
    check_recipe(&nginx, &backends).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caddy_recipe_works_as_documented() {
    let (caddy, backends) = start_with(start_caddy).await;
    check_recipe(&caddy, &backends).await;
}

/// The Traefik recipe is not run (Traefik is not packaged), but its
/// services must be defined and its headers the three.
#[test]
fn the_traefik_recipe_defines_what_it_uses() {
    let recipe = recipe("yaml");
    for needed in [
        "authResponseHeaders: [\"X-Auth-User\", \"X-Auth-Roles\", \"X-Auth-Method\"]",
        "authResponseHeadersRegex: \"^X-Auth-(User|Roles|Method)$\"",
        "service: app",
        "service: tessera",
        "    app:\n      loadBalancer:",
        "    tessera:\n      loadBalancer:",
        "!Path(`/metrics`)",
    ] {
        assert!(recipe.contains(needed), "the Traefik recipe lacks {needed}");
    }
}
