//! Bounded in-process caches in front of the hot reads.
//!
//! A session check is `SHA-256(cookie)` → session → user. Both lookups go
//! through these wrappers, so the common case touches no database; a cached
//! session also remembers its user (`SessionRecord::user_memo`) until the
//! user cache's generation moves, which saves the second lookup. They evict
//! on their own writes, and as [`ChangeListener`]s they also apply the change
//! log, which covers writes made by other processes and closes the small race
//! where a read that started before a delete re-inserts a stale entry.
//! Freshness (expiry) is never decided here: the core checks every session it
//! gets against its own clock. Session activity is written behind: a touch
//! updates the cached copy at once and the store's row when its write
//! commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use quick_cache::sync::Cache;
use time::OffsetDateTime;

use super::{QueuedTouch, SessionStore, StoreResult, UserStore, UserWrite};
use crate::core::accounts::{User, UserQuery, UserStatus};
use crate::core::audit::AuditEvent;
use crate::core::events::{Change, ChangeListener};
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;

/// Caches sessions by the hash of their cookie value.
pub struct CachingSessionStore {
    inner: Arc<dyn SessionStore>,
    /// Shared with the tasks that watch written-behind touches.
    cache: Arc<Cache<SecretHash, Arc<SessionRecord>>>,
}

impl CachingSessionStore {
    pub fn new(inner: Arc<dyn SessionStore>, capacity: usize) -> Self {
        Self {
            inner,
            cache: Arc::new(Cache::new(capacity.max(1))),
        }
    }

    fn evict_where(&self, doomed: impl Fn(&SessionRecord) -> bool) {
        self.cache.retain(|_, s| !doomed(s));
    }
}

#[async_trait]
impl SessionStore for CachingSessionStore {
    async fn insert_session(
        &self,
        session: &SessionRecord,
        audit: Option<AuditEvent>,
    ) -> StoreResult<bool> {
        let stored = self.inner.insert_session(session, audit).await?;
        if stored {
            self.cache
                .insert(session.token_hash, Arc::new(session.clone()));
        }
        Ok(stored)
    }

    fn tags_sessions(&self) -> bool {
        self.inner.tags_sessions()
    }

    fn expires_by_itself(&self) -> bool {
        self.inner.expires_by_itself()
    }

    async fn session_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<Arc<SessionRecord>>> {
        if let Some(hit) = self.cache.get(hash) {
            return Ok(Some(hit));
        }
        let found = self.inner.session_by_hash(hash).await?;
        if let Some(s) = &found {
            self.cache.insert(*hash, Arc::clone(s));
        }
        Ok(found)
    }

    /// The touched record replaces the cached copy at once (only if still
    /// cached, so a touch never brings back a session evicted meanwhile).
    /// Should the write find no session (deleted behind this cache, as a
    /// sweep or another process can), or fail, the copy is dropped: the
    /// next request reads the store.
    async fn queue_touch(&self, touched: &Arc<SessionRecord>) -> StoreResult<QueuedTouch> {
        let written = self.inner.queue_touch(touched).await?;
        let hash = touched.token_hash;
        let _ = self.cache.replace(hash, Arc::clone(touched), true);
        let (tell, told) = tokio::sync::oneshot::channel();
        let cache = Arc::clone(&self.cache);
        tokio::spawn(async move {
            let outcome = written.still_there().await;
            if !matches!(outcome, Ok(true)) {
                cache.remove(&hash);
            }
            let _ = tell.send(outcome);
        });
        Ok(QueuedTouch::new(told))
    }

    async fn delete_session_by_hash(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<SessionRecord>> {
        self.cache.remove(hash);
        self.inner.delete_session_by_hash(hash).await
    }

    async fn delete_user_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> StoreResult<Option<SessionRecord>> {
        let deleted = self.inner.delete_user_session(user_id, session_id).await?;
        if let Some(s) = &deleted {
            self.cache.remove(&s.token_hash);
        }
        Ok(deleted)
    }

    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        let n = self.inner.delete_user_sessions(user_id).await?;
        self.evict_where(|s| s.user_id == user_id);
        Ok(n)
    }

    async fn sessions_of_user(&self, user_id: &str) -> StoreResult<Vec<SessionRecord>> {
        self.inner.sessions_of_user(user_id).await
    }

