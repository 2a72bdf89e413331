//! The shared store: PostgreSQL through sqlx, for any number of `tessera`
//! nodes that then behave as one server.
//!
//! Every guarantee on the store traits must hold whichever node writes, so
//! what the SQLite store gets from having the only writer, this one gets
//! from PostgreSQL's locks (all under READ COMMITTED, no SERIALIZABLE):
//!
//! - **The logs are numbered in commit order** (`PostgresStore::append_logged`):
//!   an append takes a transaction-scoped advisory lock before its number is
//!   drawn, so no entry can commit with a number below one already visible.
//! - **Appends are pushed**: each one notifies `listen::CHANNEL` in its own
//!   transaction, and `listen` turns what arrives into [`Push`] states.
//! - **Refresh rotation is atomic across nodes and group-committed**
//!   (`batch`): presented tokens are locked `FOR UPDATE` in hash order, so a
//!   racing node waits and then sees the token used.
//! - **Key rotation is a compare-and-set, server secrets first-writer-wins**
//!   (`tokens`).
//! - **Rows are locked in one order**: several sessions, or several refresh
//!   tokens, are always locked in token-hash order (refresh tokens before
//!   their family), so two nodes' writes queue behind each other instead of
//!   deadlocking; the rare deadlock left (a reuse revoking a family mid-batch)
//!   is retried by the batch.
//! - **Failing closed, never hanging**: a connection is waited for at most
//!   `ACQUIRE_TIMEOUT` (3 s), every statement and every idle moment inside a
//!   transaction at most `StoreOptions::statement_timeout` (so a node that
//!   stalls while holding row locks cannot hold up the others for longer),
//!   and the pool replaces dead connections by itself once the server is
//!   back (each is checked before use). Errors never carry the URL's
//!   password.
//!
//! Times are BIGINT Unix milliseconds and hashes BYTEA of checked length,
//! as in SQLite; the schema is embedded (`migrations/postgres`) and migrated
//! at open, under sqlx's migration lock, so nodes starting together are
//! safe. TLS is whatever the URL's `sslmode` says.

mod batch;
mod devices;
pub mod facts;
mod links;
mod listen;
pub mod migrate;
mod rekey;
mod tokens;
mod users;

/// The integration tests' private PostgreSQL (`$TEST_POSTGRES_URL`, else a
/// cluster of its own), for the unit tests of this backend.
#[cfg(test)]
#[allow(dead_code, unused_imports)]
#[path = "../../../tests/common/postgres.rs"]
mod harness;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{ConnectOptions, Connection, Postgres, Row, query};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::core::accounts::{User, UserQuery, UserStatus};
use crate::core::audit::AuditEvent;
use crate::core::events::Change;
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;
use crate::core::time::{from_millis, to_millis};
use crate::store::guard::Write;
use crate::store::write_queue::WriteBatcher;
use crate::store::{
    Backend, EventStore, Push, QueuedTouch, SessionStore, StoreError, StoreOptions, StoreResult,
    Stores, UserStore, UserWrite,
};

/// Longest a request waits for a connection: with the server down or the
/// pool exhausted, it fails (503) after this instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// PostgreSQL-backed implementation of every store trait.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Refresh rotations, new sessions, activity and audit events,
    /// group-committed.
    batcher: WriteBatcher,
    /// LISTEN/NOTIFY for the logs, started by the first
    /// [`EventStore::subscribe`] (never, where Redis pushes instead: then
    /// no connection is spent on it); stops when the last handle is dropped.
    listener: Arc<std::sync::OnceLock<listen::Listener>>,
    /// How the listener connects.
    listen_options: PgConnectOptions,
}

/// The error for a failed statement: a uniqueness violation is a
/// `Conflict`, anything else the backend's failure. sqlx's messages carry
/// no connection options, so no password.
fn backend(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Conflict;
    }
    StoreError::Backend(e.to_string())
}

/// Whether any of `texts` holds a NUL character, which PostgreSQL text
/// cannot: a lookup by such text matches nothing, so it is answered as such
/// here (the server would refuse the parameter, and a client's mistake, say
/// `%00` in an id, would become a 503).
fn unstorable(texts: &[&str]) -> bool {
    texts.iter().any(|t| t.contains('\0'))
}

