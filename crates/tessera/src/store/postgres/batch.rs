//! Group commit for the frequent small writes, across nodes: refresh-token
//! rotations, new sessions (with their audit event), session activity
//! (`last_seen_at`) and audit events.
//!
//! As in the SQLite store, each such write is queued (`store::write_queue`)
//! to one task per node, which takes everything waiting (up to 256) and applies it in a
//! single transaction, then answers each caller once the commit returned:
//! one commit (one WAL flush with `synchronous_commit = on`) and a handful
//! of round trips for the whole batch instead of per write. Nothing is
//! answered before its commit, so durability and the single-use rule are
//! those of one transaction per write; if the transaction fails, every
//! caller in it gets the error (fail closed).
//!
//! What SQLite gets from having one writer, this gets from row locks, since
//! other nodes write the same tables at the same time:
//!
//! - **Rotation is atomic across nodes.** The batch begins by locking the
//!   presented refresh tokens (`SELECT … FOR UPDATE` joined with their
//!   families, in token-hash order so that two nodes' batches take their
//!   locks in the same order and cannot deadlock on them). Under READ
//!   COMMITTED a racing batch on another node that presented the same token
//!   waits for this commit, then reads the row again and finds `used_at`
//!   set: reuse. (Why the family read in the same statement is fresh
//!   enough: see [`presented_tokens`].)
//! - **Outcomes are those of the jobs one by one**, in queue order: what one
//!   job changes that a later one reads (a token spent, a family revoked) is
//!   tracked here, so the same token twice in one batch makes the second a
//!   reuse. The writes are then made in a few statements for the whole batch
//!   (arrays bound with `unnest`): new sessions, activity, then the spent
//!   tokens, their successors and the audit rows in one statement, then
//!   reuse revocations, whose delete of a family's unused token must see a
//!   successor issued earlier in the batch. A rotation-only batch is four
//!   round trips: `BEGIN`, the lock, the writes, `COMMIT`.
//! - **A new session whose user is gone** fails alone: it is inserted only
//!   where the user still exists, with that user row share-locked (`FOR KEY
//!   SHARE`) so a delete racing on another node either waits for this commit
//!   (and cascades to the session) or has committed and is seen.
//! - **Activity never moves back** (`GREATEST`), and sessions are locked in
//!   token-hash order before the update, the order every multi-session write
//!   of this store uses.
//! - **Deadlocks and serialization failures** (SQLSTATE 40P01, 40001), which
//!   locks taken in the middle of a batch (a reuse revoking a family whose
//!   unused token another node holds) can still cause, roll the batch back;
//!   it is retried from the start, up to [`MAX_ATTEMPTS`] times, and each
//!   caller is answered only with the outcome of the attempt that committed.
//! - **Plans are cached** (prepared statements, PostgreSQL's generic
//!   plans). On a fresh database the first plans are made while the token
//!   tables are nearly empty, and they scan `refresh_tokens` whole until
//!   autovacuum's first `ANALYZE` of it (within a minute under load)
//!   replaces them; after that, index lookups. Planning every batch instead
//!   (unnamed statements) avoided that minute but cost more than it saved:
//!   6,083 instead of 7,860 rotations/s and 0.82 instead of 0.87 of the
//!   login bound in `bench/run` (bench/README.md).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction, query};
use time::OffsetDateTime;

use super::backend;
use super::tokens::family_from_row;
use crate::core::audit::AuditEvent;
use crate::core::refresh::{RefreshFamily, Rotation};
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;
use crate::core::time::to_millis;
use crate::store::write_queue::{ApplyBatch, BatchFailed, Job, Outcome};
use crate::store::{StoreError, StoreResult};

/// Attempts at a batch that deadlocked or failed to serialize.
const MAX_ATTEMPTS: u32 = 5;

/// PostgreSQL's side of the group commit: batches applied on the pool,
/// retried while they deadlock.
pub(super) struct PgBatches {
    pub(super) pool: PgPool,
}

