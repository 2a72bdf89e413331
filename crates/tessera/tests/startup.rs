//! What the operator sees when a database is opened: each schema migration
//! applied is reported on stderr (by `serve`, `migrate` and any CLI
//! command), only `serve` and `migrate` create a database (any other
//! command says where it looked instead), `serve` takes its port before it
//! creates anything and says where it listens, which store it uses and, on
//! a database without users, how to create the first administrator; and
//! the variables Kubernetes sets for a Service named `tessera` are not
//! mistaken for settings.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{run, tessera};

const PASSWORD: &str = "correct horse battery staple";

fn migrations_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
}

/// (total, description of the first, description of the last).
fn migrations() -> (usize, String, String) {
    let mut names: Vec<String> = std::fs::read_dir(migrations_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    let describe = |n: &str| {
        n.trim_end_matches(".sql")
            .split_once('_')
            .unwrap()
            .1
            .replace('_', " ")
    };
    (
        names.len(),
        describe(&names[0]),
        describe(names.last().unwrap()),
    )
}

#[test]
fn migrate_reports_each_migration_it_applies() {
    let (total, first, last) = migrations();
    assert!(total >= 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let db = format!("sqlite://{}", path.display());

    let (code, out, err) = run(tessera(&db).args(["migrate"]), "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("created the database {}", path.display())),
        "{out}"
    );
    assert!(
        err.contains(&format!("{total} of {total} schema migrations to apply")),
        "{err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("applying migration 1/"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.starts_with(&format!("applying migration 1/{total}: {first} … done in ")),
        "{line}"
    );
    assert!(
        err.contains(&format!(
            "applying migration {total}/{total}: {last} … done in "
        )),
        "{err}"
    );
    assert_eq!(err.matches("applying migration").count(), total, "{err}");

    // Nothing left to apply: nothing said.
    let (code, _, err) = run(tessera(&db).args(["keys", "list"]), "");
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("migration"), "{err}");
    let (code, out, err) = run(tessera(&db).args(["migrate"]), "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is up to date"), "{out}");
    assert!(!err.contains("migration"), "{err}");
}

#[tokio::test]
async fn an_older_database_reports_only_the_migrations_it_lacks() {
    let (total, _, last) = migrations();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let db = format!("sqlite://{}", path.display());
    // A database as the first release left it: only migration 1.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let migrator = sqlx::migrate::Migrator::new(migrations_dir())
        .await
        .unwrap();
    let first_version = migrator.iter().next().unwrap().version;
    migrator.run_to(first_version, &pool).await.unwrap();
    pool.close().await;

    let (code, _, err) = run(tessera(&db).args(["user", "list"]), "");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "{} of {total} schema migrations to apply",
            total - 1
        )),
        "{err}"
    );
    assert!(!err.contains("applying migration 1/"), "{err}");
    assert!(
        err.contains(&format!(
            "applying migration {total}/{total}: {last} … done in "
        )),
        "{err}"
    );
}

/// Runs `serve` until it answers /healthz, stops it with SIGTERM and
/// returns everything it wrote on stderr.
fn serve_once(db: &str) -> String {
    serve_once_with(db, &[])
}

/// [`serve_once`] with these environment variables.
fn serve_once_with(db: &str, env: &[(&str, &str)]) -> String {
    serve_once_requesting(db, env, &[])
}

