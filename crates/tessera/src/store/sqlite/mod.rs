//! The embedded store: SQLite through sqlx.
//!
//! WAL mode so readers never wait for the writer; `synchronous = FULL` so a
//! committed write survives a power cut; all writes go through a single
//! connection so concurrent writers queue in the pool instead of failing with
//! `SQLITE_BUSY`, while reads use a separate pool, and the log is copied back
//! into the database by a task of its own (`checkpoint`). The schema
//! is embedded in the binary and migrated at start.

mod batch;
mod checkpoint;
mod devices;
mod links;
pub mod migrate;
mod rekey;
mod tokens;
mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, query};
use time::OffsetDateTime;

use self::checkpoint::{BACKSTOP_PAGES, Checkpointer, LOG_SIZE_LIMIT_BYTES};
use crate::core::accounts::{User, UserQuery, UserStatus};
use crate::core::audit::AuditEvent;
use crate::core::events::Change;
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;
use crate::core::time::{from_millis, to_millis};
use crate::store::guard::Write;
use crate::store::write_queue::WriteBatcher;
use crate::store::{
    Backend, EventStore, QueuedTouch, SessionStore, StoreError, StoreResult, Stores, UserStore,
    UserWrite,
};

const READ_CONNECTIONS: u32 = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite-backed implementation of every store trait.
#[derive(Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// Refresh rotations and session touches, group-committed on `write`.
    batcher: WriteBatcher,
    /// Copies the write-ahead log back into the database file.
    checkpointer: Arc<Checkpointer>,
}

fn backend(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Conflict;
    }
    StoreError::Backend(e.to_string())
}

/// How often opening (or migrating) a database is tried again after it
/// lost a race with another process opening the same new file.
///
/// sqlx takes no lock around SQLite migrations, so two processes opening a
/// new database at once (a server and a CLI command, two nodes) can both
/// find a migration pending, and the second to apply it fails ("table …
/// already exists"); turning a new file to WAL mode while another process
/// does the same can fail with "database is locked" at once, whatever the
/// busy timeout. Each migration is its own transaction, so nothing is left
/// half-applied, and a later attempt finds the work done and goes on.
const OPEN_RETRIES: u32 = 5;

/// The pause before attempt `attempt + 1`.
fn open_pause(attempt: u32) -> Duration {
    Duration::from_millis(50 * u64::from(attempt))
}

/// Whether an opening error is one of the races above.
fn lost_opening_race(error: &StoreError) -> bool {
    matches!(error, StoreError::Backend(text)
        if text.contains("database is locked") || text.starts_with("migration failed"))
}

/// How every connection treats deleted content (`PRAGMA secure_delete`):
/// overwritten with zeros, so a wiped key's private half, an old password
/// hash or a deleted row does not stay in a page's free space, nor an
/// earlier copy of a row that an update moved. `ON` rather than `FAST`:
/// `FAST` zeroes only within pages a write changes anyway, and leaves a
/// page put on the free list as it was (a page emptied when rows move
/// between pages could keep a copy of a key that was active then). The
/// cost is on bulk deletes only: measured on SQLite alone (WAL,
/// `synchronous = FULL`), a login's insert, a refresh rotation and a
/// logout's delete log the same bytes under OFF, FAST and ON and take
/// about 1% more instructions; a bulk sweep of expired sessions logs 12%
/// more with ON (freed pages are written again) and takes 4% more
/// instructions (2% with FAST), in the background sweep. The setting is per connection
/// and covers the whole database, not only the tables that hold secrets.
const SECURE_DELETE: &str = "ON";

