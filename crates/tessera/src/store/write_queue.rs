//! The queue in front of a backend's group commit: what every backend that
//! batches its frequent small writes (refresh rotations, new sessions with
//! their audit event, session activity, audit events) shares.
//!
//! Callers queue a [`Job`] through a [`WriteBatcher`] and wait for its
//! answer (except activity, see [`crate::store::SessionStore::queue_touch`]).
//! One task per store takes everything waiting, up to a batch, and hands it
//! to the backend's [`ApplyBatch`], which applies it in one transaction and
//! returns one [`Outcome`] per job, each what applying the jobs one after
//! the other would give. Nothing is answered before the commit; if the batch
//! fails, every caller in it gets the error (fail closed), and when the
//! database cannot be reached at all, everything queued behind it fails at
//! once instead of each batch waiting out its own timeout.

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::core::audit::AuditEvent;
use crate::core::refresh::Rotation;
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;
use crate::store::{QueuedTouch, StoreError, StoreResult};

/// Writes waiting for the writer before callers are held back.
const QUEUE: usize = 4096;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// One queued write and where its outcome goes.
pub(crate) enum Job {
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
#[derive(Debug)]
pub(crate) enum Outcome {
    Rotation(Rotation),
    /// Whether the session touched, or started, has its row.
    Found(bool),
    Recorded,
}

impl Job {
    /// Sends the caller its outcome (a backend produces, for each job, the
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

/// Why a batch did not commit.
pub(crate) struct BatchFailed {
    pub error: StoreError,
    /// No connection could be had: the database is down or unreachable.
    pub unreachable: bool,
}

impl From<StoreError> for BatchFailed {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            unreachable: false,
        }
    }
}

/// A backend's side of the group commit.
#[async_trait]
pub(crate) trait ApplyBatch: Send + Sync + 'static {
    /// Most jobs in one batch.
    const MAX_BATCH: usize;
    /// Applies `batch` in one transaction, all of it or nothing: one outcome
    /// per job, in order, each what the jobs one by one would give.
    async fn apply(&self, batch: &[Job]) -> Result<Vec<Outcome>, BatchFailed>;
}

fn mismatch() -> StoreError {
    StoreError::Backend("batched write answered with the wrong outcome".into())
}

fn stopped() -> StoreError {
    StoreError::Backend("the batched writer has stopped".into())
}

/// The handle a store queues writes with (cheap to clone).
#[derive(Clone)]
pub(crate) struct WriteBatcher {
    jobs: mpsc::Sender<Job>,
}

impl WriteBatcher {
    /// Starts the task that applies batches with `backend`; it ends when the
    /// last handle is dropped.
    pub(crate) fn start<B: ApplyBatch>(backend: B) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(apply_batches(backend, queue));
        Self { jobs }
    }

    async fn submit<T>(
        &self,
        job: Job,
        outcome: oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        self.jobs.send(job).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    pub(crate) async fn rotate(
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
        self.submit(job, outcome).await
    }

    /// Inserts a session and records `audit` with it, in one commit; false
    /// (and nothing written) when the session's user no longer exists.
    pub(crate) async fn start_session(
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
        self.submit(job, outcome).await
    }

    /// Queues an activity write; returns once it is queued.
    pub(crate) async fn queue_touch(
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
    pub(crate) async fn flush(&self) {
        let (reply, outcome) = oneshot::channel();
        if self.jobs.send(Job::Flush { reply }).await.is_ok() {
            let _ = outcome.await;
        }
    }

    pub(crate) async fn record(&self, event: &AuditEvent) -> StoreResult<()> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Audit {
            event: Box::new(event.clone()),
            reply,
        };
        self.submit(job, outcome).await
    }
}

async fn apply_batches<B: ApplyBatch>(backend: B, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(B::MAX_BATCH);
    while queue.recv_many(&mut batch, B::MAX_BATCH).await > 0 {
        match backend.apply(&batch).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    job.answer(Ok(outcome));
                }
            }
            Err(failed) => {
                let e = failed.error;
                tracing::warn!(error = %e, writes = batch.len(), "batched write failed");
                for job in batch.drain(..) {
                    job.answer(Err(StoreError::Backend(e.to_string())));
                }
                if failed.unreachable {
                    while let Ok(job) = queue.try_recv() {
                        job.answer(Err(StoreError::Backend(e.to_string())));
                    }
                }
            }
        }
    }
}

/// What both backends' batch tests start from and feed their batches, so
/// that each checks the same cases.
#[cfg(test)]
pub(crate) mod fixture {
    use serde_json::json;
    use time::{Duration, OffsetDateTime};
    use tokio::sync::oneshot;

    use super::{Job, Outcome, WriteBatcher};
    use crate::core::accounts::{User, UserStatus};
    use crate::core::audit::AuditEvent;
    use crate::core::refresh::{NewRefreshToken, RefreshFamily, Rotation};
    use crate::core::secret::SecretHash;
    use crate::core::sessions::SessionRecord;
    use crate::store::{RefreshStore, SessionStore, UserStore};

    pub(crate) fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    pub(crate) fn hash(n: u8) -> SecretHash {
        SecretHash([n; 32])
    }

    pub(crate) fn event(n: usize, user_id: Option<&str>) -> AuditEvent {
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
    pub(crate) async fn seed<S>(store: &S, batcher: &WriteBatcher)
    where
        S: UserStore + RefreshStore + SessionStore,
    {
        let user = User {
            id: "usr_1".into(),
            email: "a@example.com".into(),
            roles: vec![],
            status: UserStatus::Active,
            email_verified: false,
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
        let spent = batcher
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
    }

    pub(crate) fn session(n: u8, id: &str, at: OffsetDateTime) -> SessionRecord {
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
    pub(crate) fn jobs() -> Vec<Job> {
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

    /// Outcomes as text, to compare a batch with its jobs one by one.
    pub(crate) fn describe(outcomes: &[Outcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Rotation(r) => format!("{r:?}"),
                Outcome::Found(found) => format!("found {found}"),
                Outcome::Recorded => "recorded".into(),
            })
            .collect()
    }

    /// The kind of each outcome of [`jobs`], in order.
    pub(crate) const JOB_KINDS: [&str; 17] = [
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
        "recorded",
    ];

    /// Whether the batch's reads of the seeded store show the jobs' effects.
    pub(crate) async fn check_effects<S: SessionStore>(store: &S) {
        let seen = store.session_by_hash(&hash(90)).await.unwrap().unwrap();
        assert_eq!(seen.last_seen_at, t0() + Duration::milliseconds(19));
        let started = store.session_by_hash(&hash(92)).await.unwrap().unwrap();
        assert_eq!(started.id, "ses_2");
        assert!(store.session_by_hash(&hash(94)).await.unwrap().is_none());
    }
}
