//! Reading a test's database directly, whichever backend it is on (SQLite
//! file or PostgreSQL database), for checks the API cannot make: what is
//! stored at rest, and writes made behind the server's back.

use sqlx::Row;

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Runs one statement without parameters.
pub async fn execute(url: &str, sql: &'static str) {
    if is_postgres(url) {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        sqlx::query(sql).execute(&pool).await.expect(sql);
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
        sqlx::query(sql).execute(&pool).await.expect(sql);
        pool.close().await;
    }
}

/// The first column of the first row, as an integer.
pub async fn scalar(url: &str, sql: &'static str) -> i64 {
    if is_postgres(url) {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
        pool.close().await;
        v
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
        pool.close().await;
        v
    }
}

/// Every row, each column read as optional text (write the query so that
/// every column is text, e.g. with `CAST(… AS TEXT)`).
pub async fn text_rows(url: &str, sql: &'static str) -> Vec<Vec<Option<String>>> {
    fn read<R: Row>(row: &R) -> Vec<Option<String>>
    where
        usize: sqlx::ColumnIndex<R>,
        for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        (0..row.len())
            .map(|i| row.try_get(i).expect("a text column"))
            .collect()
    }
    if is_postgres(url) {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        let rows = sqlx::query(sql).fetch_all(&pool).await.expect(sql);
        pool.close().await;
        rows.iter().map(read).collect()
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
        let rows = sqlx::query(sql).fetch_all(&pool).await.expect(sql);
        pool.close().await;
        rows.iter().map(read).collect()
    }
}

/// The active signing key: (kid, PKCS#8).
pub async fn active_key(url: &str) -> (String, Vec<u8>) {
    const SQL: &str = "SELECT kid, private_pkcs8 FROM signing_keys WHERE rotated_out_at IS NULL";
    if is_postgres(url) {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        let row = sqlx::query(SQL).fetch_one(&pool).await.expect("active key");
        pool.close().await;
        (row.get("kid"), row.get("private_pkcs8"))
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
        let row = sqlx::query(SQL).fetch_one(&pool).await.expect("active key");
        pool.close().await;
        (row.get("kid"), row.get("private_pkcs8"))
    }
}

/// Everything the database holds at rest, as bytes: the SQLite file (with
/// its write-ahead log), or a `pg_dump` of the PostgreSQL database.
pub fn at_rest(url: &str) -> Vec<u8> {
    if is_postgres(url) {
        let out = std::process::Command::new("pg_dump")
            .args(["--data-only", "--no-owner", "--dbname", url])
            .output()
            .expect("run pg_dump (apt-get install postgresql-client)");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    } else {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let mut bytes = std::fs::read(path).expect("the SQLite file");
        if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
            bytes.extend(wal);
        }
        bytes
    }
}

/// Deletes every session behind the server's back, wherever the suite keeps
/// them: the `sessions` table, or (under `TEST_STORE=postgres+redis`) the
/// session keys and user indexes under the database's Redis prefix.
pub async fn delete_all_sessions(url: &str) {
    if super::test_store() != super::TestStore::PostgresRedis {
        execute(url, "DELETE FROM sessions").await;
        return;
    }
    let redis = super::redis::shared_redis_url().await;
    let client = redis::Client::open(redis.as_str()).expect("Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let pattern = format!("{}*", super::redis_prefix_for(url));
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let sessions: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("}s:") || k.contains("}u:"))
        .collect();
    if !sessions.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(sessions)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
}

/// A copy of every stored session, taken behind the server's back, to put
/// back later with [`restore_sessions`] (as a restored backup, or a Redis
/// replica promoted before it had the latest deletes, would).
pub enum SessionSnapshot {
    /// Kept in the database, in the table `sessions_snapshot`.
    InDatabase,
    /// Redis keys and their `DUMP`s.
    InRedis(Vec<(String, Vec<u8>)>),
}

pub async fn snapshot_sessions(url: &str) -> SessionSnapshot {
    if super::test_store() != super::TestStore::PostgresRedis {
        execute(url, "DROP TABLE IF EXISTS sessions_snapshot").await;
        execute(
            url,
            "CREATE TABLE sessions_snapshot AS SELECT * FROM sessions",
        )
        .await;
        return SessionSnapshot::InDatabase;
    }
    let mut conn = redis_conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", super::redis_prefix_for(url)))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut dumps = Vec::new();
    for key in keys
        .into_iter()
        .filter(|k| k.contains("}s:") || k.contains("}u:"))
    {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("DUMP");
        dumps.push((key, dump));
    }
    SessionSnapshot::InRedis(dumps)
}

pub async fn restore_sessions(url: &str, snapshot: SessionSnapshot) {
    match snapshot {
        SessionSnapshot::InDatabase => {
            execute(url, "DELETE FROM sessions").await;
            execute(url, "INSERT INTO sessions SELECT * FROM sessions_snapshot").await;
        }
        SessionSnapshot::InRedis(dumps) => {
            let mut conn = redis_conn().await;
            for (key, dump) in dumps {
                let _: () = redis::cmd("RESTORE")
                    .arg(&key)
                    .arg(0)
                    .arg(dump)
                    .arg("REPLACE")
                    .query_async(&mut conn)
                    .await
                    .expect("RESTORE");
            }
        }
    }
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    let url = super::redis::shared_redis_url().await;
    redis::Client::open(url.as_str())
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}