/// [`serve_once_with`], sending `GET` for each of `paths` (whatever the
/// answer) before the last `/healthz`.
fn serve_once_requesting(db: &str, env: &[(&str, &str)], paths: &[&str]) -> String {
    let mut child = tessera(db)
        .envs(env.iter().copied())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let mut buf = [0u8; 256];
        let n = stderr.read(&mut buf).unwrap();
        text.extend_from_slice(&buf[..n]);
        let s = String::from_utf8_lossy(&text);
        if let Some(rest) = s.split("listening on http://").nth(1)
            && let Some((line, _)) = rest.split_once('\n')
            && let Some(addr) = line.split_whitespace().next()
        {
            break addr.to_owned();
        }
        assert!(n > 0 && Instant::now() < deadline, "no banner: {s}");
    };
    for path in paths {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 "), "{path}: {response}");
    }
    // Everything before serving is written once /healthz answers.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    stderr.read_to_end(&mut text).unwrap();
    assert!(child.wait().unwrap().success());
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn serve_says_where_it_listens_which_store_and_how_to_create_the_first_admin() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());

    let first = serve_once(&db);
    assert!(first.contains("applying migration 1/"), "{first}");
    assert!(first.contains("listening on http://127.0.0.1:"), "{first}");
    assert!(first.contains("(public URL http://localhost:"), "{first}");
    assert!(first.contains(&format!("store {db}")), "{first}");
    assert!(
        first.contains(
            "no users yet: create an admin with `tessera user create --email you@example.com --role admin`"
        ),
        "{first}"
    );
    // The first key is created, not "rotated" (#21, 13); and stderr is a
    // pipe here, so the log carries no colour codes (#21, 11).
    assert!(first.contains("first signing key created"), "{first}");
    assert!(!first.contains("signing key rotated"), "{first}");
    assert!(
        !first.contains('\u{1b}'),
        "colour codes in a pipe: {first:?}"
    );

    let (code, _, err) = run(
        tessera(&db).args([
            "user",
            "create",
            "--email",
            "admin@example.com",
            "--role",
            "admin",
            "--password-stdin",
        ]),
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{err}");

    let second = serve_once(&db);
    assert!(
        second.contains("listening on http://127.0.0.1:"),
        "{second}"
    );
    assert!(!second.contains("no users yet"), "{second}");
    assert!(!second.contains("applying migration"), "{second}");
    assert!(!second.contains("first signing key created"), "{second}");
}

/// The banner tells people which address to open in a browser and, when
/// the listen address differs from the public URL, that the listen address
/// will not work for signing in, and why; a plain-HTTP public URL off
/// localhost gets a warning naming the fixes.
#[test]
fn serve_says_which_address_to_open_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("b.db").display());

    let err = serve_once_with(&db, &[("TESSERA_PUBLIC_URL", "http://localhost:8080")]);
    let listen = err
        .split("tessera listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        err.lines()
            .any(|l| l.starts_with("open http://localhost:8080 in a browser")),
        "{err}"
    );
    let why = err
        .lines()
        .find(|l| l.contains("will not work for signing in from a browser"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        why.contains(&format!("http://{listen}, the listen address")),
        "{why}"
    );
    assert!(
        why.contains("accepts forms only from pages at its public URL")
            && why.contains("TESSERA_PUBLIC_URL"),
        "{why}"
    );
    assert!(!err.contains("TESSERA_COOKIE_SECURE"), "{err}");

    // Plain HTTP on another host: sign-in cannot stick, and the warning
    // says what to do.
    let err = serve_once_with(&db, &[("TESSERA_PUBLIC_URL", "http://tessera.test:8080")]);
    assert!(
        err.lines()
            .any(|l| l.starts_with("open http://tessera.test:8080 in a browser")),
        "{err}"
    );
    let warning = err
        .lines()
        .find(|l| l.contains("WARN") && l.contains("is plain HTTP"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        warning.contains("TESSERA_COOKIE_SECURE=false") && warning.contains("HTTPS"),
        "{warning}"
    );
}

/// Short lifetimes are accepted, and a lifetime set alone brings down the
/// defaults that must fit under it instead of failing on them: with only
/// the absolute timeout set to 1h, the idle timeout (default 2h) follows it.
#[test]
fn serve_starts_with_only_a_short_absolute_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let err = serve_once_with(&db, &[("TESSERA_SESSION_ABSOLUTE_TIMEOUT", "1h")]);
    assert!(err.contains("listening on http://127.0.0.1:"), "{err}");
    let err = serve_once_with(
        &db,
        &[
            ("TESSERA_SESSION_IDLE_TIMEOUT", "2s"),
            ("TESSERA_ACCESS_TOKEN_TTL", "5s"),
            ("TESSERA_REFRESH_TOKEN_TTL", "10s"),
            ("TESSERA_KEY_ROTATION_INTERVAL", "30s"),
        ],
    );
    assert!(err.contains("listening on http://127.0.0.1:"), "{err}");

    // Two lifetimes the user set that cannot both hold: refused, naming both.
    let (code, _, err) = run(
        tessera(&db)
            .env("TESSERA_SESSION_IDLE_TIMEOUT", "3h")
            .env("TESSERA_SESSION_ABSOLUTE_TIMEOUT", "1h")
            .args(["serve", "--addr", "127.0.0.1:0"]),
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("TESSERA_SESSION_IDLE_TIMEOUT")
            && err.contains("TESSERA_SESSION_ABSOLUTE_TIMEOUT"),
        "{err}"
    );
}