#[async_trait]
impl ApplyBatch for PgBatches {
    const MAX_BATCH: usize = 256;

    async fn apply(&self, batch: &[Job]) -> Result<Vec<Outcome>, BatchFailed> {
        apply_retrying(&self.pool, batch)
            .await
            .map_err(|failed| BatchFailed {
                error: failed.error,
                unreachable: failed.unreachable,
            })
    }
}

/// Why a batch did not commit.
struct Failed {
    error: StoreError,
    /// A deadlock or serialization failure: trying again may succeed.
    retry: bool,
    /// No connection could be had (the database is down or unreachable).
    unreachable: bool,
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        let retry = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == "40P01" || code == "40001");
        let unreachable = matches!(
            e,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
        );
        Self {
            error: backend(e),
            retry,
            unreachable,
        }
    }
}

impl From<StoreError> for Failed {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            retry: false,
            unreachable: false,
        }
    }
}

/// [`apply`], again from the start while it deadlocks (each attempt is
/// rolled back whole, so nothing of a failed attempt remains).
async fn apply_retrying(pool: &PgPool, batch: &[Job]) -> Result<Vec<Outcome>, Failed> {
    let mut attempt = 1;
    loop {
        match apply(pool, batch).await {
            Err(failed) if failed.retry && attempt < MAX_ATTEMPTS => {
                tracing::debug!(error = %failed.error, attempt, "batched write retried");
                // The other transaction was let through; a short, varying
                // pause keeps two retrying nodes from meeting again.
                let jitter = u64::from(random_byte() % 10);
                tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5 + jitter)).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// A few random bits for the retry pause.
fn random_byte() -> u8 {
    let mut b = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[0]
}

/// Applies `batch` in one transaction; either all of it commits or none.
/// The outcome of every job is what applying the jobs one after the other
/// gives (see the module docs for how, and why the locks make it hold
/// across nodes).
async fn apply(pool: &PgPool, batch: &[Job]) -> Result<Vec<Outcome>, Failed> {
    let mut tx = pool.begin().await?;
    let presented = presented_tokens(&mut tx, batch).await?;
    let mut spent: HashSet<SecretHash> = HashSet::new();
    let mut revoked: HashSet<&str> = HashSet::new();
    let mut writes = Writes::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, job) in batch.iter().enumerate() {
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
                        revoked.insert(&token.family.id);
                        writes.revoke(&token.family.id, now_ms);
                        Rotation::Reused(token.family.clone())
                    }
                    Some(token) if token.expires_at <= now_ms => Rotation::Invalid,
                    Some(token) => {
                        spent.insert(*hash);
                        writes.rotate(hash, next_hash, &token.family.id, now_ms, *next_expires_at);
                        writes.audit(audit, Some(&token.family));
                        Rotation::Rotated(token.family.clone())
                    }
                };
                Outcome::Rotation(rotation)
            }
            Job::Start { session, audit, .. } => {
                writes.start(index, session, audit.as_deref());
                // Filled in once the insert says whether the user was there.
                Outcome::Found(false)
            }
            Job::Touch { hash, at, .. } => {
                writes.touch(index, hash, *at);
                Outcome::Found(false)
            }
            Job::Audit { event, .. } => {
                writes.audit(event, None);
                Outcome::Recorded
            }
            Job::Flush { .. } => Outcome::Recorded,
        });
    }
    writes.apply(&mut tx, &mut outcomes).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// A presented refresh token as it was once locked.
struct Presented {
    used: bool,
    expires_at: i64,
    family: RefreshFamily,
}

