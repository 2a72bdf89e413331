//! A signing key that no longer signs leaves no copy of its private half in
//! the embedded database's files, at once: not in the table (the column is
//! cleared), not in the free space of the page that held it (SQLite's
//! `secure_delete`), and not in the write-ahead log, whose older page images
//! still held it (a `TRUNCATE` checkpoint right after the wipe).
//!
//! The scan reads the files, so it runs on SQLite only, whatever
//! `TEST_STORE` says. PostgreSQL is not scanned: it cannot scrub on demand
//! (the old row version stays in its heap page until VACUUM and page reuse,
//! and in its WAL and any WAL archive), which `docs/security-model.md` says;
//! there the store guarantee is only that the column is cleared, which the
//! store conformance suite checks on both backends.

mod common;

use std::path::Path;

use tessera::app::App;
use tessera::core::clock::ManualClock;
use tessera::core::keys::KeyStatus;

/// The secret part of a PKCS#8 private key as aws-lc-rs writes it: the
/// Ed25519 seed (`04 22 04 20` + 32 bytes) or the P-256 scalar (in the
/// inner ECPrivateKey, `02 01 01 04 20` + 32 bytes).
fn secret_of(pkcs8: &[u8]) -> Vec<u8> {
    for prefix in [
        &[0x04, 0x22, 0x04, 0x20][..],
        &[0x02, 0x01, 0x01, 0x04, 0x20],
    ] {
        if let Some(at) = pkcs8.windows(prefix.len()).position(|w| w == prefix) {
            let start = at + prefix.len();
            return pkcs8[start..start + 32].to_vec();
        }
    }
    panic!("no private scalar found in the PKCS#8 document");
}

/// Files of the database (the file itself, `-wal`, `-shm`, any journal)
/// that hold any 12-byte stretch of `secret` (a random 12-byte string
/// turns up by chance with probability about 2^-96 per position).
fn files_holding(dir: &Path, secret: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if secret
            .windows(12)
            .any(|needle| bytes.windows(12).any(|w| w == needle))
        {
            found.push(format!(
                "{} ({} bytes)",
                path.file_name().unwrap().to_string_lossy(),
                bytes.len()
            ));
        }
    }
    found.sort();
    found
}

/// The active key's private half, read from the database as stored.
async fn active_private_half(url: &str) -> Vec<u8> {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let pkcs8: Vec<u8> =
        sqlx::query_scalar("SELECT private_pkcs8 FROM signing_keys WHERE rotated_out_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    pkcs8
}

async fn open(dir: &Path, alg: &str) -> (App, String) {
    let url = format!("sqlite://{}", dir.join("tessera.db").display());
    let clock = ManualClock::starting_now();
    // Without the follower (`spawn_background`) and its minute-by-minute
    // sweep: whatever is wiped below is wiped by the rotation itself.
    let app = common::open_app(&url, &[("token_alg", alg)], &clock).await;
    (app, url)
}

#[tokio::test]
async fn a_key_retired_at_once_leaves_no_copy_of_its_seed_in_the_database_files() {
    for alg in ["EdDSA", "ES256"] {
        let dir = tempfile::tempdir().unwrap();
        let (app, url) = open(dir.path(), alg).await;
        let secret = secret_of(&active_private_half(&url).await);
        let old_kid = app.core.key_list().await.unwrap()[0].kid.clone();
        assert!(
            !files_holding(dir.path(), &secret).is_empty(),
            "{alg}: the scan finds the active key's secret (or it proves nothing)"
        );

        app.core.rotate_keys_with(None, true).await.unwrap();

        let keys = app.core.key_list().await.unwrap();
        let old = keys.iter().find(|k| k.kid == old_kid).unwrap();
        assert_eq!(old.status, KeyStatus::Retired, "{alg}");
        let left = files_holding(dir.path(), &secret);
        assert!(
            left.is_empty(),
            "{alg}: the retired key's secret is still in {left:?}"
        );
        app.close().await;
    }
}

/// A key rotated out gracefully stays published and accepted until its
/// tokens expired, which needs only its public half: its private half is
/// gone from the files as soon as it stops signing, not when it retires.
#[tokio::test]
async fn a_key_rotated_out_keeps_verifying_without_its_private_half_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (app, url) = open(dir.path(), "EdDSA").await;
    let secret = secret_of(&active_private_half(&url).await);
    let old_kid = app.core.key_list().await.unwrap()[0].kid.clone();

    app.core.rotate_keys(None).await.unwrap();

    let keys = app.core.key_list().await.unwrap();
    let old = keys.iter().find(|k| k.kid == old_kid).unwrap();
    assert_eq!(old.status, KeyStatus::Retiring);
    let jwks = app.core.jwks();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old_kid.as_str()), "{jwks}");
    let left = files_holding(dir.path(), &secret);
    assert!(
        left.is_empty(),
        "the rotated-out key's secret is still in {left:?}"
    );
    app.close().await;
}

/// Many rotations spread the keys over several pages (each page split
/// moves rows around): still no copy of any earlier key's secret is left,
/// while the active key's is there.
#[tokio::test]
async fn many_rotations_leave_only_the_active_keys_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (app, url) = open(dir.path(), "ES256").await;
    let mut earlier = Vec::new();
    for i in 0..40 {
        earlier.push(secret_of(&active_private_half(&url).await));
        app.core.rotate_keys_with(None, i % 3 == 0).await.unwrap();
    }
    let active = secret_of(&active_private_half(&url).await);
    assert!(!files_holding(dir.path(), &active).is_empty());
    for (i, secret) in earlier.iter().enumerate() {
        let left = files_holding(dir.path(), secret);
        assert!(left.is_empty(), "key {i}'s secret is still in {left:?}");
    }
    app.close().await;
}
