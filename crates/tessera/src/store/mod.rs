//! Store traits: exactly what a backend must guarantee, nothing more.
//!
//! The core talks only to these traits. `sqlite` implements them on the
//! embedded database; `cache` wraps the hot reads (sessions by hash, users by
//! id) in bounded in-process caches kept coherent by change events. Later
//! backends (PostgreSQL, Redis) implement the same traits.

pub mod cache;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::core::accounts::{User, UserStatus};
use crate::core::events::Change;
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
    /// The user and their password hash, by case-folded email.
    async fn credentials_by_email(&self, email_key: &str) -> StoreResult<Option<(User, String)>>;
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Vec<User>>;
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
    async fn insert_session(&self, session: &SessionRecord) -> StoreResult<()>;
    async fn session_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<Arc<SessionRecord>>>;
    /// Records activity; returns the updated session, or `None` if it is gone.
    async fn touch_session(
        &self,
        hash: &SecretHash,
        at: OffsetDateTime,
    ) -> StoreResult<Option<Arc<SessionRecord>>>;
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
    /// Deletes sessions past absolute expiry or idle since before `idle_cutoff`.
    async fn delete_expired(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64>;
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
    pub health: Arc<dyn Health>,
}
