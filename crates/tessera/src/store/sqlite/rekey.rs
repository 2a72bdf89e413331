//! The email re-keying step on SQLite (`store::rekey`): one `BEGIN
//! IMMEDIATE` transaction holds the write lock, so no other writer (in this
//! process or another) interleaves with it.

use sqlx::{Row, SqliteConnection, query};
use time::OffsetDateTime;

use super::{SqliteStore, backend};
use crate::core::time::to_millis;
use crate::store::StoreResult;
use crate::store::rekey::{
    Candidate, KeyFn, RekeyOutcome, outcome, placeholder, plan, wanted_keys,
};

async fn recorded(conn: &mut SqliteConnection, step: &str) -> StoreResult<bool> {
    let row = query("SELECT 1 FROM data_migrations WHERE name = ?")
        .bind(step)
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    Ok(row.is_some())
}

pub(super) async fn rekey_emails(
    store: &SqliteStore,
    step: &str,
    key_of: &KeyFn<'_>,
    apply: bool,
    at: OffsetDateTime,
) -> StoreResult<RekeyOutcome> {
    {
        let mut conn = store.read.acquire().await.map_err(backend)?;
        if recorded(&mut conn, step).await? {
            return Ok(RekeyOutcome::already_done());
        }
    }
    if apply {
        let mut tx = store
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let outcome = rekey_in(&mut tx, step, key_of, true, at).await?;
        tx.commit().await.map_err(backend)?;
        Ok(outcome)
    } else {
        // One read transaction: a consistent view, nothing written.
        let mut tx = store.read.begin().await.map_err(backend)?;
        let outcome = rekey_in(&mut tx, step, key_of, false, at).await?;
        tx.rollback().await.map_err(backend)?;
        Ok(outcome)
    }
}

async fn rekey_in(
    conn: &mut SqliteConnection,
    step: &str,
    key_of: &KeyFn<'_>,
    apply: bool,
    at: OffsetDateTime,
) -> StoreResult<RekeyOutcome> {
    // Again under the lock: another process may have finished meanwhile.
    if recorded(conn, step).await? {
        return Ok(RekeyOutcome::already_done());
    }
    // `length` counts characters of text and bytes of a blob: they differ
    // exactly when the email holds a non-ASCII character.
    let rows = query(
        "SELECT id, email, email_key FROM users
         WHERE length(email) <> length(CAST(email AS BLOB)) ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let mut candidates = Vec::with_capacity(rows.len());
    for row in &rows {
        let email: String = row.try_get("email").map_err(backend)?;
        candidates.push(Candidate {
            id: row.try_get("id").map_err(backend)?,
            key: row.try_get("email_key").map_err(backend)?,
            new_key: key_of(&email),
        });
    }
    let wanted = wanted_keys(&candidates);
    let mut holders = Vec::new();
    if !wanted.is_empty() {
        let wanted = serde_json::to_string(&wanted)
            .map_err(|e| crate::store::StoreError::Backend(e.to_string()))?;
        let rows = query(
            "SELECT id, email_key FROM users
             WHERE email_key IN (SELECT value FROM json_each(?))",
        )
        .bind(wanted)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        for row in &rows {
            holders.push((
                row.try_get("id").map_err(backend)?,
                row.try_get("email_key").map_err(backend)?,
            ));
        }
    }
    let plan = plan(&candidates, &holders);
    let resolved = plan.collisions.is_empty() && plan.refused.is_empty();
    if apply {
        // Keys may change hands (one user takes the key another leaves):
        // every moving user first holds a placeholder, so no moment has a
        // key twice.
        for (id, _) in &plan.updates {
            query("UPDATE users SET email_key = ? WHERE id = ?")
                .bind(placeholder(id))
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
        for (id, key) in &plan.updates {
            query("UPDATE users SET email_key = ? WHERE id = ?")
                .bind(key)
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
        if resolved {
            query("INSERT INTO data_migrations (name, done_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
                .bind(step)
                .bind(to_millis(at))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
    }
    Ok(outcome(candidates.len() as u64, plan, apply && resolved))
}
