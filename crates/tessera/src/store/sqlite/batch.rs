//! Group commit for the frequent small writes: refresh-token rotations, new
//! sessions, session activity (`last_seen_at`) updates and audit events.
//!
//! Every such write but one must be durable before its caller is answered
//! (the exception is session activity: nothing waits for it, see
//! [`crate::store::SessionStore::queue_touch`], and [`WriteBatcher::flush`] waits
//! for it where it matters), and with
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

use std::collections::{HashMap, HashSet};

use sqlx::{Row, Sqlite, SqlitePool, Transaction, query};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::tokens::{TOKEN_AND_FAMILY_FROM, family_from_row};
use super::{SESSION_COLUMNS, backend};
use crate::core::audit::AuditEvent;
use crate::core::refresh::{RefreshFamily, Rotation};
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;
use crate::core::time::to_millis;
use crate::store::{QueuedTouch, StoreError, StoreResult};

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 128;
/// Writes waiting for the writer before callers are held back.
const QUEUE: usize = 4096;

const TOUCH_SQL: &str =
    "UPDATE sessions SET last_seen_at = max(last_seen_at, ?) WHERE token_hash = ?";

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
    /// A new session, with the audit event that describes it (if any) in
    /// the same commit.
    Start {
        session: Box<SessionRecord>,
        audit: Option<Box<AuditEvent>>,
        /// Whether it was stored (false: its user is gone).
        reply: Reply<bool>,
    },
    Touch {
        hash: SecretHash,
        at: OffsetDateTime,
        /// Whether the session still existed.
        reply: Reply<bool>,
    },
    Audit {
        event: Box<AuditEvent>,
        reply: Reply<()>,
    },
    /// Writes nothing: answered once everything queued before it committed.
    Flush { reply: Reply<()> },
}

