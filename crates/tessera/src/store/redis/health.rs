//! This process's Redis health, for `/metrics`: counters the Redis store
//! bumps as things happen (process-wide: one Redis store per server).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::StoreError;

static RECONNECTS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
pub(super) static WAIT_SHORTFALLS: AtomicU64 = AtomicU64::new(0);
/// Fan-out messages heard, and the sum of their delays (µs) from the
/// sender's clock to this node's.
static FANOUT_HEARD: AtomicU64 = AtomicU64::new(0);
static FANOUT_LAG_MICROS: AtomicU64 = AtomicU64::new(0);

/// Records a fan-out message's delay from its payload (`<kind> <sent ms>`);
/// payloads of another shape, or delays outside 0..60 s (clocks apart),
/// are not counted.
pub(crate) fn record_fanout(payload: &[u8]) {
    let Some(sent) = std::str::from_utf8(payload)
        .ok()
        .and_then(|p| p.rsplit_once(' '))
        .and_then(|(_, ms)| ms.parse::<i64>().ok())
    else {
        return;
    };
    let now = crate::core::time::to_millis(time::OffsetDateTime::now_utc());
    let Ok(lag_ms) = u64::try_from(now - sent) else {
        return;
    };
    if lag_ms <= 60_000 {
        FANOUT_HEARD.fetch_add(1, Ordering::Relaxed);
        FANOUT_LAG_MICROS.fetch_add(lag_ms * 1000, Ordering::Relaxed);
    }
}

pub(crate) fn count_reconnect() {
    RECONNECTS.fetch_add(1, Ordering::Relaxed);
}

/// Times this process's subscription was lost and made again, Redis
/// commands that failed, and unacknowledged writes (since the process
/// started).
pub fn health_counters() -> RedisHealth {
    RedisHealth {
        reconnects: RECONNECTS.load(Ordering::Relaxed),
        errors: ERRORS.load(Ordering::Relaxed),
        wait_shortfalls: WAIT_SHORTFALLS.load(Ordering::Relaxed),
        fanout_heard: FANOUT_HEARD.load(Ordering::Relaxed),
        fanout_lag_seconds: FANOUT_LAG_MICROS.load(Ordering::Relaxed) as f64 / 1e6,
    }
}

/// See [`health_counters`].
#[derive(Debug, Clone, Copy)]
pub struct RedisHealth {
    pub reconnects: u64,
    pub errors: u64,
    /// Session writes no replica acknowledged in time.
    pub wait_shortfalls: u64,
    /// Fan-out messages heard, and their delays summed (sender's clock to
    /// this node's, millisecond precision).
    pub fanout_heard: u64,
    pub fanout_lag_seconds: f64,
}

/// A failed Redis command as the stores report it: counted, and without
/// anything from the URL.
pub(super) fn backend(e: &::redis::RedisError) -> StoreError {
    ERRORS.fetch_add(1, Ordering::Relaxed);
    StoreError::Backend(format!("Redis: {e}"))
}
