//! Group commit for the frequent small writes: refresh-token rotations,
//! session activity (`last_seen_at`) updates and audit events.
//!
//! Every such write must be durable before its caller is answered, and with
//! `synchronous = FULL` each commit waits for an fsync of the WAL: one
//! transaction per write caps a disk at a few hundred writes a second. They
//! are therefore queued to one task that takes everything waiting (up to
//! [`MAX_BATCH`]) and applies it in a single `BEGIN IMMEDIATE` transaction,
//! one write after the other, then answers each caller once the commit
//! returned. Nothing is answered before its commit, so durability and the
//! single-use rule of refresh tokens are exactly those of one transaction per
//! write: two rotations of the same token in one batch are applied in order,
//! and the second sees the first's write (reuse). If the transaction fails,
//! every caller in it gets the error (fail closed).

use std::sync::{Arc, LazyLock};

use sqlx::{Row, Sqlite, SqlitePool, Transaction, query};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::sqlite::{SESSION_COLUMNS, backend, session_from_row};
use super::sqlite_tokens::{TOKEN_AND_FAMILY, family_from_row};
use super::{StoreError, StoreResult};
use crate::core::audit::AuditEvent;
use crate::core::refresh::Rotation;
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;
use crate::core::time::to_millis;

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 128;
/// Writes waiting for the writer before callers are held back.
const QUEUE: usize = 4096;

static TOUCH_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE sessions SET last_seen_at = max(last_seen_at, ?) WHERE token_hash = ?
         RETURNING {SESSION_COLUMNS}"
    )
});

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// One queued write and where its outcome goes.
enum Job {
    Rotate {
        presented: SecretHash,
        next_hash: SecretHash,
        next_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        audit: Box<AuditEvent>,
        reply: Reply<Rotation>,
    },
    Touch {
        hash: SecretHash,
        at: OffsetDateTime,
        reply: Reply<Option<Arc<SessionRecord>>>,
    },
    Audit {
        event: Box<AuditEvent>,
        reply: Reply<()>,
    },
}

/// What a job produced inside the transaction, sent once it committed.
enum Outcome {
    Rotation(Rotation),
    Touch(Option<Arc<SessionRecord>>),
    Recorded,
}

impl Job {
    /// Sends the caller its outcome (`apply` produces, for each job, the
    /// outcome of the job's own kind).
    fn answer(self, outcome: StoreResult<Outcome>) {
        match self {
            Job::Rotate { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    Outcome::Rotation(r) => Ok(r),
                    _ => Err(mismatch()),
                }));
            }
            Job::Touch { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    Outcome::Touch(t) => Ok(t),
                    _ => Err(mismatch()),
                }));
            }
            Job::Audit { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    Outcome::Recorded => Ok(()),
                    _ => Err(mismatch()),
                }));
            }
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Backend("batched write answered with the wrong outcome".into())
}

fn stopped() -> StoreError {
    StoreError::Backend("the batched writer has stopped".into())
}

/// The handle the store queues writes with (cheap to clone).
#[derive(Clone)]
pub(super) struct WriteBatcher {
    jobs: mpsc::Sender<Job>,
}

