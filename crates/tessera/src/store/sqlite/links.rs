//! Single-use link tokens on SQLite: a consume is one `UPDATE … RETURNING`
//! on the single writer connection, so two racing consumes cannot both see
//! the token unused.

use async_trait::async_trait;
use sqlx::{Row, query};
use time::OffsetDateTime;

use super::{SqliteStore, backend};
use crate::core::secret::SecretHash;
use crate::core::time::to_millis;
use crate::store::{LinkToken, LinkTokenStore, StoreResult};

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
        let done = query("DELETE FROM link_tokens WHERE expires_at < ?")
            .bind(to_millis(before))
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}
