//! Store traits: exactly what a backend must guarantee, nothing more.
//!
//! The core talks only to these traits. `sqlite` implements them on the
//! embedded database; `cache` wraps the hot reads (sessions by hash, users by
//! id) in bounded in-process caches kept coherent by change events. Later
//! backends (PostgreSQL, Redis) implement the same traits.

pub mod cache;
pub mod sqlite;
mod sqlite_batch;
mod sqlite_checkpoint;
mod sqlite_tokens;

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::core::accounts::{User, UserStatus};
use crate::core::audit::AuditEvent;
use crate::core::clients::ServiceClient;
use crate::core::events::Change;
use crate::core::keys::StoredKey;
use crate::core::refresh::{NewRefreshToken, RefreshFamily, Rotation};
use crate::core::revocation::Revocation;
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint refused the write.
    #[error("conflict")]
    Conflict,
    /// The backend failed (down, corrupt, timed out). Never shown to clients.
    #[error("{0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A page request for listing users.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Case-insensitive substring of the email.
    pub email_contains: Option<String>,
    pub limit: u32,
    /// Return users whose id sorts after this one.
    pub after_id: Option<String>,
}

/// A page request for the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub event_type: Option<String>,
    pub user_id: Option<String>,
    pub limit: u32,
    pub before: Option<String>,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a user; `Conflict` if the email key is taken.
    async fn insert_user(
        &self,
        user: &User,
        email_key: &str,
        password_hash: &str,
    ) -> StoreResult<()>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<Arc<User>>>;
    /// For a caching store: a number that moves whenever a cached user
    /// changes (before and after the entry is dropped), so a user read at
    /// one generation may be reused while the generation stays the same.
    /// `None`: no such guarantee, read the user every time.
    fn generation(&self) -> Option<u64> {
        None
    }
    /// The user and their password hash, by case-folded email.
    async fn credentials_by_email(&self, email_key: &str) -> StoreResult<Option<(User, String)>>;
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Vec<User>>;
    async fn password_hash(&self, id: &str) -> StoreResult<Option<String>>;
    async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Returns false when there is no such user.
    async fn set_roles(&self, id: &str, roles: &[String], at: OffsetDateTime) -> StoreResult<bool>;
    async fn set_status(
        &self,
        id: &str,
        status: UserStatus,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session, and `audit` (the event that describes it) in
    /// the same commit: a login is never recorded without its session, nor
    /// the other way round. Returns false, having written neither, when the
    /// session's user no longer exists.
    async fn insert_session(
        &self,
        session: &SessionRecord,
        audit: Option<AuditEvent>,
    ) -> StoreResult<bool>;
    async fn session_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<Arc<SessionRecord>>>;
    /// Queues a write of the session's activity (`touched.last_seen_at`,
    /// never moved back; see [`SessionRecord::touched`]) and returns once it
    /// is queued, before it is committed: no request waits for it. A write
    /// lost in a crash only makes the session idle out sooner, never later.
    async fn queue_touch(&self, touched: &Arc<SessionRecord>) -> StoreResult<QueuedTouch>;
    /// Deletes one session; returns what was deleted.
    async fn delete_session_by_hash(&self, hash: &SecretHash)
    -> StoreResult<Option<SessionRecord>>;
    /// Deletes the session with this public id if it belongs to `user_id`;
    /// returns what was deleted.
    async fn delete_user_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> StoreResult<Option<SessionRecord>>;
    /// Deletes every session of a user; returns how many.
    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64>;
    async fn sessions_of_user(&self, user_id: &str) -> StoreResult<Vec<SessionRecord>>;
    /// How many sessions are neither past absolute expiry nor idle since
    /// before `idle_cutoff`.
    async fn count_live(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64>;
    /// Deletes sessions past absolute expiry or idle since before `idle_cutoff`.
    async fn delete_expired(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64>;
}

/// An activity write that was queued (see [`SessionStore::queue_touch`]).
pub struct QueuedTouch(oneshot::Receiver<StoreResult<bool>>);

impl QueuedTouch {
    pub fn new(outcome: oneshot::Receiver<StoreResult<bool>>) -> Self {
        Self(outcome)
    }

    /// Waits for the commit: whether the session still existed then.
    pub async fn still_there(self) -> StoreResult<bool> {
        self.0
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("the activity write was dropped".into())))
    }
}

