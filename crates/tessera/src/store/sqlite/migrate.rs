//! What the command line does to a SQLite database below the store: apply
//! pending migrations with progress lines, read the database's clock for
//! `tessera doctor`, and tell whether the file exists yet (the doctor must
//! not create one).

use std::str::FromStr;

use anyhow::Context;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

use super::{MIGRATOR, connect_options};
use crate::store::migrate::{MigrationEvent, apply_reporting};

/// Whether `url` names a SQLite file that does not exist yet.
pub fn file_missing(url: &str) -> bool {
    match SqliteConnectOptions::from_str(url) {
        Ok(o) => {
            let path = o.get_filename();
            path != std::path::Path::new(":memory:") && !path.exists()
        }
        Err(_) => false,
    }
}

/// The absolute path of the file `url` names (`None` for `:memory:` or a
/// URL that does not parse), for messages about it.
pub fn file_path(url: &str) -> Option<std::path::PathBuf> {
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (path != std::path::Path::new(":memory:"))
        .then(|| std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
}

/// Whether the existing database at `url` holds Tessera's schema (at least
/// one migration applied). Read without creating or changing anything: no
/// `create_if_missing`, no journal mode set (an empty file turned to WAL
/// would no longer be empty).
pub async fn has_schema(url: &str) -> anyhow::Result<bool> {
    let mut conn = SqliteConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("bad SQLite URL: {e}"))?
        .busy_timeout(super::BUSY_TIMEOUT)
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                crate::config::redact_url(url)
            )
        })?;
    let applied: anyhow::Result<i64> = async {
        let tables: i64 = sqlx::query(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
        if tables == 0 {
            return Ok(0);
        }
        Ok(
            sqlx::query("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut conn)
                .await?
                .try_get(0)?,
        )
    }
    .await;
    let _ = conn.close().await;
    Ok(applied.with_context(|| {
        format!(
            "cannot read the database {}",
            crate::config::redact_url(url)
        )
    })? > 0)
}

/// Applies the pending migrations of the database at `url` (creating it if
/// missing), reporting each one. Returns how many were applied.
pub async fn apply_migrations(
    url: &str,
    report: &mut dyn FnMut(MigrationEvent),
) -> anyhow::Result<usize> {
    // Tried again if another process opening the same new file got in the
    // way (see `OPEN_RETRIES`): the next attempt finds its work done.
    let mut attempt = 0;
    loop {
        match apply_once(url, report).await {
            Err(_) if attempt < super::OPEN_RETRIES => {
                attempt += 1;
                tokio::time::sleep(super::open_pause(attempt)).await;
            }
            result => return result,
        }
    }
}

async fn apply_once(url: &str, report: &mut dyn FnMut(MigrationEvent)) -> anyhow::Result<usize> {
    let mut conn = connect_options(url)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .create_if_missing(true)
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                crate::config::redact_url(url)
            )
        })?;
    let result = apply_reporting::<sqlx::Sqlite>(&mut conn, &MIGRATOR, report).await;
    let _ = conn.close().await;
    result
}

/// How far the database's clock is from this process's (seconds, positive
/// when the database is ahead). For SQLite, `now` comes from this machine's
/// clock through SQLite's own time functions, so this mostly confirms they
/// agree.
pub async fn clock_skew(url: &str) -> anyhow::Result<f64> {
    let mut conn = connect_options(url)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .read_only(true)
        .connect()
        .await?;
    let before = time::OffsetDateTime::now_utc();
    let row = sqlx::query("SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)")
        .fetch_one(&mut conn)
        .await;
    let after = time::OffsetDateTime::now_utc();
    let _ = conn.close().await;
    let db_ms: i64 = row?.try_get(0)?;
    let local_ms =
        ((before.unix_timestamp_nanos() + after.unix_timestamp_nanos()) / 2 / 1_000_000) as i64;
    Ok((db_ms - local_ms) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_are_reported_once_and_the_clock_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        assert!(file_missing(&url));
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
        assert!(!file_missing(&url));

        let mut again = Vec::new();
        assert_eq!(
            apply_migrations(&url, &mut |e| again.push(e))
                .await
                .unwrap(),
            0
        );
        assert!(again.is_empty());

        let skew = clock_skew(&url).await.unwrap();
        assert!(skew.abs() < 1.0, "{skew}");
    }
}
