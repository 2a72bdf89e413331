//! Metrics in Prometheus text format, on a recorder owned by this service
//! (not the process-global one, so every in-process test app has its own).
//!
//! Counters and histograms are recorded where things happen (counters by the
//! `metrics` recorder, latency histograms by [`super::latency`]); gauges that
//! are cheaper to read than to maintain (active sessions, hashing queue depth,
//! revocation entries) are computed when `/metrics` is scraped.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use metrics::{Counter, Label};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::Tessera;
use super::latency::{LatencyHistogram, escape_label_value};

/// Store failures, counted where a store error becomes a 503 (a conversion
/// with no access to the service, hence process-wide).
pub static STORE_ERRORS: AtomicU64 = AtomicU64::new(0);

const LATENCY_METRIC: &str = "tessera_http_request_duration_seconds";
const LATENCY_HELP: &str = "HTTP request latency by route, method and status class";

pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Handles resolved once per label set: the recorder's own lookup builds
    /// and hashes the whole key on every call, which the hot path notices.
    /// The keys are our own route templates and static labels, so a fast
    /// hash needs no defence against chosen keys.
    counters: RwLock<HashMap<CounterKey, Counter, FastHash>>,
    latency: RwLock<HashMap<Box<str>, Vec<RouteHistogram>, FastHash>>,
    /// `tessera_verifications_total` by credential kind and outcome, one
    /// slot per pair (see [`Telemetry::count_verification`]), registered on
    /// first use like any other series.
    verifications: [OnceLock<Counter>; VERIFICATION_KINDS.len() * VERIFICATION_OUTCOMES.len()],
    /// The last count of live sessions and when it was made, where counting
    /// reads every session (a store that expires them by itself).
    counted_sessions: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

/// How long a count of live sessions is reused where counting is costly.
const COSTLY_COUNT_REUSE: std::time::Duration = std::time::Duration::from_secs(60);

/// The `method` label of `tessera_verifications_total`.
const VERIFICATION_KINDS: [&str; 3] = ["session", "jwt", "none"];
/// The `outcome` label of `tessera_verifications_total`, in the order
/// [`verification_outcome`] numbers them.
const VERIFICATION_OUTCOMES: [&str; 5] = [
    "ok",
    "unauthenticated",
    "forbidden",
    "rate_limited",
    "error",
];

/// A verification's outcome, from its response status, as an index into
/// [`VERIFICATION_OUTCOMES`].
fn verification_outcome(status: u16) -> usize {
    match status {
        200 => 0,
        401 => 1,
        403 => 2,
        429 => 3,
        _ => 4,
    }
}

type FastHash = foldhash::fast::RandomState;

/// A route's latency histogram for one method and status class (an index
/// into [`STATUS_CLASSES`]).
type RouteHistogram = (Box<str>, usize, LatencyHistogram);

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A counter's name and up to three static labels, usable as a map key
/// without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct CounterKey {
    name: &'static str,
    labels: [(&'static str, &'static str); 3],
    len: usize,
}

impl CounterKey {
    fn new(name: &'static str, labels: &[(&'static str, &'static str)]) -> Option<Self> {
        let mut key = Self {
            name,
            labels: [("", ""); 3],
            len: labels.len(),
        };
        key.labels.get_mut(..labels.len())?.copy_from_slice(labels);
        Some(key)
    }
}