/// Locks every refresh token the batch presents (in hash order) and reads
/// it with its family.
///
/// The token row comes back as it is after any wait for another node's
/// lock (a spend that committed meanwhile is seen, a token deleted
/// meanwhile is gone); the family row is as it was when the statement
/// began, which can only lag on `revoked_at`. That lag never lets a
/// revoked family rotate: every revocation deletes the family's unused
/// tokens in the same transaction (reuse here, `revoke_family`,
/// `revoke_user_families` in `tokens`), so a presented token still unused
/// and present once locked is in a family nobody revoked before this
/// batch's lock; a used one is reuse either way (at worst `Reused` where a
/// fresh read would say `Invalid`, which the trait allows for racers).
async fn presented_tokens(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[Job],
) -> Result<HashMap<SecretHash, Presented>, Failed> {
    let mut hashes: Vec<&[u8]> = batch
        .iter()
        .filter_map(|job| match job {
            Job::Rotate { presented, .. } => Some(presented.as_bytes()),
            _ => None,
        })
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    let mut found = HashMap::with_capacity(hashes.len());
    if hashes.is_empty() {
        return Ok(found);
    }
    // The locks are taken row by row in the sorted order (the locking step
    // runs above the sort), so two nodes' batches lock in the same order.
    let rows = query(
        "SELECT t.token_hash, t.used_at, t.expires_at, f.id AS family_id, f.user_id,
                f.client_id, f.scope, f.created_at AS family_created_at, f.revoked_at
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
         WHERE t.token_hash = ANY($1::bytea[])
         ORDER BY t.token_hash
         FOR UPDATE OF t",
    )
    .bind(&hashes)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let used: Option<i64> = row.try_get("used_at")?;
        found.insert(
            hash_column(row, "token_hash")?,
            Presented {
                used: used.is_some(),
                expires_at: row.try_get("expires_at")?,
                family: family_from_row(row)?,
            },
        );
    }
    Ok(found)
}

fn hash_column(row: &PgRow, column: &str) -> StoreResult<SecretHash> {
    let raw: Vec<u8> = row.try_get(column).map_err(backend)?;
    SecretHash::from_slice(&raw).ok_or_else(|| StoreError::Backend(format!("bad {column} column")))
}

/// The batch's writes, as columns (one array per column, bound with
/// `unnest`), written in a few statements by [`Writes::apply`].
#[derive(Default)]
struct Writes<'a> {
    // Rotations: the token spent, its successor.
    spent: Vec<&'a [u8]>,
    spent_at: Vec<i64>,
    next: Vec<&'a [u8]>,
    next_family: Vec<&'a str>,
    next_expires: Vec<i64>,
    // Families revoked for reuse.
    revoke_ids: Vec<&'a str>,
    revoke_at: Vec<i64>,
    // Sessions started: the job's index, the session, its audit event.
    starts: Vec<(usize, &'a SessionRecord, Option<&'a AuditEvent>)>,
    // Activity: the job's index, the session's hash, the time.
    touches: Vec<(usize, &'a [u8], i64)>,
    audits: Audits<'a>,
}

/// Audit rows, as columns; a rotation's event gains its user and family.
#[derive(Default)]
struct Audits<'a> {
    id: Vec<&'a str>,
    at: Vec<i64>,
    kind: Vec<&'a str>,
    user_id: Vec<Option<&'a str>>,
    ip: Vec<Option<&'a str>>,
    user_agent: Vec<Option<&'a str>>,
    detail: Vec<String>,
}

impl<'a> Writes<'a> {
    fn rotate(
        &mut self,
        presented: &'a SecretHash,
        next: &'a SecretHash,
        family_id: &'a str,
        at: i64,
        expires_at: OffsetDateTime,
    ) {
        self.spent.push(presented.as_bytes());
        self.spent_at.push(at);
        self.next.push(next.as_bytes());
        self.next_family.push(family_id);
        self.next_expires.push(to_millis(expires_at));
    }

    fn revoke(&mut self, family_id: &'a str, at: i64) {
        self.revoke_ids.push(family_id);
        self.revoke_at.push(at);
    }

    fn start(&mut self, index: usize, session: &'a SessionRecord, audit: Option<&'a AuditEvent>) {
        self.starts.push((index, session, audit));
    }

    fn touch(&mut self, index: usize, hash: &'a SecretHash, at: OffsetDateTime) {
        self.touches.push((index, hash.as_bytes(), to_millis(at)));
    }