/// `text` with every form of `url`'s password replaced, for the errors of
/// opening and migrating (where the URL itself was parsed).
fn scrub(text: String, url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return text;
    };
    let mut secrets: Vec<String> = Vec::new();
    if let Some(raw) = parsed.password() {
        secrets.push(raw.to_owned());
        // As sqlx hands it to the server: `%XX` escapes decoded.
        if let Ok(decoded) = percent_encoding::percent_decode_str(raw).decode_utf8() {
            secrets.push(decoded.into_owned());
        }
    }
    for (key, value) in parsed.query_pairs() {
        if key == "password" || key == "sslpassword" {
            secrets.push(value.into_owned());
        }
    }
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text, |text, secret| {
            text.replace(secret.as_str(), "[redacted]")
        })
}

/// The connection settings a `postgres://` or `postgresql://` URL gives
/// (`sslmode` and the rest as sqlx reads them), or why it cannot be used.
pub fn parse_url(url: &str) -> StoreResult<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Backend(scrub(format!("bad PostgreSQL URL: {e}"), url)))?;
    let options = match options.get_application_name() {
        Some(_) => options,
        None => options.application_name("tessera"),
    };
    // The server's notices (`… already exists, skipping` from the migration
    // bookkeeping) would be logged by sqlx in the middle of the progress
    // lines; warnings and errors still come through.
    Ok(options.options([("client_min_messages", "warning")]))
}

/// Longest a single connection (for migrations, or the doctor's clock
/// check) may take to open; an unreachable host can otherwise hold a TCP
/// connect for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection outside the pool, within [`CONNECT_TIMEOUT`].
async fn connect_one(options: &PgConnectOptions) -> Result<sqlx::PgConnection, sqlx::Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
            ))
        })?
}

/// `base` with the per-session limits every pooled connection runs under.
fn session_options(base: PgConnectOptions, options: &StoreOptions) -> PgConnectOptions {
    let ms = options.statement_timeout.as_millis().max(1);
    base.options([
        ("statement_timeout", ms),
        // A transaction left idle this long (its node stalled or paused)
        // is ended, so its row locks do not hold up the other nodes.
        ("idle_in_transaction_session_timeout", ms),
    ])
}

impl PostgresStore {
    /// Connects to and migrates the database at `url`
    /// (`postgres://user:password@host:port/database?sslmode=…`).
    pub async fn open(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        let base = parse_url(url)?;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Backend(scrub(format!("{what}: {e}"), url))
        };
        // Migrations run on a connection of their own, without the
        // statement timeout (a migration may take a while on a big table).
        let mut conn = connect_one(&base)
            .await
            .map_err(|e| failed("cannot connect", &e))?;
        let migrated = MIGRATOR.run(&mut conn).await;
        let _ = conn.close().await;
        migrated.map_err(|e| failed("migration failed", &e))?;

        let session = session_options(base, options);
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(session.clone())
            .await
            .map_err(|e| failed("cannot connect", &e))?;
        Ok(Self {
            batcher: WriteBatcher::start(batch::PgBatches { pool: pool.clone() }),
            listener: Arc::new(std::sync::OnceLock::new()),
            listen_options: session,
            pool,
        })
    }

    /// Every store role, all served by this database.
    pub fn stores(self) -> Stores {
        let this = Arc::new(self);
        Stores {
            users: this.clone(),
            sessions: this.clone(),
            events: this.clone(),
            keys: this.clone(),
            refresh: this.clone(),
            revocations: this.clone(),
            clients: this.clone(),
            links: this.clone(),
            devices: this.clone(),
            audit: this.clone(),
            backend: this,
        }
    }

    /// Runs `insert`, an append to one of the logs that returns the new
    /// `seq` and notifies the push channel (bound as its last parameter),
    /// in a transaction that first takes the log's advisory lock.
    ///
    /// Why the lock: an identity column hands out numbers when rows are
    /// inserted, but transactions commit in another order, so without it a
    /// follower could read entry 8 while entry 7 is still uncommitted, move
    /// its cursor to 8, and never see 7. With appends to one log queued on
    /// one lock that is held until commit, a number is drawn only after
    /// every earlier append committed: numbering order is commit order,
    /// whichever node appends. Appends are rare next to reads (logouts,
    /// revocations, user changes), so one at a time costs little. The
    /// notification is delivered at commit, never for a rolled-back append.
    async fn append_logged(
        &self,
        log: LogLock,
        insert: Query<'_, Postgres, PgArguments>,
    ) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        query("SELECT pg_advisory_xact_lock($1)")
            .bind(log as i64)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let row = insert
            .bind(listen::CHANNEL)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        row.try_get("seq").map_err(backend)
    }
}

