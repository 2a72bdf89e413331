//! `tessera-bench`: the helpers `bench/run` drives.
//!
//! - `floor-http`: an axum hello-world on the same tokio, axum and build
//!   profile as Tessera: the ceiling for any endpoint.
//! - `floor-redis-get`: the same hello-world doing one Redis `GET` per
//!   request on one multiplexed connection: the floor for a check that is
//!   one Redis round trip.
//! - `floor-crypto`: raw primitive rates on the current core.
//! - `seed`: a database with users and live sessions, written straight into
//!   SQLite or PostgreSQL (no argon2 per user), or with `--redis-url` the
//!   sessions into Redis in Tessera's layout, and the session cookies for
//!   `wrk`.
//! - `mint`: access and refresh tokens made by Tessera's own core, so they are
//!   byte for byte what the server issues.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use argon2::password_hash::PasswordHasher as _;
use argon2::password_hash::phc::PasswordHash;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SecureRandom as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Parser, Subcommand};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use tessera::app::App;
use tessera::config::Settings;
use tessera::core::accounts::Password;
use tessera::core::clock::SystemClock;
use tessera::core::secret::{BearerSecret, SecretHash, new_id, session_tag};
use tessera::core::sessions::{ClientInfo, SessionRecord};
use tessera::core::time::from_millis;
use tessera::store::redis::layout;

/// The password of every seeded user (`user<i>@bench.example`).
const PASSWORD: &str = "bench-password-1234";
/// Rows per multi-row INSERT (8 columns each, well under SQLite's 32766
/// bound parameters).
const BATCH: usize = 500;
/// A typical browser user agent, so cached session records have a real size.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36";
const DAY_MS: i64 = 86_400_000;
/// `session_idle_timeout`'s default (2h): a session seeded into Redis lives
/// as long as one the server stored would (store/redis/sessions.rs).
const IDLE_MS: i64 = 2 * 3_600_000;
/// `store::EXPIRY_GRACE`, added to every Redis time to live.
const GRACE_MS: i64 = 1000;
/// Sessions per pipeline when seeding Redis (three commands each).
const REDIS_BATCH: usize = 1000;

