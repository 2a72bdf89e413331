//! Group commit for the frequent small writes: refresh-token rotations, new
//! sessions, session activity (`last_seen_at`) updates and audit events.
//!
//! Every such write but one must be durable before its caller is answered
//! (the exception is session activity: nothing waits for it, see
//! [`crate::store::SessionStore::queue_touch`], and the queue's `flush`
//! waits for it where it matters), and with
//! `synchronous = FULL` each commit waits for an fsync of the WAL: one
//! transaction per write caps a disk at a few hundred writes a second. They
//! are therefore queued (`store::write_queue`) to one task that takes
//! everything waiting (up to 128) and applies it here in a single
//! `BEGIN IMMEDIATE` transaction,
//! one write after the other, then answers each caller once the commit
//! returned. Nothing is answered before its commit, so durability and the
//! single-use rule of refresh tokens are exactly those of one transaction per
//! write: two rotations of the same token in one batch are applied in order,
//! and the second sees the first's write (reuse). If the transaction fails,
//! every caller in it gets the error (fail closed).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::{Row, Sqlite, SqlitePool, Transaction, query};
use time::OffsetDateTime;

use super::tokens::{TOKEN_AND_FAMILY_FROM, family_from_row};
use super::{SESSION_COLUMNS, backend};
use crate::core::audit::AuditEvent;
use crate::core::refresh::{RefreshFamily, Rotation};
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;
use crate::core::time::to_millis;
use crate::store::write_queue::{ApplyBatch, BatchFailed, Job, Outcome};
use crate::store::{StoreError, StoreResult};

const TOUCH_SQL: &str =
    "UPDATE sessions SET last_seen_at = max(last_seen_at, ?) WHERE token_hash = ?";

/// SQLite's side of the group commit: batches applied on the writer pool
/// (one connection).
pub(super) struct SqliteBatches {
    pub(super) write: SqlitePool,
}

#[async_trait]
impl ApplyBatch for SqliteBatches {
    const MAX_BATCH: usize = 128;

    async fn apply(&self, batch: &[Job]) -> Result<Vec<Outcome>, BatchFailed> {
        Ok(apply(&self.write, batch).await?)
    }
}

/// Applies `batch` in one transaction; either all of it commits or none.
///
/// The outcome of every job is what applying the jobs one after the other
/// gives, but the common writes are made in a handful of statements for the
/// whole batch (each statement is a round trip to SQLite's thread): one read
/// of every presented refresh token, then [`Pending`] rows written together.
/// What one job changes that a later job in the batch reads (a token spent,
/// a family revoked) is tracked here; the rare write that other rows depend
/// on (a reuse revoking its family) flushes what is pending first. Reading
/// the presented tokens once, up front, misses nothing: a token issued by
/// this batch cannot be presented in it, as its holder learns it only after
/// the commit.
async fn apply(write: &SqlitePool, batch: &[Job]) -> StoreResult<Vec<Outcome>> {
    // BEGIN IMMEDIATE takes SQLite's write lock up front: the reads, checks
    // and writes below happen with no other writer in between, in this
    // process or any other.
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    let presented = presented_tokens(&mut tx, batch).await?;
    let mut spent: HashSet<SecretHash> = HashSet::new();
    let mut revoked: HashSet<&str> = HashSet::new();
    let mut pending = Pending::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        outcomes.push(match job {
            Job::Rotate {
                presented: hash,
                next_hash,
                next_expires_at,
                now,
                audit,
                ..
            } => {
                let now_ms = to_millis(*now);
                let rotation = match presented.get(hash) {
                    None => Rotation::Invalid,
                    Some(token)
                        if token.family.revoked_at.is_some()
                            || revoked.contains(token.family.id.as_str()) =>
                    {
                        Rotation::Invalid
                    }
                    Some(token) if token.used || spent.contains(hash) => {
                        pending.flush(&mut tx).await?;
                        revoke_reused_family(&mut tx, &token.family.id, now_ms).await?;
                        revoked.insert(&token.family.id);
                        Rotation::Reused(token.family.clone())
                    }
                    Some(token) if token.expires_at <= now_ms => Rotation::Invalid,
                    Some(token) => {
                        spent.insert(*hash);
                        pending.rotate(hash, next_hash, &token.family, now_ms, *next_expires_at);
                        pending.audit(audit, Some(&token.family));
                        Rotation::Rotated(token.family.clone())
                    }
                };
                Outcome::Rotation(rotation)
            }
            Job::Start { session, audit, .. } => {
                // Written at once: a touch later in this batch could not be
                // of it (its cookie is sent only after the commit), but
                // nothing is gained by holding it either.
                let stored = insert_session(&mut tx, session).await?;
                if let Some(audit) = audit.as_ref().filter(|_| stored) {
                    pending.audit(audit, None);
                }
                Outcome::Found(stored)
            }
            Job::Touch { hash, at, .. } => Outcome::Found(touch_one(&mut tx, hash, *at).await?),
            Job::Audit { event, .. } => {
                pending.audit(event, None);
                Outcome::Recorded
            }
            Job::Flush { .. } => Outcome::Recorded,
        });
    }
    pending.flush(&mut tx).await?;
    tx.commit().await.map_err(backend)?;
    Ok(outcomes)
}

