//! Schema migrations applied one at a time, so the operator sees which and
//! how long (`serve` and every CLI command run this before opening the app).
//!
//! Each backend embeds its own migrations (`migrations/<backend>`) and
//! calls [`apply_reporting`] with its migrator on one connection; once this
//! has run, the store finds nothing left to do when it opens, and it still
//! validates checksums and dirty states itself.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Acquire, Database};

/// sqlx's bookkeeping table (the stores' migrators use the default too).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Progress of a migration run.
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

/// Applies `migrator`'s pending migrations on `conn`, reporting each one.
/// Returns how many were applied. Anything unusual (a dirty or edited
/// migration) is left to the store, which refuses to open with a clear
/// error. The whole run holds the backend's migration lock (PostgreSQL: an
/// advisory lock, taken again, re-entrantly, by each migration), so nodes
/// starting at once apply each migration once; SQLite has no such lock and
/// its store retries a run that lost the race instead.
pub(super) async fn apply_reporting<DB>(
    conn: &mut DB::Connection,
    migrator: &Migrator,
    report: &mut dyn FnMut(MigrationEvent),
) -> anyhow::Result<usize>
where
    DB: Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Acquire<'c, Database = DB>,
{
    conn.lock().await?;
    let applied = apply_locked(conn, migrator, report).await;
    let unlocked = conn.unlock().await;
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

async fn apply_locked<DB>(
    conn: &mut DB::Connection,
    migrator: &Migrator,
    report: &mut dyn FnMut(MigrationEvent),
) -> anyhow::Result<usize>
where
    DB: Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Acquire<'c, Database = DB>,
{
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
    let ups: Vec<_> = migrator
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
        migrator
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
