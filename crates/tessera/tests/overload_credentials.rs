//! Credential floods against a real `tessera serve` (bounded, loopback
//! only): memory stays bounded whatever emails a client invents, a login
//! flood leaves the server answering, and the flood's end leaves nothing
//! behind. Figures are printed with `eprintln!` (`--no-capture` shows them).

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::PASSWORD;
use common::node::{Node, Store};
use futures_util::StreamExt;
use serde_json::json;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A random local part of `len` characters (lower-case letters, digits).
fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// A valid email of exactly 254 bytes (the contract's longest): a 64-byte
/// local part and labels of 63.
fn maximal_email() -> String {
    let domain = format!(
        "{}.{}.{}.com",
        random_text(63),
        random_text(63),
        random_text(57)
    );
    let email = format!("{}@{domain}", random_text(64));
    assert_eq!(email.len(), 254);
    email
}

/// Sends `n` failed logins, `concurrency` at a time, each with the email
/// `make()` gives; returns how many got each status.
async fn failed_logins(
    node: &Node,
    n: usize,
    concurrency: usize,
    make: impl Fn() -> String,
) -> std::collections::BTreeMap<u16, usize> {
    let emails: Vec<String> = (0..n).map(|_| make()).collect();
    let statuses: Vec<u16> = futures_util::stream::iter(emails)
        .map(|email| async move {
            node.send(
                node.post("/v1/sessions")
                    .json(&json!({"email": email, "password": "not the password"})),
            )
            .await
            .status
            .as_u16()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts
}

/// Issue #19 finding 6: a 64 KiB "email" was stored whole in the backoff
/// map (1,000 failed logins: +60 MiB). Emails over the contract's 254 bytes
/// are now refused before any state is touched, and every entry is a fixed
/// size, so 20,000 distinct emails of the longest accepted length grow the
/// process by little.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_emails_keep_memory_bounded() {
    /// The stated bound on growth after warm-up, for the whole test.
    const BOUND_KIB: u64 = 32 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(&Store::Sqlite.fresh_url(dir.path()).await).await;
    let pid = node.pid().expect("pid");
    // Warm-up: the hashing threads' argon2 memory, the connection pool.
    let warm = failed_logins(&node, 200, 16, maximal_email).await;
    assert_eq!(warm.get(&401), Some(&200), "{warm:?}");
    let base = rss_kib(pid);

    let started = Instant::now();
    let oversized = failed_logins(&node, 2_000, 16, || {
        format!("{}@example.com", random_text(60 * 1024))
    })
    .await;
    assert_eq!(oversized.get(&422), Some(&2_000), "{oversized:?}");
    let after_oversized = rss_kib(pid);
    eprintln!(
        "2,000 logins with 60 KiB emails: all 422 in {:?}; RSS {base} → {after_oversized} KiB",
        started.elapsed()
    );

    let started = Instant::now();
    let maximal = failed_logins(&node, 20_000, 32, maximal_email).await;
    assert_eq!(maximal.get(&401), Some(&20_000), "{maximal:?}");
    let after = rss_kib(pid);
    eprintln!(
        "20,000 failed logins with distinct 254-byte emails in {:?}; RSS {base} → {after} KiB (bound +{BOUND_KIB})",
        started.elapsed()
    );
    assert!(
        after.saturating_sub(base) < BOUND_KIB,
        "RSS grew from {base} to {after} KiB"
    );
    node.stop().await;
}

/// A login flood (many more concurrent logins than the hashing pool holds,
/// from many addresses behind a trusted proxy) is refused quickly, never
/// with a 500 or a hang; `/healthz` answers all along; and once it ends
/// the real user logs in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_leaves_the_server_answering() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_with(
        &Store::Sqlite.fresh_url(dir.path()).await,
        &[
            ("TESSERA_HASH_QUEUE", "16"),
            ("TESSERA_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    node.register("real@example.com").await;
    let flood_for = Duration::from_secs(3);
    let flood = async {
        let started = Instant::now();
        let mut counts = std::collections::BTreeMap::<u16, usize>::new();
        let mut n = 0u32;
        while started.elapsed() < flood_for {
            let batch: Vec<_> = (0..64)
                .map(|_| {
                    n += 1;
                    let forwarded = format!("198.51.{}.{}", (n / 250) % 250, n % 250);
                    node.send(
                        node.post("/v1/sessions")
                            .header("x-forwarded-for", forwarded)
                            .json(&json!({"email": "real@example.com", "password": "guessing!!"})),
                    )
                })
                .collect();
            for r in futures_util::future::join_all(batch).await {
                *counts.entry(r.status.as_u16()).or_insert(0) += 1;
            }
        }
        counts
    };
    let probes = async {
        let mut slowest = Duration::ZERO;
        let started = Instant::now();
        while started.elapsed() < flood_for {
            let t = Instant::now();
            let r = node.send(node.get("/healthz")).await;
            assert_eq!(r.status, StatusCode::OK);
            slowest = slowest.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slowest
    };
    let (counts, slowest_health) = tokio::join!(flood, probes);
    eprintln!("login flood: {counts:?}; slowest /healthz {slowest_health:?}");
    assert!(
        counts.keys().all(|s| [401, 429, 503].contains(s)),
        "only refusals: {counts:?}"
    );
    assert!(
        counts.contains_key(&503),
        "the flood outran the pool: {counts:?}"
    );
    assert!(
        slowest_health < Duration::from_secs(1),
        "{slowest_health:?}"
    );
    let r = node
        .send(
            node.post("/v1/sessions")
                .json(&json!({"email": "real@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    node.stop().await;
}