/// `tessera` with no database setting of its own, run in `dir` (as an
/// operator's shell in the wrong directory would be).
fn tessera_in(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.current_dir(dir)
        .env_remove("TESSERA_DATABASE_URL")
        .env("TESSERA_HASH_THREADS", "1")
        .env_remove("RUST_LOG");
    cmd
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The finding: `user create --role admin` run in another directory
/// "succeeded" on a new empty database, and the login then failed.
#[test]
fn a_command_in_an_empty_directory_creates_nothing_and_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().canonicalize().unwrap();
    let create_admin = [
        "user",
        "create",
        "--email",
        "admin@example.com",
        "--role",
        "admin",
        "--password-stdin",
    ];

    // The default `sqlite://tessera.db`, relative to the working directory.
    let (code, out, err) = run(
        tessera_in(&here).args(create_admin),
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 2, "a configuration error: {out}{err}");
    assert_eq!(
        files_in(&here),
        Vec::<String>::new(),
        "nothing created: {err}"
    );
    let looked_at = here.join("tessera.db");
    for needle in [
        format!("no database at {}", looked_at.display()),
        "TESSERA_DATABASE_URL=sqlite://tessera.db, the default".to_owned(),
        format!("working directory {}", here.display()),
        "Nothing was created".to_owned(),
        "--database-url sqlite:///".to_owned(),
        "TESSERA_DATABASE_URL=sqlite:///".to_owned(),
        "--config FILE".to_owned(),
        "tessera migrate".to_owned(),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in: {err}");
    }
    assert!(!out.contains("created"), "{out}");

    // Every other command that opens the database stops the same way.
    for args in [
        &["user", "list"][..],
        &["keys", "list"],
        &["keys", "rotate"],
        &["client", "create", "billing"],
        &["sessions", "revoke-all", "--yes"],
    ] {
        let (code, _, err) = run(tessera_in(&here).args(args), "");
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("no database at"), "{args:?}: {err}");
    }
    assert_eq!(files_in(&here), Vec::<String>::new());

    // Where the setting came from: a flag, the environment, a file.
    let (code, _, err) = run(
        tessera_in(&here).args(["--database-url", "sqlite://flag.db", "user", "list"]),
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "no database at {}",
            here.join("flag.db").display()
        )) && err.contains("from command-line flag --database-url"),
        "{err}"
    );
    let elsewhere = here.join("elsewhere.db");
    let (code, _, err) = run(
        tessera_in(&here)
            .env(
                "TESSERA_DATABASE_URL",
                format!("sqlite://{}", elsewhere.display()),
            )
            .args(["user", "list"]),
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("no database at {}", elsewhere.display()))
            && err.contains("environment")
            && !err.contains("working directory"),
        "an absolute path needs no working directory: {err}"
    );
    let config = tempfile::tempdir().unwrap();
    let config_file = config.path().join("tessera.toml");
    std::fs::write(&config_file, "database_url = \"sqlite://from-file.db\"\n").unwrap();
    let (code, _, err) = run(
        tessera_in(&here).args(["--config", config_file.to_str().unwrap(), "user", "list"]),
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("from TOML file {}", config_file.display())),
        "{err}"
    );
    assert_eq!(files_in(&here), Vec::<String>::new());

    // An existing file that is not a Tessera database is left as it was.
    std::fs::write(here.join("empty.db"), b"").unwrap();
    let (code, _, err) = run(
        tessera_in(&here).args(["--database-url", "sqlite://empty.db", "user", "list"]),
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "the file {} has no Tessera schema",
            here.join("empty.db").display()
        )),
        "{err}"
    );
    assert_eq!(files_in(&here), ["empty.db"]);
    assert_eq!(std::fs::metadata(here.join("empty.db")).unwrap().len(), 0);
    std::fs::remove_file(here.join("empty.db")).unwrap();

    // `serve` still creates the database; then the command works.
    let db = format!("sqlite://{}", looked_at.display());
    let first = serve_once(&db);
    assert!(first.contains("applying migration 1/"), "{first}");
    assert!(looked_at.exists());
    let (code, out, err) = run(
        tessera_in(&here).args(create_admin),
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("admin@example.com"), "{out}");
}

