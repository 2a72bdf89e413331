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
//!
//! A checkpoint copies pages back but leaves the log file as it was: the
//! next writes overwrite it from the start, so older page images linger
//! there until overwritten. After a secret is wiped, [`Checkpointer::
//! truncate`] copies everything back and empties the log (`TRUNCATE`), so
//! no page image from before the wipe stays in it; if readers keep it from
//! finishing, the task tries again at every tick until it does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::{SqlitePool, query, query_as};
use tokio::sync::oneshot;
use tokio::time::{MissedTickBehavior, interval};

use super::backend;
use crate::store::{StoreError, StoreResult};

/// How long [`Checkpointer::truncate`] waits for the writer and for readers
/// of older snapshots. Writes wait behind it meanwhile, so it stays well
/// under their own busy timeout: a slow scrub delays writes, never fails
/// them.
const TRUNCATE_WAIT: Duration = Duration::from_secs(1);

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
    /// A [`Checkpointer::truncate`] could not finish: the task tries again.
    truncate_pending: Arc<AtomicBool>,
    _stop: oneshot::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database of `pool` (one connection of its
    /// own, able to write the database file).
    pub(super) fn start(pool: SqlitePool) -> Self {
        let (stop, stopped) = oneshot::channel();
        let truncate_pending = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(pool.clone(), Arc::clone(&truncate_pending), stopped));
        Self {
            pool,
            truncate_pending,
            _stop: stop,
        }
    }

    /// Copies the whole log back into the database file and empties the
    /// log, now. It waits (up to [`TRUNCATE_WAIT`]) for the writer and for
    /// readers of older snapshots, and holds writes up meanwhile: for rare
    /// events only. When that is not enough, the task keeps trying at
    /// every tick, and the error says so.
    pub(super) async fn truncate(&self) -> StoreResult<()> {
        self.truncate_pending.store(true, Ordering::SeqCst);
        if checkpoint_truncate(&self.pool, TRUNCATE_WAIT).await? {
            self.truncate_pending.store(false, Ordering::SeqCst);
            Ok(())
        } else {
            Err(StoreError::Backend(
                "the write-ahead log could not be emptied yet (readers of older snapshots); trying again in the background".into(),
            ))
        }
    }

    /// Closes the connection (SQLite checkpoints once more when the
    /// database's last connection closes). A truncation still pending is
    /// tried once more first, waiting as long as a write would: a CLI
    /// command that wiped a key exits next, and the server's process does
    /// not know there is anything to empty.
    pub(super) async fn close(&self) {
        if self.truncate_pending.load(Ordering::SeqCst) {
            match checkpoint_truncate(&self.pool, super::BUSY_TIMEOUT).await {
                Ok(true) => self.truncate_pending.store(false, Ordering::SeqCst),
                Ok(false) | Err(_) => tracing::warn!(
                    "closing with page images from before a wipe still in the write-ahead log (readers of older snapshots); they stay until overwritten"
                ),
            }
        }
        self.pool.close().await;
    }
}

/// One `TRUNCATE` checkpoint: whether it completed (every frame copied
/// back, the log emptied). It waits up to `wait` for the writer and older
/// readers, holding new writes up meanwhile (the task's retries wait not
/// at all, so they never stall the writer), then gives up.
async fn checkpoint_truncate(pool: &SqlitePool, wait: Duration) -> StoreResult<bool> {
    let mut conn = pool.acquire().await.map_err(backend)?;
    query(sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {}",
        wait.as_millis()
    )))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    // (busy, log frames, frames checkpointed); busy = 1 when it could not
    // finish, and the log is then left as it is.
    let done = query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *conn)
        .await
        .map(|(busy, _, _)| busy == 0)
        .map_err(backend);
    let restored = query(sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {}",
        super::BUSY_TIMEOUT.as_millis()
    )))
    .execute(&mut *conn)
    .await;
    if let Err(e) = restored {
        // Not back in the pool without its busy timeout.
        conn.close_on_drop();
        return Err(backend(e));
    }
    done
}

async fn run(
    pool: SqlitePool,
    truncate_pending: Arc<AtomicBool>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut tick = interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
        }
        if truncate_pending.load(Ordering::SeqCst) {
            match checkpoint_truncate(&pool, Duration::ZERO).await {
                Ok(true) => {
                    truncate_pending.store(false, Ordering::SeqCst);
                    tracing::info!("write-ahead log emptied after a wipe");
                    continue;
                }
                Ok(false) => {}
                Err(_) if pool.is_closed() => break,
                Err(e) => {
                    tracing::warn!(error = %e, "emptying the write-ahead log failed; trying again")
                }
            }
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

    /// `scrub` empties the log at once; when a reader of an older snapshot
    /// keeps it from finishing, it says so and the task empties the log as
    /// soon as the reader is gone.
    #[tokio::test]
    async fn scrub_empties_the_log_now_or_as_soon_as_readers_let_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let url = format!("sqlite://{}", file.display());
        let store = SqliteStore::open(&url).await.unwrap();
        let wal = || std::fs::metadata(dir.path().join("t.db-wal")).map_or(0, |m| m.len());
        let write = |n: u32| {
            query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO bulk SELECT randomblob(100) FROM
                 (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
                  SELECT i FROM n)"
            )))
            .execute(&store.write)
        };
        query("CREATE TABLE bulk (x BLOB)")
            .execute(&store.write)
            .await
            .unwrap();
        write(1000).await.unwrap();
        assert!(wal() > 0);
        store.scrub().await.unwrap();
        assert_eq!(wal(), 0, "emptied before scrub returned");

        // A reader holds a snapshot while more is written after it.
        let reader = sqlx::SqlitePool::connect(&url).await.unwrap();
        let mut held = reader.begin().await.unwrap();
        query("SELECT count(*) FROM bulk")
            .execute(&mut *held)
            .await
            .unwrap();
        write(1000).await.unwrap();
        // A write meanwhile waits for the scrub to give up, and succeeds.
        let (scrubbed, written) = tokio::join!(store.scrub(), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            write(10).await
        });
        assert!(scrubbed.is_err(), "a reader of an older snapshot");
        written.unwrap();
        assert!(wal() > 0);
        // The task tries again without waiting, so it never holds writes up.
        tokio::time::sleep(EVERY * 2).await;
        let start = Instant::now();
        write(10).await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        held.rollback().await.unwrap();
        reader.close().await;
        let start = Instant::now();
        while wal() > 0 && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(wal(), 0, "emptied by the task once the reader left");
        store.close().await;
    }
}
