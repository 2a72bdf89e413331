//! Real-browser tests: Debian's Chromium driven through `chromedriver` with
//! fantoccini, against Tessera served over real TCP in-process.
//!
//! Tessera listens on `127.0.0.1:<port>` and is browsed as
//! `http://localhost:<port>` (its public URL), so its `Secure`, `__Host-`
//! cookies work over plain loopback HTTP (Chromium treats localhost as a
//! secure context). Each test starts its own chromedriver on a free loopback
//! port and a fresh profile directory per browser; the tests take turns
//! (one lock) so two cores are enough. Screenshots of every page go to
//! `<workspace>/test-artifacts/`.
//!
//! Missing `/usr/bin/chromium` or `/usr/bin/chromedriver` is a failure that
//! says how to install them, never a silent skip.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use common::PASSWORD;
use common::smtp::SmtpServer;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tempfile::TempDir;
use tessera::app::App;
use tessera::config::Settings;
use tessera::core::accounts::{NewAccount, Password};
use tessera::core::clock::SystemClock;
use tessera::core::sessions::{ClientInfo, NewSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str = "install: apt-get install chromium chromium-driver";
const NEW_PASSWORD: &str = "an entirely new passphrase";
/// The user agent of the "second device" the tests sign in besides the
/// browser.
const SECOND_DEVICE_UA: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:130.0) \
                                Gecko/20100101 Firefox/130.0";
const SECOND_DEVICE_IP: &str = "203.0.113.7";
const VERIFY_SUBJECT: &str = "Confirm your email address for Tessera";
const INVITE_SUBJECT: &str = "You are invited to Tessera";

/// One browser test at a time: each runs a Chromium (or two).
static BROWSER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn artifacts_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-artifacts"));
    std::fs::create_dir_all(&dir).expect("create test-artifacts/");
    dir
}

// ---------------------------------------------------------------------------
// Tessera over TCP

struct Server {
    app: App,
    base: String,
    addr: SocketAddr,
    cancel: CancellationToken,
    _dir: TempDir,
}

/// Listeners on one port of both loopback addresses: browsers may resolve
/// `localhost` to `::1` first, and that port must then be ours too, not
/// another program's.
async fn bind_loopback() -> (Vec<TcpListener>, u16) {
    for _ in 0..50 {
        let v4 = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = v4.local_addr().expect("local addr").port();
        match TcpListener::bind(("::1", port)).await {
            Ok(v6) => return (vec![v4, v6], port),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            // No IPv6 loopback here: nobody can answer on ::1 either.
            Err(_) => return (vec![v4], port),
        }
    }
    panic!("no loopback port free on both 127.0.0.1 and ::1");
}

/// Tessera on loopback with the public URL `http://<host>:<port>` (a host
/// other than localhost is mapped to loopback by the browser's
/// `--host-resolver-rules`, see [`open_browser_with`]).
async fn start_tessera_on(host: &str) -> Server {
    start_tessera_with(host, &[]).await
}

/// [`start_tessera_on`] with more settings (`smtp_url`, …).
async fn start_tessera_with(host: &str, extra: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let (listeners, port) = bind_loopback().await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let base = format!("http://{host}:{port}");
    let db = format!("sqlite://{}", dir.path().join("tessera.db").display());
    let mut pairs = vec![
        ("database_url", db.as_str()),
        ("public_url", base.as_str()),
        ("hash_threads", "2"),
    ];
    pairs.extend_from_slice(extra);
    let settings = Settings::from_pairs(&pairs).expect("settings");
    let app = App::open(settings, Arc::new(SystemClock))
        .await
        .expect("app opens");
    let cancel = CancellationToken::new();
    for listener in listeners {
        serve(listener, app.router(), cancel.clone());
    }
    Server {
        app,
        base,
        addr,
        cancel,
        _dir: dir,
    }
}

fn serve(listener: TcpListener, service: tessera::http::Endpoint, cancel: CancellationToken) {
    tokio::spawn(tessera::listener::serve(
        listener,
        service,
        tessera::listener::HEADER_READ_TIMEOUT,
        cancel.cancelled_owned(),
    ));
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A second device signed in to `email` (as if from a Mac with Firefox).
    async fn second_device(&self, email: &str, password: &str) -> NewSession {
        self.app
            .core
            .login(
                email,
                Password::new(password.to_owned()),
                None,
                ClientInfo {
                    ip: Some(SECOND_DEVICE_IP.to_owned()),
                    user_agent: Some(SECOND_DEVICE_UA.to_owned()),
                },
            )
            .await
            .expect("second device signs in")
    }

    /// Status of `GET path` over real TCP with this cookie value.
    async fn status_with_cookie(&self, path: &str, secret: &str) -> u16 {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nCookie: __Host-tessera_session={secret}\r\n\
             Connection: close\r\n\r\n",
            self.addr.port()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        let text = String::from_utf8_lossy(&response);
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"))
    }

    async fn session_is_alive(&self, session: &NewSession) -> bool {
        let by_core = self
            .app
            .core
            .authenticate_session(&session.secret)
            .await
            .is_ok();
        let by_http = self
            .status_with_cookie("/v1/me", session.secret.expose())
            .await
            == 200;
        assert_eq!(by_core, by_http, "the core and /v1/me agree");
        by_core
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

// ---------------------------------------------------------------------------
// chromedriver and Chromium

struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver runs in its own process group with the Chromium it
        // started: end the whole group (by its id), not just chromedriver.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn start_driver() -> Driver {
    for binary in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing; the browser tests need Debian's Chromium ({INSTALL})"
        );
    }
    for _attempt in 0..5 {
        let port = free_port();
        let mut child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e} ({INSTALL})"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken, most likely: try another
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                // Still alive once listening: the port is chromedriver's,
                // not some other program's that took it meanwhile.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(None) = child.try_wait() {
                    return Driver {
                        child,
                        url: format!("http://127.0.0.1:{port}"),
                    };
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.start_kill();
    }
    panic!("chromedriver did not start listening ({INSTALL})");
}

/// A Chromium window with its own fresh profile.
struct Browser {
    client: Client,
    _profile: TempDir,
}

async fn open_browser(driver: &Driver) -> Browser {
    open_browser_with(driver, &[]).await
}

/// [`open_browser`] with more Chromium arguments.
async fn open_browser_with(driver: &Driver, extra_args: &[&str]) -> Browser {
    open_browser_options(driver, extra_args, serde_json::Map::new()).await
}