    /// Queues an audit row; `rotated` completes a rotation's event with its
    /// family's user and `{"family": id}`.
    fn audit(&mut self, event: &'a AuditEvent, rotated: Option<&'a RefreshFamily>) {
        let a = &mut self.audits;
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
        a.id.push(&event.id);
        a.at.push(to_millis(event.at));
        a.kind.push(&event.event_type);
        a.user_id.push(user_id);
        a.ip.push(event.ip.as_deref());
        a.user_agent.push(event.user_agent.as_deref());
        a.detail.push(detail);
    }

    /// Writes everything, filling in the outcomes of starts and touches.
    async fn apply(
        mut self,
        tx: &mut Transaction<'_, Postgres>,
        outcomes: &mut [Outcome],
    ) -> Result<(), Failed> {
        let starts = std::mem::take(&mut self.starts);
        if !starts.is_empty() {
            let stored = insert_sessions(tx, &starts).await?;
            for (index, session, audit) in starts {
                let found = stored.contains(session.token_hash.as_bytes());
                outcomes[index] = Outcome::Found(found);
                if let Some(audit) = audit.filter(|_| found) {
                    self.audit(audit, None);
                }
            }
        }
        if !self.touches.is_empty() {
            let touched = touch_sessions(tx, &self.touches).await?;
            for &(index, hash, _) in &self.touches {
                outcomes[index] = Outcome::Found(touched.contains(hash));
            }
        }
        let a = &self.audits;
        if !self.spent.is_empty() || !a.id.is_empty() {
            // Three writes in one statement (one round trip): the spent
            // tokens, their successors and the audit rows are different
            // rows, so no part needs to see another's.
            query(
                "WITH spent AS (
                     UPDATE refresh_tokens t SET used_at = s.at
                     FROM unnest($1::bytea[], $2::int8[]) AS s(hash, at)
                     WHERE t.token_hash = s.hash AND t.used_at IS NULL
                 ), issued AS (
                     INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
                     SELECT * FROM unnest($3::bytea[], $4::text[], $2::int8[], $5::int8[])
                 )
                 INSERT INTO audit_events (id, at, type, user_id, ip, user_agent, detail)
                 SELECT id, at, type, user_id, ip, user_agent, detail::jsonb
                 FROM unnest($6::text[], $7::int8[], $8::text[], $9::text[], $10::text[],
                             $11::text[], $12::text[])
                      AS a(id, at, type, user_id, ip, user_agent, detail)",
            )
            .bind(&self.spent)
            .bind(&self.spent_at)
            .bind(&self.next)
            .bind(&self.next_family)
            .bind(&self.next_expires)
            .bind(&a.id)
            .bind(&a.at)
            .bind(&a.kind)
            .bind(&a.user_id)
            .bind(&a.ip)
            .bind(&a.user_agent)
            .bind(&a.detail)
            .execute(&mut **tx)
            .await?;
        }
        if !self.revoke_ids.is_empty() {
            // After the successors above (a later statement sees them): a
            // token issued earlier in this batch in a family now revoked is
            // deleted with the rest. The earliest revocation time stands
            // if another node got there too.
            query(
                "WITH revoked AS (
                     UPDATE refresh_families f SET revoked_at = coalesce(f.revoked_at, r.at)
                     FROM unnest($1::text[], $2::int8[]) AS r(id, at)
                     WHERE f.id = r.id
                 )
                 DELETE FROM refresh_tokens
                 WHERE family_id = ANY($1::text[]) AND used_at IS NULL",
            )
            .bind(&self.revoke_ids)
            .bind(&self.revoke_at)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

/// Inserts the sessions whose user still exists (the foreign key would
/// fail the whole batch, every other caller's write with it, so that case
/// is a `false` for its job alone); returns the hashes stored.
async fn insert_sessions(
    tx: &mut Transaction<'_, Postgres>,
    starts: &[(usize, &SessionRecord, Option<&AuditEvent>)],
) -> Result<HashSet<Vec<u8>>, Failed> {
    let column = |f: fn(&SessionRecord) -> i64| starts.iter().map(|s| f(s.1)).collect::<Vec<_>>();
    let hashes: Vec<&[u8]> = starts.iter().map(|s| s.1.token_hash.as_bytes()).collect();
    let ids: Vec<&str> = starts.iter().map(|s| s.1.id.as_str()).collect();
    let users: Vec<&str> = starts.iter().map(|s| s.1.user_id.as_str()).collect();
    let ips: Vec<Option<&str>> = starts.iter().map(|s| s.1.ip.as_deref()).collect();
    let agents: Vec<Option<&str>> = starts.iter().map(|s| s.1.user_agent.as_deref()).collect();
    let rows = query(
        "INSERT INTO sessions
             (token_hash, id, user_id, created_at, last_seen_at, expires_at, ip, user_agent)
         SELECT s.* FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                $6::int8[], $7::text[], $8::text[])
              AS s(token_hash, id, user_id, created_at, last_seen_at, expires_at, ip, user_agent)
         WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = s.user_id FOR KEY SHARE)
         RETURNING token_hash",
    )
    .bind(&hashes)
    .bind(&ids)
    .bind(&users)
    .bind(column(|s| to_millis(s.created_at)))
    .bind(column(|s| to_millis(s.last_seen_at)))
    .bind(column(|s| to_millis(s.expires_at)))
    .bind(&ips)
    .bind(&agents)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| r.try_get::<Vec<u8>, _>("token_hash").map_err(Failed::from))
        .collect()
}

