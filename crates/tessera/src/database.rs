//! What the command line does to the database below the stores: apply
//! pending schema migrations one at a time so the operator sees which and
//! how long (`serve` and every CLI command call this before opening the
//! app), read the database's own clock for `tessera doctor`, and tell
//! whether a SQLite file exists yet (the doctor must not create one).
//!
//! The migrations are the same embedded files the store applies when it
//! opens (`migrations/sqlite`); once this has run, the store finds nothing
//! left to do, and it still validates checksums and dirty states itself.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// sqlx's bookkeeping table (the store's migrator uses the default too).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Progress of [`apply_migrations`].
#[derive(Debug, Clone, PartialEq)]
pub enum MigrationEvent {
    /// `pending` of the `total` migrations are about to be applied.
    Pending { pending: usize, total: usize },
    /// Migration `index` (1-based, of `total`) starts.
    Applying {
        index: usize,
        total: usize,
        description: String,
    },
    /// The migration that started last is committed.
    Applied { elapsed: Duration },
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

fn options(url: &str) -> anyhow::Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)
        .with_context(|| format!("bad SQLite URL {}", crate::config::redact_url(url)))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true))
}

/// Whether `url` names a SQLite file that does not exist yet.
pub fn sqlite_file_missing(url: &str) -> bool {
    if !is_sqlite(url) {
        return false;
    }
    match SqliteConnectOptions::from_str(url) {
        Ok(o) => {
            let path = o.get_filename();
            path != std::path::Path::new(":memory:") && !path.exists()
        }
        Err(_) => false,
    }
}

/// Applies the pending migrations of the database at `url` (creating it if
/// missing), reporting each one. Returns how many were applied. Anything
/// unusual (a dirty or edited migration) is left to the store, which
/// refuses to open with a clear error.
pub async fn apply_migrations(
    url: &str,
    report: &mut dyn FnMut(MigrationEvent),
) -> anyhow::Result<usize> {
    if !is_sqlite(url) {
        return Ok(0);
    }
    let mut conn = options(url)?
        .create_if_missing(true)
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                crate::config::redact_url(url)
            )
        })?;
    let result = apply_on(&mut conn, report).await;
    let _ = conn.close().await;
    result
}

async fn apply_on(
    conn: &mut sqlx::SqliteConnection,
    report: &mut dyn FnMut(MigrationEvent),
) -> anyhow::Result<usize> {
    conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
    if conn.dirty_version(MIGRATIONS_TABLE).await?.is_some() {
        return Ok(0);
    }
    let applied: HashSet<i64> = conn
        .list_applied_migrations(MIGRATIONS_TABLE)
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let ups: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    let total = ups.len();
    let pending = ups.iter().filter(|m| !applied.contains(&m.version)).count();
    if pending == 0 {
        return Ok(0);
    }
    report(MigrationEvent::Pending { pending, total });
    for (i, m) in ups.iter().enumerate() {
        if applied.contains(&m.version) {
            continue;
        }
        report(MigrationEvent::Applying {
            index: i + 1,
            total,
            description: m.description.to_string(),
        });
        let started = Instant::now();
        MIGRATOR
            .run_to(m.version, &mut *conn)
            .await
            .with_context(|| format!("migration {} ({}) failed", m.version, m.description))?;
        report(MigrationEvent::Applied {
            elapsed: started.elapsed(),
        });
    }
    Ok(pending)
}

fn format_elapsed(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A reporter that writes one line per migration to standard error:
/// `applying migration 2/2: tokens … done in 12 ms`.
pub fn stderr_reporter(url: &str) -> impl FnMut(MigrationEvent) + use<> {
    use std::io::Write;
    let name = crate::config::redact_url(url);
    move |event| {
        let mut err = std::io::stderr().lock();
        let _ = match event {
            MigrationEvent::Pending { pending, total } => writeln!(
                err,
                "database {name}: {pending} of {total} schema migrations to apply"
            ),
            MigrationEvent::Applying {
                index,
                total,
                description,
            } => write!(err, "applying migration {index}/{total}: {description} … ")
                .and_then(|()| err.flush()),
            MigrationEvent::Applied { elapsed } => {
                writeln!(err, "done in {}", format_elapsed(elapsed))
            }
        };
    }
}

/// Applies pending migrations, reporting them on standard error.
pub async fn migrate_reporting(url: &str) -> anyhow::Result<usize> {
    let mut report = stderr_reporter(url);
    apply_migrations(url, &mut report).await
}

/// How far the database's clock is from this process's (seconds, positive
/// when the database is ahead); `None` for databases it cannot ask. For
/// SQLite, `now` comes from this machine's clock through SQLite's own
/// time functions, so this mostly confirms they agree.
pub async fn clock_skew(url: &str) -> anyhow::Result<Option<f64>> {
    if !is_sqlite(url) {
        return Ok(None);
    }
    let mut conn = options(url)?.read_only(true).connect().await?;
    let before = time::OffsetDateTime::now_utc();
    let row = sqlx::query("SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)")
        .fetch_one(&mut conn)
        .await;
    let after = time::OffsetDateTime::now_utc();
    let _ = conn.close().await;
    let db_ms: i64 = row?.try_get(0)?;
    let local_ms =
        ((before.unix_timestamp_nanos() + after.unix_timestamp_nanos()) / 2 / 1_000_000) as i64;
    Ok(Some((db_ms - local_ms) as f64 / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_are_reported_once_and_the_clock_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        assert!(sqlite_file_missing(&url));
        let mut events = Vec::new();
        let n = apply_migrations(&url, &mut |e| events.push(e))
            .await
            .unwrap();
        let total = MIGRATOR.iter().count();
        assert_eq!(n, total);
        assert_eq!(
            events[0],
            MigrationEvent::Pending {
                pending: total,
                total
            }
        );
        assert!(matches!(
            &events[1],
            MigrationEvent::Applying { index: 1, description, .. } if description == "accounts and sessions"
        ));
        assert_eq!(events.len(), 1 + 2 * total);
        assert!(!sqlite_file_missing(&url));

        let mut again = Vec::new();
        assert_eq!(
            apply_migrations(&url, &mut |e| again.push(e))
                .await
                .unwrap(),
            0
        );
        assert!(again.is_empty());

        let skew = clock_skew(&url).await.unwrap().unwrap();
        assert!(skew.abs() < 1.0, "{skew}");
        assert_eq!(clock_skew("postgres://x/y").await.unwrap(), None);
        assert!(!sqlite_file_missing("postgres://x/y"));
    }
}
