//! The revocation fan-out's sending end: the database's logs, announced on
//! Redis.
//!
//! The change log and the revocation log stay in the database: they are
//! the truth every node (and the revocation feed) reads by cursor. These
//! wrappers append there first and, once the append is durable, publish a
//! wake-up on the deployment's channel, so every node's subscription
//! (`push`) has it read the log within milliseconds. A publish that fails
//! (Redis down) loses nothing: the other nodes' subscriptions are down
//! too, so they poll the log, and distrust their caches until they have.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::RedisStore;
use crate::core::events::Change;
use crate::core::revocation::Revocation;
use crate::store::{EventStore, Push, RevocationStore, StoreResult};

/// The change log, announced on Redis; Redis is also its push.
pub(super) struct FannedEvents {
    pub(super) inner: Arc<dyn EventStore>,
    pub(super) redis: Arc<RedisStore>,
}

#[async_trait]
impl EventStore for FannedEvents {
    async fn append(&self, change: &Change, at: OffsetDateTime) -> StoreResult<()> {
        self.inner.append(change, at).await?;
        self.redis.announce(change.kind()).await;
        Ok(())
    }

    async fn after(&self, cursor: i64, limit: u32) -> StoreResult<Vec<(i64, Change)>> {
        self.inner.after(cursor, limit).await
    }

    async fn latest_cursor(&self) -> StoreResult<i64> {
        self.inner.latest_cursor().await
    }

    async fn prune(&self, before: OffsetDateTime) -> StoreResult<u64> {
        self.inner.prune(before).await
    }

    /// Redis's subscription, not the database's (which is then never
    /// started): one push per deployment.
    fn subscribe(&self) -> Option<watch::Receiver<Push>> {
        Some(self.redis.push.subscribe())
    }
}

/// The revocation log, announced on Redis.
pub(super) struct FannedRevocations {
    pub(super) inner: Arc<dyn RevocationStore>,
    pub(super) redis: Arc<RedisStore>,
}

#[async_trait]
impl RevocationStore for FannedRevocations {
    async fn insert_revocation(
        &self,
        r: &Revocation,
        forget_at: i64,
        at: OffsetDateTime,
    ) -> StoreResult<i64> {
        let seq = self.inner.insert_revocation(r, forget_at, at).await?;
        self.redis.announce(r.kind()).await;
        Ok(seq)
    }

    async fn revocations_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Revocation, i64)>> {
        self.inner.revocations_after(cursor, limit).await
    }

    async fn prune_revocations(&self, now_unix: i64) -> StoreResult<u64> {
        self.inner.prune_revocations(now_unix).await
    }
}
