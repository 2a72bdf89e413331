//! Change events: how every cache learns that something it holds is stale.
//!
//! Writes that end sessions or change what a user may do are appended to the
//! store's event log. The caching stores evict on their own writes at once; a
//! follower task reads the log by cursor and applies every event (its own
//! too, which closes the race of a read re-caching what a concurrent write
//! deleted), so a `tessera user suspend` run beside the server, or a write on
//! another node, is honoured within one poll interval, or as soon as the
//! backend pushes the append where it can ([`crate::store::EventStore::subscribe`]).
//! If the log cannot be read, or the push connection drops (changes may have
//! gone unannounced), the caches are emptied so requests go to the store
//! until the follower has caught up, and fail closed with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::Tessera;
use super::error::CoreResult;
use super::secret::SecretHash;
use crate::store::Push;

/// Something that happened which caches must honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// One session ended (logout or revocation). Carries the stored hash of its
    /// cookie (never the cookie) so caches evict it without a scan.
    SessionRevoked {
        user_id: String,
        session_id: String,
        token_hash: SecretHash,
    },
    /// Every session of a user ended (logout-all, suspension).
    UserSessionsRevoked { user_id: String },
    /// A user's roles or status changed.
    UserChanged { user_id: String },
    /// The signing keys changed (rotation): reload the key ring.
    KeysChanged,
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Change::SessionRevoked { .. } => "session_revoked",
            Change::UserSessionsRevoked { .. } => "user_sessions_revoked",
            Change::UserChanged { .. } => "user_changed",
            Change::KeysChanged => "keys_changed",
        }
    }

    pub fn user_id(&self) -> &str {
        match self {
            Change::SessionRevoked { user_id, .. }
            | Change::UserSessionsRevoked { user_id }
            | Change::UserChanged { user_id } => user_id,
            Change::KeysChanged => "",
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match self {
            Change::SessionRevoked { session_id, .. } => Some(session_id),
            _ => None,
        }
    }

    pub fn token_hash(&self) -> Option<&SecretHash> {
        match self {
            Change::SessionRevoked { token_hash, .. } => Some(token_hash),
            _ => None,
        }
    }

    /// Rebuilds a change from its stored parts; unknown kinds are skipped.
    pub fn from_parts(
        kind: &str,
        user_id: String,
        session_id: Option<String>,
        token_hash: Option<SecretHash>,
    ) -> Option<Self> {
        match (kind, session_id, token_hash) {
            ("session_revoked", Some(session_id), Some(token_hash)) => {
                Some(Change::SessionRevoked {
                    user_id,
                    session_id,
                    token_hash,
                })
            }
            ("user_sessions_revoked", _, _) => Some(Change::UserSessionsRevoked { user_id }),
            ("user_changed", _, _) => Some(Change::UserChanged { user_id }),
            ("keys_changed", _, _) => Some(Change::KeysChanged),
            _ => None,
        }
    }
}

/// A cache (or anything else) that must drop state when a change happens.
pub trait ChangeListener: Send + Sync {
    fn on_change(&self, change: &Change);
    /// Drops everything: used when the event log cannot be read.
    fn forget_all(&self);
}

