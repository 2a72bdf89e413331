//! Request latency histograms with fixed buckets, recorded in place.
//!
//! The Prometheus exporter's own histograms keep every raw sample in a
//! chain of allocated blocks until a periodic upkeep folds them into
//! buckets: at 100k requests a second that is megabytes of samples between
//! two upkeeps, and a fold of a few milliseconds on a core that serves
//! requests. Here a sample is two relaxed atomic additions to counters that
//! exist from the start: memory is constant and there is nothing to fold.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets (`le`), in nanoseconds: 100 µs to 2.5 s.
const BOUNDS_NANOS: [u64; 14] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// One series: how many samples fell in each bucket (not cumulative; the
/// last slot is above every bound) and their total.
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let at = BOUNDS_NANOS.partition_point(|bound| *bound < nanos);
        if let Some(bucket) = self.buckets.get(at) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Appends the series in the text exposition format: cumulative
    /// `_bucket` lines, then `_sum` and `_count`. `labels` is the rendered
    /// label list without braces (`route="/v1/verify",method="GET"`), or
    /// empty for a series without labels.
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        let le_after = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (at, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = match BOUNDS_NANOS.get(at) {
                Some(bound) => writeln!(
                    out,
                    "{name}_bucket{{{labels}{le_after}le=\"{}\"}} {cumulative}",
                    seconds(*bound)
                ),
                None => writeln!(
                    out,
                    "{name}_bucket{{{labels}{le_after}le=\"+Inf\"}} {cumulative}"
                ),
            };
        }
        let sum = seconds(self.sum_nanos.load(Ordering::Relaxed));
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {sum}");
        // From the buckets, so the count always equals the `+Inf` bucket.
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// A label value as the exposition format quotes it.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(h: &LatencyHistogram) -> Vec<String> {
        let mut out = String::new();
        h.write(&mut out, "t", "route=\"/r\"");
        out.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_sample_on_a_bound_counts_in_that_bucket_and_every_later_one() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(100));
        h.record(Duration::from_nanos(100_001));
        h.record(Duration::from_secs(3));
        let lines = rendered(&h);
        assert_eq!(lines[0], "t_bucket{route=\"/r\",le=\"0.0001\"} 1");
        assert_eq!(lines[1], "t_bucket{route=\"/r\",le=\"0.00025\"} 2");
        assert_eq!(lines[12], "t_bucket{route=\"/r\",le=\"1\"} 2");
        assert_eq!(lines[13], "t_bucket{route=\"/r\",le=\"2.5\"} 2");
        assert_eq!(lines[14], "t_bucket{route=\"/r\",le=\"+Inf\"} 3");
        assert_eq!(lines[15], "t_sum{route=\"/r\"} 3.000200001");
        assert_eq!(lines[16], "t_count{route=\"/r\"} 3");
        assert_eq!(lines.len(), 17);
    }

    #[test]
    fn an_empty_series_renders_zeros() {
        let lines = rendered(&LatencyHistogram::default());
        assert!(lines[..15].iter().all(|l| l.ends_with("} 0")));
        assert_eq!(lines[15], "t_sum{route=\"/r\"} 0");
    }

    #[test]
    fn a_series_without_labels_has_only_le_or_no_braces() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_millis(15));
        let mut out = String::new();
        h.write(&mut out, "t", "");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "t_bucket{le=\"0.0001\"} 0");
        assert_eq!(lines[7], "t_bucket{le=\"0.025\"} 1");
        assert_eq!(lines[14], "t_bucket{le=\"+Inf\"} 1");
        assert_eq!(lines[15], "t_sum 0.015");
        assert_eq!(lines[16], "t_count 1");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label_value("/v1/verify"), "/v1/verify");
    }
}
