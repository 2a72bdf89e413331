//! What the operator sees when a database is opened: each schema migration
//! applied is reported on stderr (by `serve` and by any CLI command), and
//! `serve` says where it listens, which store it uses and, on a database
//! without users, how to create the first administrator.

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
fn cli_commands_report_each_migration_they_apply() {
    let (total, first, last) = migrations();
    assert!(total >= 2);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("m.db").display());

    let (code, _, err) = run(tessera(&db).args(["user", "list"]), "");
    assert_eq!(code, 0, "{err}");
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