/// The maps only ever hold complete entries, so a panic elsewhere while a
/// lock was held leaves nothing half-written: a poisoned lock is still usable.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let t = Self {
            recorder,
            handle,
            counters: RwLock::default(),
            latency: RwLock::default(),
            verifications: Default::default(),
            counted_sessions: std::sync::Mutex::new(None),
        };
        t.describe();
        t
    }

    fn describe(&self) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!("tessera_logins_total", "Password logins by outcome");
            metrics::describe_counter!(
                "tessera_verifications_total",
                "Credential checks on /v1/verify and /v1/me by method and outcome"
            );
            metrics::describe_counter!("tessera_refresh_rotations_total", "Refresh tokens rotated");
            metrics::describe_counter!(
                "tessera_refresh_reuse_detected_total",
                "Refresh tokens presented twice (family revoked)"
            );
            metrics::describe_counter!("tessera_revocations_total", "Revocations by kind");
            metrics::describe_counter!(
                "tessera_rate_limited_total",
                "Requests refused by an abuse limit, by limit"
            );
            metrics::describe_counter!("tessera_mail_sent_total", "Mail messages sent, by kind");
            metrics::describe_counter!(
                "tessera_mail_failed_total",
                "Mail messages given up (after their last attempt, at once when refused for good with a 5xx reply, or dropped by a full queue), by kind"
            );
        });
    }

    pub fn count(&self, name: &'static str, labels: &[(&'static str, &'static str)]) {
        let Some(key) = CounterKey::new(name, labels) else {
            let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, *v)).collect();
            metrics::with_local_recorder(&self.recorder, || {
                metrics::counter!(name, labels).increment(1);
            });
            return;
        };
        if let Some(counter) = read(&self.counters).get(&key) {
            counter.increment(1);
            return;
        }
        let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, *v)).collect();
        let counter =
            metrics::with_local_recorder(&self.recorder, || metrics::counter!(name, labels));
        counter.increment(1);
        write(&self.counters).insert(key, counter);
    }

    /// Counts one credential check by the kind of credential presented and
    /// the answer's status. Every forward-auth request lands here, so the
    /// pair picks a slot by position instead of hashing the metric's name and
    /// labels into the general map ([`Telemetry::count`]).
    pub fn count_verification(&self, kind: &'static str, status: u16) {
        let outcome_at = verification_outcome(status);
        let outcome = VERIFICATION_OUTCOMES[outcome_at];
        let slot = VERIFICATION_KINDS
            .iter()
            .position(|k| *k == kind)
            .and_then(|k| {
                self.verifications
                    .get(k * VERIFICATION_OUTCOMES.len() + outcome_at)
            });
        let Some(slot) = slot else {
            // A kind this list does not know yet still gets counted.
            self.count(
                "tessera_verifications_total",
                &[("method", kind), ("outcome", outcome)],
            );
            return;
        };
        slot.get_or_init(|| {
            let labels = vec![Label::new("method", kind), Label::new("outcome", outcome)];
            metrics::with_local_recorder(&self.recorder, || {
                metrics::counter!("tessera_verifications_total", labels)
            })
        })
        .increment(1);
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        let same = |(m, c, _): &&RouteHistogram| &**m == method && *c == class;
        if let Some((_, _, histogram)) = read(&self.latency)
            .get(route)
            .and_then(|series| series.iter().find(same))
        {
            histogram.record(elapsed);
            return;
        }
        let mut latency = write(&self.latency);
        let series = latency.entry(route.into()).or_default();
        // Another request may have added the series since the read above.
        match series.iter().find(same) {
            Some((_, _, histogram)) => histogram.record(elapsed),
            None => {
                let histogram = LatencyHistogram::default();
                histogram.record(elapsed);
                series.push((method.into(), class, histogram));
            }
        }
    }

    /// The recorder's counters, then the latency histograms (series sorted
    /// by route, method and status class, so the output is stable).
    fn render_recorded(&self) -> String {
        let mut out = self.handle.render();
        let latency = read(&self.latency);
        let mut series: Vec<(&str, &str, usize, &LatencyHistogram)> = latency
            .iter()
            .flat_map(|(route, by_method)| {
                by_method
                    .iter()
                    .map(move |(method, class, h)| (&**route, &**method, *class, h))
            })
            .collect();
        if series.is_empty() {
            return out;
        }
        series.sort_by_key(|(route, method, class, _)| (*route, *method, *class));
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(out, "# HELP {LATENCY_METRIC} {LATENCY_HELP}");
        let _ = writeln!(out, "# TYPE {LATENCY_METRIC} histogram");
        for (route, method, class, histogram) in series {
            let labels = format!(
                "route=\"{}\",method=\"{}\",status=\"{}\"",
                escape_label_value(route),
                escape_label_value(method),
                STATUS_CLASSES.get(class).copied().unwrap_or("5xx"),
            );
            histogram.write(&mut out, LATENCY_METRIC, &labels);
        }
        out.push('\n');
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn histogram(out: &mut String, name: &str, help: &str, series: &LatencyHistogram) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    series.write(out, name, "");
}