/// How often the follower polls the store for events from other processes
/// when nothing pushes them.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// How often it still polls while the backend pushes (a safety net: a push
/// is a hint, the log is the truth).
const FOLLOW_INTERVAL_PUSHED: Duration = Duration::from_secs(1);
/// How long change events are kept for followers.
const EVENT_RETENTION: time::Duration = time::Duration::hours(24);
/// How often expired sessions and old events are swept (by time, not by
/// follower turns: pushes make those as frequent as appends).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Tessera {
    /// Records a change for every process's caches (this one's included).
    pub(crate) async fn publish(&self, change: Change) -> CoreResult<()> {
        self.stores.events.append(&change, self.now()).await?;
        Ok(())
    }

    /// Follows the change log and the revocation log until cancelled, and
    /// does periodic housekeeping. While the change log cannot be read, the
    /// caches are kept empty, so every request goes to the store and fails
    /// closed with it; the token path consults [`super::freshness`].
    pub async fn follow_changes(self: Arc<Self>, cancel: CancellationToken) {
        self.freshness.set_following(true);
        let wake = Arc::new(Notify::new());
        let listening = Arc::new(AtomicBool::new(false));
        if let Some(push) = self.stores.events.subscribe() {
            tokio::spawn(Arc::clone(&self).watch_push(
                push,
                Arc::clone(&wake),
                Arc::clone(&listening),
                cancel.clone(),
            ));
        }
        let mut last_sweep = tokio::time::Instant::now();
        let mut healthy = true;
        loop {
            let start = self.freshness.read_starts();
            let read = match self.follow_once().await {
                Ok(()) => self.follow_revocations().await,
                Err(e) => Err(e),
            };
            match read {
                Ok(()) => {
                    self.freshness.caught_up(start);
                    if !healthy {
                        tracing::info!("change log readable again");
                        healthy = true;
                    }
                }
                Err(e) => {
                    if healthy {
                        tracing::error!(error = %e, "cannot read the change log; caches emptied");
                        healthy = false;
                    }
                    self.forget_cached();
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = tokio::time::Instant::now();
                self.sweep().await;
            }
            let interval = if listening.load(Ordering::Acquire) {
                FOLLOW_INTERVAL_PUSHED
            } else {
                FOLLOW_INTERVAL
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
                () = wake.notified() => {}
            }
        }
        self.freshness.set_following(false);
    }

    /// Turns the backend's push states into wake-ups for the follower. A
    /// dropped push connection empties the caches and marks the node's view
    /// stale at once, without waiting for the follower (which may be stuck
    /// in a read against the very database that went away).
    async fn watch_push(
        self: Arc<Self>,
        mut push: watch::Receiver<Push>,
        wake: Arc<Notify>,
        listening: Arc<AtomicBool>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = push.changed() => if changed.is_err() {
                    listening.store(false, Ordering::Release);
                    return;
                },
            }
            let state = *push.borrow_and_update();
            match state {
                Push::Disconnected => {
                    listening.store(false, Ordering::Release);
                    self.freshness.push_lost();
                    self.forget_cached();
                }
                Push::Listening(_) => listening.store(true, Ordering::Release),
            }
            wake.notify_one();
        }
    }

    fn forget_cached(&self) {
        for listener in &self.listeners {
            listener.forget_all();
        }
    }

    /// Applies the change log's entries after the cursor (taken when the
    /// state was loaded, so nothing appended meanwhile is skipped).
    async fn follow_once(&self) -> crate::store::StoreResult<()> {
        loop {
            let after = self.change_cursor.load(Ordering::SeqCst);
            let batch = self.stores.events.after(after, 1000).await?;
            let full = batch.len() == 1000;
            for (seq, change) in batch {
                self.change_cursor.fetch_max(seq, Ordering::SeqCst);
                if change == Change::KeysChanged {
                    if let Err(e) = self.reload_keys().await {
                        tracing::error!(error = %e, "reloading signing keys failed");
                    }
                    continue;
                }
                for listener in &self.listeners {
                    listener.on_change(&change);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Applies revocations written since the last look (by any process).
    pub(crate) async fn follow_revocations(&self) -> crate::store::StoreResult<()> {
        loop {
            let after = self
                .revocation_cursor
                .load(std::sync::atomic::Ordering::SeqCst);
            let batch = self
                .stores
                .revocations
                .revocations_after(after, 1000)
                .await?;
            let full = batch.len() == 1000;
            for (seq, revocation, forget_at) in batch {
                self.revocations.apply(&revocation, forget_at);
                self.revocation_cursor
                    .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Housekeeping: expired sessions and refresh tokens, old events and
    /// revocations, retired keys, and key rotation when due.
    pub async fn sweep(&self) {
        let now = self.now();
        let idle_cutoff = now - self.policy.sessions.idle;
        // A store whose records expire by themselves (Redis) needs no sweep,
        // and would have to read every session for it.
        if !self.stores.sessions.expires_by_itself() {
            match self.stores.sessions.delete_expired(now, idle_cutoff).await {
                Ok(n) if n > 0 => tracing::debug!(count = n, "expired sessions deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping expired sessions failed"),
            }
        }
        if let Err(e) = self.stores.refresh.delete_expired_refresh(now).await {
            tracing::warn!(error = %e, "sweeping expired refresh tokens failed");
        }
        if let Err(e) = self.stores.events.prune(now - EVENT_RETENTION).await {
            tracing::warn!(error = %e, "pruning old change events failed");
        }
        let now_unix = now.unix_timestamp();
        self.revocations.prune(now_unix);
        if let Err(e) = self.stores.revocations.prune_revocations(now_unix).await {
            tracing::warn!(error = %e, "pruning old revocations failed");
        }
        self.prune_audit().await;
        self.prune_link_tokens().await;
        if let Err(e) = self.retire_keys().await {
            tracing::warn!(error = %e, "retiring signing keys failed");
        }
        if let Err(e) = self.rotate_if_due().await {
            tracing::warn!(error = %e, "scheduled key rotation failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_through_their_parts() {
        let changes = [
            Change::SessionRevoked {
                user_id: "usr_a".into(),
                session_id: "ses_b".into(),
                token_hash: SecretHash([7; 32]),
            },
            Change::UserSessionsRevoked {
                user_id: "usr_a".into(),
            },
            Change::UserChanged {
                user_id: "usr_a".into(),
            },
            Change::KeysChanged,
        ];
        for c in changes {
            let back = Change::from_parts(
                c.kind(),
                c.user_id().to_owned(),
                c.session_id().map(str::to_owned),
                c.token_hash().copied(),
            );
            assert_eq!(back, Some(c));
        }
        assert_eq!(
            Change::from_parts("future_kind", "usr_a".into(), None, None),
            None
        );
    }
}