/// What a job produced inside the transaction, sent once it committed.
enum Outcome {
    Rotation(Rotation),
    /// Whether the session touched, or started, has its row.
    Found(bool),
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
            Job::Touch { reply, .. } | Job::Start { reply, .. } => {
                let _ = reply.send(outcome.and_then(|o| match o {
                    Outcome::Found(found) => Ok(found),
                    _ => Err(mismatch()),
                }));
            }
            Job::Audit { reply, .. } | Job::Flush { reply } => {
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

    /// Inserts a session and records `audit` with it, in one commit; false
    /// (and nothing written) when the session's user no longer exists.
    pub(super) async fn start_session(
        &self,
        session: &SessionRecord,
        audit: Option<AuditEvent>,
    ) -> StoreResult<bool> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Start {
            session: Box::new(session.clone()),
            audit: audit.map(Box::new),
            reply,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Queues an activity write; returns once it is queued.
    pub(super) async fn queue_touch(
        &self,
        hash: &SecretHash,
        at: OffsetDateTime,
    ) -> StoreResult<QueuedTouch> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Touch {
            hash: *hash,
            at,
            reply,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        Ok(QueuedTouch::new(outcome))
    }

    /// Waits until every write queued before this call was committed (or
    /// failed: each of those callers learns it from its own answer).
    pub(super) async fn flush(&self) {
        let (reply, outcome) = oneshot::channel();
        if self.jobs.send(Job::Flush { reply }).await.is_ok() {
            let _ = outcome.await;
        }
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
    use serde_json::json;
    use time::Duration;

    use super::*;
    use crate::core::accounts::{User, UserStatus};
    use crate::core::refresh::NewRefreshToken;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{RefreshStore, SessionStore, UserStore};

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn hash(n: u8) -> SecretHash {
        SecretHash([n; 32])
    }

    fn event(n: usize, user_id: Option<&str>) -> AuditEvent {
        AuditEvent {
            id: format!("evt_{n:04}"),
            at: t0() + Duration::milliseconds(n as i64),
            event_type: "refresh_rotated".into(),
            user_id: user_id.map(str::to_owned),
            ip: Some("192.0.2.7".into()),
            user_agent: None,
            detail: json!({"n": n}),
        }
    }

    /// Families `fam_1`..`fam_6` of one user; token `n` belongs to family
    /// `n`, plus a spent token 30 in family 3, an expired token 4 and a
    /// revoked family 5. One session (hash 90).
    async fn seeded(dir: &std::path::Path) -> SqliteStore {
        let store = SqliteStore::open(&format!("sqlite://{}/t.db", dir.display()))
            .await
            .unwrap();
        let user = User {
            id: "usr_1".into(),
            email: "a@example.com".into(),
            roles: vec![],
            status: UserStatus::Active,
            created_at: t0(),
        };
        store
            .insert_user(&user, "a@example.com", "x")
            .await
            .unwrap();
        for n in 1..=6u8 {
            let family = RefreshFamily {
                id: format!("fam_{n}"),
                user_id: "usr_1".into(),
                client_id: "tessera".into(),
                scope: None,
                created_at: t0(),
                revoked_at: None,
            };
            let expires_at = if n == 4 {
                t0()
            } else {
                t0() + Duration::days(1)
            };
            let first = NewRefreshToken {
                hash: hash(if n == 3 { 30 } else { n }),
                family_id: family.id.clone(),
                created_at: t0(),
                expires_at,
            };
            store.create_family(&family, &first).await.unwrap();
        }
        let spent = store
            .batcher
            .rotate(
                &hash(30),
                &hash(3),
                t0() + Duration::days(1),
                t0(),
                event(0, None),
            )
            .await
            .unwrap();
        assert!(matches!(spent, Rotation::Rotated(_)));
        store.revoke_family("fam_5", t0()).await.unwrap();
        store
            .insert_session(&session(90, "ses_1", t0()), None)
            .await
            .unwrap();
        store
    }

    fn session(n: u8, id: &str, at: OffsetDateTime) -> SessionRecord {
        SessionRecord {
            token_hash: hash(n),
            id: id.into(),
            user_id: "usr_1".into(),
            created_at: at,
            last_seen_at: at,
            expires_at: at + Duration::days(1),
            ip: None,
            user_agent: None,
            user_memo: Default::default(),
        }
    }

    /// Every case a batch meets, with jobs that depend on earlier ones.
    fn jobs() -> Vec<Job> {
        let at = |ms: i64| t0() + Duration::milliseconds(ms);
        let rotate = |presented: u8, next: u8, ms: i64| Job::Rotate {
            presented: hash(presented),
            next_hash: hash(next),
            next_expires_at: at(ms) + Duration::days(30),
            now: at(ms),
            audit: Box::new(event(ms as usize, None)),
            reply: oneshot::channel().0,
        };
        vec![
            rotate(1, 101, 10), // rotates
            rotate(2, 102, 11), // rotates
            rotate(1, 111, 12), // the same token again: reuse, family 1 revoked
            Job::Audit {
                event: Box::new(event(13, Some("usr_1"))),
                reply: oneshot::channel().0,
            },
            rotate(30, 130, 14), // spent before the batch: reuse, family 3 revoked
            rotate(3, 103, 15),  // the live token of family 3: its family is revoked
            rotate(77, 177, 16), // unknown
            rotate(4, 104, 17),  // expired
            rotate(5, 105, 18),  // family revoked before the batch
            Job::Touch {
                hash: hash(90),
                at: at(19),
                reply: oneshot::channel().0,
            },
            rotate(6, 106, 20), // rotates after the flushes above
            Job::Touch {
                hash: hash(90),
                at: at(5), // earlier than the touch above: last_seen_at stays at 19
                reply: oneshot::channel().0,
            },
            Job::Touch {
                hash: hash(91), // no such session
                at: at(21),
                reply: oneshot::channel().0,
            },
            Job::Start {
                session: Box::new(session(92, "ses_2", at(22))),
                audit: Some(Box::new(event(22, Some("usr_1")))),
                reply: oneshot::channel().0,
            },
            Job::Start {
                session: Box::new(session(93, "ses_3", at(23))),
                audit: None,
                reply: oneshot::channel().0,
            },
            // A user deleted since its login was checked: neither the
            // session nor its audit event is written, and the batch goes on.
            Job::Start {
                session: Box::new(SessionRecord {
                    user_id: "usr_gone".into(),
                    ..session(94, "ses_4", at(24))
                }),
                audit: Some(Box::new(event(24, Some("usr_gone")))),
                reply: oneshot::channel().0,
            },
            Job::Flush {
                reply: oneshot::channel().0,
            },
        ]
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

        let describe = |o: &Outcome| match o {
            Outcome::Rotation(r) => format!("{r:?}"),
            Outcome::Found(found) => format!("found {found}"),
            Outcome::Recorded => "recorded".into(),
        };
        let batched: Vec<String> = batched.iter().map(describe).collect();
        let single: Vec<String> = single.iter().map(describe).collect();
        assert_eq!(batched, single);
        let kinds: Vec<&str> = batched
            .iter()
            .map(|o| o.split('(').next().unwrap_or(o))
            .collect();
        assert_eq!(
            kinds,
            [
                "Rotated",
                "Rotated",
                "Reused",
                "recorded",
                "Reused",
                "Invalid",
                "Invalid",
                "Invalid",
                "Invalid",
                "found true",
                "Rotated",
                "found true",
                "found false",
                "found true",
                "found true",
                "found false",
                "recorded"
            ]
        );
        let seen = together.session_by_hash(&hash(90)).await.unwrap().unwrap();
        assert_eq!(seen.last_seen_at, t0() + Duration::milliseconds(19));
        let started = together.session_by_hash(&hash(92)).await.unwrap().unwrap();
        assert_eq!(started.id, "ses_2");
        assert!(together.session_by_hash(&hash(94)).await.unwrap().is_none());
        let rows = contents(&together).await;
        assert!(rows.iter().all(|table| !table.is_empty()), "{rows:?}");
        assert_eq!(rows, contents(&one_by_one).await);
    }
}
