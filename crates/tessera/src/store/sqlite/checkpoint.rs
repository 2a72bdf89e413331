//! WAL checkpoints away from the writer.
//!
//! In WAL mode a commit appends the pages it changed to the log; a checkpoint
//! copies them back into the database file and fsyncs it. SQLite's automatic
//! checkpoint runs inside the commit that crosses its threshold, so that
//! commit, and every write queued behind it on the single writer connection,
//! waits for the copy and the fsync. Under a stream of refresh rotations that
//! was about a sixth of their throughput (bench/README.md). Instead, a task
//! with its own connection runs a `PASSIVE` checkpoint (which never waits for
//! or blocks readers and the writer) every [`EVERY`]; the writer keeps its
//! automatic checkpoint only as a backstop at [`BACKSTOP_PAGES`], should this
//! task fall behind. Durability is unchanged: a commit is durable once its
//! log frames are fsynced, before any checkpoint.

use std::time::Duration;

use sqlx::{SqlitePool, query};
use tokio::sync::oneshot;
use tokio::time::{MissedTickBehavior, interval};

/// How often the log is copied back (a few thousand pages at most under
/// sustained writes; nothing to do and almost free when idle).
const EVERY: Duration = Duration::from_millis(250);
/// The writer's own automatic checkpoint: log pages (of 4 KiB) before a
/// commit checkpoints by itself.
pub(super) const BACKSTOP_PAGES: u32 = 10_000;
/// A log larger than this is truncated when it restarts, so one burst does
/// not keep a large file.
pub(super) const LOG_SIZE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Runs checkpoints until closed or dropped (with the last clone of the
/// store).
pub(super) struct Checkpointer {
    pool: SqlitePool,
    _stop: oneshot::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database of `pool` (one connection of its
    /// own, able to write the database file).
    pub(super) fn start(pool: SqlitePool) -> Self {
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(run(pool.clone(), stopped));
        Self { pool, _stop: stop }
    }

    /// Closes the connection (SQLite checkpoints once more when the
    /// database's last connection closes).
    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

async fn run(pool: SqlitePool, mut stopped: oneshot::Receiver<()>) {
    let mut tick = interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
        }
        match query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            Ok(_) => failing = false,
            Err(_) if pool.is_closed() => break,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "WAL checkpoint failed; the writer's backstop takes over");
            }
            Err(_) => {}
        }
    }
    pool.close().await;
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::store::Backend;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn the_log_reaches_the_database_file_without_the_writer_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let store = SqliteStore::open(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        // About 2 MB in one commit: under the writer's backstop (and under
        // SQLite's default threshold too), so only the task copies it back.
        query(
            "CREATE TABLE bulk (x BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO bulk SELECT randomblob(100) FROM n;",
        )
        .execute(&store.write)
        .await
        .unwrap();
        let size = || std::fs::metadata(&file).unwrap().len();
        let start = Instant::now();
        while size() < 2_000_000 && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(size() >= 2_000_000, "database file is {} bytes", size());
        store.close().await;
    }
}
