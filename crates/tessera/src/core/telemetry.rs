//! Metrics in Prometheus text format, on a recorder owned by this service
//! (not the process-global one, so every in-process test app has its own).
//!
//! Counters and histograms are recorded where things happen; gauges that are
//! cheaper to read than to maintain (active sessions, hashing queue depth,
//! revocation entries) are computed when `/metrics` is scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Label, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::Tessera;

/// Store failures, counted where a store error becomes a 503 (a conversion
/// with no access to the service, hence process-wide).
pub static STORE_ERRORS: AtomicU64 = AtomicU64::new(0);

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        let recorder = match builder.set_buckets(LATENCY_BUCKETS) {
            Ok(b) => b.build_recorder(),
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        let t = Self { recorder, handle };
        t.describe();
        t
    }

    fn describe(&self) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_histogram!(
                "tessera_http_request_duration_seconds",
                Unit::Seconds,
                "HTTP request latency by route, method and status class"
            );
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
        });
    }

    pub fn count(&self, name: &'static str, labels: &[(&'static str, &'static str)]) {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, *v)).collect();
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!(name, labels).increment(1);
        });
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = vec![
            Label::new("route", route.to_owned()),
            Label::new("method", method.to_owned()),
            Label::new("status", class),
        ];
        metrics::with_local_recorder(&self.recorder, || {
            metrics::histogram!("tessera_http_request_duration_seconds", labels).record(seconds);
        });
    }

    fn render_recorded(&self) -> String {
        self.handle.render()
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

impl Tessera {
    /// The whole `/metrics` document.
    pub async fn render_metrics(&self) -> String {
        let mut out = self.telemetry.render_recorded();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let now = self.now();
        let active = self
            .stores
            .sessions
            .count_live(now, now - self.policy.sessions.idle)
            .await;
        match active {
            Ok(n) => gauge(
                &mut out,
                "tessera_active_sessions",
                "Browser sessions neither expired nor revoked",
                n as f64,
            ),
            Err(e) => tracing::warn!(error = %e, "counting active sessions failed"),
        }
        gauge(
            &mut out,
            "tessera_hash_queue_depth",
            "Password hashing jobs accepted and not finished",
            self.hash_queue_depth() as f64,
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
