//! The PostgreSQL store's token half: signing keys, refresh families, the
//! revocation log, service clients and the audit log.
//!
//! Across nodes: a key rotation is a compare-and-set because rotators take
//! one advisory lock for their transaction ([`KEYS_LOCK`]), so the second of
//! two rotations from the same view reads the first one's key and backs off
//! (the partial unique index on the active key backs this up); a server
//! secret is first-writer-wins (`ON CONFLICT DO NOTHING`, which waits for a
//! racing insert to commit, then a fresh read); the revocation log is
//! numbered in commit order and pushed like the change log (see
//! `super::append_logged`). Revoking a family deletes its tokens in the
//! same transaction (the group commit relies on that, see
//! `batch::presented_tokens`), locked in token-hash order, the order the
//! group commit locks them in.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Row, query};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{LogLock, PostgresStore, backend, unstorable};
use crate::core::audit::{AuditEvent, AuditExportQuery, AuditQuery};
use crate::core::clients::ServiceClient;
use crate::core::keys::{StoredKey, TokenAlg};
use crate::core::refresh::{LiveFamily, NewRefreshToken, RefreshFamily, Rotation};
use crate::core::revocation::Revocation;
use crate::core::secret::SecretHash;
use crate::core::time::{from_millis, to_millis};
use crate::store::{
    AuditStore, ClientStore, KeyStore, RefreshStore, RevocationStore, StoreError, StoreResult,
};

/// The advisory lock key rotators hold for their transaction ("tessera"
/// and a number, so it does not collide with the logs' locks or sqlx's
/// migration lock).
const KEYS_LOCK: i64 = 0x7465_7373_6572_6103;

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("bad {what} column"))
}