impl WriteBatcher {
    /// Starts the task applying writes on `write` (the single-connection
    /// writer pool); it ends when the last handle is dropped.
    pub(super) fn start(write: SqlitePool) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(apply_batches(write, queue));
        Self { jobs }
    }

    pub(super) async fn rotate(
        &self,
        presented: &SecretHash,
        next_hash: &SecretHash,
        next_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        audit: AuditEvent,
    ) -> StoreResult<Rotation> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Rotate {
            presented: *presented,
            next_hash: *next_hash,
            next_expires_at,
            now,
            audit: Box::new(audit),
            reply,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    pub(super) async fn touch(
        &self,
        hash: &SecretHash,
        at: OffsetDateTime,
    ) -> StoreResult<Option<Arc<SessionRecord>>> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Touch {
            hash: *hash,
            at,
            reply,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    pub(super) async fn record(&self, event: &AuditEvent) -> StoreResult<()> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Audit {
            event: Box::new(event.clone()),
            reply,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn apply_batches(write: SqlitePool, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match apply(&write, &batch).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    job.answer(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = batch.len(), "batched write failed");
                for job in batch.drain(..) {
                    job.answer(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}

/// Applies `batch` in one transaction; either all of it commits or none.
async fn apply(write: &SqlitePool, batch: &[Job]) -> StoreResult<Vec<Outcome>> {
    // BEGIN IMMEDIATE takes SQLite's write lock up front: the reads, checks
    // and writes below happen with no other writer in between, in this
    // process or any other.
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        outcomes.push(match job {
            Job::Rotate {
                presented,
                next_hash,
                next_expires_at,
                now,
                audit,
                ..
            } => {
                let rotation =
                    rotate_one(&mut tx, presented, next_hash, *next_expires_at, *now).await?;
                if let Rotation::Rotated(family) = &rotation {
                    let mut event = (**audit).clone();
                    event.user_id = Some(family.user_id.clone());
                    if let Some(detail) = event.detail.as_object_mut() {
                        detail.insert("family".into(), family.id.clone().into());
                    }
                    record_one(&mut tx, &event).await?;
                }
                Outcome::Rotation(rotation)
            }
            Job::Touch { hash, at, .. } => Outcome::Touch(touch_one(&mut tx, hash, *at).await?),
            Job::Audit { event, .. } => {
                record_one(&mut tx, event).await?;
                Outcome::Recorded
            }
        });
    }
    tx.commit().await.map_err(backend)?;
    Ok(outcomes)
}

async fn record_one(tx: &mut Transaction<'_, Sqlite>, e: &AuditEvent) -> StoreResult<()> {
    query(
        "INSERT INTO audit_events (id, at, type, user_id, ip, user_agent, detail)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.id)
    .bind(to_millis(e.at))
    .bind(&e.event_type)
    .bind(e.user_id.as_deref())
    .bind(e.ip.as_deref())
    .bind(e.user_agent.as_deref())
    .bind(e.detail.to_string())
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn touch_one(
    tx: &mut Transaction<'_, Sqlite>,
    hash: &SecretHash,
    at: OffsetDateTime,
) -> StoreResult<Option<Arc<SessionRecord>>> {
    let row = query(sqlx::AssertSqlSafe(TOUCH_SQL.as_str()))
        .bind(to_millis(at))
        .bind(hash.as_bytes())
        .fetch_optional(&mut **tx)
        .await
        .map_err(backend)?;
    row.map(|r| session_from_row(&r).map(Arc::new)).transpose()
}

async fn rotate_one(
    tx: &mut Transaction<'_, Sqlite>,
    presented: &SecretHash,
    next_hash: &SecretHash,
    next_expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> StoreResult<Rotation> {
    let now = to_millis(now);
    let Some(row) = query(TOKEN_AND_FAMILY)
        .bind(presented.as_bytes())
        .fetch_optional(&mut **tx)
        .await
        .map_err(backend)?
    else {
        return Ok(Rotation::Invalid);
    };
    let family = family_from_row(&row)?;
    let used: Option<i64> = row.try_get("used_at").map_err(backend)?;
    let expires_at: i64 = row.try_get("expires_at").map_err(backend)?;
    if family.revoked_at.is_some() {
        return Ok(Rotation::Invalid);
    }
    if used.is_some() {
        query("UPDATE refresh_families SET revoked_at = ? WHERE id = ?")
            .bind(now)
            .bind(&family.id)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
        query("DELETE FROM refresh_tokens WHERE family_id = ? AND used_at IS NULL")
            .bind(&family.id)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
        return Ok(Rotation::Reused(family));
    }
    if expires_at <= now {
        return Ok(Rotation::Invalid);
    }
    query("UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL")
        .bind(now)
        .bind(presented.as_bytes())
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    query(
        "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
         VALUES (?, ?, ?, ?)",
    )
    .bind(next_hash.as_bytes())
    .bind(&family.id)
    .bind(now)
    .bind(to_millis(next_expires_at))
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(Rotation::Rotated(family))
}
