//! The email re-keying step on PostgreSQL (`store::rekey`). The users table
//! is locked in SHARE ROW EXCLUSIVE mode for the step's transaction: reads
//! go on, but no node inserts or updates a user meanwhile, and two nodes
//! starting together run the step one after the other.

use sqlx::{PgConnection, Row, query};
use time::OffsetDateTime;

use super::{PostgresStore, backend};
use crate::core::time::to_millis;
use crate::store::StoreResult;
use crate::store::rekey::{
    Candidate, KeyFn, RekeyOutcome, outcome, placeholder, plan, wanted_keys,
};

async fn recorded(conn: &mut PgConnection, step: &str) -> StoreResult<bool> {
    let row = query("SELECT 1 FROM data_migrations WHERE name = $1")
        .bind(step)
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    Ok(row.is_some())
}

pub(super) async fn rekey_emails(
    store: &PostgresStore,
    step: &str,
    key_of: &KeyFn<'_>,
    apply: bool,
    at: OffsetDateTime,
) -> StoreResult<RekeyOutcome> {
    {
        let mut conn = store.pool.acquire().await.map_err(backend)?;
        if recorded(&mut conn, step).await? {
            return Ok(RekeyOutcome::already_done());
        }
    }
    let mut tx = store.pool.begin().await.map_err(backend)?;
    let first = if apply {
        "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"
    } else {
        // A dry run sees one snapshot and writes nothing.
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    };
    query(first).execute(&mut *tx).await.map_err(backend)?;
    let outcome = rekey_in(&mut tx, step, key_of, apply, at).await?;
    if apply {
        tx.commit().await.map_err(backend)?;
    } else {
        tx.rollback().await.map_err(backend)?;
    }
    Ok(outcome)
}

async fn rekey_in(
    conn: &mut PgConnection,
    step: &str,
    key_of: &KeyFn<'_>,
    apply: bool,
    at: OffsetDateTime,
) -> StoreResult<RekeyOutcome> {
    // Again under the lock: another node may have finished meanwhile.
    if recorded(conn, step).await? {
        return Ok(RekeyOutcome::already_done());
    }
    let rows = query(
        "SELECT id, email, email_key FROM users
         WHERE octet_length(email) <> char_length(email) ORDER BY id",
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
        let rows = query("SELECT id, email_key FROM users WHERE email_key = ANY($1)")
            .bind(&wanted)
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
        // Keys may change hands (one user takes the key another leaves),
        // and a unique index is checked row by row: every moving user
        // first holds a placeholder, so no moment has a key twice.
        let ids: Vec<&str> = plan.updates.iter().map(|(id, _)| id.as_str()).collect();
        let placeholders: Vec<String> = ids.iter().map(|id| placeholder(id)).collect();
        let keys: Vec<&str> = plan.updates.iter().map(|(_, k)| k.as_str()).collect();
        if !ids.is_empty() {
            for new_keys in [placeholders.iter().map(String::as_str).collect(), keys] {
                query(
                    "UPDATE users AS u SET email_key = v.key
                     FROM UNNEST($1::text[], $2::text[]) AS v(id, key)
                     WHERE u.id = v.id",
                )
                .bind(&ids)
                .bind(new_keys as Vec<&str>)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            }
        }
        if resolved {
            query(
                "INSERT INTO data_migrations (name, done_at) VALUES ($1, $2)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(step)
            .bind(to_millis(at))
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        }
    }
    Ok(outcome(candidates.len() as u64, plan, apply && resolved))
}
