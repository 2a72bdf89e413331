//! Change events: how every cache learns that something it holds is stale.
//!
//! Writes that end sessions or change what a user may do are appended to the
//! store's event log. The caching stores evict on their own writes at once; a
//! follower task polls the log and applies every event (its own too, which
//! closes the race of a read re-caching what a concurrent write deleted), so a
//! `tessera user suspend` run beside the server, or a write on another node, is
//! honoured within one poll interval. If the log cannot be read, the caches are
//! emptied so requests go to the store and fail closed with it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Tessera;
use super::error::CoreResult;
use super::secret::SecretHash;

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
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Change::SessionRevoked { .. } => "session_revoked",
            Change::UserSessionsRevoked { .. } => "user_sessions_revoked",
            Change::UserChanged { .. } => "user_changed",
        }
    }

    pub fn user_id(&self) -> &str {
        match self {
            Change::SessionRevoked { user_id, .. }
            | Change::UserSessionsRevoked { user_id }
            | Change::UserChanged { user_id } => user_id,
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

/// How often the follower polls the store for events from other processes.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// How long change events are kept for followers.
const EVENT_RETENTION: time::Duration = time::Duration::hours(24);
/// How often expired sessions and old events are swept.
const SWEEP_EVERY: u32 = 240;

impl Tessera {
    /// Records a change for every process's caches (this one's included).
    pub(crate) async fn publish(&self, change: Change) -> CoreResult<()> {
        self.stores.events.append(&change, self.now()).await?;
        Ok(())
    }

    /// Follows the event log until cancelled; also sweeps expired sessions and
    /// old events now and then. While the log cannot be read, the caches are
    /// kept empty, so every request goes to the store and fails closed with it.
    pub async fn follow_changes(self: Arc<Self>, cancel: CancellationToken) {
        let mut cursor: Option<i64> = None;
        let mut ticks: u32 = 0;
        let mut healthy = true;
        loop {
            let read = match cursor {
                None => self.stores.events.latest_cursor().await.map(|c| {
                    cursor = Some(c);
                }),
                Some(after) => self.stores.events.after(after, 1000).await.map(|batch| {
                    for (seq, change) in batch {
                        cursor = Some(seq);
                        for listener in &self.listeners {
                            listener.on_change(&change);
                        }
                    }
                }),
            };
            match read {
                Ok(()) if !healthy => {
                    tracing::info!("change log readable again");
                    healthy = true;
                }
                Ok(()) => {}
                Err(e) => {
                    if healthy {
                        tracing::error!(error = %e, "cannot read the change log; caches emptied");
                        healthy = false;
                    }
                    for listener in &self.listeners {
                        listener.forget_all();
                    }
                }
            }
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(SWEEP_EVERY) {
                self.sweep().await;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
        }
    }

    /// Deletes sessions past their idle or absolute expiry and old events.
    pub async fn sweep(&self) {
        let now = self.now();
        let idle_cutoff = now - self.policy.sessions.idle;
        match self.stores.sessions.delete_expired(now, idle_cutoff).await {
            Ok(n) if n > 0 => tracing::debug!(count = n, "expired sessions deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping expired sessions failed"),
        }
        if let Err(e) = self.stores.events.prune(now - EVENT_RETENTION).await {
            tracing::warn!(error = %e, "pruning old change events failed");
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
