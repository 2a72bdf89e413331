//! How current a node's view of the logs is, and whether to trust it.
//!
//! Access tokens are checked against an in-memory copy of the revocation log
//! and sessions come from caches kept coherent by the change log; both are
//! only as good as the node's last read of those logs. A follower reads them
//! (woken by the backend's push where there is one); this records when it
//! last read both in full and whether the push connection dropped since
//! (appends may then have gone unannounced). The token path refuses to
//! decide (503) while the view is not fresh: past the configured staleness
//! without a read, or from a dropped push until the next complete read that
//! began after the drop. A process without a follower (CLI commands, tests
//! that drive the core directly) read the logs when they loaded and trust
//! that.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Freshness {
    following: AtomicBool,
    /// Bumped when the push connection drops.
    lost_epoch: AtomicU64,
    /// The `lost_epoch` the last complete read began in.
    read_epoch: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` at which the last complete read began.
    read_at_ms: AtomicU64,
    max_staleness: Duration,
}

/// Where a read began: what [`Freshness::caught_up`] is told afterwards.
#[derive(Debug, Clone, Copy)]
pub struct ReadStart {
    epoch: u64,
    at_ms: u64,
}

impl Freshness {
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            following: AtomicBool::new(false),
            lost_epoch: AtomicU64::new(0),
            read_epoch: AtomicU64::new(0),
            started: Instant::now(),
            read_at_ms: AtomicU64::new(0),
            max_staleness,
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A follower starts (or stops): only then does staleness apply.
    pub fn set_following(&self, following: bool) {
        if following {
            self.read_at_ms.store(self.elapsed_ms(), Ordering::Release);
        }
        self.following.store(following, Ordering::Release);
    }

    /// Call before reading the logs.
    pub fn read_starts(&self) -> ReadStart {
        ReadStart {
            epoch: self.lost_epoch.load(Ordering::Acquire),
            at_ms: self.elapsed_ms(),
        }
    }

    /// Both logs were read in full, from a read that began at `start`.
    pub fn caught_up(&self, start: ReadStart) {
        self.read_at_ms.fetch_max(start.at_ms, Ordering::AcqRel);
        self.read_epoch.fetch_max(start.epoch, Ordering::AcqRel);
    }

    /// The push connection dropped: what was pushed may be incomplete.
    pub fn push_lost(&self) {
        self.lost_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether the node may decide from what it holds in memory.
    pub fn is_fresh(&self) -> bool {
        if !self.following.load(Ordering::Acquire) {
            return true;
        }
        if self.read_epoch.load(Ordering::Acquire) < self.lost_epoch.load(Ordering::Acquire) {
            return false;
        }
        let age = self
            .elapsed_ms()
            .saturating_sub(self.read_at_ms.load(Ordering::Acquire));
        u128::from(age) <= self.max_staleness.as_millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_follower_the_loaded_view_is_trusted() {
        let f = Freshness::new(Duration::from_millis(1));
        f.push_lost();
        std::thread::sleep(Duration::from_millis(5));
        assert!(f.is_fresh());
    }

    #[test]
    fn a_lost_push_is_cleared_only_by_a_read_begun_after_it() {
        let f = Freshness::new(Duration::from_secs(60));
        f.set_following(true);
        assert!(f.is_fresh());
        let before = f.read_starts();
        f.push_lost();
        assert!(!f.is_fresh());
        f.caught_up(before);
        assert!(
            !f.is_fresh(),
            "that read may have missed what the drop lost"
        );
        let after = f.read_starts();
        f.caught_up(after);
        assert!(f.is_fresh());
    }

    #[test]
    fn past_the_staleness_without_a_read_the_view_is_not_fresh() {
        let f = Freshness::new(Duration::from_millis(20));
        f.set_following(true);
        assert!(f.is_fresh());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!f.is_fresh());
        f.caught_up(f.read_starts());
        assert!(f.is_fresh());
        f.set_following(false);
        std::thread::sleep(Duration::from_millis(40));
        assert!(f.is_fresh(), "no follower: nothing to be stale against");
    }
}
