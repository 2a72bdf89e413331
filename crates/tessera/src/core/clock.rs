//! Time as an input.
//!
//! Every expiry decision in Tessera (idle and absolute session lifetimes,
//! `last_seen_at` throttling, later token expiry and key retirement) is a pure
//! function of `now`, and `now` comes from a [`Clock`]. Production uses
//! [`SystemClock`]; tests move a [`ManualClock`] instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::{Duration, OffsetDateTime};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    unix_nanos: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        let nanos = i64::try_from(start.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        Self {
            unix_nanos: Arc::new(AtomicI64::new(nanos)),
        }
    }

    /// Starts at the current system time, truncated to whole milliseconds
    /// (the precision the stores keep).
    pub fn starting_now() -> Self {
        let now = OffsetDateTime::now_utc();
        Self::new(crate::core::time::from_millis(
            crate::core::time::to_millis(now),
        ))
    }

    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.unix_nanos.fetch_add(by, Ordering::SeqCst);
    }

    pub fn set(&self, to: OffsetDateTime) {
        let nanos = i64::try_from(to.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        self.unix_nanos.store(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let nanos = self.unix_nanos.load(Ordering::SeqCst);
        OffsetDateTime::UNIX_EPOCH + Duration::nanoseconds(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let clock = ManualClock::starting_now();
        let copy = clock.clone();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        copy.advance(std::time::Duration::from_secs(90));
        assert_eq!(clock.now() - t0, Duration::seconds(90));
    }
}