/// Moves `last_seen_at` forward (never back: the latest of the batch's
/// touches of a session, and only if later than what is stored); returns
/// the hashes of the sessions that exist.
async fn touch_sessions(
    tx: &mut Transaction<'_, Postgres>,
    touches: &[(usize, &[u8], i64)],
) -> Result<HashSet<Vec<u8>>, Failed> {
    let hashes: Vec<&[u8]> = touches.iter().map(|t| t.1).collect();
    let times: Vec<i64> = touches.iter().map(|t| t.2).collect();
    // `locked` takes the row locks in hash order before the update reaches
    // a row (the update joins on it), as every multi-session write here.
    let rows = query(
        "WITH t AS (
             SELECT hash, max(at) AS at FROM unnest($1::bytea[], $2::int8[]) AS u(hash, at)
             GROUP BY hash
         ),
         locked AS (
             SELECT token_hash FROM sessions WHERE token_hash IN (SELECT hash FROM t)
             ORDER BY token_hash FOR UPDATE
         )
         UPDATE sessions s SET last_seen_at = greatest(s.last_seen_at, t.at)
         FROM t JOIN locked l ON l.token_hash = t.hash
         WHERE s.token_hash = t.hash
         RETURNING s.token_hash",
    )
    .bind(&hashes)
    .bind(&times)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| r.try_get::<Vec<u8>, _>("token_hash").map_err(Failed::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, PgConnection};

    use super::*;
    use crate::store::postgres::{PostgresStore, harness};
    use crate::store::write_queue::fixture::{self, JOB_KINDS, describe, event, hash, jobs, t0};
    use crate::store::{RefreshStore, StoreOptions};

    async fn seeded() -> (PostgresStore, String) {
        let url = harness::fresh_postgres_url().await;
        let store = PostgresStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        fixture::seed(&store, &store.batcher).await;
        (store, url)
    }

    /// One line of text per row (each query selects a single text column).
    async fn lines(url: &str, sql: &'static str) -> Vec<String> {
        let mut conn = PgConnection::connect(url).await.unwrap();
        let rows = query(sql).fetch_all(&mut conn).await.unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    }

    async fn contents(url: &str) -> Vec<Vec<String>> {
        vec![
            lines(
                url,
                "SELECT concat_ws('|', encode(token_hash, 'hex'), family_id, created_at,
                                  expires_at, coalesce(used_at::text, 'NULL'))
                 FROM refresh_tokens ORDER BY token_hash",
            )
            .await,
            lines(
                url,
                "SELECT concat_ws('|', id, coalesce(revoked_at::text, 'NULL'))
                 FROM refresh_families ORDER BY id",
            )
            .await,
            lines(
                url,
                "SELECT concat_ws('|', id, at, type, coalesce(user_id, 'NULL'),
                                  coalesce(ip, 'NULL'), coalesce(user_agent, 'NULL'),
                                  detail::text)
                 FROM audit_events ORDER BY id",
            )
            .await,
            lines(
                url,
                "SELECT concat_ws('|', id, last_seen_at, coalesce(user_agent, 'NULL'))
                 FROM sessions ORDER BY id",
            )
            .await,
        ]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_has_the_outcomes_and_writes_of_its_jobs_one_by_one() {
        let ((together, together_url), (one_by_one, one_by_one_url)) =
            tokio::join!(seeded(), seeded());

        let batched = match apply_retrying(&together.pool, &jobs()).await {
            Ok(outcomes) => outcomes,
            Err(failed) => panic!("batch failed: {}", failed.error),
        };
        let mut single = Vec::new();
        for job in jobs() {
            match apply_retrying(&one_by_one.pool, std::slice::from_ref(&job)).await {
                Ok(outcomes) => single.extend(outcomes),
                Err(failed) => panic!("job failed: {}", failed.error),
            }
        }

        let batched = describe(&batched);
        assert_eq!(batched, describe(&single));
        let kinds: Vec<&str> = batched
            .iter()
            .map(|o| o.split('(').next().unwrap_or(o))
            .collect();
        assert_eq!(kinds, JOB_KINDS);
        fixture::check_effects(&together).await;
        let rows = contents(&together_url).await;
        assert!(rows.iter().all(|table| !table.is_empty()), "{rows:?}");
        assert_eq!(rows, contents(&one_by_one_url).await);
    }

    /// A reuse that deadlocks with another transaction (here one that holds
    /// the family and then wants the presented token) is rolled back by
    /// PostgreSQL and retried, and its caller sees only the retry's outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deadlocked_batch_is_retried() {
        let (store, url) = seeded().await;
        let mut other = PgConnection::connect(&url).await.unwrap();
        // The batch is the one that notices the deadlock (and is aborted):
        // this side waits far longer before checking.
        query("SET deadlock_timeout = '30s'")
            .execute(&mut other)
            .await
            .unwrap();
        query("BEGIN").execute(&mut other).await.unwrap();
        query("UPDATE refresh_families SET client_id = client_id WHERE id = 'fam_3'")
            .execute(&mut other)
            .await
            .unwrap();

        // Token 30 was spent: reuse, which must update family 3.
        let rotation = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .batcher
                    .rotate(
                        &hash(30),
                        &hash(130),
                        t0() + time::Duration::days(2),
                        t0() + time::Duration::seconds(1),
                        event(1, None),
                    )
                    .await
            }
        });
        // Wait until the batch holds token 30 and waits for family 3.
        let mut waits = 0;
        loop {
            let waiting: i64 = query(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'",
            )
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
            if waiting > 0 {
                break;
            }
            waits += 1;
            assert!(waits < 200, "the batch never waited for the family");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Now this side wants the token the batch holds: a deadlock, which
        // the batch detects after its deadlock_timeout (1 s) and loses.
        query("SELECT 1 FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE")
            .bind(hash(30).as_bytes())
            .execute(&mut other)
            .await
            .unwrap();
        query("ROLLBACK").execute(&mut other).await.unwrap();

        let rotation = rotation.await.unwrap().unwrap();
        assert!(
            matches!(&rotation, Rotation::Reused(f) if f.id == "fam_3"),
            "{rotation:?}"
        );
        let (family, _, _) = store.refresh_family(&hash(30)).await.unwrap().unwrap();
        assert!(family.revoked_at.is_some());
        assert!(store.refresh_family(&hash(3)).await.unwrap().is_none());
    }
}