/// A presented refresh token as it was when the batch began.
struct Presented {
    used: bool,
    expires_at: i64,
    family: RefreshFamily,
}

/// Reads every refresh token the batch presents, with its family.
async fn presented_tokens(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &[Job],
) -> StoreResult<HashMap<SecretHash, Presented>> {
    let mut hashes: Vec<&SecretHash> = batch
        .iter()
        .filter_map(|job| match job {
            Job::Rotate { presented, .. } => Some(presented),
            _ => None,
        })
        .collect();
    hashes.sort_unstable_by_key(|h| h.as_bytes());
    hashes.dedup();
    let mut found = HashMap::with_capacity(hashes.len());
    if hashes.is_empty() {
        return Ok(found);
    }
    let sql = format!(
        "{TOKEN_AND_FAMILY_FROM} WHERE t.token_hash IN ({})",
        placeholders(1, hashes.len())
    );
    let mut select = query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for hash in hashes {
        select = select.bind(hash.as_bytes());
    }
    for row in select.fetch_all(&mut **tx).await.map_err(backend)? {
        let raw: Vec<u8> = row.try_get("token_hash").map_err(backend)?;
        let hash = SecretHash::from_slice(&raw)
            .ok_or_else(|| StoreError::Backend("bad token_hash column".into()))?;
        let used: Option<i64> = row.try_get("used_at").map_err(backend)?;
        found.insert(
            hash,
            Presented {
                used: used.is_some(),
                expires_at: row.try_get("expires_at").map_err(backend)?,
                family: family_from_row(&row)?,
            },
        );
    }
    Ok(found)
}

/// `count` groups of `width` placeholders: `(?, ?), (?, ?)` for rows, and
/// `?, ?` (width 1) for an `IN` list.
fn placeholders(width: usize, count: usize) -> String {
    let group = match width {
        1 => "?".to_owned(),
        _ => format!("({})", vec!["?"; width].join(", ")),
    };
    vec![group; count].join(", ")
}

/// A rotation's writes, made with the rest of the batch's.
struct NextToken<'a> {
    presented: &'a SecretHash,
    next: &'a SecretHash,
    family_id: &'a str,
    at: i64,
    expires_at: i64,
}

/// An audit row to insert; a rotation's event gains its user and family.
struct AuditRow<'a> {
    event: &'a AuditEvent,
    user_id: Option<&'a str>,
    detail: String,
}

/// Rows waiting to be written in one statement per table.
#[derive(Default)]
struct Pending<'a> {
    rotations: Vec<NextToken<'a>>,
    audits: Vec<AuditRow<'a>>,
}

impl<'a> Pending<'a> {
    fn rotate(
        &mut self,
        presented: &'a SecretHash,
        next: &'a SecretHash,
        family: &'a RefreshFamily,
        at: i64,
        expires_at: OffsetDateTime,
    ) {
        self.rotations.push(NextToken {
            presented,
            next,
            family_id: &family.id,
            at,
            expires_at: to_millis(expires_at),
        });
    }

    fn audit(&mut self, event: &'a AuditEvent, rotated: Option<&'a RefreshFamily>) {
        let (user_id, detail) = match rotated {
            Some(family) => {
                let mut detail = event.detail.clone();
                if let Some(fields) = detail.as_object_mut() {
                    fields.insert("family".into(), family.id.clone().into());
                }
                (Some(family.user_id.as_str()), detail.to_string())
            }
            None => (event.user_id.as_deref(), event.detail.to_string()),
        };
        self.audits.push(AuditRow {
            event,
            user_id,
            detail,
        });
    }

    /// Writes everything pending, in the order the jobs came.
    async fn flush(&mut self, tx: &mut Transaction<'_, Sqlite>) -> StoreResult<()> {
        if !self.rotations.is_empty() {
            let sql = format!(
                "UPDATE refresh_tokens SET used_at = spent.at
                 FROM (SELECT column1 AS hash, column2 AS at FROM (VALUES {})) AS spent
                 WHERE refresh_tokens.token_hash = spent.hash AND refresh_tokens.used_at IS NULL",
                placeholders(2, self.rotations.len())
            );
            let mut spend = query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for r in &self.rotations {
                spend = spend.bind(r.presented.as_bytes()).bind(r.at);
            }
            spend.execute(&mut **tx).await.map_err(backend)?;

            let sql = format!(
                "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
                 VALUES {}",
                placeholders(4, self.rotations.len())
            );
            let mut insert = query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for r in self.rotations.drain(..) {
                insert = insert
                    .bind(r.next.as_bytes())
                    .bind(r.family_id)
                    .bind(r.at)
                    .bind(r.expires_at);
            }
            insert.execute(&mut **tx).await.map_err(backend)?;
        }
        if !self.audits.is_empty() {
            let sql = format!(
                "INSERT INTO audit_events (id, at, type, user_id, ip, user_agent, detail)
                 VALUES {}",
                placeholders(7, self.audits.len())
            );
            let mut insert = query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for a in self.audits.drain(..) {
                insert = insert
                    .bind(&a.event.id)
                    .bind(to_millis(a.event.at))
                    .bind(&a.event.event_type)
                    .bind(a.user_id)
                    .bind(a.event.ip.as_deref())
                    .bind(a.event.user_agent.as_deref())
                    .bind(a.detail);
            }
            insert.execute(&mut **tx).await.map_err(backend)?;
        }
        Ok(())
    }
}