fn key_from_row(row: &PgRow) -> StoreResult<StoredKey> {
    let alg: String = row.try_get("alg").map_err(backend)?;
    let jwk: String = row.try_get("public_jwk").map_err(backend)?;
    let private: Option<Vec<u8>> = row.try_get("private_pkcs8").map_err(backend)?;
    let rotated: Option<i64> = row.try_get("rotated_out_at").map_err(backend)?;
    Ok(StoredKey {
        kid: row.try_get("kid").map_err(backend)?,
        alg: TokenAlg::parse(&alg).ok_or_else(|| corrupt("alg"))?,
        private_pkcs8: private.map(Zeroizing::new),
        public_jwk: serde_json::from_str(&jwk).map_err(|_| corrupt("public_jwk"))?,
        created_at: from_millis(row.try_get("created_at").map_err(backend)?),
        rotated_out_at: rotated.map(from_millis),
    })
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = query(
            "SELECT kid, alg, private_pkcs8, public_jwk::text AS public_jwk, created_at,
                    rotated_out_at
             FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn rotate_in(
        &self,
        key: &StoredKey,
        expected_active: Option<&str>,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Rotators on every node queue here, so the read below sees the
        // outcome of any rotation that went first.
        query("SELECT pg_advisory_xact_lock($1)")
            .bind(KEYS_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let active: Option<String> =
            query("SELECT kid FROM signing_keys WHERE rotated_out_at IS NULL")
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
                .map(|r| r.try_get("kid"))
                .transpose()
                .map_err(backend)?;
        if active.as_deref() != expected_active {
            return Ok(false);
        }
        // The active key leaves at `at`; a retiring key that left later is
        // pulled back to `at` too (only happens when retiring at once).
        query(
            "UPDATE signing_keys SET rotated_out_at = $1
             WHERE rotated_out_at IS NULL OR rotated_out_at > $1",
        )
        .bind(to_millis(at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let private = key.private_pkcs8.as_ref().map(|p| p.as_slice());
        query(
            "INSERT INTO signing_keys (kid, alg, private_pkcs8, public_jwk, created_at, rotated_out_at)
             VALUES ($1, $2, $3, $4::jsonb, $5, NULL)",
        )
        .bind(&key.kid)
        .bind(key.alg.as_str())
        .bind(private)
        .bind(key.public_jwk.to_string())
        .bind(to_millis(key.created_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn wipe_retired(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let done = query(
            "UPDATE signing_keys SET private_pkcs8 = NULL
             WHERE rotated_out_at IS NOT NULL AND rotated_out_at <= $1
               AND private_pkcs8 IS NOT NULL",
        )
        .bind(to_millis(before))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        // A racing insert of the same name makes this one wait for its
        // commit and then do nothing; the read after it (a new statement,
        // a new snapshot) sees the winner's value.
        query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        let row = query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        row.try_get("value").map_err(backend)
    }

    async fn deployment_fact(&self, name: &str) -> StoreResult<Option<String>> {
        let row = query("SELECT value FROM deployment_facts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|r| r.try_get("value")).transpose().map_err(backend)
    }

    async fn set_deployment_fact(
        &self,
        name: &str,
        value: &str,
        at: OffsetDateTime,
    ) -> StoreResult<Option<String>> {
        // The old value comes from the row the upsert replaced, read in the
        // same statement (a CTE sees the table before the statement).
        let row = query(
            "WITH before AS (SELECT value FROM deployment_facts WHERE name = $1)
             INSERT INTO deployment_facts (name, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
             RETURNING (SELECT value FROM before) AS before",
        )
        .bind(name)
        .bind(value)
        .bind(to_millis(at))
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        row.try_get("before").map_err(backend)
    }
}

/// A family from a row with its columns named as in [`TOKEN_AND_FAMILY`].
pub(super) fn family_from_row(row: &PgRow) -> StoreResult<RefreshFamily> {
    let revoked: Option<i64> = row.try_get("revoked_at").map_err(backend)?;
    Ok(RefreshFamily {
        id: row.try_get("family_id").map_err(backend)?,
        user_id: row.try_get("user_id").map_err(backend)?,
        client_id: row.try_get("client_id").map_err(backend)?,
        scope: row.try_get("scope").map_err(backend)?,
        created_at: from_millis(row.try_get("family_created_at").map_err(backend)?),
        revoked_at: revoked.map(from_millis),
    })
}

/// A refresh token's state and its family.
const TOKEN_AND_FAMILY: &str =
    "SELECT t.token_hash, t.used_at, t.expires_at, f.id AS family_id, f.user_id,
        f.client_id, f.scope, f.created_at AS family_created_at, f.revoked_at
     FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
     WHERE t.token_hash = $1";

#[async_trait]
impl RefreshStore for PostgresStore {
    async fn create_family(
        &self,
        family: &RefreshFamily,
        first: &NewRefreshToken,
    ) -> StoreResult<()> {
        // One statement, so one atomic step without a transaction's extra
        // round trips; the token's foreign key is checked at its end, when
        // the family row exists.
        query(
            "WITH family AS (
                 INSERT INTO refresh_families (id, user_id, client_id, scope, created_at)
                 VALUES ($1, $2, $3, $4, $5)
             )
             INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
             VALUES ($6, $1, $7, $8)",
        )
        .bind(&family.id)
        .bind(&family.user_id)
        .bind(&family.client_id)
        .bind(family.scope.as_deref())
        .bind(to_millis(family.created_at))
        .bind(first.hash.as_bytes())
        .bind(to_millis(first.created_at))
        .bind(to_millis(first.expires_at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        presented: &SecretHash,
        next_hash: &SecretHash,
        next_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        audit: AuditEvent,
    ) -> StoreResult<Rotation> {
        self.batcher
            .rotate(presented, next_hash, next_expires_at, now, audit)
            .await
    }

    async fn refresh_family(
        &self,
        presented: &SecretHash,
    ) -> StoreResult<Option<(RefreshFamily, OffsetDateTime, bool)>> {
        let row = query(TOKEN_AND_FAMILY)
            .bind(presented.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let used: Option<i64> = row.try_get("used_at").map_err(backend)?;
        let expires_at = from_millis(row.try_get("expires_at").map_err(backend)?);
        Ok(Some((family_from_row(&row)?, expires_at, used.is_some())))
    }

    async fn live_families(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<LiveFamily>> {
        if unstorable(&[user_id]) {
            return Ok(Vec::new());
        }
        let rows = query(
            "SELECT f.id AS family_id, f.user_id, f.client_id, f.scope,
                 f.created_at AS family_created_at, f.revoked_at,
                 t.created_at AS token_created_at, t.expires_at
             FROM refresh_families f JOIN refresh_tokens t ON t.family_id = f.id
             WHERE f.user_id = $1 AND f.revoked_at IS NULL
               AND t.used_at IS NULL AND t.expires_at > $2
             ORDER BY t.created_at DESC, f.id
             LIMIT $3",
        )
        .bind(user_id)
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(LiveFamily {
                    family: family_from_row(row)?,
                    last_used_at: from_millis(row.try_get("token_created_at").map_err(backend)?),
                    expires_at: from_millis(row.try_get("expires_at").map_err(backend)?),
                })
            })
            .collect()
    }

    async fn revoke_family(&self, family_id: &str, at: OffsetDateTime) -> StoreResult<bool> {
        if unstorable(&[family_id]) {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Tokens first, locked in hash order like a rotation batch locks
        // them, then the family: the order a batch that finds reuse takes.
        // Deleting the tokens with the revocation is also what lets the
        // batch read families without locking them (see
        // `batch::presented_tokens`): every revocation must do it.
        query(
            "DELETE FROM refresh_tokens WHERE token_hash IN (
                 SELECT token_hash FROM refresh_tokens WHERE family_id = $1
                 ORDER BY token_hash FOR UPDATE
             )",
        )
        .bind(family_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let done = query(
            "UPDATE refresh_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(to_millis(at))
        .bind(family_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_user_families(
        &self,
        user_id: &str,
        at: OffsetDateTime,
    ) -> StoreResult<Vec<String>> {
        if unstorable(&[user_id]) {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // As `revoke_family`: the tokens go (in hash order) before the
        // families are marked.
        query(
            "DELETE FROM refresh_tokens WHERE token_hash IN (
                 SELECT t.token_hash FROM refresh_tokens t
                 JOIN refresh_families f ON f.id = t.family_id
                 WHERE f.user_id = $1
                 ORDER BY t.token_hash FOR UPDATE OF t
             )",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let rows = query(
            "UPDATE refresh_families SET revoked_at = $1
             WHERE user_id = $2 AND revoked_at IS NULL
             RETURNING id",
        )
        .bind(to_millis(at))
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(backend))
            .collect()
    }

    async fn delete_expired_refresh(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let done = query(
            "DELETE FROM refresh_tokens WHERE token_hash IN (
                 SELECT token_hash FROM refresh_tokens WHERE expires_at <= $1
                 ORDER BY token_hash FOR UPDATE
             )",
        )
        .bind(to_millis(now))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        // Families with no token left can no longer be used.
        query(
            "DELETE FROM refresh_families f WHERE NOT EXISTS
             (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id)",
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl RevocationStore for PostgresStore {
    async fn insert_revocation(
        &self,
        r: &Revocation,
        forget_at: i64,
        at: OffsetDateTime,
    ) -> StoreResult<i64> {
        self.append_logged(
            LogLock::Revocations,
            query(
                "WITH entry AS (
                     INSERT INTO revocations (kind, subject, time, forget_at, created_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING seq
                 )
                 SELECT seq, pg_notify($6, seq::text) FROM entry",
            )
            .bind(r.kind())
            .bind(r.subject())
            .bind(r.time())
            .bind(forget_at)
            .bind(to_millis(at)),
        )
        .await
    }

    async fn revocations_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Revocation, i64)>> {
        let rows = query(
            "SELECT seq, kind, subject, time, forget_at FROM revocations
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(cursor)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.try_get("kind").map_err(backend)?;
            let revocation = Revocation::from_parts(
                &kind,
                r.try_get("subject").map_err(backend)?,
                r.try_get("time").map_err(backend)?,
            )
            .ok_or_else(|| corrupt("revocation kind"))?;
            out.push((
                r.try_get("seq").map_err(backend)?,
                revocation,
                r.try_get("forget_at").map_err(backend)?,
            ));
        }
        Ok(out)
    }

    async fn prune_revocations(&self, now_unix: i64) -> StoreResult<u64> {
        let done = query("DELETE FROM revocations WHERE forget_at < $1")
            .bind(now_unix)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

/// A client from a row of `id, name, secret_hash, created_at, disabled_at`.
fn client_from_row(r: &PgRow) -> StoreResult<ServiceClient> {
    let hash: Vec<u8> = r.try_get("secret_hash").map_err(backend)?;
    let disabled_at: Option<i64> = r.try_get("disabled_at").map_err(backend)?;
    Ok(ServiceClient {
        id: r.try_get("id").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        secret_hash: SecretHash::from_slice(&hash).ok_or_else(|| corrupt("secret_hash"))?,
        created_at: from_millis(r.try_get("created_at").map_err(backend)?),
        disabled_at: disabled_at.map(from_millis),
    })
}

#[async_trait]
impl ClientStore for PostgresStore {
    async fn insert_client(&self, c: &ServiceClient) -> StoreResult<()> {
        query(
            "INSERT INTO service_clients (id, name, secret_hash, created_at, disabled_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(c.secret_hash.as_bytes())
        .bind(to_millis(c.created_at))
        .bind(c.disabled_at.map(to_millis))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn client_by_id(&self, id: &str) -> StoreResult<Option<ServiceClient>> {
        if unstorable(&[id]) {
            return Ok(None);
        }
        let row = query(
            "SELECT id, name, secret_hash, created_at, disabled_at
             FROM service_clients WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self) -> StoreResult<Vec<ServiceClient>> {
        // Ids compared byte by byte, as SQLite does.
        let rows = query(
            "SELECT id, name, secret_hash, created_at, disabled_at
             FROM service_clients ORDER BY created_at, id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn set_client_disabled(&self, id: &str, at: Option<OffsetDateTime>) -> StoreResult<bool> {
        if unstorable(&[id]) {
            return Ok(false);
        }
        // Disabling twice keeps the first time; enabling clears it.
        let done = query(
            "UPDATE service_clients
             SET disabled_at = CASE WHEN $1::bigint IS NULL THEN NULL
                                    ELSE COALESCE(disabled_at, $1::bigint) END
             WHERE id = $2",
        )
        .bind(at.map(to_millis))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_client_secret(&self, id: &str, secret_hash: &SecretHash) -> StoreResult<bool> {
        if unstorable(&[id]) {
            return Ok(false);
        }
        let done = query("UPDATE service_clients SET secret_hash = $1 WHERE id = $2")
            .bind(secret_hash.as_bytes())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        if unstorable(&[id]) {
            return Ok(false);
        }
        let done = query("DELETE FROM service_clients WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn record(&self, e: &AuditEvent) -> StoreResult<()> {
        self.batcher.record(e).await
    }

    async fn audit_events(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let filters = [&q.event_type, &q.user_id, &q.before].map(|f| f.as_deref().unwrap_or(""));
        if unstorable(&filters) {
            return Ok(Vec::new());
        }
        let rows = query(
            "SELECT id, at, type, user_id, ip, user_agent, detail::text AS detail
             FROM audit_events
             WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR user_id = $2)
               AND ($3::text IS NULL
                    OR (at, id) < (SELECT at, id FROM audit_events WHERE id = $3))
             ORDER BY at DESC, id DESC LIMIT $4",
        )
        .bind(q.event_type.as_deref())
        .bind(q.user_id.as_deref())
        .bind(q.before.as_deref())
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail").map_err(backend)?;
                Ok(AuditEvent {
                    id: r.try_get("id").map_err(backend)?,
                    at: from_millis(r.try_get("at").map_err(backend)?),
                    event_type: r.try_get("type").map_err(backend)?,
                    user_id: r.try_get("user_id").map_err(backend)?,
                    ip: r.try_get("ip").map_err(backend)?,
                    user_agent: r.try_get("user_agent").map_err(backend)?,
                    detail: serde_json::from_str(&detail).map_err(|_| corrupt("detail"))?,
                })
            })
            .collect()
    }

    async fn audit_events_oldest_first(
        &self,
        q: &AuditExportQuery,
    ) -> StoreResult<Vec<AuditEvent>> {
        let filters = [&q.event_type].map(|f| f.as_deref().unwrap_or(""));
        let after_id = q.after.as_ref().map(|(_, id)| id.as_str()).unwrap_or("");
        if unstorable(&filters) || unstorable(&[after_id]) {
            return Ok(Vec::new());
        }
        let rows = query(
            "SELECT id, at, type, user_id, ip, user_agent, detail::text AS detail
             FROM audit_events
             WHERE ($1::text IS NULL OR type = $1) AND ($2::bigint IS NULL OR at >= $2)
               AND ($3::bigint IS NULL OR (at, id) > ($3, $4::text))
             ORDER BY at ASC, id ASC LIMIT $5",
        )
        .bind(q.event_type.as_deref())
        .bind(q.since.map(to_millis))
        .bind(q.after.as_ref().map(|(at, _)| to_millis(*at)))
        .bind(q.after.as_ref().map(|(_, id)| id.as_str()))
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail").map_err(backend)?;
                Ok(AuditEvent {
                    id: r.try_get("id").map_err(backend)?,
                    at: from_millis(r.try_get("at").map_err(backend)?),
                    event_type: r.try_get("type").map_err(backend)?,
                    user_id: r.try_get("user_id").map_err(backend)?,
                    ip: r.try_get("ip").map_err(backend)?,
                    user_agent: r.try_get("user_agent").map_err(backend)?,
                    detail: serde_json::from_str(&detail).map_err(|_| corrupt("detail"))?,
                })
            })
            .collect()
    }

    async fn prune_audit(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let done = query("DELETE FROM audit_events WHERE at < $1")
            .bind(to_millis(before))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}
