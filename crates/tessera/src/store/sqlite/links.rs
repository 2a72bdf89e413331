//! Single-use link tokens on SQLite: a consume is one `UPDATE … RETURNING`
//! on the single writer connection, so two racing consumes cannot both see
//! the token unused.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, query};
use time::OffsetDateTime;

use super::{SqliteStore, backend};
use crate::core::secret::SecretHash;
use crate::core::time::{from_millis, to_millis};
use crate::store::{Invitation, LinkToken, LinkTokenStore, StoreError, StoreResult};

#[async_trait]
impl LinkTokenStore for SqliteStore {
    async fn insert_link_token(&self, t: &LinkToken) -> StoreResult<()> {
        query(
            "INSERT INTO link_tokens (token_hash, purpose, user_id, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(t.hash.as_bytes())
        .bind(&t.purpose)
        .bind(&t.user_id)
        .bind(to_millis(t.created_at))
        .bind(to_millis(t.expires_at))
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn consume_link_token(
        &self,
        hash: &SecretHash,
        purpose: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<String>> {
        let row = query(
            "UPDATE link_tokens SET used_at = ?1
             WHERE token_hash = ?2 AND purpose = ?3 AND used_at IS NULL AND expires_at > ?1
             RETURNING user_id",
        )
        .bind(to_millis(now))
        .bind(hash.as_bytes())
        .bind(purpose)
        .fetch_optional(&self.write)
        .await
        .map_err(backend)?;
        row.map(|r| r.try_get("user_id").map_err(backend))
            .transpose()
    }

    async fn link_token_user(
        &self,
        hash: &SecretHash,
        purpose: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<String>> {
        let row = query(
            "SELECT user_id FROM link_tokens
             WHERE token_hash = ?2 AND purpose = ?3 AND used_at IS NULL AND expires_at > ?1",
        )
        .bind(to_millis(now))
        .bind(hash.as_bytes())
        .bind(purpose)
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
        row.map(|r| r.try_get("user_id").map_err(backend))
            .transpose()
    }

    async fn void_link_tokens(
        &self,
        user_id: &str,
        purpose: &str,
        at: OffsetDateTime,
    ) -> StoreResult<u64> {
        let done = query(
            "UPDATE link_tokens SET used_at = ?1
             WHERE user_id = ?2 AND purpose = ?3 AND used_at IS NULL",
        )
        .bind(to_millis(at))
        .bind(user_id)
        .bind(purpose)
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_link_tokens(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let tokens = query("DELETE FROM link_tokens WHERE expires_at < ?")
            .bind(to_millis(before))
            .execute(&self.write)
            .await
            .map_err(backend)?;
        let invitations = query("DELETE FROM invitations WHERE expires_at < ?")
            .bind(to_millis(before))
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(tokens.rows_affected() + invitations.rows_affected())
    }

    async fn insert_invitation(&self, i: &Invitation) -> StoreResult<()> {
        let roles =
            serde_json::to_string(&i.roles).map_err(|e| StoreError::Backend(e.to_string()))?;
        query(
            "INSERT INTO invitations
                 (token_hash, email, email_key, roles, created_by, mailed, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(i.hash.as_bytes())
        .bind(&i.email)
        .bind(&i.email_key)
        .bind(roles)
        .bind(&i.created_by)
        .bind(i.mailed)
        .bind(to_millis(i.created_at))
        .bind(to_millis(i.expires_at))
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn invitation(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Invitation>> {
        let row = query(sqlx::AssertSqlSafe(format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations
             WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?"
        )))
        .bind(hash.as_bytes())
        .bind(to_millis(now))
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
        row.as_ref().map(invitation_from_row).transpose()
    }

    async fn consume_invitation(
        &self,
        hash: &SecretHash,
        email_key: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Invitation>> {
        let row = query(sqlx::AssertSqlSafe(format!(
            "UPDATE invitations SET used_at = ?1
             WHERE token_hash = ?2 AND email_key = ?3 AND used_at IS NULL AND expires_at > ?1
             RETURNING {INVITATION_COLUMNS}"
        )))
        .bind(to_millis(now))
        .bind(hash.as_bytes())
        .bind(email_key)
        .fetch_optional(&self.write)
        .await
        .map_err(backend)?;
        row.as_ref().map(invitation_from_row).transpose()
    }
}

const INVITATION_COLUMNS: &str =
    "token_hash, email, email_key, roles, created_by, mailed, created_at, expires_at";

fn invitation_from_row(row: &SqliteRow) -> StoreResult<Invitation> {
    let hash: Vec<u8> = row.try_get("token_hash").map_err(backend)?;
    let roles: String = row.try_get("roles").map_err(backend)?;
    Ok(Invitation {
        hash: SecretHash::from_slice(&hash)
            .ok_or_else(|| StoreError::Backend("bad token_hash column".into()))?,
        email: row.try_get("email").map_err(backend)?,
        email_key: row.try_get("email_key").map_err(backend)?,
        roles: serde_json::from_str(&roles)
            .map_err(|e| StoreError::Backend(format!("bad roles column: {e}")))?,
        created_by: row.try_get("created_by").map_err(backend)?,
        mailed: row.try_get("mailed").map_err(backend)?,
        created_at: from_millis(row.try_get("created_at").map_err(backend)?),
        expires_at: from_millis(row.try_get("expires_at").map_err(backend)?),
    })
}
