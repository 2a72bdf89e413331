//! The SQLite store's token half: signing keys, refresh families, the
//! revocation log, service clients and the audit log.

use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, query};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{SqliteStore, backend};
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

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("bad {what} column"))
}

fn key_from_row(row: &SqliteRow) -> StoreResult<StoredKey> {
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
impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = query(
            "SELECT kid, alg, private_pkcs8, public_jwk, created_at, rotated_out_at
             FROM signing_keys ORDER BY created_at",
        )
        .fetch_all(&self.read)
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
        let mut tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
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
            "UPDATE signing_keys SET rotated_out_at = ?1
             WHERE rotated_out_at IS NULL OR rotated_out_at > ?1",
        )
        .bind(to_millis(at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let private = key.private_pkcs8.as_ref().map(|p| p.as_slice());
        query(
            "INSERT INTO signing_keys (kid, alg, private_pkcs8, public_jwk, created_at, rotated_out_at)
             VALUES (?, ?, ?, ?, ?, NULL)",
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
             WHERE rotated_out_at IS NOT NULL AND rotated_out_at <= ? AND private_pkcs8 IS NOT NULL",
        )
        .bind(to_millis(before))
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        query(
            "INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&self.write)
        .await
        .map_err(backend)?;
        let row = query("SELECT value FROM server_secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.write)
            .await
            .map_err(backend)?;
        row.try_get("value").map_err(backend)
    }

    async fn deployment_fact(&self, name: &str) -> StoreResult<Option<String>> {
        let row = query("SELECT value FROM deployment_facts WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.write)
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
        // One connection writes: the read and the upsert are not
        // interleaved with another write of this process; another process
        // racing may make the answer stale, which only changes a log line.
        let before = self.deployment_fact(name).await?;
        query(
            "INSERT INTO deployment_facts (name, value, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(to_millis(at))
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(before)
    }
}

pub(super) fn family_from_row(row: &SqliteRow) -> StoreResult<RefreshFamily> {
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

/// A refresh token's state and its family, without the `WHERE`.
pub(super) const TOKEN_AND_FAMILY_FROM: &str =
    "SELECT t.token_hash, t.used_at, t.expires_at, f.id AS family_id, f.user_id,
        f.client_id, f.scope, f.created_at AS family_created_at, f.revoked_at
     FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id";

static TOKEN_AND_FAMILY: LazyLock<String> =
    LazyLock::new(|| format!("{TOKEN_AND_FAMILY_FROM} WHERE t.token_hash = ?"));

#[async_trait]
impl RefreshStore for SqliteStore {
    async fn create_family(
        &self,
        family: &RefreshFamily,
        first: &NewRefreshToken,
    ) -> StoreResult<()> {
        let mut tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        query(
            "INSERT INTO refresh_families (id, user_id, client_id, scope, created_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&family.id)
        .bind(&family.user_id)
        .bind(&family.client_id)
        .bind(family.scope.as_deref())
        .bind(to_millis(family.created_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        query(
            "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
             VALUES (?, ?, ?, ?)",
        )
        .bind(first.hash.as_bytes())
        .bind(&family.id)
        .bind(to_millis(first.created_at))
        .bind(to_millis(first.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
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
        let row = query(sqlx::AssertSqlSafe(TOKEN_AND_FAMILY.as_str()))
            .bind(presented.as_bytes())
            .fetch_optional(&self.read)
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
        let rows = query(
            "SELECT f.id AS family_id, f.user_id, f.client_id, f.scope,
                 f.created_at AS family_created_at, f.revoked_at,
                 t.created_at AS token_created_at, t.expires_at
             FROM refresh_families f JOIN refresh_tokens t ON t.family_id = f.id
             WHERE f.user_id = ? AND f.revoked_at IS NULL
               AND t.used_at IS NULL AND t.expires_at > ?
             ORDER BY t.created_at DESC, f.id
             LIMIT ?",
        )
        .bind(user_id)
        .bind(to_millis(now))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
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
        let mut tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let done =
            query("UPDATE refresh_families SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(to_millis(at))
                .bind(family_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        query("DELETE FROM refresh_tokens WHERE family_id = ?")
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
        let mut tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let rows = query(
            "UPDATE refresh_families SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL
             RETURNING id",
        )
        .bind(to_millis(at))
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        query(
            "DELETE FROM refresh_tokens WHERE family_id IN
             (SELECT id FROM refresh_families WHERE user_id = ?)",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(backend))
            .collect()
    }

    async fn delete_expired_refresh(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let done = query("DELETE FROM refresh_tokens WHERE expires_at <= ?")
            .bind(to_millis(now))
            .execute(&self.write)
            .await
            .map_err(backend)?;
        // Families with no token left can no longer be used.
        query(
            "DELETE FROM refresh_families WHERE NOT EXISTS
             (SELECT 1 FROM refresh_tokens t WHERE t.family_id = refresh_families.id)",
        )
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn insert_revocation(
        &self,
        r: &Revocation,
        forget_at: i64,
        at: OffsetDateTime,
    ) -> StoreResult<i64> {
        let row = query(
            "INSERT INTO revocations (kind, subject, time, forget_at, created_at)
             VALUES (?, ?, ?, ?, ?) RETURNING seq",
        )
        .bind(r.kind())
        .bind(r.subject())
        .bind(r.time())
        .bind(forget_at)
        .bind(to_millis(at))
        .fetch_one(&self.write)
        .await
        .map_err(backend)?;
        row.try_get("seq").map_err(backend)
    }

    async fn revocations_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Revocation, i64)>> {
        let rows = query(
            "SELECT seq, kind, subject, time, forget_at FROM revocations
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(cursor)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
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
        let done = query("DELETE FROM revocations WHERE forget_at < ?")
            .bind(now_unix)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

/// A client from a row of `id, name, secret_hash, created_at, disabled_at`.
fn client_from_row(r: &SqliteRow) -> StoreResult<ServiceClient> {
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
impl ClientStore for SqliteStore {
    async fn insert_client(&self, c: &ServiceClient) -> StoreResult<()> {
        query(
            "INSERT INTO service_clients (id, name, secret_hash, created_at, disabled_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(c.secret_hash.as_bytes())
        .bind(to_millis(c.created_at))
        .bind(c.disabled_at.map(to_millis))
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn client_by_id(&self, id: &str) -> StoreResult<Option<ServiceClient>> {
        let row = query(
            "SELECT id, name, secret_hash, created_at, disabled_at
             FROM service_clients WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self) -> StoreResult<Vec<ServiceClient>> {
        let rows = query(
            "SELECT id, name, secret_hash, created_at, disabled_at
             FROM service_clients ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(backend)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn set_client_disabled(&self, id: &str, at: Option<OffsetDateTime>) -> StoreResult<bool> {
        // Disabling twice keeps the first time; enabling clears it.
        let done = query(
            "UPDATE service_clients
             SET disabled_at = CASE WHEN ?1 IS NULL THEN NULL ELSE COALESCE(disabled_at, ?1) END
             WHERE id = ?2",
        )
        .bind(at.map(to_millis))
        .bind(id)
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_client_secret(&self, id: &str, secret_hash: &SecretHash) -> StoreResult<bool> {
        let done = query("UPDATE service_clients SET secret_hash = ? WHERE id = ?")
            .bind(secret_hash.as_bytes())
            .bind(id)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        let done = query("DELETE FROM service_clients WHERE id = ?")
            .bind(id)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record(&self, e: &AuditEvent) -> StoreResult<()> {
        self.batcher.record(e).await
    }

    async fn audit_events(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let rows = query(
            "SELECT id, at, type, user_id, ip, user_agent, detail FROM audit_events
             WHERE (?1 IS NULL OR type = ?1) AND (?2 IS NULL OR user_id = ?2)
               AND (?3 IS NULL OR (at, id) < (SELECT at, id FROM audit_events WHERE id = ?3))
             ORDER BY at DESC, id DESC LIMIT ?4",
        )
        .bind(q.event_type.as_deref())
        .bind(q.user_id.as_deref())
        .bind(q.before.as_deref())
        .bind(i64::from(q.limit))
        .fetch_all(&self.read)
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
        let rows = query(
            "SELECT id, at, type, user_id, ip, user_agent, detail FROM audit_events
             WHERE (?1 IS NULL OR type = ?1) AND (?2 IS NULL OR at >= ?2)
               AND (?3 IS NULL OR (at, id) > (?3, ?4))
             ORDER BY at ASC, id ASC LIMIT ?5",
        )
        .bind(q.event_type.as_deref())
        .bind(q.since.map(to_millis))
        .bind(q.after.as_ref().map(|(at, _)| to_millis(*at)))
        .bind(q.after.as_ref().map(|(_, id)| id.as_str()))
        .bind(i64::from(q.limit))
        .fetch_all(&self.read)
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
        let done = query("DELETE FROM audit_events WHERE at < ?")
            .bind(to_millis(before))
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}