#[derive(Parser)]
#[command(about = "Helpers for bench/run")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve GET / → 200 "ok" until killed.
    FloorHttp {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Serve GET / → one Redis `GET` of `--key` (set at start to
    /// `--value-bytes` bytes) on one multiplexed connection, then 200 "ok".
    FloorRedisGet {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        redis_url: String,
        #[arg(long, default_value = "bench:floor")]
        key: String,
        /// About the size of a session's fields in Tessera's Redis layout.
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
    },
    /// Print, as JSON: Ed25519 verifications/s (aws-lc-rs one at a time;
    /// in batches of 32 one key's signatures, as Tessera checks them and
    /// with ed25519-dalek's batch check), SHA-256 of a
    /// session id per second, and one argon2id hash time (m=19456 KiB, t=2, p=1).
    FloorCrypto {
        /// Rounds per rate; the median is reported.
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        #[arg(long, default_value_t = 400)]
        round_ms: u64,
        /// argon2id hashes timed; the median is reported.
        #[arg(long, default_value_t = 5)]
        hashes: usize,
    },
    /// Create the database (migrations) and insert users and live sessions
    /// (a sqlite:// or postgres:// URL).
    Seed {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        users: usize,
        #[arg(long)]
        sessions: usize,
        /// Where the session cookie values go, one a line.
        #[arg(long)]
        cookies: PathBuf,
        /// Seconds since the sessions were last seen (0: just now).
        #[arg(long, default_value_t = 0)]
        last_seen_ago: i64,
        /// Spread the last-seen times evenly over this many more seconds,
        /// as sessions in steady use are (their activity writes then come
        /// at a steady rate instead of all at once).
        #[arg(long, default_value_t = 0)]
        last_seen_spread: i64,
        /// Put the sessions into this Redis, in the layout Tessera's Redis
        /// session store writes (users stay in the database, which must then
        /// be PostgreSQL's), instead of the database. Each cookie's hash then
        /// begins with its user's tag, as the server's do.
        #[arg(long)]
        redis_url: Option<String>,
        /// The key prefix (`redis_key_prefix`).
        #[arg(long, default_value = tessera::store::redis::DEFAULT_PREFIX)]
        redis_prefix: String,
    },
    /// Mint tokens with Tessera's core on a seeded database.
    Mint {
        #[arg(long)]
        database_url: String,
        /// Must be the server's public URL: it is the tokens' `iss` and `aud`.
        #[arg(long)]
        public_url: String,
        /// Use HS256 with this secret instead of the EdDSA key in the database.
        #[arg(long)]
        hs256_secret: Option<String>,
        /// Password grants (one per user, from user0): access tokens go to
        /// `<out>/access.txt`, refresh tokens to `<out>/refresh.txt`.
        #[arg(long, default_value_t = 0)]
        grants: usize,
        /// Session-to-token exchanges over the sessions in `<out>/cookies.txt`,
        /// one fresh token each, to `<out>/unique.txt`.
        #[arg(long, default_value_t = 0)]
        session_tokens: usize,
        #[arg(long)]
        out: PathBuf,
        /// The servers' Redis, when they keep sessions there (every command
        /// must name the same one).
        #[arg(long)]
        redis_url: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::FloorHttp { addr } => floor_http(addr).await,
        Cmd::FloorRedisGet {
            addr,
            redis_url,
            key,
            value_bytes,
        } => floor_redis_get(addr, &redis_url, key, value_bytes).await,
        Cmd::FloorCrypto {
            rounds,
            round_ms,
            hashes,
        } => floor_crypto(rounds, Duration::from_millis(round_ms), hashes),
        Cmd::Seed {
            database_url,
            users,
            sessions,
            cookies,
            last_seen_ago,
            last_seen_spread,
            redis_url,
            redis_prefix,
        } => {
            let last_seen = LastSeen {
                ago_ms: last_seen_ago * 1000,
                spread_ms: last_seen_spread * 1000,
            };
            let redis = redis_url.map(|url| (url, redis_prefix));
            seed(&database_url, users, sessions, &cookies, last_seen, redis).await
        }
        Cmd::Mint {
            database_url,
            public_url,
            hs256_secret,
            grants,
            session_tokens,
            out,
            redis_url,
        } => {
            let mut pairs = vec![
                ("database_url", database_url.as_str()),
                ("public_url", public_url.as_str()),
                ("ip_rate_limit", "0"),
            ];
            if let Some(secret) = &hs256_secret {
                pairs.extend([("token_alg", "HS256"), ("hs256_secret", secret.as_str())]);
            }
            if let Some(url) = &redis_url {
                pairs.push(("redis_url", url.as_str()));
            }
            let settings = Settings::from_pairs(&pairs).map_err(|e| anyhow!("{e}"))?;
            let app = App::open(settings, Arc::new(SystemClock)).await?;
            let minted = mint(&app, grants, session_tokens, &out).await;
            app.close().await;
            minted
        }
    }
}

async fn floor_http(addr: SocketAddr) -> anyhow::Result<()> {
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn floor_redis_get(
    addr: SocketAddr,
    redis_url: &str,
    key: String,
    value_bytes: usize,
) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(vec![b'v'; value_bytes])
        .query_async(&mut conn)
        .await?;
    let state = Arc::new((conn, key));
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(
                |axum::extract::State(state): axum::extract::State<
                    Arc<(redis::aio::MultiplexedConnection, String)>,
                >| async move {
                    let mut conn = state.0.clone();
                    let value: redis::RedisResult<Option<Vec<u8>>> =
                        redis::cmd("GET").arg(&state.1).query_async(&mut conn).await;
                    match value {
                        Ok(Some(_)) => (axum::http::StatusCode::OK, "ok"),
                        Ok(None) => (axum::http::StatusCode::NOT_FOUND, "no key"),
                        Err(_) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "redis"),
                    }
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Runs `op` for `rounds` rounds of `round` each and returns the median rate
/// (operations per second).
fn median_rate(rounds: usize, round: Duration, mut op: impl FnMut() -> bool) -> f64 {
    let mut rates: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < round {
                for _ in 0..64 {
                    assert!(std::hint::black_box(op()), "the operation failed");
                }
                n += 64;
            }
            n as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn argon2_default() -> anyhow::Result<argon2::Argon2<'static>> {
    let params = argon2::Params::new(19_456, 2, 1, None).map_err(|e| anyhow!("{e}"))?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

fn argon2_hash(password: &str) -> anyhow::Result<String> {
    let hash: PasswordHash = argon2_default()?
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

fn floor_crypto(rounds: usize, round: Duration, hashes: usize) -> anyhow::Result<()> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())?;
    // About the size of an access token's signed part (header.payload).
    let message = [b'e'; 400];
    let signature = pair.sign(&message);
    let public = UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref().to_vec());
    let ed25519 = median_rate(rounds, round, || {
        public.verify(&message, signature.as_ref()).is_ok()
    });
    let ed25519_batch32 = batch_verify_rate(rounds, round, false);
    let ed25519_dalek_batch32 = batch_verify_rate(rounds, round, true);
    let cookie = [b's'; 43];
    let sha256 = median_rate(rounds, round, || {
        digest::digest(&digest::SHA256, std::hint::black_box(&cookie))
            .as_ref()
            .len()
            == 32
    });
    // The primitive alone: one buffer for every hash, touched before the
    // first (as Tessera's hashing threads keep theirs), so no hash pays for
    // an allocation or page faults.
    let argon2 = argon2_default()?;
    let mut memory = vec![argon2::Block::default(); argon2.params().block_count()];
    memory.fill(argon2::Block::default());
    let mut out = [0u8; 32];
    let mut hash_ms: Vec<f64> = (0..hashes.max(1))
        .map(|_| {
            let start = Instant::now();
            argon2
                .hash_password_into_with_memory(
                    PASSWORD.as_bytes(),
                    b"bench-salt-16byt",
                    &mut out,
                    &mut memory[..],
                )
                .map_err(|e| anyhow!("argon2: {e}"))?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<anyhow::Result<_>>()?;
    hash_ms.sort_by(f64::total_cmp);
    let out = json!({
        "ed25519_verify_per_s": ed25519.round(),
        "ed25519_batch32_verify_per_s": ed25519_batch32.round(),
        "ed25519_dalek_batch32_verify_per_s": ed25519_dalek_batch32.round(),
        "sha256_session_id_per_s": sha256.round(),
        "argon2id_hash_ms": (hash_ms[hash_ms.len() / 2] * 10.0).round() / 10.0,
        "argon2id_hash_ms_all": hash_ms.iter().map(|m| (m * 10.0).round() / 10.0).collect::<Vec<_>>(),
    });
    println!("{out}");
    Ok(())
}

/// Signatures of one key per second checked 32 at a time: with
/// ed25519-dalek's batch check (`dalek`), or as Tessera checks new tokens
/// arriving together (its batch adds up one key's terms first).
fn batch_verify_rate(rounds: usize, round: Duration, dalek: bool) -> f64 {
    use ed25519_dalek::{Signer, SigningKey};
    const BATCH: usize = 32;
    let key = SigningKey::from_bytes(&[7; 32]);
    let messages: Vec<[u8; 400]> = (0..BATCH as u8).map(|i| [i; 400]).collect();
    let signatures: Vec<_> = messages.iter().map(|m| key.sign(m)).collect();
    let keys = vec![key.verifying_key(); BATCH];
    let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    BATCH as f64
        * median_rate(rounds, round, || {
            if dalek {
                ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok()
            } else {
                tessera::core::ed25519_batch::all_signed(
                    refs.iter()
                        .zip(&signatures)
                        .zip(&keys)
                        .map(|((message, signature), key)| (*message, signature, key)),
                )
            }
        })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn email(i: usize) -> String {
    format!("user{i}@bench.example")
}

/// When seeded sessions were last seen, before the seeding.
struct LastSeen {
    ago_ms: i64,
    spread_ms: i64,
}

impl LastSeen {
    /// The `i`th of `n` sessions: evenly over `[ago, ago + spread)`.
    fn ms_before_now(&self, i: usize, n: usize) -> i64 {
        let share = self.spread_ms as i128 * i as i128 / n.max(1) as i128;
        self.ago_ms + share as i64
    }
}

async fn seed(
    url: &str,
    users: usize,
    sessions: usize,
    cookies: &Path,
    last_seen: LastSeen,
    redis: Option<(String, String)>,
) -> anyhow::Result<()> {
    anyhow::ensure!(users > 0, "--users must be at least 1");
    let start = Instant::now();
    // Tessera's own open creates the database and runs the migrations.
    tessera::store::open(url, &tessera::store::StoreOptions::default())
        .await
        .map_err(|e| anyhow!("{e}"))?
        .backend
        .close()
        .await;
    let mut population = Population {
        password_hash: argon2_hash(PASSWORD)?,
        now: now_ms(),
        user_ids: (0..users).map(|_| new_id("usr")).collect(),
        sessions: Vec::with_capacity(sessions),
    };
    if let Some((redis_url, prefix)) = redis {
        let is_pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
        anyhow::ensure!(is_pg, "sessions in Redis need a PostgreSQL database");
        seed_postgres(url, &population).await?;
        let tagged = tagged_sessions(&population.user_ids, sessions, &last_seen, cookies)?;
        let redis_seconds = Instant::now();
        seed_redis(&redis_url, &prefix, &population, &tagged).await?;
        let out = json!({
            "users": users,
            "sessions": sessions,
            "store": "redis",
            "draws": tagged.draws,
            "redis_seconds": (redis_seconds.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            "seconds": (start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        });
        println!("{out}");
        return Ok(());
    }
    // Cookies in random order for wrk; rows in key order for the database.
    let mut out = BufWriter::new(File::create(cookies)?);
    for i in 0..sessions {
        let secret = BearerSecret::generate();
        writeln!(out, "{}", secret.expose())?;
        population.sessions.push((
            secret.hash().0,
            i % users,
            last_seen.ms_before_now(i, sessions),
        ));
    }
    out.flush()?;
    population.sessions.sort_unstable();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        seed_postgres(url, &population).await?;
    } else {
        seed_sqlite(url, &population).await?;
    }
    let out = json!({
        "users": users,
        "sessions": sessions,
        "seconds": (start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    });
    println!("{out}");
    Ok(())
}

/// Users (all with the same password) and sessions to write.
struct Population {
    password_hash: String,
    now: i64,
    user_ids: Vec<String>,
    /// (hash of the cookie value, index of its user, ms since last seen),
    /// in hash order.
    sessions: Vec<([u8; 32], usize, i64)>,
}

async fn seed_sqlite(url: &str, p: &Population) -> anyhow::Result<()> {
    let options = SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        // Room for the whole transaction: no page spills to the WAL midway.
        .pragma("cache_size", "-1048576")
        .foreign_keys(true);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    let now = p.now;
    let mut tx = conn.begin().await?;
    for (c, chunk) in p.user_ids.chunks(BATCH).enumerate() {
        QueryBuilder::<Sqlite>::new(
            "INSERT INTO users (id, email, email_key, password_hash, roles, status, created_at, updated_at) ",
        )
        .push_values(chunk.iter().enumerate(), |mut row, (j, id)| {
            let email = email(c * BATCH + j);
            row.push_bind(id.clone())
                .push_bind(email.clone())
                .push_bind(email)
                .push_bind(p.password_hash.clone())
                .push_bind("[]")
                .push_bind("active")
                .push_bind(now)
                .push_bind(now);
        })
        .build()
        .execute(&mut *tx)
        .await?;
    }
    // The secondary indexes are built once at the end: 1M sessions in
    // seconds.
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions' AND sql IS NOT NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (name, _) in &indexes {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(&mut *tx)
            .await?;
    }
    for chunk in p.sessions.chunks(BATCH) {
        QueryBuilder::<Sqlite>::new(
            "INSERT INTO sessions (token_hash, id, user_id, created_at, last_seen_at, expires_at, ip, user_agent) ",
        )
        .push_values(chunk, |mut row, (hash, user, seen_ago_ms)| {
            row.push_bind(hash.to_vec())
                .push_bind(new_id("ses"))
                .push_bind(p.user_ids[*user].clone())
                .push_bind(now)
                .push_bind(now - seen_ago_ms)
                .push_bind(now + 30 * DAY_MS)
                .push_bind("127.0.0.1")
                .push_bind(USER_AGENT);
        })
        .build()
        .execute(&mut *tx)
        .await?;
    }
    for (_, sql) in indexes {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// The same rows in PostgreSQL, one transaction, arrays unnested a batch at
/// a time (one round trip per batch).
async fn seed_postgres(url: &str, p: &Population) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let now = p.now;
    let mut tx = conn.begin().await?;
    for (c, chunk) in p.user_ids.chunks(BATCH * 10).enumerate() {
        let emails: Vec<String> = (0..chunk.len())
            .map(|j| email(c * BATCH * 10 + j))
            .collect();
        sqlx::query(
            "INSERT INTO users (id, email, email_key, password_hash, status, created_at, updated_at)
             SELECT id, email, email, $3, 'active', $4, $4 FROM unnest($1::text[], $2::text[]) AS u(id, email)",
        )
        .bind(chunk)
        .bind(&emails)
        .bind(&p.password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for chunk in p.sessions.chunks(BATCH * 10) {
        let hashes: Vec<Vec<u8>> = chunk.iter().map(|(h, _, _)| h.to_vec()).collect();
        let ids: Vec<String> = chunk.iter().map(|_| new_id("ses")).collect();
        let users: Vec<String> = chunk
            .iter()
            .map(|(_, u, _)| p.user_ids[*u].clone())
            .collect();
        let seen: Vec<i64> = chunk.iter().map(|(_, _, ago)| now - ago).collect();
        sqlx::query(
            "INSERT INTO sessions (token_hash, id, user_id, created_at, last_seen_at, expires_at, ip, user_agent)
             SELECT h, i, u, $5, s, $6, '127.0.0.1', $7
             FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bigint[]) AS r(h, i, u, s)",
        )
        .bind(&hashes)
        .bind(&ids)
        .bind(&users)
        .bind(&seen)
        .bind(now)
        .bind(now + 30 * DAY_MS)
        .bind(USER_AGENT)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    // Statistics for the seeded tables only: the token tables are empty now
    // and grow during the run, and statistics saying "empty" would steer
    // the planner to whole-table scans until autovacuum analysed them again.
    sqlx::query("ANALYZE users, sessions")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Sessions whose hashes carry their user's tag, as Tessera's Redis store
/// requires (`BearerSecret::generate_tagged`): each drawn cookie value goes
/// to a user whose tag is its hash's first byte, round robin among that
/// tag's users, at most `ceil(sessions / users)` each; a value whose tag
/// has no user with room left is drawn again. That is the layout the server
/// writes, without the server's 256 draws a session.
struct Tagged {
    /// (hash of the cookie value, index of its user, ms since last seen).
    sessions: Vec<([u8; 32], usize, i64)>,
    draws: u64,
}

fn tagged_sessions(
    user_ids: &[String],
    sessions: usize,
    last_seen: &LastSeen,
    cookies: &Path,
) -> anyhow::Result<Tagged> {
    let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); 256];
    for (i, id) in user_ids.iter().enumerate() {
        buckets[usize::from(session_tag(id))].push(i);
    }
    let per_user = sessions.div_ceil(user_ids.len());
    let mut given = [0usize; 256];
    let rng = SystemRandom::new();
    let mut pool = vec![0u8; 32 * 1024];
    let mut at = pool.len();
    let mut out = BufWriter::new(File::create(cookies)?);
    let mut tagged = Tagged {
        sessions: Vec::with_capacity(sessions),
        draws: 0,
    };
    while tagged.sessions.len() < sessions {
        if at == pool.len() {
            rng.fill(&mut pool).map_err(|_| anyhow!("no randomness"))?;
            at = 0;
        }
        let value = URL_SAFE_NO_PAD.encode(&pool[at..at + 32]);
        at += 32;
        tagged.draws += 1;
        let hash = SecretHash::of(value.as_bytes()).0;
        let tag = usize::from(hash[0]);
        let bucket = &buckets[tag];
        if given[tag] >= bucket.len() * per_user {
            continue;
        }
        let user = bucket[given[tag] % bucket.len()];
        given[tag] += 1;
        writeln!(out, "{value}")?;
        let i = tagged.sessions.len();
        tagged
            .sessions
            .push((hash, user, last_seen.ms_before_now(i, sessions)));
    }
    out.flush()?;
    Ok(tagged)
}

/// The sessions in Redis exactly as the server writes them
/// (`tessera::store::redis::layout`: the same key names, the same value
/// encoder) with the time to live of their earlier deadline plus the
/// grace, and each user's index (a sorted set of the members by absolute
/// expiry) living as long as its longest session plus a second. Pipelined,
/// a batch a round trip.
async fn seed_redis(
    url: &str,
    prefix: &str,
    p: &Population,
    tagged: &Tagged,
) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let now = p.now;
    let expires = now + 30 * DAY_MS;
    let mut indexed = vec![false; p.user_ids.len()];
    for chunk in tagged.sessions.chunks(REDIS_BATCH) {
        let mut pipe = redis::pipe();
        for (hash, user, seen_ago_ms) in chunk {
            let hash = SecretHash(*hash);
            let seen = now - seen_ago_ms;
            let ttl = expires.min(seen + IDLE_MS) - now + GRACE_MS;
            let user_id = &p.user_ids[*user];
            let record = SessionRecord {
                token_hash: hash,
                id: new_id("ses"),
                user_id: user_id.clone(),
                created_at: from_millis(now),
                last_seen_at: from_millis(seen),
                expires_at: from_millis(expires),
                ip: Some("127.0.0.1".into()),
                user_agent: Some(USER_AGENT.into()),
                user_memo: Default::default(),
            };
            pipe.cmd("SET")
                .arg(layout::session_key(prefix, &hash))
                .arg(layout::encode(&record)?)
                .arg("PX")
                .arg(ttl)
                .ignore();
            pipe.cmd("ZADD")
                .arg(layout::index_key(prefix, user_id))
                .arg(expires)
                .arg(layout::member(&hash))
                .ignore();
            indexed[*user] = true;
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    let users: Vec<&String> = p
        .user_ids
        .iter()
        .zip(&indexed)
        .filter_map(|(id, &has)| has.then_some(id))
        .collect();
    for chunk in users.chunks(REDIS_BATCH) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("PEXPIRE")
                .arg(layout::index_key(prefix, id))
                .arg(expires - now + GRACE_MS)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(())
}

fn write_lines(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

async fn mint(app: &App, grants: usize, session_tokens: usize, out: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let core = Arc::clone(&app.core);
    if grants > 0 {
        // A few at a time: the hashing pool's queue is bounded.
        let (mut access, mut refresh) = (Vec::new(), Vec::new());
        for first in (0..grants).step_by(8) {
            let mut set = tokio::task::JoinSet::new();
            for i in first..grants.min(first + 8) {
                let core = Arc::clone(&core);
                set.spawn(async move {
                    core.password_grant(
                        &email(i),
                        Password::new(PASSWORD.to_owned()),
                        None,
                        None,
                        &ClientInfo::default(),
                    )
                    .await
                });
            }
            while let Some(pair) = set.join_next().await {
                let pair = pair?.map_err(|e| anyhow!("password grant failed: {e}"))?;
                access.push(pair.access.token);
                refresh.push(pair.refresh.expose().to_owned());
            }
        }
        write_lines(&out.join("access.txt"), &access)?;
        write_lines(&out.join("refresh.txt"), &refresh)?;
    }
    if session_tokens > 0 {
        let cookies: Vec<String> = BufReader::new(
            File::open(out.join("cookies.txt")).context("mint needs <out>/cookies.txt")?,
        )
        .lines()
        .collect::<Result<_, _>>()?;
        anyhow::ensure!(!cookies.is_empty(), "no cookies to mint from");
        let mut tokens = Vec::with_capacity(session_tokens);
        for i in 0..session_tokens {
            let secret = BearerSecret::parse(&cookies[i % cookies.len()])
                .ok_or_else(|| anyhow!("not a session cookie value"))?;
            let auth = core
                .authenticate_session(&secret)
                .await
                .map_err(|e| anyhow!("seeded session refused: {e}"))?;
            let token = core
                .session_access_token(&auth)
                .await
                .map_err(|e| anyhow!("minting failed: {e}"))?;
            tokens.push(token.token);
        }
        write_lines(&out.join("unique.txt"), &tokens)?;
    }
    let out = json!({
        "grants": grants,
        "session_tokens": session_tokens,
        "seconds": (start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    });
    println!("{out}");
    Ok(())
}