/// `migrate` is the one command besides `serve` that creates a database.
#[test]
fn migrate_creates_the_database_other_commands_then_use() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().canonicalize().unwrap();
    let (code, out, err) = run(tessera_in(&here).args(["migrate"]), "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "created the database {}",
            here.join("tessera.db").display()
        )),
        "{out}"
    );
    assert!(err.contains("applying migration 1/"), "{err}");
    let (code, _, err) = run(
        tessera_in(&here).args([
            "user",
            "create",
            "--email",
            "a@example.com",
            "--password-stdin",
        ]),
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{err}");
}

/// On the store the suite runs on (`TEST_STORE`): a command given a fresh
/// store (a SQLite file not there yet, or a new empty PostgreSQL database)
/// changes nothing in it and says so; `migrate` sets it up.
#[tokio::test]
async fn a_command_on_a_fresh_store_changes_nothing_until_it_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_store_url(dir.path()).await;
    let postgres = db.starts_with("postgres");

    let (code, _, err) = run(tessera(&db).args(["user", "list"]), "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tessera migrate"), "{err}");
    if postgres {
        assert!(
            err.contains("has no Tessera schema") && err.contains("--database-url postgres://"),
            "{err}"
        );
        assert!(!schema_exists(&db).await, "no schema was created");
    } else {
        assert!(err.contains("no database at"), "{err}");
        assert_eq!(files_in(dir.path()), Vec::<String>::new());
    }
    // The doctor does not set it up either.
    let (_, _, err) = run(tessera(&db).args(["doctor"]), "");
    assert!(err.contains("yet: key age"), "{err}");
    if postgres {
        assert!(!schema_exists(&db).await, "the doctor created no schema");
    }

    let (code, _, err) = run(tessera(&db).args(["migrate"]), "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(tessera(&db).args(["user", "list"]), "");
    assert_eq!(code, 0, "{err}");
    if postgres {
        assert!(schema_exists(&db).await);
        // A PostgreSQL database that is not there: the same kind of stop
        // (Tessera never creates one, `serve` included).
        let (base, _) = db.rsplit_once('/').unwrap();
        let nowhere = format!("{base}/t_not_there");
        let (code, _, err) = run(tessera(&nowhere).args(["user", "list"]), "");
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!("no database {nowhere}"))
                && err.contains("does not exist")
                && err.contains("never creates a PostgreSQL database"),
            "{err}"
        );
    }
}

/// Whether the PostgreSQL database at `url` holds Tessera's bookkeeping
/// table.
async fn schema_exists(url: &str) -> bool {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let exists: bool = sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    conn.close().await.unwrap();
    exists
}

/// "Check the port before creating anything": a port in use stops `serve`
/// before the database is created.
#[test]
fn a_port_in_use_stops_serve_before_any_database_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let db = format!("sqlite://{}", path.display());

    let (code, _, err) = run(
        tessera(&db).args(["serve", "--addr", &format!("127.0.0.1:{port}")]),
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && err.contains("command-line flag --addr")
            && err.contains("nothing was created"),
        "{err}"
    );
    assert!(!path.exists(), "no database left behind: {err}");
    assert!(!err.contains("migration"), "{err}");

    // The metrics address too.
    let (code, _, err) = run(
        tessera(&db)
            .env("TESSERA_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .args(["serve", "--addr", "127.0.0.1:0"]),
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (TESSERA_METRICS_ADDR"
        )),
        "{err}"
    );
    assert!(!path.exists(), "no database left behind: {err}");
    drop(taken);
}

/// What a pod in a namespace with a Service named `tessera` (ports `http`
/// 8080/TCP and `metrics` 9090/TCP) finds in its environment.
const KUBERNETES_SERVICE_ENV: &[(&str, &str)] = &[
    ("TESSERA_SERVICE_HOST", "10.96.12.34"),
    ("TESSERA_SERVICE_PORT", "8080"),
    ("TESSERA_SERVICE_PORT_HTTP", "8080"),
    ("TESSERA_SERVICE_PORT_METRICS", "9090"),
    ("TESSERA_PORT", "tcp://10.96.12.34:8080"),
    ("TESSERA_PORT_8080_TCP", "tcp://10.96.12.34:8080"),
    ("TESSERA_PORT_8080_TCP_PROTO", "tcp"),
    ("TESSERA_PORT_8080_TCP_PORT", "8080"),
    ("TESSERA_PORT_8080_TCP_ADDR", "10.96.12.34"),
    ("TESSERA_PORT_9090_TCP", "tcp://10.96.12.34:9090"),
    ("TESSERA_PORT_9090_TCP_PROTO", "tcp"),
    ("TESSERA_PORT_9090_TCP_PORT", "9090"),
    ("TESSERA_PORT_9090_TCP_ADDR", "10.96.12.34"),
];

