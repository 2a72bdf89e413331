//! What the command line does to a PostgreSQL database below the store:
//! apply pending migrations with the same progress lines as SQLite's, and
//! read the server's clock for `tessera doctor` (the other nodes' tokens
//! and sessions are judged against their own clocks, so a server far off
//! this one's is worth a warning). Errors name the database by its
//! redacted URL and never carry its password.

use anyhow::Context;
use sqlx::{Connection, PgConnection, Row};

use super::{MIGRATOR, connect_one, parse_url, scrub};
use crate::store::migrate::{MigrationEvent, apply_reporting};

async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let options = parse_url(url)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot use the database {}", crate::config::redact_url(url)))?;
    connect_one(&options).await.map_err(|e| {
        anyhow::anyhow!(scrub(e.to_string(), url)).context(format!(
            "cannot connect to the database {}",
            crate::config::redact_url(url)
        ))
    })
}

/// Applies the pending migrations of the database at `url`, reporting each
/// one. Returns how many were applied. The database itself must exist.
pub async fn apply_migrations(
    url: &str,
    report: &mut dyn FnMut(MigrationEvent),
) -> anyhow::Result<usize> {
    let mut conn = connect(url).await?;
    let result = apply_reporting::<sqlx::Postgres>(&mut conn, &MIGRATOR, report).await;
    let _ = conn.close().await;
    result
        .map_err(|e| anyhow::anyhow!(scrub(format!("{e:#}"), url)))
        .with_context(|| {
            format!(
                "cannot migrate the database {}",
                crate::config::redact_url(url)
            )
        })
}

/// How far the server's clock is from this process's (seconds, positive
/// when the server is ahead), read with `clock_timestamp()` (the time now,
/// not the transaction's start) and compared with the middle of the round
/// trip.
pub async fn clock_skew(url: &str) -> anyhow::Result<f64> {
    let mut conn = connect(url).await?;
    let before = time::OffsetDateTime::now_utc();
    let row = sqlx::query("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8 AS ms")
        .fetch_one(&mut conn)
        .await;
    let after = time::OffsetDateTime::now_utc();
    let _ = conn.close().await;
    let db_ms: i64 = row
        .and_then(|r| r.try_get("ms"))
        .map_err(|e| anyhow::anyhow!(scrub(e.to_string(), url)))?;
    let local_ms =
        ((before.unix_timestamp_nanos() + after.unix_timestamp_nanos()) / 2 / 1_000_000) as i64;
    Ok((db_ms - local_ms) as f64 / 1000.0)
}