/// Inserts a session unless its user is gone (deleted since the login
/// read it): the foreign key would fail the whole batch, every other
/// caller's write with it, so that case is a `false` for this job alone.
async fn insert_session(tx: &mut Transaction<'_, Sqlite>, s: &SessionRecord) -> StoreResult<bool> {
    let done = query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sessions ({SESSION_COLUMNS})
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
         WHERE EXISTS (SELECT 1 FROM users WHERE id = ?3)"
    )))
    .bind(s.token_hash.as_bytes())
    .bind(&s.id)
    .bind(&s.user_id)
    .bind(to_millis(s.created_at))
    .bind(to_millis(s.last_seen_at))
    .bind(to_millis(s.expires_at))
    .bind(s.ip.as_deref())
    .bind(s.user_agent.as_deref())
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected() == 1)
}

/// One statement per touch, not one for the whole batch: on a server with
/// one core, SQLite's thread then holds it in short stretches (a single
/// statement for 128 touches made the verify tail longer, bench/README.md).
async fn touch_one(
    tx: &mut Transaction<'_, Sqlite>,
    hash: &SecretHash,
    at: OffsetDateTime,
) -> StoreResult<bool> {
    let done = query(TOUCH_SQL)
        .bind(to_millis(at))
        .bind(hash.as_bytes())
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(done.rows_affected() > 0)
}

/// A used refresh token came back: its family is revoked and the token it
/// could still use is deleted.
async fn revoke_reused_family(
    tx: &mut Transaction<'_, Sqlite>,
    family_id: &str,
    now: i64,
) -> StoreResult<()> {
    query("UPDATE refresh_families SET revoked_at = ? WHERE id = ?")
        .bind(now)
        .bind(family_id)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    query("DELETE FROM refresh_tokens WHERE family_id = ? AND used_at IS NULL")
        .bind(family_id)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::write_queue::fixture::{self, JOB_KINDS, describe, jobs};

    async fn seeded(dir: &std::path::Path) -> SqliteStore {
        let store = SqliteStore::open(&format!("sqlite://{}/t.db", dir.display()))
            .await
            .unwrap();
        fixture::seed(&store, &store.batcher).await;
        store
    }

    /// One line of text per row (each query selects a single `||`-joined
    /// column, `quote()` standing in for values that may be NULL or BLOB).
    async fn lines(store: &SqliteStore, sql: &'static str) -> Vec<String> {
        query(sql)
            .fetch_all(&store.write)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    async fn contents(store: &SqliteStore) -> Vec<Vec<String>> {
        vec![
            lines(
                store,
                "SELECT quote(token_hash) || '|' || family_id || '|' || created_at || '|'
                        || expires_at || '|' || quote(used_at)
                 FROM refresh_tokens ORDER BY token_hash",
            )
            .await,
            lines(
                store,
                "SELECT id || '|' || quote(revoked_at) FROM refresh_families ORDER BY id",
            )
            .await,
            lines(
                store,
                "SELECT id || '|' || at || '|' || type || '|' || quote(user_id) || '|'
                        || quote(ip) || '|' || quote(user_agent) || '|' || json(detail)
                 FROM audit_events ORDER BY id",
            )
            .await,
            lines(
                store,
                "SELECT id || '|' || last_seen_at FROM sessions ORDER BY id",
            )
            .await,
        ]
    }

    #[tokio::test]
    async fn a_batch_has_the_outcomes_and_writes_of_its_jobs_one_by_one() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let together = seeded(dirs[0].path()).await;
        let one_by_one = seeded(dirs[1].path()).await;

        let batched = apply(&together.write, &jobs()).await.unwrap();
        let mut single = Vec::new();
        for job in jobs() {
            single.extend(
                apply(&one_by_one.write, std::slice::from_ref(&job))
                    .await
                    .unwrap(),
            );
        }

        let batched = describe(&batched);
        assert_eq!(batched, describe(&single));
        let kinds: Vec<&str> = batched
            .iter()
            .map(|o| o.split('(').next().unwrap_or(o))
            .collect();
        assert_eq!(kinds, JOB_KINDS);
        fixture::check_effects(&together).await;
        let rows = contents(&together).await;
        assert!(rows.iter().all(|table| !table.is_empty()), "{rows:?}");
        assert_eq!(rows, contents(&one_by_one).await);
    }
}
