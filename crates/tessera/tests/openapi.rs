//! `GET /openapi.json`: the OpenAPI 3.1 document generated from the code
//! (`src/http/openapi.rs` and the `#[utoipa::path]` annotations on the
//! handlers) is what the router serves, is valid for a real OpenAPI
//! validator, and survives schemathesis fuzzing a live server.
//!
//! The validator and schemathesis are Python tools; `scripts/test` installs
//! them (`pip install openapi-spec-validator schemathesis`). A missing tool
//! fails the test with that hint; it never skips.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{ORIGIN, PASSWORD, Req, Resp, TestApp, password_grant};
use serde_json::{Value, json};
use tessera::app::App;
use tessera::config::Settings;
use tessera::core::clock::SystemClock;
use tower::ServiceExt;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(t: &TestApp) -> Value {
    let r = t.send(Req::get("/openapi.json")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "the document is JSON"
    );
    r.json()
}

/// `(METHOD, path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_0_about_this_server() {
    let t = TestApp::new().await;
    let doc = document(&t).await;
    // DEPENDENCIES.md gotcha 12: utoipa can also write 3.2.0, which the
    // validators and schemathesis do not read yet.
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Tessera");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["servers"], json!([{"url": ORIGIN}]));

    // Every error is the contract's `Error` schema.
    assert_eq!(
        doc["components"]["schemas"]["Error"]["required"],
        json!(["error", "error_description"])
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["sessionCookie"]["in"], "cookie");
    assert_eq!(schemes["sessionCookie"]["name"], "__Host-tessera_session");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["bearerAuth"]["bearerFormat"], "JWT");
    assert_eq!(schemes["basicAuth"]["scheme"], "basic");
    assert_eq!(
        schemes["oauth2"]["flows"]["password"]["tokenUrl"],
        format!("{ORIGIN}/v1/token")
    );

    // Spot checks of what the contract asks the document to carry.
    let token = &doc["paths"]["/v1/token"]["post"];
    let content = token["requestBody"]["content"].as_object().unwrap();
    assert!(content.contains_key("application/json"));
    assert!(content.contains_key("application/x-www-form-urlencoded"));
    for status in ["200", "400", "413", "415", "429", "503"] {
        assert!(
            token["responses"].get(status).is_some(),
            "POST /v1/token lacks {status}"
        );
    }
    assert_eq!(
        token["responses"]["429"]["headers"]["Retry-After"]["required"],
        true
    );
    let login = &doc["paths"]["/v1/sessions"]["post"]["responses"]["201"];
    assert_eq!(login["headers"]["Set-Cookie"]["required"], true);
    let logout_all = &doc["paths"]["/v1/logout-all"]["post"];
    assert!(
        logout_all["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "X-CSRF-Token" && p["in"] == "header")
    );
    assert!(
        logout_all["responses"]["401"]["headers"]
            .get("WWW-Authenticate")
            .is_some()
    );
    assert_eq!(
        doc["paths"]["/v1/token/introspect"]["post"]["security"],
        json!([{"basicAuth": []}])
    );
    // Each operation lists the errors every route can give (an oversized
    // Cookie or Authorization header, an oversized body) with the schema.
    for (method, path) in operations(&doc) {
        let responses = &doc["paths"][&path][method.to_ascii_lowercase()]["responses"];
        for status in ["400", "401", "413"] {
            let error = &responses[status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                error, "#/components/schemas/Error",
                "{method} {path} {status}"
            );
        }
    }
    // The HTML pages are not part of the JSON API document.
    for page in ["/login", "/register", "/account", "/admin", "/"] {
        assert!(doc["paths"].get(page).is_none(), "{page} is documented");
    }
}