/// This process's Redis health (`store::redis::health_counters`).
fn redis_metrics(out: &mut String, h: crate::store::redis::RedisHealth) {
    use std::fmt::Write as _;
    for (name, help, value) in [
        (
            "tessera_redis_reconnects_total",
            "Times the Redis push subscription was lost and made again",
            h.reconnects,
        ),
        (
            "tessera_redis_errors_total",
            "Redis commands that failed",
            h.errors,
        ),
        (
            "tessera_redis_unacknowledged_writes_total",
            "Session writes no Redis replica acknowledged in time (WAIT)",
            h.wait_shortfalls,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "tessera_redis_fanout_lag_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Delay of revocation fan-out messages, from the publishing node's clock to this node's"
    );
    let _ = writeln!(out, "# TYPE {name} summary");
    let _ = writeln!(out, "{name}_sum {}", h.fanout_lag_seconds);
    let _ = writeln!(out, "{name}_count {}", h.fanout_heard);
}

impl Tessera {
    /// Live sessions now; where counting reads every session (Redis), a
    /// count made in the last minute is reused.
    async fn count_live_sessions(&self) -> crate::store::StoreResult<u64> {
        let costly = self.stores.sessions.expires_by_itself();
        if costly
            && let Ok(last) = self.telemetry.counted_sessions.lock()
            && let Some((at, n)) = *last
            && at.elapsed() < COSTLY_COUNT_REUSE
        {
            return Ok(n);
        }
        let now = self.now();
        let n = self
            .stores
            .sessions
            .count_live(now, now - self.policy.sessions.idle)
            .await?;
        if costly && let Ok(mut last) = self.telemetry.counted_sessions.lock() {
            *last = Some((std::time::Instant::now(), n));
        }
        Ok(n)
    }

    /// The whole `/metrics` document.
    pub async fn render_metrics(&self) -> String {
        let mut out = self.telemetry.render_recorded();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let active = self.count_live_sessions().await;
        match active {
            Ok(n) => gauge(
                &mut out,
                "tessera_active_sessions",
                "Browser sessions neither expired nor revoked",
                n as f64,
            ),
            Err(e) => tracing::warn!(error = %e, "counting active sessions failed"),
        }
        // Only the Redis session store groups sessions by user tag.
        if self.stores.sessions.tags_sessions() {
            redis_metrics(&mut out, crate::store::redis::health_counters());
        }
        gauge(
            &mut out,
            "tessera_hash_queue_depth",
            "Password hashing jobs accepted and not finished",
            self.hash_queue_depth() as f64,
        );
        let timings = self.passwords.pool().timings();
        histogram(
            &mut out,
            "tessera_password_hash_wait_seconds",
            "Time a password hash or check waited for a hashing thread",
            &timings.waited,
        );
        histogram(
            &mut out,
            "tessera_password_hash_seconds",
            "Time a hashing thread spent on one password hash or check (argon2id)",
            &timings.worked,
        );
        gauge(
            &mut out,
            "tessera_revocation_entries",
            "Entries in the in-memory access-token revocation set",
            self.revocations.len() as f64,
        );
        let _ = writeln!(
            out,
            "# HELP tessera_store_errors_total Store operations that failed (requests failed closed)"
        );
        let _ = writeln!(out, "# TYPE tessera_store_errors_total counter");
        let _ = writeln!(
            out,
            "tessera_store_errors_total {}",
            STORE_ERRORS.load(Ordering::Relaxed)
        );
        out
    }
}