/// The advisory lock keys of the two logs ("tessera" and a number, apart
/// from the key rotation lock and sqlx's migration lock).
#[derive(Debug, Clone, Copy)]
#[repr(i64)]
enum LogLock {
    Changes = 0x7465_7373_6572_6101,
    Revocations = 0x7465_7373_6572_6102,
}

fn user_from_row(row: &PgRow) -> StoreResult<User> {
    let status: String = row.try_get("status").map_err(backend)?;
    Ok(User {
        id: row.try_get("id").map_err(backend)?,
        email: row.try_get("email").map_err(backend)?,
        roles: row.try_get("roles").map_err(backend)?,
        status: UserStatus::parse(&status)
            .ok_or_else(|| StoreError::Backend(format!("bad status column: {status}")))?,
        email_verified: row.try_get("email_verified").map_err(backend)?,
        created_at: from_millis(row.try_get("created_at").map_err(backend)?),
    })
}

/// The columns [`user_from_row`] reads.
pub(super) const USER_COLUMNS: &str =
    "id, email, roles, status, created_at, email_verified_at IS NOT NULL AS email_verified";

fn session_from_row(row: &PgRow) -> StoreResult<SessionRecord> {
    let hash: Vec<u8> = row.try_get("token_hash").map_err(backend)?;
    Ok(SessionRecord {
        token_hash: SecretHash::from_slice(&hash)
            .ok_or_else(|| StoreError::Backend("bad token_hash column".into()))?,
        id: row.try_get("id").map_err(backend)?,
        user_id: row.try_get("user_id").map_err(backend)?,
        created_at: from_millis(row.try_get("created_at").map_err(backend)?),
        last_seen_at: from_millis(row.try_get("last_seen_at").map_err(backend)?),
        expires_at: from_millis(row.try_get("expires_at").map_err(backend)?),
        ip: row.try_get("ip").map_err(backend)?,
        user_agent: row.try_get("user_agent").map_err(backend)?,
        user_memo: Default::default(),
    })
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn insert_user(
        &self,
        user: &User,
        email_key: &str,
        password_hash: &str,
    ) -> StoreResult<()> {
        let at = to_millis(user.created_at);
        query(
            "INSERT INTO users (id, email, email_key, password_hash, roles, status, created_at, updated_at, email_verified_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(email_key)
        .bind(password_hash)
        .bind(&user.roles)
        .bind(user.status.as_str())
        .bind(at)
        .bind(user.email_verified.then_some(at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<Arc<User>>> {
        if unstorable(&[id]) {
            return Ok(None);
        }
        let row = query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|r| user_from_row(&r).map(Arc::new)).transpose()
    }

    async fn credentials_by_email(&self, email_key: &str) -> StoreResult<Option<(User, String)>> {
        if unstorable(&[email_key]) {
            return Ok(None);
        }
        let row = query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email_key = $1"
        )))
        .bind(email_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        match row {
            None => Ok(None),
            Some(r) => {
                let hash: String = r.try_get("password_hash").map_err(backend)?;
                Ok(Some((user_from_row(&r)?, hash)))
            }
        }
    }

    async fn list_users(&self, q: &UserQuery) -> StoreResult<Vec<User>> {
        if unstorable(
            &[q.email_contains.as_deref(), q.after_id.as_deref()].map(Option::unwrap_or_default),
        ) {
            return Ok(Vec::new());
        }
        // Literal matching, escaped exactly as the SQLite store does.
        let pattern = q.email_contains.as_deref().map(|s| {
            let escaped = s
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let rows = query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users
             WHERE ($1::text IS NULL OR email_key LIKE $1 ESCAPE '\\')
               AND ($2::text IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )))
        .bind(pattern)
        .bind(q.after_id.as_deref())
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn password_hash(&self, id: &str) -> StoreResult<Option<String>> {
        if unstorable(&[id]) {
            return Ok(None);
        }
        let row = query("SELECT password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|r| r.try_get("password_hash").map_err(backend))
            .transpose()
    }

    async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        if unstorable(&[id, hash]) {
            return Ok(false);
        }
        let done = query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(to_millis(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_email_verified(&self, id: &str, at: OffsetDateTime) -> StoreResult<bool> {
        if unstorable(&[id]) {
            return Ok(false);
        }
        let done = query(
            "UPDATE users SET email_verified_at = coalesce(email_verified_at, $1), updated_at = $1
             WHERE id = $2",
        )
        .bind(to_millis(at))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_email(
        &self,
        id: &str,
        email: &str,
        email_key: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        if unstorable(&[id, email, email_key]) {
            return Ok(false);
        }
        let done = query(
            "UPDATE users SET email = $1, email_key = $2, email_verified_at = NULL, updated_at = $3
             WHERE id = $4",
        )
        .bind(email)
        .bind(email_key)
        .bind(to_millis(at))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_roles(
        &self,
        id: &str,
        roles: &[String],
        keep: Option<&str>,
        at: OffsetDateTime,
    ) -> StoreResult<UserWrite> {
        users::guarded(self, id, keep, Write::Roles(roles, at)).await
    }

    async fn set_status(
        &self,
        id: &str,
        status: UserStatus,
        keep: Option<&str>,
        at: OffsetDateTime,
    ) -> StoreResult<UserWrite> {
        users::guarded(self, id, keep, Write::Status(status, at)).await
    }

    async fn delete_user(&self, id: &str, keep: Option<&str>) -> StoreResult<UserWrite> {
        users::guarded(self, id, keep, Write::Delete).await
    }

    async fn rekey_emails(
        &self,
        step: &str,
        key_of: &crate::store::rekey::KeyFn<'_>,
        apply: bool,
        at: OffsetDateTime,
    ) -> StoreResult<crate::store::rekey::RekeyOutcome> {
        rekey::rekey_emails(self, step, key_of, apply, at).await
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn insert_session(
        &self,
        s: &SessionRecord,
        audit: Option<AuditEvent>,
    ) -> StoreResult<bool> {
        self.batcher.start_session(s, audit).await
    }

    async fn session_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<Arc<SessionRecord>>> {
        let row = query(
            "SELECT token_hash, id, user_id, created_at, last_seen_at, expires_at, ip, user_agent
             FROM sessions WHERE token_hash = $1",
        )
        .bind(hash.as_bytes())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|r| session_from_row(&r).map(Arc::new)).transpose()
    }

    async fn queue_touch(&self, touched: &Arc<SessionRecord>) -> StoreResult<QueuedTouch> {
        self.batcher
            .queue_touch(&touched.token_hash, touched.last_seen_at)
            .await
    }

    async fn delete_session_by_hash(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<SessionRecord>> {
        let row = query(
            "DELETE FROM sessions WHERE token_hash = $1
             RETURNING token_hash, id, user_id, created_at, last_seen_at, expires_at, ip, user_agent",
        )
        .bind(hash.as_bytes())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|r| session_from_row(&r)).transpose()
    }

    async fn delete_user_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> StoreResult<Option<SessionRecord>> {
        if unstorable(&[user_id, session_id]) {
            return Ok(None);
        }
        let row = query(
            "DELETE FROM sessions WHERE id = $1 AND user_id = $2
             RETURNING token_hash, id, user_id, created_at, last_seen_at, expires_at, ip, user_agent",
        )
        .bind(session_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|r| session_from_row(&r)).transpose()
    }

    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        if unstorable(&[user_id]) {
            return Ok(0);
        }
        // Locked in hash order, as the batched activity writes lock them.
        let done = query(
            "DELETE FROM sessions WHERE token_hash IN (
                 SELECT token_hash FROM sessions WHERE user_id = $1
                 ORDER BY token_hash FOR UPDATE
             )",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn sessions_of_user(&self, user_id: &str) -> StoreResult<Vec<SessionRecord>> {
        if unstorable(&[user_id]) {
            return Ok(Vec::new());
        }
        // The list shows activity written behind, up to this moment.
        self.batcher.flush().await;
        let rows = query(
            "SELECT token_hash, id, user_id, created_at, last_seen_at, expires_at, ip, user_agent
             FROM sessions WHERE user_id = $1 ORDER BY created_at DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn count_live(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64> {
        let row =
            query("SELECT count(*) AS n FROM sessions WHERE expires_at > $1 AND last_seen_at > $2")
                .bind(to_millis(now))
                .bind(to_millis(idle_cutoff))
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        let n: i64 = row.try_get("n").map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn delete_expired(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64> {
        // Activity queued before the sweep lands first, so a session used
        // just before its idle expiry is not swept on the old time. A
        // session whose activity another node moves forward while the sweep
        // waits for its lock is checked again on its new time and kept.
        self.batcher.flush().await;
        let done = query(
            "DELETE FROM sessions WHERE token_hash IN (
                 SELECT token_hash FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2
                 ORDER BY token_hash FOR UPDATE
             )",
        )
        .bind(to_millis(now))
        .bind(to_millis(idle_cutoff))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, change: &Change, at: OffsetDateTime) -> StoreResult<()> {
        self.append_logged(
            LogLock::Changes,
            query(
                "WITH entry AS (
                     INSERT INTO change_events (at, kind, user_id, session_id, token_hash)
                     VALUES ($1, $2, $3, $4, $5) RETURNING seq
                 )
                 SELECT seq, pg_notify($6, seq::text) FROM entry",
            )
            .bind(to_millis(at))
            .bind(change.kind())
            .bind(change.user_id())
            .bind(change.session_id())
            .bind(change.token_hash().map(|h| h.as_bytes().to_vec())),
        )
        .await?;
        Ok(())
    }

    async fn after(&self, cursor: i64, limit: u32) -> StoreResult<Vec<(i64, Change)>> {
        let rows = query(
            "SELECT seq, kind, user_id, session_id, token_hash FROM change_events
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(cursor)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let seq: i64 = r.try_get("seq").map_err(backend)?;
            let kind: String = r.try_get("kind").map_err(backend)?;
            let user_id: String = r.try_get("user_id").map_err(backend)?;
            let session_id: Option<String> = r.try_get("session_id").map_err(backend)?;
            let token_hash: Option<Vec<u8>> = r.try_get("token_hash").map_err(backend)?;
            let token_hash = token_hash.as_deref().and_then(SecretHash::from_slice);
            match Change::from_parts(&kind, user_id, session_id, token_hash) {
                Some(change) => out.push((seq, change)),
                None => tracing::warn!(kind = %kind, "skipping a change event of unknown kind"),
            }
        }
        Ok(out)
    }

    async fn latest_cursor(&self) -> StoreResult<i64> {
        let row = query("SELECT coalesce(max(seq), 0) AS seq FROM change_events")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        row.try_get("seq").map_err(backend)
    }

    async fn prune(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let done = query("DELETE FROM change_events WHERE at < $1")
            .bind(to_millis(before))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    fn subscribe(&self) -> Option<watch::Receiver<Push>> {
        let listener = self
            .listener
            .get_or_init(|| listen::Listener::start(self.listen_options.clone()));
        Some(listener.subscribe())
    }
}

#[async_trait]
impl Backend for PostgresStore {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn ping(&self) -> StoreResult<()> {
        query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn close(&self) {
        // Writes queued behind land before the pool closes.
        self.batcher.flush().await;
        if let Some(listener) = self.listener.get() {
            listener.stop().await;
        }
        self.pool.close().await;
    }

    /// Nothing to do that would help: an `UPDATE` leaves the old row version
    /// in its heap page until VACUUM (and then until the space is reused),
    /// and in the WAL (recycled after checkpoints, but kept by archiving and
    /// replicas). A `VACUUM FULL` here would lock the table and still leave
    /// the old file's blocks to the filesystem. See docs/security-model.md.
    async fn scrub(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration as StdDuration, Instant};

    use super::*;
    use crate::core::accounts::UserStatus;

    /// With the server gone, calls fail (never hang) within about the
    /// acquire timeout, the push says `Disconnected`; once it is back, the
    /// same store works again by itself, push included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_fails_closed_while_the_server_is_down_and_heals_after() {
        let mut pg = harness::PgCluster::new().await;
        let url = pg.fresh_database().await;
        let store = PostgresStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        let user = User {
            id: "usr_1".into(),
            email: "a@example.com".into(),
            roles: vec!["admin".into()],
            status: UserStatus::Active,
            email_verified: false,
            created_at: from_millis(1_800_000_000_000),
        };
        store
            .insert_user(&user, "a@example.com", "x")
            .await
            .unwrap();
        let mut push = store.subscribe().unwrap();
        tokio::time::timeout(StdDuration::from_secs(10), async {
            while !matches!(*push.borrow_and_update(), Push::Listening(_)) {
                push.changed().await.unwrap();
            }
        })
        .await
        .unwrap();

        pg.stop().await;
        tokio::time::timeout(StdDuration::from_secs(5), async {
            while *push.borrow_and_update() != Push::Disconnected {
                push.changed().await.unwrap();
            }
        })
        .await
        .expect("the lost push connection is reported");
        let started = Instant::now();
        let read = store.user_by_id("usr_1").await;
        assert!(matches!(read, Err(StoreError::Backend(_))), "{read:?}");
        let touch = store
            .batcher
            .queue_touch(&SecretHash([1; 32]), from_millis(1_800_000_000_000))
            .await
            .unwrap()
            .still_there()
            .await;
        assert!(matches!(touch, Err(StoreError::Backend(_))), "{touch:?}");
        assert!(
            started.elapsed() < ACQUIRE_TIMEOUT * 3,
            "failing took {:?}",
            started.elapsed()
        );

        pg.start().await;
        let back = Instant::now();
        loop {
            match store.user_by_id("usr_1").await {
                Ok(found) => {
                    assert_eq!(found.as_deref(), Some(&user));
                    break;
                }
                Err(e) => assert!(back.elapsed() < StdDuration::from_secs(15), "{e}"),
            }
        }
        tokio::time::timeout(StdDuration::from_secs(15), async {
            while !matches!(*push.borrow_and_update(), Push::Listening(_)) {
                push.changed().await.unwrap();
            }
        })
        .await
        .expect("the push listens again");
        store
            .append(&Change::KeysChanged, from_millis(1_800_000_000_000))
            .await
            .unwrap();
        tokio::time::timeout(StdDuration::from_secs(5), push.changed())
            .await
            .expect("appends are pushed again")
            .unwrap();
        Backend::close(&store).await;
    }

    /// Opening with a URL that carries a password never echoes it, whether
    /// the URL is refused or the server cannot be reached.
    #[tokio::test]
    async fn errors_never_carry_the_password() {
        let options = StoreOptions::default();
        for url in [
            "postgres://tessera:s3cr%65t@127.0.0.1:1/db",
            "postgres://tessera:s3cret@127.0.0.1:1/db?sslmode=sometimes",
            "postgres://tessera@127.0.0.1:1/db?password=s3cret",
        ] {
            let Err(e) = PostgresStore::open(url, &options).await else {
                panic!("{url} opened");
            };
            let text = e.to_string();
            assert!(!text.contains("s3cr"), "{text}");
            let text = format!(
                "{:#}",
                migrate::apply_migrations(url, &mut |_| {})
                    .await
                    .unwrap_err()
            );
            assert!(!text.contains("s3cr"), "{text}");
            assert!(text.contains("127.0.0.1"), "{text}");
        }
        assert_eq!(
            scrub("x s3cr%65t y s3crет z".into(), "postgres://u:s3cr%65t@h/db"),
            "x [redacted] y s3crет z"
        );
        assert_eq!(
            scrub("x s3cret".into(), "postgres://u:s3cr%65t@h/db"),
            "x [redacted]"
        );
    }

    /// The URL's `sslmode` is what the connection does: a server without
    /// TLS (the test cluster) is refused under `require` (never a silent
    /// plain-text connection) and used under `disable` and `prefer`.
    #[tokio::test]
    async fn sslmode_is_honoured() {
        let url = harness::fresh_postgres_url().await;
        let with = |mode: &str| format!("{url}?sslmode={mode}");
        let options = StoreOptions::default();
        for mode in ["disable", "prefer"] {
            let store = PostgresStore::open(&with(mode), &options)
                .await
                .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
            store.ping().await.unwrap();
            store.close().await;
        }
        for mode in ["require", "verify-full"] {
            let Err(e) = PostgresStore::open(&with(mode), &options).await else {
                panic!("sslmode={mode} connected to a server without TLS");
            };
            assert!(!e.to_string().is_empty());
        }
        let facts = facts::read(&with("disable")).await.unwrap();
        assert!(!facts.ssl, "the doctor sees a plain connection");
        assert_eq!(facts.sslmode, "disable");
    }
}