/// The router's JSON API routes, read from `src/http/mod.rs` itself: each
/// `.route("PATH", get(..).post(..))` call gives `PATH` and the method
/// routers named in its second argument. (The HTML pages are routed in
/// `pages/mod.rs` and merged; they are not part of the JSON API.)
fn routes_in_source(source: &str) -> BTreeSet<(String, String)> {
    let code: String = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let calls: Vec<&str> = code.split(".route(").skip(1).collect();
    let mut routes = BTreeSet::new();
    for call in &calls {
        let call = call.trim_start();
        let rest = call
            .strip_prefix('"')
            .expect(".route( starts with a literal path");
        let (path, rest) = rest.split_once('"').expect("closing quote");
        // The second argument runs to the `)` that closes `.route(`.
        let mut depth = 1;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let handlers = &rest[..end];
        let mut methods = 0;
        for method in METHODS {
            let mut from = 0;
            while let Some(i) = handlers[from..].find(&format!("{method}(")) {
                let at = from + i;
                let before = handlers[..at].chars().next_back();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    routes.insert((method.to_ascii_uppercase(), path.to_owned()));
                    methods += 1;
                }
                from = at + method.len();
            }
        }
        assert!(
            methods > 0,
            "no method router found in .route(\"{path}\", {handlers})"
        );
    }
    assert!(
        calls.len() >= 20,
        "found only {} .route( calls in http/mod.rs; the parser is out of date",
        calls.len()
    );
    routes
}

/// Drift check, both ways.
///
/// Router → document: axum cannot list a router's routes at run time, and a
/// hand-kept list of them would drift exactly like the document could. So
/// the routes are read from their one source, the `.route(...)` calls in
/// `src/http/mod.rs` (read at test time), and must equal the document's
/// operations, method for method.
///
/// Document → router, by probing the real router: every documented
/// operation must reach a handler (neither the fallback's 404 nor a 405),
/// and every other method on a documented path must be a 405, so the router
/// serves nothing undocumented on those paths either. `/metrics` follows
/// `TESSERA_METRICS_ADDR` in both.
#[tokio::test]
async fn the_document_and_the_router_have_the_same_routes() {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/mod.rs"))
            .expect("read src/http/mod.rs");
    let in_source = routes_in_source(&source);

    let t = TestApp::new().await;
    let doc = document(&t).await;
    let documented = operations(&doc);
    let missing: Vec<_> = in_source.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&in_source).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routed but not documented: {missing:?}; documented but not routed: {extra:?}"
    );
    let source_paths: BTreeSet<&String> = in_source.iter().map(|(_, p)| p).collect();
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        source_paths.len(),
        "the document has one path item per routed path"
    );

    for path in doc["paths"].as_object().unwrap().keys() {
        // Path parameters get a value that is syntactically fine.
        let concrete = path.replace("{id}", "x");
        for method in METHODS {
            let upper = method.to_ascii_uppercase();
            let r = t
                .send(Req::new(
                    Method::from_bytes(upper.as_bytes()).unwrap(),
                    &concrete,
                ))
                .await;
            if documented.contains(&(upper.clone(), path.clone())) {
                assert_ne!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{upper} {path} is documented but not routed"
                );
                let fallback = r.status == StatusCode::NOT_FOUND
                    && r.json()["error_description"] == "no such resource";
                assert!(!fallback, "{upper} {path} is documented but not routed");
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{upper} {path} is routed but not documented: {}",
                    r.text()
                );
            }
        }
    }

    // With its own listener, /metrics leaves both the router and the document.
    let t = TestApp::with(&[("metrics_addr", "127.0.0.1:9")]).await;
    let doc = document(&t).await;
    assert!(doc["paths"].get("/metrics").is_none());
    let r = t.send(Req::get("/metrics")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Runs `python3 args…`; a missing module is a failure with an install hint.
fn python(args: &[&str], module: &str, package: &str) -> std::process::Output {
    let out = std::process::Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(&format!("No module named {module}"))
            && !stderr.contains(&format!("No module named '{module}")),
        "{package} is missing: python3 -m pip install {package} (scripts/test does this)"
    );
    out
}