/// [`open_browser_with`] with more `goog:chromeOptions` (`mobileEmulation`).
async fn open_browser_options(
    driver: &Driver,
    extra_args: &[&str],
    options: serde_json::Map<String, serde_json::Value>,
) -> Browser {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--window-size=1024,768".to_owned(),
        // No crash handler process outliving a killed browser.
        "--disable-crash-reporter".to_owned(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    args.extend(extra_args.iter().map(|a| (*a).to_owned()));
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    let mut chrome_options = options;
    chrome_options.insert("binary".into(), json!(CHROMIUM));
    chrome_options.insert("args".into(), json!(args));
    caps.insert("goog:chromeOptions".into(), chrome_options.into());
    let mut last_error = String::new();
    for _ in 0..50 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => {
                return Browser {
                    client,
                    _profile: profile,
                };
            }
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no Chromium session from chromedriver: {last_error} ({INSTALL})");
}

impl Browser {
    async fn close(self) {
        let _ = self.client.close().await;
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .path()
            .to_owned()
    }

    async fn host_port(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        )
    }

    async fn body(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .expect("body")
            .text()
            .await
            .expect("body text")
    }

    /// Waits until the page at `path` is shown.
    async fn wait_for_path(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = self.path().await;
            if now == path {
                // And its document is there.
                if self.client.find(Locator::Css("footer")).await.is_ok() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "expected the page {path}, the browser shows {now}:\n{}",
                    self.body().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let input = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        input.clear().await.expect("clear");
        input.send_keys(value).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// The text of `css`, waiting for it to appear: a form posted back to
    /// its own page (a refused login on `/login`) leaves the path as it was,
    /// so `wait_for_path` may return while the old document is still shown.
    async fn text_of(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => {
                    if let Ok(text) = element.text().await {
                        return text;
                    }
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("no {css}: {e}\n{}", self.body().await)
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .len()
    }

    async fn attr(&self, css: &str, name: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .attr(name)
            .await
            .expect("attr")
            .unwrap_or_default()
    }

    /// A PNG of the whole page in `test-artifacts/`: the window is grown
    /// to the page's height (plus the browser's own frame) first.
    async fn screenshot(&self, name: &str) {
        let dims = self
            .client
            .execute(
                "return [Math.ceil(document.documentElement.scrollHeight), \
                 window.outerHeight - window.innerHeight]",
                vec![],
            )
            .await
            .expect("page size");
        let content = dims[0].as_u64().unwrap_or(768);
        let frame = dims[1].as_u64().unwrap_or(0);
        let height = (content + frame).clamp(768, 4000);
        let _ = self.client.set_window_size(1024, height as u32).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let _ = self.client.set_window_size(1024, 768).await;
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = artifacts_dir().join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Registers through the form; ends on `/account`.
    async fn register(&self, server: &Server, email: &str) {
        self.goto(&server.url("/register")).await;
        self.fill("#email", email).await;
        self.fill("#password", PASSWORD).await;
        self.fill("#confirm_password", PASSWORD).await;
        self.click("#register-form button[type=submit]").await;
        self.wait_for_path("/account").await;
    }

    /// Fills and submits the login form (whatever the outcome).
    async fn submit_login(&self, server: &Server, email: &str, password: &str) {
        self.goto(&server.url("/login")).await;
        self.wait_for_path("/login").await;
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("#login-form button[type=submit]").await;
    }

    /// The HTTP status of the document shown (Chromium's navigation
    /// timing: the final response of the last navigation, a form's post
    /// included). Call it once the page is known to be the new one.
    async fn status(&self) -> u16 {
        let status = self
            .client
            .execute(
                "return performance.getEntriesByType('navigation')[0].responseStatus",
                vec![],
            )
            .await
            .expect("navigation timing");
        status
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or_else(|| panic!("no response status: {status:?}"))
    }

    async fn signed_in_as(&self, server: &Server, email: &str) -> bool {
        self.goto(&server.url("/account")).await;
        self.path().await == "/account" && self.text_of("#profile-email").await == email
    }
}

/// chromedriver, Tessera and one browser, for one test.
struct Harness {
    server: Server,
    driver: Driver,
    browser: Browser,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

async fn harness() -> Harness {
    harness_with(&[]).await
}

/// [`harness`] with more settings for Tessera.
async fn harness_with(settings: &[(&str, &str)]) -> Harness {
    let turn = BROWSER_TURN.lock().await;
    let server = start_tessera_with("localhost", settings).await;
    let driver = start_driver().await;
    let browser = open_browser(&driver).await;
    Harness {
        server,
        driver,
        browser,
        _turn: turn,
    }
}

impl Harness {
    async fn finish(self) {
        let Harness {
            server,
            driver,
            browser,
            _turn,
        } = self;
        browser.close().await;
        drop(driver);
        server.app.close().await;
    }
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_log_in_through_the_forms() {
    let h = harness().await;
    let (s, b) = (&h.server, &h.browser);

    // `/` sends a visitor to the login page.
    b.goto(&s.url("/")).await;
    b.wait_for_path("/login").await;
    b.screenshot("login.png").await;
    b.click("a[href='/register'].switch, .switch a[href='/register']")
        .await;
    b.wait_for_path("/register").await;
    b.screenshot("register.png").await;

    // Register: signed in straight away.
    b.register(s, "alice@example.com").await;
    assert!(b.text_of("#flash").await.contains("Welcome"));
    assert_eq!(b.text_of("#profile-email").await, "alice@example.com");
    assert_eq!(b.count(".session-row").await, 1);

    // Sign out from the header.
    b.click(".topbar form[action='/logout'] button").await;
    b.wait_for_path("/login").await;
    assert!(b.text_of(".alert-ok").await.contains("signed out"));
    b.goto(&s.url("/account")).await;
    b.wait_for_path("/login").await;

    // Wrong password and unknown email read the same.
    b.submit_login(s, "alice@example.com", "not the right password")
        .await;
    b.wait_for_path("/login").await;
    let wrong_password = b.text_of("#form-error").await;
    assert_eq!(wrong_password, "The email or password is incorrect.");
    // The email stays in the form, the password does not.
    assert_eq!(b.attr("#email", "value").await, "alice@example.com");
    assert_eq!(b.attr("#password", "value").await, "");
    b.screenshot("login-error.png").await;
    b.submit_login(s, "nobody@example.com", PASSWORD).await;
    b.wait_for_path("/login").await;
    assert_eq!(b.text_of("#form-error").await, wrong_password);

    // The right password signs in.
    b.submit_login(s, "alice@example.com", PASSWORD).await;
    b.wait_for_path("/account").await;
    assert_eq!(b.text_of("#profile-email").await, "alice@example.com");
    // A signed-in visitor of /login or / goes to the account.
    b.goto(&s.url("/login")).await;
    b.wait_for_path("/account").await;
    b.goto(&s.url("/")).await;
    b.wait_for_path("/account").await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_cannot_read_the_session_cookie() {
    let h = harness().await;
    let (s, b) = (&h.server, &h.browser);
    b.register(s, "carol@example.com").await;
    let visible = b
        .client
        .execute("return document.cookie", vec![])
        .await
        .expect("script runs");
    let visible = visible.as_str().unwrap_or_default();
    assert!(
        !visible.contains("tessera_session"),
        "document.cookie shows {visible:?}"
    );
    // The browser does hold it, HttpOnly, Secure, SameSite=Lax, host-only.
    let cookies = b.client.get_all_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name() == "__Host-tessera_session")
        .unwrap_or_else(|| panic!("the session cookie is set: {cookies:?}"));
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Lax)");
    assert_eq!(session.path(), Some("/"));
    assert_eq!(session.value().len(), 43);
    // And the page never shows it.
    let source = b.client.source().await.expect("page source");
    assert!(!source.contains(session.value()));
    assert!(b.signed_in_as(s, "carol@example.com").await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_lists_a_second_device_and_signs_it_out() {
    let h = harness().await;
    let (s, b) = (&h.server, &h.browser);
    b.register(s, "dave@example.com").await;
    let second = s.second_device("dave@example.com", PASSWORD).await;
    assert!(s.session_is_alive(&second).await);

    b.goto(&s.url("/account")).await;
    b.wait_for_path("/account").await;
    assert_eq!(b.count(".session-row").await, 2);
    let second_row = format!(".session-row[data-session='{}']", second.auth.session.id);
    let row = b.text_of(&second_row).await;
    assert!(row.contains("Firefox on macOS"), "{row}");
    assert!(row.contains(SECOND_DEVICE_IP), "{row}");
    assert!(!row.contains("This device"));
    let mine = b.text_of(".session-row.current").await;
    assert!(mine.contains("This device"), "{mine}");
    assert!(mine.contains("127.0.0.1") || mine.contains("::1"), "{mine}");
    b.screenshot("account.png").await;

    b.click(&format!("{second_row} button[type=submit]")).await;
    b.wait_for_path("/account").await;
    assert!(b.text_of("#flash").await.contains("signed out"));
    assert_eq!(b.count(".session-row").await, 1);
    assert!(
        !s.session_is_alive(&second).await,
        "the second device is out"
    );
    assert!(b.signed_in_as(s, "dave@example.com").await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_everywhere_ends_every_session() {
    let h = harness().await;
    let (s, b) = (&h.server, &h.browser);
    b.register(s, "erin@example.com").await;
    let second = s.second_device("erin@example.com", PASSWORD).await;
    b.goto(&s.url("/account")).await;
    assert_eq!(b.count(".session-row").await, 2);

    b.click("#logout-all-form button[type=submit]").await;
    b.wait_for_path("/login").await;
    assert!(b.text_of(".alert-ok").await.contains("every device"));
    assert!(!s.session_is_alive(&second).await);
    let user = s
        .app
        .core
        .list_users(&tessera::core::accounts::UserQuery {
            email_contains: Some("erin@".into()),
            limit: 1,
            after_id: None,
        })
        .await
        .expect("users");
    assert!(
        s.app
            .core
            .sessions_of(&user[0].id)
            .await
            .expect("sessions")
            .is_empty()
    );
    b.goto(&s.url("/account")).await;
    b.wait_for_path("/login").await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_signs_out_other_devices() {
    let h = harness().await;
    let (s, b) = (&h.server, &h.browser);
    b.register(s, "frank@example.com").await;
    let second = s.second_device("frank@example.com", PASSWORD).await;
    b.goto(&s.url("/account")).await;
    assert_eq!(b.count(".session-row").await, 2);

    // A wrong current password is refused on the page.
    b.fill("#current_password", "not my password").await;
    b.fill("#new_password", NEW_PASSWORD).await;
    b.fill("#confirm_password", NEW_PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.wait_for_path("/account/password").await;
    assert_eq!(
        b.text_of("#form-error").await,
        "The current password is incorrect."
    );
    assert!(s.session_is_alive(&second).await);

    b.goto(&s.url("/account")).await;
    b.fill("#current_password", PASSWORD).await;
    b.fill("#new_password", NEW_PASSWORD).await;
    b.fill("#confirm_password", NEW_PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.wait_for_path("/account").await;
    assert!(b.text_of("#flash").await.contains("password was changed"));
    assert_eq!(b.count(".session-row").await, 1, "only this device is left");
    assert!(!s.session_is_alive(&second).await);
    // This browser got a fresh session and stays signed in.
    assert!(b.signed_in_as(s, "frank@example.com").await);

    // The old password no longer works; the new one does.
    b.click(".topbar form[action='/logout'] button").await;
    b.wait_for_path("/login").await;
    b.submit_login(s, "frank@example.com", PASSWORD).await;
    b.wait_for_path("/login").await;
    assert_eq!(
        b.text_of("#form-error").await,
        "The email or password is incorrect."
    );
    b.submit_login(s, "frank@example.com", NEW_PASSWORD).await;
    b.wait_for_path("/account").await;
    h.finish().await;
}

/// A forgotten password, the whole way through the pages and real mail:
/// the login page's link to `/forgot`, the form there, the message a real
/// SMTP server received, its link opened in Chromium, the new password set
/// on `/reset`. Then the new password signs in through the form and the
/// old one is refused, the other browser signed in to the account and the
/// second device are signed out, the link works only once, and the user is
/// told by mail that the password changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_password_is_reset_by_mail_and_everything_else_signed_out() {
    let smtp = SmtpServer::start();
    let h = harness_with(&[("smtp_url", &smtp.url())]).await;
    let (s, b) = (&h.server, &h.browser);
    let email = "gwen@example.com";
    s.app
        .core
        .register(NewAccount {
            email: email.into(),
            password: Password::new(PASSWORD.into()),
            roles: Vec::new(),
        })
        .await
        .expect("account");
    // Signed in elsewhere: another browser (its own profile), through the
    // form, and a second device.
    let other = open_browser(&h.driver).await;
    other.submit_login(s, email, PASSWORD).await;
    other.wait_for_path("/account").await;
    let second = s.second_device(email, PASSWORD).await;
    assert!(s.session_is_alive(&second).await);

    // The login page leads to /forgot.
    b.goto(&s.url("/login")).await;
    b.wait_for_path("/login").await;
    assert_eq!(
        b.text_of("a[href='/forgot']").await,
        "Forgot your password?"
    );
    b.click("a[href='/forgot']").await;
    b.wait_for_path("/forgot").await;
    b.fill("#email", email).await;
    b.click("#forgot-form button[type=submit]").await;
    let sent = b.text_of("#form-done").await;
    assert!(
        sent.contains("a link to reset its password is on its way"),
        "{sent}"
    );
    b.screenshot("forgot-sent.png").await;

    // The mail, delivered to the SMTP server, carries the link.
    let mail = smtp
        .wait_for_subject(email, "Reset your Tessera password")
        .await;
    let link = mail.link_with("/reset?token=").expect("a reset link");
    assert!(
        link.starts_with(&format!("{}/reset?token=", s.base)),
        "{link}"
    );
    // Asking changed nothing yet.
    assert!(s.session_is_alive(&second).await);

    // The link opens the form; a new password is set there.
    b.goto(&link).await;
    b.wait_for_path("/reset").await;
    b.screenshot("reset.png").await;
    b.fill("#password", NEW_PASSWORD).await;
    b.fill("#confirm_password", NEW_PASSWORD).await;
    b.click("#reset-form button[type=submit]").await;
    b.wait_for_path("/login").await;
    assert!(
        b.text_of(".alert-ok")
            .await
            .contains("Your new password is set")
    );

    // Everything that was signed in is signed out: the second device, and
    // the other browser at its next page load.
    assert!(!s.session_is_alive(&second).await);
    other.goto(&s.url("/account")).await;
    other.wait_for_path("/login").await;

    // The old password is refused through the form; the new one works.
    b.submit_login(s, email, PASSWORD).await;
    b.wait_for_path("/login").await;
    assert_eq!(
        b.text_of("#form-error").await,
        "The email or password is incorrect."
    );
    b.submit_login(s, email, NEW_PASSWORD).await;
    b.wait_for_path("/account").await;
    assert_eq!(b.text_of("#profile-email").await, email);
    assert_eq!(b.count(".session-row").await, 1, "only this browser");

    // The link works once: opened again, it is refused, with the way out.
    b.goto(&link).await;
    b.wait_for_path("/reset").await;
    b.fill("#password", "a third passphrase").await;
    b.fill("#confirm_password", "a third passphrase").await;
    b.click("#reset-form button[type=submit]").await;
    assert!(
        b.text_of("#form-error")
            .await
            .contains("invalid, used or expired"),
        "{}",
        b.body().await
    );
    assert!(b.count("a[href='/forgot']").await >= 1);
    assert!(b.signed_in_as(s, email).await);

    // And the user is told.
    let notice = smtp
        .wait_for_subject(email, "Your Tessera password was changed")
        .await;
    assert!(notice.link_with("token=").is_none());
    other.close().await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_suspends_a_user_whose_open_browser_is_then_refused() {
    let h = harness().await;
    let (s, admin) = (&h.server, &h.browser);
    s.app
        .core
        .register(NewAccount {
            email: "root@example.com".into(),
            password: Password::new(PASSWORD.into()),
            roles: vec!["admin".into()],
        })
        .await
        .expect("admin account");
    // The user, in a second browser with its own profile.
    let user = open_browser(&h.driver).await;
    user.register(s, "mallory@example.com").await;
    // Not an admin: the admin page refuses.
    user.goto(&s.url("/admin")).await;
    assert!(user.body().await.contains("admin role"));
    user.screenshot("admin-forbidden.png").await;

    // The admin signs in on the way to /admin and lands there.
    admin.goto(&s.url("/admin")).await;
    admin.wait_for_path("/login").await;
    admin.fill("#email", "root@example.com").await;
    admin.fill("#password", PASSWORD).await;
    admin.click("#login-form button[type=submit]").await;
    admin.wait_for_path("/admin").await;
    assert_eq!(admin.count(".user-row").await, 2);
    assert!(admin.count("#keys-table tbody tr").await >= 1);
    assert!(admin.count(".audit-row").await >= 2);

    let row = ".user-row[data-email='mallory@example.com']";
    admin
        .click(&format!("{row} form[action='/admin/users/status'] button"))
        .await;
    admin.wait_for_path("/admin").await;
    assert!(admin.text_of("#flash").await.contains("suspended"));
    assert!(admin.text_of(row).await.contains("suspended"));
    admin.screenshot("admin.png").await;
    // The last active admin cannot suspend themself: the core refuses
    // (`last_admin`), the page says why, and they stay signed in.
    let own = ".user-row[data-email='root@example.com'] form[action='/admin/users/status'] button";
    admin.click(own).await;
    admin.wait_for_path("/admin/users/status").await;
    assert!(
        admin.text_of("#flash").await.contains(
            "You are the last active administrator: you cannot suspend your own account."
        ),
        "{}",
        admin.body().await
    );
    let own_row = ".user-row[data-email='root@example.com']";
    let own_text = admin.text_of(own_row).await;
    assert!(own_text.contains("active") && !own_text.contains("suspended"));

    // The user's open browser is refused at its next page load.
    user.goto(&s.url("/account")).await;
    user.wait_for_path("/login").await;
    // And cannot sign in again; it is told why only with the right password.
    user.submit_login(s, "mallory@example.com", PASSWORD).await;
    user.wait_for_path("/login").await;
    assert_eq!(
        user.text_of("#form-error").await,
        "This account is suspended."
    );
    user.screenshot("login-suspended.png").await;

    // The audit log shows the suspension, filtered by type.
    admin.goto(&s.url("/admin?type=user_suspended")).await;
    assert_eq!(admin.count(".audit-row").await, 1);

    // Reactivated, the user can sign in again.
    admin.goto(&s.url("/admin")).await;
    admin
        .click(&format!("{row} form[action='/admin/users/status'] button"))
        .await;
    admin.wait_for_path("/admin").await;
    assert!(admin.text_of("#flash").await.contains("reactivated"));
    user.submit_login(s, "mallory@example.com", PASSWORD).await;
    user.wait_for_path("/account").await;
    user.close().await;
    h.finish().await;
}

/// The attacker's site: pages whose forms post to Tessera.
async fn start_attacker(tessera: &str) -> (u16, CancellationToken) {
    let (listeners, port) = bind_loopback().await;
    let target = tessera.to_owned();
    let page = move |action: &'static str, fields: &'static [(&'static str, &'static str)]| {
        let target = target.clone();
        move |Query(q): Query<HashMap<String, String>>| {
            let target = target.clone();
            async move {
                let mut inputs: String = fields
                    .iter()
                    .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{v}\">"))
                    .collect();
                if let Some(token) = q.get("t") {
                    // base64url: nothing to escape.
                    inputs.push_str(&format!(
                        "<input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">"
                    ));
                }
                Html(format!(
                    "<!doctype html><title>Win a prize</title><h1>You won!</h1>\
                     <form method=\"post\" action=\"{target}{action}\">{inputs}\
                     <button id=\"go\" type=\"submit\">Claim</button></form>"
                ))
            }
        }
    };
    let app = axum::Router::new()
        .route("/logout", get(page("/logout", &[])))
        .route(
            "/password",
            get(page(
                "/account/password",
                &[
                    ("current_password", PASSWORD),
                    ("new_password", "attacker chose this"),
                    ("confirm_password", "attacker chose this"),
                ],
            )),
        )
        .route(
            "/login",
            get(page(
                "/login",
                &[("email", "eve@example.com"), ("password", PASSWORD)],
            )),
        );
    let cancel = CancellationToken::new();
    for listener in listeners {
        let (app, stop) = (app.clone(), cancel.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }
    (port, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_posted_from_another_origin_are_refused() {
    let h = harness().await;
    let (s, b) = (&h.server, &h.browser);
    s.app
        .core
        .register(NewAccount {
            email: "eve@example.com".into(),
            password: Password::new(PASSWORD.into()),
            roles: Vec::new(),
        })
        .await
        .expect("attacker account");
    b.register(s, "victim@example.com").await;
    // The victim's real form token, as if it had leaked: the Origin check
    // alone must still refuse the post.
    let token = b
        .attr("#logout-all-form input[name=csrf_token]", "value")
        .await;
    assert_eq!(token.len(), 43);
    let (port, stop) = start_attacker(&s.base).await;
    let tessera = s.base.trim_start_matches("http://").to_owned();

    // Same site, other port (`localhost:B` → `localhost:A`): the Lax cookie
    // is sent, so only the CSRF checks stand in the way.
    for (page, with_token) in [
        ("/logout", false),
        ("/logout", true),
        ("/password", false),
        ("/password", true),
    ] {
        let query = if with_token {
            format!("?t={token}")
        } else {
            String::new()
        };
        b.goto(&format!("http://localhost:{port}{page}{query}"))
            .await;
        assert!(b.body().await.contains("You won!"));
        b.click("#go").await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while b.host_port().await != tessera && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body = b.body().await;
        assert!(
            body.contains("Request refused") && body.contains("csrf_failed"),
            "{page} with token {with_token}: {body}"
        );
        if page == "/logout" && with_token {
            b.screenshot("csrf-refused.png").await;
        }
        assert!(
            b.signed_in_as(s, "victim@example.com").await,
            "{page}: the victim stays signed in"
        );
    }

    // Login CSRF: signing the victim into the attacker's account is refused.
    b.goto(&format!("http://localhost:{port}/login")).await;
    b.click("#go").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.host_port().await != tessera && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.body().await.contains("csrf_failed"));
    assert!(b.signed_in_as(s, "victim@example.com").await);

    // Cross site (`127.0.0.1:B` → `localhost:A`): the Lax cookie is not
    // even sent with the post.
    b.goto(&format!("http://127.0.0.1:{port}/logout?t={token}"))
        .await;
    b.click("#go").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.host_port().await != tessera && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.signed_in_as(s, "victim@example.com").await);

    // Nothing changed: the password is the same, no logout was recorded.
    let changed = s
        .app
        .core
        .audit_events(Some("password_changed"), None, 10)
        .await
        .expect("audit");
    assert!(changed.is_empty(), "{changed:?}");
    let logouts = s
        .app
        .core
        .audit_events(Some("logout"), None, 10)
        .await
        .expect("audit");
    assert!(logouts.is_empty(), "{logouts:?}");
    let victim = s.second_device("victim@example.com", PASSWORD).await;
    assert!(s.session_is_alive(&victim).await);
    stop.cancel();
    h.finish().await;
}

// ---------------------------------------------------------------------------
// A browser on the wrong address, and a browser that refuses the cookie

/// The issue as a newcomer met it: `serve` listens on `127.0.0.1:P`, the
/// public URL is `http://localhost:P`, and the browser opened the former.
/// Signing in is refused (that cannot change: the page's origin is not the
/// public URL's), but the page says which address to open, and its button
/// goes there; signing in there works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_on_the_listen_address_says_to_open_the_public_url() {
    let h = harness().await;
    let (s, b) = (&h.server, &h.browser);
    s.app
        .core
        .register(NewAccount {
            email: "nina@example.com".into(),
            password: Password::new(PASSWORD.into()),
            roles: Vec::new(),
        })
        .await
        .expect("account");
    let listen = format!("http://127.0.0.1:{}", s.addr.port());
    b.goto(&format!("{listen}/login")).await;
    b.wait_for_path("/login").await;
    b.fill("#email", "nina@example.com").await;
    b.fill("#password", PASSWORD).await;
    b.click("#login-form button[type=submit]").await;
    let message = b.text_of(".alert-error").await;
    for needed in [
        format!("sent from a page at {listen}"),
        format!("its public URL, {}", s.base),
        "reloading will not help".to_owned(),
        format!("open {} in your browser", s.base),
        format!("set TESSERA_PUBLIC_URL to {listen}"),
    ] {
        assert!(message.contains(&needed), "{needed:?} in {message}");
    }
    assert!(b.body().await.contains("csrf_failed"));
    b.screenshot("csrf-wrong-address.png").await;
    // The button leads to the public URL, where signing in works.
    b.click("#continue-to").await;
    b.wait_for_path("/login").await;
    assert_eq!(b.host_port().await, s.base.trim_start_matches("http://"));
    b.submit_login(s, "nina@example.com", PASSWORD).await;
    b.wait_for_path("/account").await;
    assert_eq!(b.text_of("#profile-email").await, "nina@example.com");
    h.finish().await;
}

/// Plain HTTP on a host other than localhost, for real: Chromium resolves
/// `tessera.test` to loopback (`--host-resolver-rules`) but does not treat it
/// as a secure context, so it drops the `Secure` `__Host-` session cookie.
/// A correct sign-in then lands back on the login page, which now says why
/// and what to do instead of showing an empty form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_drops_the_secure_cookie_is_told_why() {
    let turn = BROWSER_TURN.lock().await;
    let server = start_tessera_on("tessera.test").await;
    let driver = start_driver().await;
    let browser = open_browser_with(
        &driver,
        &["--host-resolver-rules=MAP tessera.test 127.0.0.1"],
    )
    .await;
    let h = Harness {
        server,
        driver,
        browser,
        _turn: turn,
    };
    let (s, b) = (&h.server, &h.browser);
    s.app
        .core
        .register(NewAccount {
            email: "olga@example.com".into(),
            password: Password::new(PASSWORD.into()),
            roles: Vec::new(),
        })
        .await
        .expect("account");
    b.submit_login(s, "olga@example.com", PASSWORD).await;
    let explanation = b.text_of("#cookie-refused").await;
    assert_eq!(b.path().await, "/login");
    for needed in [
        "your browser refused the session cookie",
        "plain HTTP",
        s.base.as_str(),
        "HTTPS",
        "TESSERA_COOKIE_SECURE=false",
    ] {
        assert!(explanation.contains(needed), "{needed:?} in {explanation}");
    }
    // The browser really holds no session cookie, and the page consumed
    // the marker.
    let cookies = b.client.get_all_cookies().await.expect("cookies");
    assert!(
        cookies
            .iter()
            .all(|c| !c.name().contains("tessera_session") && c.name() != "tessera_signed_in"),
        "{cookies:?}"
    );
    b.screenshot("login-cookie-refused.png").await;
    // Reloading shows the plain form again (the explanation was consumed).
    b.goto(&s.url("/login")).await;
    b.wait_for_path("/login").await;
    assert_eq!(b.count("#cookie-refused").await, 0);
    h.finish().await;
}

// ---------------------------------------------------------------------------
// Joining: email verification, invitations, closed registration

/// `email_verification = required`, the whole way through the pages and
/// real mail: registering does not sign in but says a link was mailed;
/// signing in before the link is used is refused with a way to ask for a
/// new link; that form mails a second link; the first link, opened in
/// Chromium, shows a button whose post verifies the address; then the form
/// signs in. The used link, confirmed again, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_verify_by_mail_then_sign_in() {
    let smtp = SmtpServer::start();
    let h = harness_with(&[
        ("smtp_url", &smtp.url()),
        ("email_verification", "required"),
    ])
    .await;
    let (s, b) = (&h.server, &h.browser);
    let email = "hana@example.com";

    // Registering through the form lands on the login page, not signed in.
    b.goto(&s.url("/register")).await;
    b.wait_for_path("/register").await;
    b.fill("#email", email).await;
    b.fill("#password", PASSWORD).await;
    b.fill("#confirm_password", PASSWORD).await;
    b.click("#register-form button[type=submit]").await;
    b.wait_for_path("/login").await;
    let flash = b.text_of(".alert-ok").await;
    assert!(
        flash.contains("We mailed you a link to verify your email address"),
        "{flash}"
    );
    assert_eq!(b.count("#form-error").await, 0);
    b.screenshot("register-verify-sent.png").await;
    let cookies = b.client.get_all_cookies().await.expect("cookies");
    assert!(
        cookies
            .iter()
            .all(|c| !c.name().contains("tessera_session")),
        "{cookies:?}"
    );
    assert!(!b.signed_in_as(s, email).await);
    b.wait_for_path("/login").await;
    let user = s.app.core.find_user(email).await.expect("the account");
    assert!(!user.email_verified);
    let first = smtp.wait_for_subject(email, VERIFY_SUBJECT).await;
    let first_link = first
        .link_with("/verify-email?token=")
        .expect("a verification link");
    assert!(
        first_link.starts_with(&format!("{}/verify-email?token=", s.base)),
        "{first_link}"
    );

    // Signing in before the link is used: refused (403), with the way to a
    // new link.
    b.submit_login(s, email, PASSWORD).await;
    let error = b.text_of("#form-error").await;
    assert!(error.contains("not verified yet"), "{error}");
    assert_eq!(b.path().await, "/login");
    assert_eq!(b.status().await, 403);
    assert_eq!(
        b.text_of("#resend-verification a").await,
        "Send a new verification link"
    );
    b.screenshot("login-unverified.png").await;
    // A wrong password says nothing about verification.
    b.submit_login(s, email, "not the right password").await;
    assert_eq!(
        b.text_of("#form-error").await,
        "The email or password is incorrect."
    );
    assert_eq!(b.count("#resend-verification").await, 0);
    b.submit_login(s, email, PASSWORD).await;
    b.text_of("#resend-verification").await;

    // The link leads to a form that mails a second link.
    b.click("#resend-verification a").await;
    b.wait_for_path("/verify-email").await;
    assert_eq!(b.count("#verify-form").await, 0);
    b.fill("#resend-form #email", email).await;
    b.screenshot("verify-resend.png").await;
    b.click("#resend-form button[type=submit]").await;
    let done = b.text_of("#form-done").await;
    assert!(done.contains("a new link is on its way"), "{done}");
    assert_eq!(b.path().await, "/verify-email/resend");
    b.screenshot("verify-resent.png").await;
    let mails = smtp.wait_for(email, 2).await;
    let second_link = mails[1]
        .link_with("/verify-email?token=")
        .expect("a second verification link");
    assert_ne!(second_link, first_link);
    assert!(!s.app.core.find_user(email).await.unwrap().email_verified);

    // The first link opens a page with a button; only its post verifies.
    b.goto(&first_link).await;
    b.wait_for_path("/verify-email").await;
    assert_eq!(
        b.text_of("#verify-form button[type=submit]").await,
        "Confirm my email address"
    );
    assert!(
        !s.app.core.find_user(email).await.unwrap().email_verified,
        "opening the link alone verifies nothing"
    );
    b.screenshot("verify-confirm.png").await;
    b.click("#verify-form button[type=submit]").await;
    let verified = b.text_of("#form-done").await;
    assert!(
        verified.contains(&format!("{email} is verified")),
        "{verified}"
    );
    assert_eq!(b.count("#verify-form").await, 0);
    b.screenshot("verify-done.png").await;
    assert!(s.app.core.find_user(email).await.unwrap().email_verified);

    // Its "Sign in" link, then the form: signed in.
    b.click("main a[href='/login']").await;
    b.wait_for_path("/login").await;
    b.fill("#email", email).await;
    b.fill("#password", PASSWORD).await;
    b.click("#login-form button[type=submit]").await;
    b.wait_for_path("/account").await;
    assert!(b.signed_in_as(s, email).await);

    // The used link, confirmed again, is refused and offers a new one.
    b.goto(&first_link).await;
    b.wait_for_path("/verify-email").await;
    b.click("#verify-form button[type=submit]").await;
    let refused = b.text_of("#form-error").await;
    assert!(refused.contains("invalid, used or expired"), "{refused}");
    assert_eq!(b.status().await, 400);
    assert_eq!(b.count("#resend-form").await, 1);
    b.screenshot("verify-used.png").await;
    assert!(b.signed_in_as(s, email).await);
    h.finish().await;
}

/// `registration = invite`: `/register` alone offers no form, and the login
/// page no "Create an account"; an invitation an administrator mailed
/// opens the form with its address, fixed; registering through it signs in
/// with the invitation's role and the address verified (the invitation was
/// mailed there). The link works once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_registers_under_invite_only() {
    let smtp = SmtpServer::start();
    let h = harness_with(&[("smtp_url", &smtp.url()), ("registration", "invite")]).await;
    let (s, b) = (&h.server, &h.browser);
    let email = "guest@example.com";

    // Without an invitation: the notice (403), no form.
    b.goto(&s.url("/register")).await;
    b.wait_for_path("/register").await;
    let closed = b.text_of("#registration-closed").await;
    assert!(closed.contains("needs an invitation"), "{closed}");
    assert_eq!(b.count("#register-form").await, 0);
    assert_eq!(b.status().await, 403);
    b.screenshot("register-invite-only.png").await;
    b.goto(&s.url("/login")).await;
    b.wait_for_path("/login").await;
    assert_eq!(b.count("main a[href='/register']").await, 0);

    // An administrator invites the guest, by mail.
    let invitation = s
        .app
        .core
        .invite_by(None, email, &["editor".to_owned()], true)
        .await
        .expect("invitation");
    assert!(invitation.mailed);
    let mail = smtp.wait_for_subject(email, INVITE_SUBJECT).await;
    let link = mail
        .link_with("/register?invitation=")
        .expect("an invitation link");
    assert_eq!(link, invitation.url);
    let token = link
        .split_once("invitation=")
        .expect("the token")
        .1
        .to_owned();

    // The link opens the form with the address prefilled and fixed.
    b.goto(&link).await;
    b.wait_for_path("/register").await;
    assert_eq!(b.status().await, 200);
    assert_eq!(b.count("#registration-closed").await, 0);
    assert_eq!(b.attr("#email", "value").await, email);
    let readonly = b
        .client
        .execute("return document.getElementById('email').readOnly", vec![])
        .await
        .expect("script runs");
    assert_eq!(readonly, json!(true));
    assert_eq!(
        b.attr(
            "#register-form input[type=hidden][name=invitation]",
            "value"
        )
        .await,
        token
    );
    assert!(b.text_of("#invitation-note").await.contains("invited"));
    b.screenshot("register-invited.png").await;

    // Registering through it signs in.
    b.fill("#password", PASSWORD).await;
    b.fill("#confirm_password", PASSWORD).await;
    b.click("#register-form button[type=submit]").await;
    b.wait_for_path("/account").await;
    assert!(b.text_of("#flash").await.contains("Welcome"));
    assert_eq!(b.text_of("#profile-email").await, email);
    assert!(b.signed_in_as(s, email).await);
    let user = s.app.core.find_user(email).await.expect("the account");
    assert_eq!(user.roles, vec!["editor".to_owned()]);
    assert!(
        user.email_verified,
        "a mailed invitation verifies the address"
    );

    // The same link again (signed out): the notice, no form.
    b.click(".topbar form[action='/logout'] button").await;
    b.wait_for_path("/login").await;
    b.goto(&link).await;
    b.wait_for_path("/register").await;
    let used = b.text_of("#registration-closed").await;
    assert!(used.contains("invalid, used or expired"), "{used}");
    assert_eq!(b.count("#register-form").await, 0);
    assert_eq!(b.status().await, 403);
    b.screenshot("register-invitation-used.png").await;
    h.finish().await;
}

/// `registration = closed`: `/register` says so (403) with no form, with or
/// without an invitation in the URL; the login page offers no "Create an
/// account"; and a form posted to `/register` anyway (built by a script on
/// the page, so it passes the origin checks) creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_registration_offers_no_form() {
    let h = harness_with(&[("registration", "closed")]).await;
    let (s, b) = (&h.server, &h.browser);

    for path in [
        "/register",
        "/register?invitation=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        b.goto(&s.url(path)).await;
        b.wait_for_path("/register").await;
        let closed = b.text_of("#registration-closed").await;
        assert!(
            closed.contains("Registration is closed"),
            "{path}: {closed}"
        );
        assert_eq!(b.count("#register-form").await, 0, "{path}");
        assert_eq!(b.count("form[action='/register']").await, 0, "{path}");
        assert_eq!(b.status().await, 403, "{path}");
    }
    b.screenshot("register-closed.png").await;
    assert_eq!(b.count("main .switch a[href='/login']").await, 1);

    b.goto(&s.url("/login")).await;
    b.wait_for_path("/login").await;
    // No "Create an account" anywhere: not in the sign-in card, not in
    // the top bar.
    assert_eq!(b.count("a[href='/register']").await, 0);
    assert!(!b.body().await.contains("Create an account"));
    assert_eq!(b.count("#login-form").await, 1);
    b.screenshot("login-registration-closed.png").await;

    // A hand-made form posted anyway is refused, and nothing is created.
    b.goto(&s.url("/register")).await;
    b.wait_for_path("/register").await;
    b.client
        .execute(
            "const f = document.createElement('form'); \
             f.method = 'post'; f.action = '/register'; f.id = 'forged'; \
             for (const [k, v] of Object.entries(arguments[0])) { \
               const i = document.createElement('input'); \
               i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); } \
             document.body.appendChild(f); f.submit();",
            vec![json!({
                "email": "intruder@example.com",
                "password": PASSWORD,
                "confirm_password": PASSWORD,
            })],
        )
        .await
        .expect("script runs");
    // The notice again, not the form.
    let refused = b.text_of("#registration-closed").await;
    assert!(refused.to_lowercase().contains("closed"), "{refused}");
    assert_eq!(b.status().await, 403);
    assert_eq!(b.count("#register-form").await, 0);
    b.screenshot("register-closed-post.png").await;
    assert!(s.app.core.find_user("intruder@example.com").await.is_err());
    assert_eq!(b.path().await, "/register");
    h.finish().await;
}

// ---------------------------------------------------------------------------
// A single-page app on another origin (TESSERA_CORS_ORIGINS)

/// The single-page app: one page whose script fetches Tessera's JWKS, signs
/// in with the password grant (a form-encoded `POST /v1/token`, a "simple"
/// request, no preflight) and calls `GET /v1/me` with the Bearer token (a
/// preflighted request), writing each outcome into the DOM: `200 …` when
/// the script could read the answer, `TypeError` when the browser refused
/// it. Without a token of its own, `/v1/me` is called with the one in the
/// page's fragment (so the preflight is tested from a refused origin too).
/// `#done` appears last. Served on `listeners` until the token is
/// cancelled.
fn serve_single_page_app(listeners: Vec<TcpListener>, tessera: &str) -> CancellationToken {
    let page = format!(
        r#"<!doctype html><title>SPA</title><h1>SPA</h1>
<p id="jwks"></p><p id="token"></p><p id="me"></p>
<script>
const base = {tessera:?};
const show = (id, text) => {{ document.getElementById(id).textContent = text; }};
const failed = (e) => e.name + ": " + e.message;
(async () => {{
  try {{
    const r = await fetch(base + "/.well-known/jwks.json");
    const jwks = await r.json();
    show("jwks", r.status + " keys=" + jwks.keys.length);
  }} catch (e) {{ show("jwks", failed(e)); }}
  let token = decodeURIComponent(location.hash.slice(1));
  try {{
    const r = await fetch(base + "/v1/token", {{
      method: "POST",
      body: new URLSearchParams({{
        grant_type: "password",
        username: "spa@example.com",
        password: {PASSWORD:?},
      }}),
    }});
    const answer = await r.json();
    token = answer.access_token;
    show("token", r.status + " " + answer.token_type);
  }} catch (e) {{ show("token", failed(e)); }}
  try {{
    const r = await fetch(base + "/v1/me", {{
      headers: {{ "Authorization": "Bearer " + token }},
    }});
    const me = await r.json();
    show("me", r.status + " " + me.user.email);
  }} catch (e) {{ show("me", failed(e)); }}
  document.body.insertAdjacentHTML("beforeend", '<p id="done">done</p>');
}})();
</script>"#
    );
    let app = axum::Router::new().route("/", get(move || async move { Html(page) }));
    let cancel = CancellationToken::new();
    for listener in listeners {
        let (app, stop) = (app.clone(), cancel.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }
    cancel
}

impl Browser {
    /// Opens the single-page app at `url` and returns what its script
    /// wrote: (JWKS, token, me).
    async fn run_single_page_app(&self, url: &str) -> (String, String, String) {
        self.goto(url).await;
        assert_eq!(self.text_of("#done").await, "done");
        (
            self.text_of("#jwks").await,
            self.text_of("#token").await,
            self.text_of("#me").await,
        )
    }
}

/// The page on `http://localhost:P` (in `cors_origins`) reads the JWKS,
/// gets a token and reads `/v1/me` with it across origins. The same page
/// on `http://127.0.0.1:P` (another origin, not in the list) gets nothing:
/// every fetch rejects with a `TypeError` (the token request still reaches
/// Tessera, as a form post would, but its answer stays unread; the `/v1/me`
/// preflight fails, so that request is never sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_page_app_on_an_allowed_origin_signs_in_and_others_cannot_read() {
    let turn = BROWSER_TURN.lock().await;
    // The app's port first: Tessera's settings name its origin.
    let (listeners, spa_port) = bind_loopback().await;
    let allowed = format!("http://localhost:{spa_port}");
    let server = start_tessera_with("localhost", &[("cors_origins", allowed.as_str())]).await;
    let stop = serve_single_page_app(listeners, &server.base);
    server
        .app
        .core
        .register(NewAccount {
            email: "spa@example.com".into(),
            password: Password::new(PASSWORD.into()),
            roles: Vec::new(),
        })
        .await
        .expect("account");
    let driver = start_driver().await;
    let b = open_browser(&driver).await;

    let (jwks, token, me) = b.run_single_page_app(&format!("{allowed}/")).await;
    assert!(jwks.starts_with("200 keys="), "{jwks}");
    assert_ne!(jwks, "200 keys=0");
    assert_eq!(token, "200 Bearer");
    assert_eq!(me, "200 spa@example.com");
    b.screenshot("cors-allowed-origin.png").await;

    // Another origin: nothing is readable, and a valid token does not help.
    let valid = reqwest::Client::new()
        .post(server.url("/v1/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("grant_type", "password"),
                ("username", "spa@example.com"),
                ("password", PASSWORD),
            ])
            .expect("form"),
        )
        .send()
        .await
        .expect("token")
        .json::<serde_json::Value>()
        .await
        .expect("token json")["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let (jwks, token, me) = b
        .run_single_page_app(&format!("http://127.0.0.1:{spa_port}/#{valid}"))
        .await;
    for (what, outcome) in [("jwks", &jwks), ("token", &token), ("me", &me)] {
        assert!(
            outcome.starts_with("TypeError"),
            "{what} from a foreign origin: {outcome}"
        );
    }
    b.screenshot("cors-foreign-origin.png").await;

    stop.cancel();
    b.close().await;
    drop(driver);
    server.app.close().await;
    drop(turn);
}

// ---------------------------------------------------------------------------
// A phone-sized window

/// A browser whose viewport is 390 × 844 CSS pixels (an iPhone's):
/// Chromium will not make a window narrower than 500 px, so the size is
/// chromedriver's device emulation.
async fn open_phone_browser(driver: &Driver) -> Browser {
    let mut options = serde_json::Map::new();
    options.insert(
        "mobileEmulation".into(),
        json!({"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 1.0}}),
    );
    open_browser_options(driver, &[], options).await
}

/// The page fits the 390 px viewport (nothing scrolls sideways: a mobile
/// browser would otherwise widen its layout viewport, so `innerWidth` is
/// checked too), and each of `css` is shown whole inside it. What the phone
/// shows (390 × 844) goes to `test-artifacts/<png>` first.
async fn assert_fits_a_phone(b: &Browser, page: &str, css: &[&str], png: &str) {
    let shot = b.client.screenshot().await.expect("screenshot");
    let path = artifacts_dir().join(png);
    std::fs::write(&path, shot).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let width = b
        .client
        .execute(
            "return [document.documentElement.scrollWidth, document.body.scrollWidth, \
             window.innerWidth, Array.from(document.querySelectorAll('body *')) \
             .filter(e => e.getBoundingClientRect().right > 391).slice(0, 8) \
             .map(e => e.tagName + '.' + e.className)]",
            vec![],
        )
        .await
        .expect("scroll width");
    let scroll = width[0].as_u64().unwrap_or(u64::MAX);
    let body = width[1].as_u64().unwrap_or(u64::MAX);
    assert!(
        scroll <= 390 && body <= 390 && width[2].as_u64() == Some(390),
        "{page} is wider than a 390 px window \
         ([scrollWidth, body, innerWidth, too wide]: {width:?})"
    );
    for selector in css {
        let rect = b
            .client
            .execute(
                "const r = document.querySelector(arguments[0]).getBoundingClientRect(); \
                 return [r.left, r.right, r.width, r.top];",
                vec![json!(selector)],
            )
            .await
            .unwrap_or_else(|e| panic!("{page}: no {selector}: {e}"));
        let v: Vec<f64> = rect
            .as_array()
            .expect("rect")
            .iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN))
            .collect();
        assert!(
            v[0] >= 0.0 && v[1] <= 390.0 && v[2] > 0.0 && v[3] >= 0.0,
            "{page}: {selector} is not shown whole in the window: {v:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_fits_a_phone_signed_out_signed_in_and_as_an_admin() {
    let h = harness().await;
    let s = &h.server;
    let phone = open_phone_browser(&h.driver).await;
    let b = &phone;
    let admin_email = "alexandra.konstantinopoulou-administrator@operations.example.com";
    s.app
        .core
        .register(NewAccount {
            email: admin_email.into(),
            password: Password::new(PASSWORD.into()),
            roles: vec!["admin".into()],
        })
        .await
        .expect("admin account");

    b.goto(&s.url("/login")).await;
    b.wait_for_path("/login").await;
    assert_fits_a_phone(
        b,
        "/login",
        &[
            ".brand",
            ".topnav a[href='/login']",
            ".topnav a[href='/register']",
            "#login-form button[type=submit]",
        ],
        "phone-login.png",
    )
    .await;
    b.goto(&s.url("/nope")).await;
    assert!(b.body().await.contains("Page not found"));
    assert_eq!(b.status().await, 404);
    assert_fits_a_phone(
        b,
        "/nope",
        &[".brand", "a.btn-primary"],
        "phone-not-found.png",
    )
    .await;

    b.register(s, "gus@example.com").await;
    assert_fits_a_phone(
        b,
        "/account",
        &[
            ".brand",
            ".topnav a[href='/account']",
            ".who",
            ".topnav button[type=submit]",
        ],
        "phone-account.png",
    )
    .await;
    b.click(".topnav button[type=submit]").await;
    b.wait_for_path("/login").await;

    b.submit_login(s, admin_email, PASSWORD).await;
    b.wait_for_path("/account").await;
    let selectors = [
        ".brand",
        ".topnav a[href='/account']",
        ".topnav a[href='/admin']",
        ".who",
        ".topnav button[type=submit]",
    ];
    assert_fits_a_phone(b, "/account (admin)", &selectors, "phone-account-admin.png").await;
    // The long address is cut, and whole on hover.
    assert_eq!(
        b.attr(".who", "title").await,
        format!("Signed in as {admin_email}")
    );
    b.goto(&s.url("/admin")).await;
    b.wait_for_path("/admin").await;
    assert_fits_a_phone(b, "/admin", &selectors, "phone-admin.png").await;
    // The sign-out button works from there.
    b.click(".topnav button[type=submit]").await;
    b.wait_for_path("/login").await;
    phone.close().await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_product_name_is_shown_and_fits_a_phone() {
    let name = "Acme Corporation Identity & Single Sign-On";
    let h = harness_with(&[("product_name", name)]).await;
    let s = &h.server;
    let phone = open_phone_browser(&h.driver).await;
    let b = &phone;
    b.goto(&s.url("/login")).await;
    b.wait_for_path("/login").await;
    assert_eq!(
        b.client.title().await.expect("title"),
        format!("Sign in · {name}")
    );
    assert_eq!(b.text_of(".brand-name").await, name);
    assert_fits_a_phone(
        b,
        "/login",
        &[
            ".brand",
            ".topnav a[href='/login']",
            ".topnav a[href='/register']",
        ],
        "phone-login-product-name.png",
    )
    .await;
    b.register(s, "ida@example.com").await;
    assert!(
        b.text_of("#flash")
            .await
            .contains(&format!("Welcome to {name}"))
    );
    assert_fits_a_phone(
        b,
        "/account",
        &[".brand", ".who", ".topnav button[type=submit]"],
        "phone-account-product-name.png",
    )
    .await;
    phone.close().await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_work_in_jwt_cookie_mode() {
    let h = harness_with(&[("browser_mode", "jwt-cookie")]).await;
    let (s, b) = (&h.server, &h.browser);
    b.register(s, "jade@example.com").await;
    assert_eq!(b.text_of("#profile-email").await, "jade@example.com");
    assert_eq!(b.count(".session-row").await, 1);
    assert!(b.text_of(".session-row.current").await.contains("Browser"));

    // The two token cookies, HttpOnly, and no session cookie.
    let cookies = b.client.get_all_cookies().await.expect("cookies");
    let names: Vec<&str> = cookies.iter().map(|c| c.name()).collect();
    assert!(!names.contains(&"__Host-tessera_session"), "{names:?}");
    for name in ["__Host-tessera_access", "__Host-tessera_refresh"] {
        let c = cookies
            .iter()
            .find(|c| c.name() == name)
            .unwrap_or_else(|| panic!("{name} is set: {names:?}"));
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(c.secure(), Some(true));
    }
    let visible = b
        .client
        .execute("return document.cookie", vec![])
        .await
        .expect("script runs");
    assert!(
        !visible.as_str().unwrap_or_default().contains("tessera"),
        "{visible:?}"
    );
    let refresh_before = cookies
        .iter()
        .find(|c| c.name() == "__Host-tessera_refresh")
        .map(|c| c.value().to_owned());

    // The access cookie runs out (the browser drops it at its Max-Age):
    // the next page refreshes it from the refresh cookie.
    b.client
        .delete_cookie("__Host-tessera_access")
        .await
        .expect("cookie deleted");
    b.goto(&s.url("/account")).await;
    b.wait_for_path("/account").await;
    assert_eq!(b.text_of("#profile-email").await, "jade@example.com");
    let cookies = b.client.get_all_cookies().await.expect("cookies");
    assert!(cookies.iter().any(|c| c.name() == "__Host-tessera_access"));
    let refresh_after = cookies
        .iter()
        .find(|c| c.name() == "__Host-tessera_refresh")
        .map(|c| c.value().to_owned());
    assert!(refresh_after.is_some());
    assert_ne!(refresh_after, refresh_before, "the refresh token rotated");
    b.screenshot("account-jwt-cookie.png").await;

    // Sign out from the header: both cookies go, and the pages need a
    // sign-in again.
    b.click(".topbar form[action='/logout'] button").await;
    b.wait_for_path("/login").await;
    assert!(b.text_of(".alert-ok").await.contains("signed out"));
    let cookies = b.client.get_all_cookies().await.expect("cookies");
    assert!(
        !cookies
            .iter()
            .any(|c| c.name().starts_with("__Host-tessera")),
        "{cookies:?}"
    );
    b.submit_login(s, "jade@example.com", PASSWORD).await;
    b.wait_for_path("/account").await;
    b.goto(&s.url("/admin")).await;
    assert!(b.text_of("main").await.contains("administrators"));
    h.finish().await;
}