    async fn delete_expired(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64> {
        self.inner.delete_expired(now, idle_cutoff).await
    }

    async fn count_live(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64> {
        self.inner.count_live(now, idle_cutoff).await
    }
}

impl ChangeListener for CachingSessionStore {
    fn on_change(&self, change: &Change) {
        match change {
            Change::SessionRevoked { token_hash, .. } => {
                self.cache.remove(token_hash);
            }
            Change::UserSessionsRevoked { user_id } => self.evict_where(|s| &s.user_id == user_id),
            Change::UserChanged { .. } | Change::KeysChanged => {}
        }
    }

    fn forget_all(&self) {
        self.cache.clear();
    }
}

/// Caches users by id (roles and status are read on every request).
pub struct CachingUserStore {
    inner: Arc<dyn UserStore>,
    cache: Cache<String, Arc<User>>,
    /// Bumped after every invalidation (see [`UserStore::generation`]).
    generation: AtomicU64,
}

impl CachingUserStore {
    pub fn new(inner: Arc<dyn UserStore>, capacity: usize) -> Self {
        Self {
            inner,
            cache: Cache::new(capacity.max(1)),
            generation: AtomicU64::new(0),
        }
    }

    /// Drops a changed user. The generation moves before the removal (so a
    /// read that started before the change and fills the cache afterwards
    /// sees it moved and takes its entry back out) and after it (so a memo
    /// taken at the old generation can never outlive the removal).
    fn forget(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.remove(id);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl UserStore for CachingUserStore {
    fn generation(&self) -> Option<u64> {
        Some(self.generation.load(Ordering::Acquire))
    }

    async fn insert_user(
        &self,
        user: &User,
        email_key: &str,
        password_hash: &str,
    ) -> StoreResult<()> {
        self.inner.insert_user(user, email_key, password_hash).await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<Arc<User>>> {
        if let Some(hit) = self.cache.get(id) {
            return Ok(Some(hit));
        }
        let before = self.generation.load(Ordering::Acquire);
        let found = self.inner.user_by_id(id).await?;
        if let Some(u) = &found {
            self.cache.insert(id.to_owned(), Arc::clone(u));
            // A change landed while we read: what we read may predate it.
            if self.generation.load(Ordering::Acquire) != before {
                self.cache.remove(id);
            }
        }
        Ok(found)
    }

    async fn credentials_by_email(&self, email_key: &str) -> StoreResult<Option<(User, String)>> {
        self.inner.credentials_by_email(email_key).await
    }

    async fn list_users(&self, query: &UserQuery) -> StoreResult<Vec<User>> {
        self.inner.list_users(query).await
    }

    async fn password_hash(&self, id: &str) -> StoreResult<Option<String>> {
        self.inner.password_hash(id).await
    }

    async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.inner.set_password_hash(id, hash, at).await
    }

    async fn set_email_verified(&self, id: &str, at: OffsetDateTime) -> StoreResult<bool> {
        let changed = self.inner.set_email_verified(id, at).await;
        self.forget(id);
        changed
    }

    async fn set_email(
        &self,
        id: &str,
        email: &str,
        email_key: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let changed = self.inner.set_email(id, email, email_key, at).await;
        self.forget(id);
        changed
    }

    async fn set_roles(
        &self,
        id: &str,
        roles: &[String],
        keep: Option<&str>,
        at: OffsetDateTime,
    ) -> StoreResult<UserWrite> {
        let changed = self.inner.set_roles(id, roles, keep, at).await;
        self.forget(id);
        changed
    }

    async fn set_status(
        &self,
        id: &str,
        status: UserStatus,
        keep: Option<&str>,
        at: OffsetDateTime,
    ) -> StoreResult<UserWrite> {
        let changed = self.inner.set_status(id, status, keep, at).await;
        self.forget(id);
        changed
    }

    async fn delete_user(&self, id: &str, keep: Option<&str>) -> StoreResult<UserWrite> {
        let deleted = self.inner.delete_user(id, keep).await;
        self.forget(id);
        deleted
    }

    /// Keys are not cached: nothing to drop.
    async fn rekey_emails(
        &self,
        step: &str,
        key_of: &crate::store::rekey::KeyFn<'_>,
        apply: bool,
        at: OffsetDateTime,
    ) -> StoreResult<crate::store::rekey::RekeyOutcome> {
        self.inner.rekey_emails(step, key_of, apply, at).await
    }
}

impl ChangeListener for CachingUserStore {
    fn on_change(&self, change: &Change) {
        if let Change::UserChanged { user_id } = change {
            self.forget(user_id);
        }
    }

    fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::store::StoreError;

    /// One user in memory whose reads can be held halfway, to interleave a
    /// change with a read that started before it.
    #[derive(Default)]
    struct SlowUsers {
        user: Mutex<Option<User>>,
        hold_reads: std::sync::atomic::AtomicBool,
        read_started: Notify,
        release_read: Notify,
    }

    #[async_trait]
    impl UserStore for SlowUsers {
        async fn insert_user(&self, user: &User, _: &str, _: &str) -> StoreResult<()> {
            *self.user.lock().unwrap() = Some(user.clone());
            Ok(())
        }

        async fn user_by_id(&self, _: &str) -> StoreResult<Option<Arc<User>>> {
            let read = self.user.lock().unwrap().clone().map(Arc::new);
            if self.hold_reads.swap(false, Ordering::SeqCst) {
                self.read_started.notify_one();
                self.release_read.notified().await;
            }
            Ok(read)
        }

        async fn credentials_by_email(&self, _: &str) -> StoreResult<Option<(User, String)>> {
            Err(StoreError::Backend("not used here".into()))
        }

        async fn list_users(&self, _: &UserQuery) -> StoreResult<Vec<User>> {
            Err(StoreError::Backend("not used here".into()))
        }

        async fn password_hash(&self, _: &str) -> StoreResult<Option<String>> {
            Err(StoreError::Backend("not used here".into()))
        }

        async fn set_password_hash(
            &self,
            _: &str,
            _: &str,
            _: OffsetDateTime,
        ) -> StoreResult<bool> {
            Err(StoreError::Backend("not used here".into()))
        }

        async fn set_email_verified(&self, _: &str, _: OffsetDateTime) -> StoreResult<bool> {
            Err(StoreError::Backend("not used here".into()))
        }

        async fn set_email(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: OffsetDateTime,
        ) -> StoreResult<bool> {
            Err(StoreError::Backend("not used here".into()))
        }

        async fn set_roles(
            &self,
            _: &str,
            roles: &[String],
            _: Option<&str>,
            _: OffsetDateTime,
        ) -> StoreResult<UserWrite> {
            let mut user = self.user.lock().unwrap();
            let Some(user) = user.as_mut() else {
                return Ok(UserWrite::NoSuchUser);
            };
            user.roles = roles.to_vec();
            Ok(UserWrite::Done)
        }

        async fn set_status(
            &self,
            _: &str,
            _: UserStatus,
            _: Option<&str>,
            _: OffsetDateTime,
        ) -> StoreResult<UserWrite> {
            Err(StoreError::Backend("not used here".into()))
        }

        async fn delete_user(&self, _: &str, _: Option<&str>) -> StoreResult<UserWrite> {
            Err(StoreError::Backend("not used here".into()))
        }

        async fn rekey_emails(
            &self,
            _: &str,
            _: &crate::store::rekey::KeyFn<'_>,
            _: bool,
            _: OffsetDateTime,
        ) -> StoreResult<crate::store::rekey::RekeyOutcome> {
            Err(StoreError::Backend("not used here".into()))
        }
    }

    fn user() -> User {
        User {
            id: "usr_a".into(),
            email: "a@example.com".into(),
            roles: vec![],
            status: UserStatus::Active,
            email_verified: false,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn a_read_that_started_before_a_change_does_not_cache_the_old_user() {
        let inner = Arc::new(SlowUsers::default());
        inner.insert_user(&user(), "", "").await.unwrap();
        let users = Arc::new(CachingUserStore::new(inner.clone(), 10));
        inner.hold_reads.store(true, Ordering::SeqCst);
        let slow_read = tokio::spawn({
            let users = Arc::clone(&users);
            async move { users.user_by_id("usr_a").await }
        });
        inner.read_started.notified().await;
        let before = users.generation();
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            users
                .set_roles("usr_a", &["admin".into()], None, now)
                .await
                .unwrap(),
            UserWrite::Done
        );
        assert_ne!(users.generation(), before, "a change moves the generation");
        inner.release_read.notify_one();
        let old = slow_read.await.unwrap().unwrap().unwrap();
        assert!(old.roles.is_empty(), "the held read saw the old roles");
        let next = users.user_by_id("usr_a").await.unwrap().unwrap();
        assert_eq!(next.roles, vec!["admin".to_owned()]);
    }

    #[tokio::test]
    async fn the_generation_moves_on_every_invalidation_only() {
        let inner = Arc::new(SlowUsers::default());
        inner.insert_user(&user(), "", "").await.unwrap();
        let users = CachingUserStore::new(inner, 10);
        let start = users.generation().unwrap();
        users.user_by_id("usr_a").await.unwrap();
        users.user_by_id("usr_a").await.unwrap();
        assert_eq!(users.generation(), Some(start), "reads leave it alone");
        users.on_change(&Change::UserChanged {
            user_id: "usr_a".into(),
        });
        let after_event = users.generation().unwrap();
        assert!(after_event > start);
        users.forget_all();
        assert!(users.generation().unwrap() > after_event);
    }
}