#[tokio::test]
async fn the_document_passes_openapi_spec_validator() {
    let t = TestApp::new().await;
    let doc = document(&t).await;
    let file = t.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = python(
        &[
            "-m",
            "openapi_spec_validator",
            "--schema",
            "3.1",
            file.to_str().unwrap(),
        ],
        "openapi_spec_validator",
        "openapi-spec-validator",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "openapi-spec-validator refused the document:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// schemathesis against a live server

/// A live server on a loopback port, as `tessera serve` runs it.
struct Live {
    app: App,
    base: String,
    dir: tempfile::TempDir,
}

async fn live() -> Live {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}", dir.path().join("tessera.db").display());
    let settings = Settings::from_pairs(&[
        ("database_url", db.as_str()),
        ("public_url", base.as_str()),
        ("hash_threads", "2"),
        // The fuzzer is one client hammering the credential endpoints: the
        // per-address budget and the per-account backoff would turn most of
        // its requests into 429s (which are documented and still checked).
        ("ip_rate_limit", "100000"),
        ("login_failure_threshold", "100"),
        ("login_backoff_max", "1s"),
        // The cheapest hashing the settings allow: thousands of logins.
        ("argon2_memory_kib", "7168"),
        ("argon2_iterations", "1"),
    ])
    .unwrap();
    let app = App::open(settings, Arc::new(SystemClock)).await.unwrap();
    tokio::spawn(tessera::listener::serve(
        listener,
        app.router(),
        tessera::listener::HEADER_READ_TIMEOUT,
        std::future::pending(),
    ));
    Live { app, base, dir }
}

impl Live {
    async fn send(&self, req: Req) -> Resp {
        let response = self.app.router().oneshot(req.build()).await.unwrap();
        Resp::read(response).await
    }

    async fn register(&self, email: &str) -> String {
        let r = self
            .send(Req::post("/v1/accounts").json(json!({"email": email, "password": PASSWORD})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()["user"]["id"].as_str().unwrap().to_owned()
    }

    /// An access token from `POST /v1/token` (password grant).
    async fn token(&self, email: &str) -> String {
        let r = self.send(password_grant(email)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// A browser session: (session id, cookie value, CSRF token).
    async fn session(&self, email: &str) -> (String, String, String) {
        let r = self
            .send(Req::post("/v1/sessions").json(json!({"email": email, "password": PASSWORD})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let cookie = r.set_cookie(common::COOKIE).unwrap().value;
        let body = r.json();
        (
            body["session"]["id"].as_str().unwrap().to_owned(),
            cookie,
            body["csrf_token"].as_str().unwrap().to_owned(),
        )
    }
}

/// One failed check in a schemathesis run.
struct Finding {
    operation: String,
    check: String,
    message: String,
    request: String,
    status: Option<u64>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}] -> {:?}\n  {}\n  {}",
            self.operation,
            self.check,
            self.status,
            self.message.replace('\n', "\n  "),
            self.request
        )
    }
}

/// What one schemathesis run did, read from its NDJSON event report.
#[derive(Default)]
struct Report {
    findings: Vec<Finding>,
    errors: Vec<String>,
    /// Status codes seen per operation (`METHOD /path`).
    statuses: BTreeMap<String, BTreeSet<u64>>,
}

fn read_report(file: &Path) -> Report {
    let text = std::fs::read_to_string(file).expect("schemathesis wrote its NDJSON report");
    let mut report = Report::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line).expect("NDJSON line");
        let Some((kind, event)) = event.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if kind.contains("Error") {
            report.errors.push(format!("{kind}: {event}"));
            continue;
        }
        if kind != "ScenarioFinished" {
            continue;
        }
        let recorder = &event["recorder"];
        let empty = serde_json::Map::new();
        let interactions = recorder["interactions"].as_object().unwrap_or(&empty);
        for (id, case) in recorder["cases"].as_object().unwrap_or(&empty) {
            let case = &case["value"];
            let label = format!(
                "{} {}",
                case["method"].as_str().unwrap_or("?"),
                case["path"].as_str().unwrap_or("?")
            );
            if let Some(status) = interactions
                .get(id)
                .and_then(|i| i["response"]["status_code"].as_u64())
            {
                report.statuses.entry(label).or_default().insert(status);
            }
        }
        for (id, checks) in recorder["checks"].as_object().unwrap_or(&empty) {
            for check in checks.as_array().into_iter().flatten() {
                if check["status"] != "failure" {
                    continue;
                }
                let failure = &check["failure_info"]["failure"];
                let interaction = interactions.get(id);
                let request = interaction.map_or_else(String::new, |i| {
                    let rq = &i["request"];
                    let body = rq["body"]["$base64"]
                        .as_str()
                        .and_then(|b| STANDARD.decode(b).ok())
                        .map(|b| format!(" body {}", String::from_utf8_lossy(&b)))
                        .unwrap_or_default();
                    format!(
                        "{} {} headers {}{body}",
                        rq["method"].as_str().unwrap_or("?"),
                        rq["uri"].as_str().unwrap_or("?"),
                        rq["headers"]
                    )
                });
                report.findings.push(Finding {
                    operation: failure["operation"].as_str().unwrap_or("?").to_owned(),
                    check: check["name"].as_str().unwrap_or("?").to_owned(),
                    message: format!(
                        "{}: {}",
                        failure["title"].as_str().unwrap_or(""),
                        failure["message"].as_str().unwrap_or("")
                    ),
                    request,
                    status: interaction.and_then(|i| i["response"]["status_code"].as_u64()),
                });
            }
        }
    }
    report
}

/// Examples per operation and phase: enough to reach every documented
/// status, few enough for about a minute on two cores.
const MAX_EXAMPLES: &str = "25";
const SEED: &str = "20261123";

/// One `schemathesis run` over `filters` with `config` (TOML), every check.
async fn schemathesis(
    live: &Live,
    name: &str,
    spec: &Path,
    config: &str,
    filters: &[&str],
) -> Report {
    let dir = live.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let report_file = dir.join("events.ndjson");
    let mut args: Vec<String> = [
        "-m",
        "schemathesis.cli",
        "--config-file",
        config_file.to_str().unwrap(),
        "--no-color",
        "run",
        spec.to_str().unwrap(),
        "--url",
        &live.base,
        "--checks",
        "all",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "1",
        "--continue-on-failure",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        report_file.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(filters.iter().map(|s| (*s).to_owned()));
    let started = Instant::now();
    let run = tokio::process::Command::new("python3")
        .args(&args)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis ({name}) ran for more than 5 minutes"))
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named schemathesis")
            && !stderr.contains("No module named 'schemathesis"),
        "schemathesis is missing: python3 -m pip install schemathesis (scripts/test does this)"
    );
    eprintln!(
        "schemathesis ({name}): exit {:?} in {:.1}s\n{}",
        out.status.code(),
        started.elapsed().as_secs_f64(),
        stdout
            .lines()
            .skip_while(|l| !l.contains("SUMMARY"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // 0: nothing found; 1: failures found (read from the report below).
    // Anything else is schemathesis itself failing.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "schemathesis ({name}) did not run:\n{stdout}\n{stderr}"
    );
    let report = read_report(&report_file);
    assert!(
        out.status.code() == Some(0) || !report.findings.is_empty() || !report.errors.is_empty(),
        "schemathesis ({name}) failed but its report names no failure:\n{stdout}"
    );
    report
}

/// schemathesis (4.x) generates requests from the served document and runs
/// every check it has (`--checks all`): no 5xx, statuses, content types,
/// headers and bodies as documented, schema-valid requests accepted and
/// invalid ones refused, auth enforced, undocumented methods refused with
/// 405 and `Allow`, stateful sequences along inferred links. It is given
/// real credentials so it gets past authentication: an admin's access
/// token from `POST /v1/token`, a service client for introspection, and a
/// browser session for the session-only operations.
///
/// Some operations run apart from the main run, each with fresh credentials
/// of its own: those that only take the browser session (`GET /v1/session`,
/// `POST /v1/session/token`), because the main run's logins carry the
/// session cookie and so end it (no fixation); and those that revoke the
/// credential they are called with (`DELETE /v1/session`,
/// `POST /v1/logout-all`, `POST /v1/account/password`, the last with the
/// right current password), so they do not pull it from under the rest.
/// The admin operations on
/// `/v1/admin/users/{id}` are pinned to a victim user (schemathesis would
/// otherwise find the admin's own id in the token's `sub` and demote or
/// suspend the very admin it runs as), those on
/// `/v1/admin/clients/{client_id}` to a victim client (it would otherwise
/// list the clients and disable or delete the one it authenticates as);
/// `DELETE /v1/sessions/{id}` to a session of the admin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure() {
    let version = python(
        &["-m", "schemathesis.cli", "--version"],
        "schemathesis",
        "schemathesis",
    );
    assert!(
        version.status.success(),
        "schemathesis does not run: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let started = Instant::now();
    let live = live().await;
    let core = &live.app.core;

    let admin_id = live.register("admin@example.test").await;
    core.set_roles(&admin_id, &["admin".to_owned()])
        .await
        .unwrap();
    let victim_id = live.register("victim@example.test").await;
    // `DELETE /v1/admin/users/{id}` gets a user of its own: once the
    // victim is deleted, the other operations on it could only answer 404.
    let doomed_id = live.register("doomed@example.test").await;
    live.register("browser@example.test").await;
    live.register("leaver@example.test").await;
    let client = core.create_client("schemathesis").await.unwrap();
    // The client administration is pinned to a client of its own, so the
    // fuzzer never disables, rotates or deletes the one it authenticates as.
    let victim_client = core.create_client("victim").await.unwrap().client.id;
    let (admin_session, _, _) = live.session("admin@example.test").await;

    let spec = live.dir.path().join("openapi.json");
    let doc = live.send(Req::get("/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    std::fs::write(&spec, &doc.body).unwrap();
    let documented: BTreeSet<String> = operations(&doc.json())
        .into_iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();

    // The credentials go in through schemathesis' per-scheme auth rather
    // than `-H "Authorization: Bearer …"`: the header sent is the same, but
    // only to the operations that declare `bearerAuth`; a `-H` header also
    // replaces the service client's Basic credentials at introspection.
    let config = |bearer: &str, (browser_cookie, browser_csrf): (&str, &str)| {
        format!(
            r#"
[auth.openapi.bearerAuth]
bearer = "{bearer}"

[auth.openapi.basicAuth]
username = "{client_id}"
password = "{secret}"

[auth.openapi.sessionCookie]
api_key = "{browser_cookie}"

# (Filters of one kind are alternatives: `include-path` with
# `include-method` would match every POST. An operation's name is
# "METHOD path".)
[[operations]]
include-path-regex = "^/v1/admin/users/"
exclude-name = "DELETE /v1/admin/users/{{id}}"
parameters = {{ "path.id" = "{victim_id}" }}

[[operations]]
include-name = "DELETE /v1/admin/users/{{id}}"
parameters = {{ "path.id" = "{doomed_id}" }}

# Schema-valid bodies Tessera refuses on purpose: an email too long in
# bytes (as for /v1/accounts), one taken already (409); and both a password
# and `send_reset: true`, or neither (422).
# Creating always gets a password: otherwise whether any generated body
# succeeds depends on the fuzzer's stream, which shifts with every
# operation the document gains.
[[operations]]
include-name = "POST /v1/admin/users"
checks.positive_data_acceptance.expected-statuses = ["2xx", "409", "422"]
parameters = {{ "body.password" = "{PASSWORD}" }}

# `q` and `cursor` have byte limits JSON Schema cannot state (422).
[[operations]]
include-name = "GET /v1/admin/users"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422"]

[[operations]]
include-name = "POST /v1/admin/users/{{id}}/password"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "422"]

[[operations]]
include-path-regex = "^/v1/admin/clients/"
parameters = {{ "path.client_id" = "{victim_client}" }}

[[operations]]
include-path = "/v1/sessions/{{id}}"
parameters = {{ "path.id" = "{admin_session}" }}

[[operations]]
include-path = "/v1/session/token"
parameters = {{ "header.X-CSRF-Token" = "{browser_csrf}" }}

# A schema-valid new password can still be too easy to guess (422); the
# current one is wrong once the fuzzer changed it (401).
[[operations]]
include-path = "/v1/account/password"
parameters = {{ "body.current_password" = "{PASSWORD}" }}
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422", "429"]

# A new email too long in bytes (422), or another account's (409); the
# same for invitations. Asking for a verification link: an email too long
# in bytes (422), or neither an email nor credentials (401).
[[operations]]
include-name = "PATCH /v1/admin/users/{{id}}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-name = "POST /v1/admin/invitations"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "409", "422"]

# JSON Schema counts characters, the email rules bytes: a schema-valid
# address can still be too long for Tessera (422), and a schema-valid
# password too easy to guess (422). The pattern admits every address
# Tessera takes, so the other direction is checked in full. A schema-valid
# invitation is still one nobody issued (403 registration_closed).
[[operations]]
include-path = "/v1/accounts"
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "409", "422", "429"]

# The same byte-counted emails; and each email may be mailed a few times
# an hour (429). A schema-valid token is still one no link carries (400).
[[operations]]
include-path = "/v1/password-reset"
checks.positive_data_acceptance.expected-statuses = ["2xx", "422", "429"]

[[operations]]
include-path = "/v1/password-reset/confirm"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "422", "429"]

[[operations]]
include-path = "/v1/email-verification"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422", "429"]

[[operations]]
include-path = "/v1/email-verification/confirm"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "422", "429"]
"#,
            client_id = client.client.id,
            secret = client.secret.expose(),
        )
    };

    // Operations run apart from the main run, by operation id: those that
    // need the browser session (which any login carrying its cookie ends,
    // as it should: no fixation), and those that end the credential they
    // are called with.
    let browser_only = ["current", "session_token"];
    let enders = ["logout", "logout_all", "change_password"];
    let mut main_filters = Vec::new();
    for id in browser_only.iter().chain(&enders) {
        main_filters.extend(["--exclude-operation-id", id]);
    }
    let mut reports = Vec::new();
    let token = live.token("admin@example.test").await;
    let (_, cookie, csrf) = live.session("browser@example.test").await;
    let config_main = config(&token, (&cookie, &csrf));
    reports.push((
        "main",
        schemathesis(&live, "main", &spec, &config_main, &main_filters).await,
    ));
    let (_, cookie, csrf) = live.session("browser@example.test").await;
    let mut filters = Vec::new();
    for id in browser_only {
        filters.extend(["--include-operation-id", id]);
    }
    let config_browser = config(&token, (&cookie, &csrf));
    reports.push((
        "browser",
        schemathesis(&live, "browser", &spec, &config_browser, &filters).await,
    ));
    for id in enders {
        let token = live.token("leaver@example.test").await;
        let (_, cookie, csrf) = live.session("leaver@example.test").await;
        let config_ender = config(&token, (&cookie, &csrf));
        let filters = ["--include-operation-id", id];
        reports.push((
            id,
            schemathesis(&live, id, &spec, &config_ender, &filters).await,
        ));
    }

    let mut unexpected = Vec::new();
    let mut statuses: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for (name, report) in reports {
        unexpected.extend(report.errors.iter().map(|e| format!("({name}) error: {e}")));
        unexpected.extend(report.findings.iter().map(|f| format!("({name}) {f}")));
        for (op, seen) in report.statuses {
            statuses.entry(op).or_default().extend(seen);
        }
    }
    eprintln!(
        "schemathesis: {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
    assert!(
        unexpected.is_empty(),
        "schemathesis found {} failures:\n\n{}",
        unexpected.len(),
        unexpected.join("\n\n")
    );

    // The run was not vacuous: every operation was exercised, and the
    // credentials got the authenticated ones past authentication.
    statuses.retain(|op, _| documented.contains(op));
    let exercised: BTreeSet<String> = statuses.keys().cloned().collect();
    let unexercised: Vec<_> = documented.difference(&exercised).collect();
    assert!(unexercised.is_empty(), "never called: {unexercised:?}");
    for op in [
        "GET /v1/me",
        "GET /v1/sessions",
        "GET /v1/session",
        "POST /v1/session/token",
        "GET /v1/admin/users",
        "PATCH /v1/admin/users/{id}",
        "POST /v1/admin/users/{id}/revoke",
        "POST /v1/admin/users",
        "POST /v1/admin/users/{id}/password",
        "DELETE /v1/admin/users/{id}",
        "DELETE /v1/sessions/{id}",
        "POST /v1/token/introspect",
        "DELETE /v1/session",
        "POST /v1/logout-all",
        "POST /v1/account/password",
    ] {
        assert!(
            statuses[op].iter().any(|s| (200..300).contains(s)),
            "{op} never succeeded (statuses {:?}): the fuzzer's credentials do not work",
            statuses[op]
        );
    }
}
