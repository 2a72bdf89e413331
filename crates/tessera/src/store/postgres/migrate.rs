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

/// Whether the PostgreSQL database at `url` has at least one of Tessera's
/// migrations applied (`_sqlx_migrations` on its search path, as the
/// migrator finds it), or the server's word that there is no such
/// database. Errors name the database by its redacted URL.
pub async fn has_schema(url: &str) -> anyhow::Result<Result<bool, String>> {
    use sqlx::ConnectOptions;
    let redacted = crate::config::redact_url(url);
    // `parse_url`'s errors are already without the password.
    let options = parse_url(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hide = |text: String| scrub(text, url);
    let conn = tokio::time::timeout(std::time::Duration::from_secs(10), options.connect())
        .await
        .map_err(|_| {
            anyhow::anyhow!("cannot connect to the database {redacted}: no connection within 10 s")
        })?;
    let mut conn = match conn {
        Ok(conn) => conn,
        // invalid_catalog_name: the server is there, the database is not.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            return Ok(Err(hide(e.message().to_owned())));
        }
        Err(e) => anyhow::bail!(
            "cannot connect to the database {redacted}: {}",
            hide(e.to_string())
        ),
    };
    let applied: Result<bool, sqlx::Error> = async {
        let table: bool = sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut conn)
            .await?
            .try_get(0)?;
        if !table {
            return Ok(false);
        }
        sqlx::query("SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE success)")
            .fetch_one(&mut conn)
            .await?
            .try_get(0)
    }
    .await;
    let _ = conn.close().await;
    applied.map(Ok).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the database {redacted}: {}",
            hide(e.to_string())
        )
    })
}