#[test]
fn kubernetes_service_variables_are_ignored_and_other_unknown_ones_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());

    let err = serve_once_with(&db, KUBERNETES_SERVICE_ENV);
    assert!(err.contains("listening on http://127.0.0.1:"), "{err}");
    let ignored = err
        .lines()
        .find(|l| l.contains("Kubernetes"))
        .unwrap_or_else(|| panic!("no line about the ignored variables: {err}"));
    assert!(ignored.contains("INFO"), "{ignored}");
    for (name, _) in KUBERNETES_SERVICE_ENV {
        assert!(ignored.contains(name), "{name} not in {ignored}");
    }

    let (code, out, err) = run(
        tessera(&db)
            .envs(KUBERNETES_SERVICE_ENV.iter().copied())
            .args(["config", "show"]),
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Kubernetes") && err.contains("TESSERA_SERVICE_HOST"),
        "{err}"
    );
    assert!(
        !out.contains("service_host") && !out.to_lowercase().contains("tessera_port"),
        "{out}"
    );

    // A misspelt setting among them is still refused, naming it.
    let (code, _, err) = run(
        tessera(&db)
            .envs(KUBERNETES_SERVICE_ENV.iter().copied())
            .env("TESSERA_SESION_IDLE_TIMEOUT", "1h")
            .args(["serve", "--addr", "127.0.0.1:0"]),
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown setting TESSERA_SESION_IDLE_TIMEOUT"),
        "{err}"
    );

    // Only Kubernetes' shapes: the same names with other values, or other
    // names, are unknown settings as before.
    for (name, value) in [
        ("TESSERA_PORT", "8080"),
        ("TESSERA_SERVICE_HOST", "auth.example.com"),
        ("TESSERA_PORT_8080_TCP_PORT", "9090"),
        ("TESSERA_PORT_8080_HTTP", "tcp://10.96.12.34:8080"),
        ("TESSERA_SERVICE_PORT_HTTP", "http"),
        ("TESSERA_METRICS_SERVICE_HOST", "10.96.12.35"),
    ] {
        let (code, _, err) = run(tessera(&db).env(name, value).args(["config", "show"]), "");
        assert_eq!(code, 2, "{name}={value}: {err}");
        assert!(err.contains(&format!("unknown setting {name}")), "{err}");
    }
    let (_, _, err) = run(
        tessera(&db)
            .env("TESSERA_PORT", "8080")
            .args(["config", "show"]),
        "",
    );
    assert!(err.contains("the port is part of TESSERA_ADDR"), "{err}");
}

/// One access-log line a request at `info` (#21, 11): method, the route's
/// template, status and latency. Never the query string or the raw path,
/// either of which may carry a token; an unknown path is `unmatched`.
#[test]
fn each_request_gets_one_access_log_line_without_its_query_or_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let secret = "eyJzZWNyZXQiOiJ0b2tlbiJ9";
    let log = serve_once_requesting(
        &db,
        &[("TESSERA_LOG", "info")],
        &[
            &format!("/v1/me?access_token={secret}"),
            &format!("/v1/token/{secret}"),
        ],
    );
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tessera::access"))
        .collect();
    let one = |route: &str, status: &str| {
        let found: Vec<_> = access
            .iter()
            .filter(|l| {
                l.contains(" INFO ")
                    && l.contains("method=GET")
                    && l.contains(&format!("route={route} "))
                    && l.contains(&format!("status={status}"))
                    && l.contains("latency_us=")
            })
            .collect();
        assert_eq!(found.len(), 1, "{route} {status}: {access:#?}");
    };
    one("/v1/me", "401");
    one("unmatched", "404");
    one("/healthz", "200");
    assert_eq!(access.len(), 3, "{access:#?}");
    assert!(!log.contains(secret), "a token in the log:\n{log}");
    assert!(
        !log.contains("access_token="),
        "a query string in the log:\n{log}"
    );
}
