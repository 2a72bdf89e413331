//! Tessera's policy: accounts, sessions, expiry, revocation. No HTTP and no SQL
//! here; time comes from a [`clock::Clock`] and state from the store traits.

pub mod accounts;
pub mod clock;
pub mod error;
pub mod events;
pub mod passwords;
pub mod secret;
pub mod sessions;
pub mod time;

use std::sync::Arc;

use self::clock::Clock;
use self::error::CoreResult;
use self::events::ChangeListener;
use self::passwords::{HashParams, PasswordHasher, PoolSize};
use self::sessions::SessionPolicy;
use crate::store::Stores;
use crate::store::cache::{CachingSessionStore, CachingUserStore};

/// Everything the core needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    pub sessions: SessionPolicy,
    pub hash_params: HashParams,
    pub hash_pool: PoolSize,
    pub session_cache_entries: usize,
    pub user_cache_entries: usize,
}

/// The policy the core enforces.
#[derive(Debug, Clone)]
pub struct Policy {
    pub sessions: SessionPolicy,
}

/// The authentication service: one per process, shared by HTTP, pages and CLI.
pub struct Tessera {
    pub(crate) stores: Stores,
    pub(crate) listeners: Vec<Arc<dyn ChangeListener>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) passwords: PasswordHasher,
    pub policy: Policy,
}

impl Tessera {
    /// Builds the service on `stores`, putting the bounded caches in front of
    /// the hot reads.
    pub fn new(
        stores: Stores,
        clock: Arc<dyn Clock>,
        options: CoreOptions,
    ) -> anyhow::Result<Self> {
        let sessions = Arc::new(CachingSessionStore::new(
            stores.sessions,
            options.session_cache_entries,
        ));
        let users = Arc::new(CachingUserStore::new(
            stores.users,
            options.user_cache_entries,
        ));
        let listeners: Vec<Arc<dyn ChangeListener>> = vec![sessions.clone(), users.clone()];
        Ok(Self {
            stores: Stores {
                users,
                sessions,
                events: stores.events,
                health: stores.health,
            },
            listeners,
            clock,
            passwords: PasswordHasher::new(options.hash_params, options.hash_pool)?,
            policy: Policy {
                sessions: options.sessions,
            },
        })
    }

    /// The current time at the precision the stores keep (milliseconds), so
    /// a record reads back exactly as it was written.
    pub fn now(&self) -> ::time::OffsetDateTime {
        self::time::from_millis(self::time::to_millis(self.clock.now()))
    }

    /// Whether every backing store answers.
    pub async fn ready(&self) -> CoreResult<()> {
        self.stores.health.ping().await?;
        Ok(())
    }

    /// Password hashing jobs accepted and not yet finished.
    pub fn hash_queue_depth(&self) -> usize {
        self.passwords.pool().depth()
    }
}