/// The change log that keeps caches in every process coherent.
#[async_trait]
pub trait EventStore: Send + Sync {
    async fn append(&self, change: &Change, at: OffsetDateTime) -> StoreResult<()>;
    /// Changes with a sequence number above `cursor`, oldest first.
    async fn after(&self, cursor: i64, limit: u32) -> StoreResult<Vec<(i64, Change)>>;
    async fn latest_cursor(&self) -> StoreResult<i64>;
    async fn prune(&self, before: OffsetDateTime) -> StoreResult<u64>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Makes `key` the active key, rotating out the current one at `at`.
    /// `expected_active` is the caller's view of the current active key; if
    /// another process rotated first, nothing changes and `false` is returned.
    async fn rotate_in(
        &self,
        key: &StoredKey,
        expected_active: Option<&str>,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Drops the private half of keys rotated out before `before`.
    async fn wipe_retired(&self, before: OffsetDateTime) -> StoreResult<u64>;
    /// The server-wide secret `name`, stored as `fresh` if it does not exist
    /// yet (the first process to get there wins; all see the same value).
    async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>>;
}

/// Refresh tokens: single use, in families, rotation atomic.
#[async_trait]
pub trait RefreshStore: Send + Sync {
    async fn create_family(
        &self,
        family: &RefreshFamily,
        first: &NewRefreshToken,
    ) -> StoreResult<()>;
    /// In one atomic step: marks `presented` used and stores its successor
    /// (`next_hash`, valid until `next_expires_at`) in the same family; or,
    /// when `presented` was already used, revokes its family (reuse). Two
    /// racing calls with the same token: exactly one rotates. A rotation
    /// also records `audit` in the same transaction (one durable write per
    /// refresh), completed with the family's user and `{"family": id}`.
    async fn rotate_refresh(
        &self,
        presented: &SecretHash,
        next_hash: &SecretHash,
        next_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        audit: AuditEvent,
    ) -> StoreResult<Rotation>;
    /// The family a refresh token belongs to, with the token's expiry and
    /// whether it was used already (whatever its state).
    async fn refresh_family(
        &self,
        presented: &SecretHash,
    ) -> StoreResult<Option<(RefreshFamily, OffsetDateTime, bool)>>;
    /// Revokes a family; returns false if it was already revoked or unknown.
    async fn revoke_family(&self, family_id: &str, at: OffsetDateTime) -> StoreResult<bool>;
    /// Revokes every live family of a user; returns their ids.
    async fn revoke_user_families(
        &self,
        user_id: &str,
        at: OffsetDateTime,
    ) -> StoreResult<Vec<String>>;
    async fn delete_expired_refresh(&self, now: OffsetDateTime) -> StoreResult<u64>;
}

/// Revocations of access tokens: a durable, ordered log every node follows.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Appends a revocation; returns its sequence number.
    async fn insert_revocation(
        &self,
        r: &Revocation,
        forget_at: i64,
        at: OffsetDateTime,
    ) -> StoreResult<i64>;
    /// Revocations after `cursor`, oldest first, with their `forget_at`.
    async fn revocations_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Revocation, i64)>>;
    async fn prune_revocations(&self, now_unix: i64) -> StoreResult<u64>;
}

#[async_trait]
pub trait ClientStore: Send + Sync {
    async fn insert_client(&self, client: &ServiceClient) -> StoreResult<()>;
    async fn client_by_id(&self, id: &str) -> StoreResult<Option<ServiceClient>>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record(&self, event: &AuditEvent) -> StoreResult<()>;
    /// Newest first, filtered; `before` is the id of the last event of the
    /// previous page.
    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
    /// Deletes events older than `before` (retention).
    async fn prune_audit(&self, before: OffsetDateTime) -> StoreResult<u64>;
}

/// Liveness of the backing stores, for `/readyz`.
#[async_trait]
pub trait Health: Send + Sync {
    async fn ping(&self) -> StoreResult<()>;
}

/// The stores the core works with.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub events: Arc<dyn EventStore>,
    pub keys: Arc<dyn KeyStore>,
    pub refresh: Arc<dyn RefreshStore>,
    pub revocations: Arc<dyn RevocationStore>,
    pub clients: Arc<dyn ClientStore>,
    pub audit: Arc<dyn AuditStore>,
    pub health: Arc<dyn Health>,
}