/// The connection settings every pool of the store shares.
fn connect_options(url: &str) -> StoreResult<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Backend(format!("bad SQLite URL: {e}")))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("secure_delete", SECURE_DELETE))
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url`
    /// (`sqlite://path` or `sqlite:path`), trying again when another
    /// process opening the same new file got in the way (see
    /// [`OPEN_RETRIES`]).
    pub async fn open(url: &str) -> StoreResult<Self> {
        let mut attempt = 0;
        loop {
            match Self::open_once(url).await {
                Err(e) if attempt < OPEN_RETRIES && lost_opening_race(&e) => {
                    attempt += 1;
                    tokio::time::sleep(open_pause(attempt)).await;
                }
                result => return result,
            }
        }
    }

    async fn open_once(url: &str) -> StoreResult<Self> {
        // Statement journals (a multi-row write's undo, see `batch`) stay
        // in memory instead of spilling to a temporary file.
        let base = connect_options(url)?.pragma("temp_store", "memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .pragma("wal_autocheckpoint", BACKSTOP_PAGES.to_string())
                    .pragma("journal_size_limit", LOG_SIZE_LIMIT_BYTES.to_string()),
            )
            .await
            .map_err(backend)?;
        MIGRATOR
            .run(&write)
            .await
            .map_err(|e| StoreError::Backend(format!("migration failed: {e}")))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(base.clone().read_only(true))
            .await
            .map_err(backend)?;
        let checkpoints = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(base.clone())
            .await
            .map_err(backend)?;
        let batcher = WriteBatcher::start(batch::SqliteBatches {
            write: write.clone(),
        });
        Ok(Self {
            read,
            write,
            batcher,
            checkpointer: Arc::new(Checkpointer::start(checkpoints)),
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
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    let roles: String = row.try_get("roles").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    Ok(User {
        id: row.try_get("id").map_err(backend)?,
        email: row.try_get("email").map_err(backend)?,
        roles: serde_json::from_str(&roles)
            .map_err(|e| StoreError::Backend(format!("bad roles column: {e}")))?,
        status: UserStatus::parse(&status)
            .ok_or_else(|| StoreError::Backend(format!("bad status column: {status}")))?,
        email_verified: row.try_get("email_verified").map_err(backend)?,
        created_at: from_millis(row.try_get("created_at").map_err(backend)?),
    })
}

fn session_from_row(row: &SqliteRow) -> StoreResult<SessionRecord> {
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

const USER_COLUMNS: &str =
    "id, email, roles, status, created_at, email_verified_at IS NOT NULL AS email_verified";
const SESSION_COLUMNS: &str =
    "token_hash, id, user_id, created_at, last_seen_at, expires_at, ip, user_agent";

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_user(
        &self,
        user: &User,
        email_key: &str,
        password_hash: &str,
    ) -> StoreResult<()> {
        let roles =
            serde_json::to_string(&user.roles).map_err(|e| StoreError::Backend(e.to_string()))?;
        let at = to_millis(user.created_at);
        query(
            "INSERT INTO users (id, email, email_key, password_hash, roles, status, created_at, updated_at, email_verified_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(email_key)
        .bind(password_hash)
        .bind(roles)
        .bind(user.status.as_str())
        .bind(at)
        .bind(at)
        .bind(user.email_verified.then_some(at))
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<Arc<User>>> {
        let row = query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
        row.map(|r| user_from_row(&r).map(Arc::new)).transpose()
    }

    async fn credentials_by_email(&self, email_key: &str) -> StoreResult<Option<(User, String)>> {
        let row = query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email_key = ?"
        )))
        .bind(email_key)
        .fetch_optional(&self.read)
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
        // SQLite's LIKE stops at a NUL (`%\0%` would match everyone); no
        // email or id holds one, so such a query matches nothing.
        let texts = [q.email_contains.as_deref(), q.after_id.as_deref()];
        if texts.iter().flatten().any(|t| t.contains('\0')) {
            return Ok(Vec::new());
        }
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
             WHERE (?1 IS NULL OR email_key LIKE ?1 ESCAPE '\\')
               AND (?2 IS NULL OR id > ?2)
             ORDER BY id LIMIT ?3"
        )))
        .bind(pattern)
        .bind(q.after_id.as_deref())
        .bind(i64::from(q.limit))
        .fetch_all(&self.read)
        .await
        .map_err(backend)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn password_hash(&self, id: &str) -> StoreResult<Option<String>> {
        let row = query("SELECT password_hash FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
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
        let done = query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
            .bind(hash)
            .bind(to_millis(at))
            .bind(id)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_email_verified(&self, id: &str, at: OffsetDateTime) -> StoreResult<bool> {
        let done = query(
            "UPDATE users SET email_verified_at = coalesce(email_verified_at, ?1), updated_at = ?1
             WHERE id = ?2",
        )
        .bind(to_millis(at))
        .bind(id)
        .execute(&self.write)
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
        let done = query(
            "UPDATE users SET email = ?, email_key = ?, email_verified_at = NULL, updated_at = ?
             WHERE id = ?",
        )
        .bind(email)
        .bind(email_key)
        .bind(to_millis(at))
        .bind(id)
        .execute(&self.write)
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
impl SessionStore for SqliteStore {
    async fn insert_session(
        &self,
        s: &SessionRecord,
        audit: Option<AuditEvent>,
    ) -> StoreResult<bool> {
        self.batcher.start_session(s, audit).await
    }

    async fn session_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<Arc<SessionRecord>>> {
        let row = query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = ?"
        )))
        .bind(hash.as_bytes())
        .fetch_optional(&self.read)
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
        let row = query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM sessions WHERE token_hash = ? RETURNING {SESSION_COLUMNS}"
        )))
        .bind(hash.as_bytes())
        .fetch_optional(&self.write)
        .await
        .map_err(backend)?;
        row.map(|r| session_from_row(&r)).transpose()
    }

    async fn delete_user_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> StoreResult<Option<SessionRecord>> {
        let row = query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM sessions WHERE id = ? AND user_id = ? RETURNING {SESSION_COLUMNS}"
        )))
        .bind(session_id)
        .bind(user_id)
        .fetch_optional(&self.write)
        .await
        .map_err(backend)?;
        row.map(|r| session_from_row(&r)).transpose()
    }

    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        let done = query("DELETE FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn sessions_of_user(&self, user_id: &str) -> StoreResult<Vec<SessionRecord>> {
        // The list shows activity written behind, up to this moment.
        self.batcher.flush().await;
        let rows = query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ? ORDER BY created_at DESC"
        )))
        .bind(user_id)
        .fetch_all(&self.read)
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
            query("SELECT count(*) AS n FROM sessions WHERE expires_at > ? AND last_seen_at > ?")
                .bind(to_millis(now))
                .bind(to_millis(idle_cutoff))
                .fetch_one(&self.read)
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
        // just before its idle expiry is not swept on the old time.
        self.batcher.flush().await;
        let done = query("DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at <= ?")
            .bind(to_millis(now))
            .bind(to_millis(idle_cutoff))
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, change: &Change, at: OffsetDateTime) -> StoreResult<()> {
        query(
            "INSERT INTO change_events (at, kind, user_id, session_id, token_hash)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(to_millis(at))
        .bind(change.kind())
        .bind(change.user_id())
        .bind(change.session_id())
        .bind(change.token_hash().map(|h| h.as_bytes().to_vec()))
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn after(&self, cursor: i64, limit: u32) -> StoreResult<Vec<(i64, Change)>> {
        let rows = query(
            "SELECT seq, kind, user_id, session_id, token_hash FROM change_events
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(cursor)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
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
            .fetch_one(&self.read)
            .await
            .map_err(backend)?;
        row.try_get("seq").map_err(backend)
    }

    async fn prune(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let done = query("DELETE FROM change_events WHERE at < ?")
            .bind(to_millis(before))
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Backend for SqliteStore {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn ping(&self) -> StoreResult<()> {
        query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn close(&self) {
        // Activity written behind lands before the writer closes.
        self.batcher.flush().await;
        self.read.close().await;
        self.write.close().await;
        self.checkpointer.close().await;
    }

    /// A checkpoint that empties the log: the page images from before a
    /// wipe leave it (the pages themselves were zeroed where the wipe freed
    /// space, see [`SECURE_DELETE`]).
    async fn scrub(&self) -> StoreResult<()> {
        self.checkpointer.truncate().await
    }
}
