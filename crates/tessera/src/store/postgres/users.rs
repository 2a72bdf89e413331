//! The guarded writes to users on PostgreSQL ([`UserStore::set_roles`],
//! [`UserStore::set_status`], [`UserStore::delete_user`]), under READ
//! COMMITTED like the rest of this store.
//!
//! Each is one transaction that first locks the user's row (`FOR UPDATE`,
//! so the row it decides on is the row it writes). A write that takes a
//! role away from an active holder then takes a transaction-scoped advisory
//! lock ([`HOLDERS_LOCK`]) before it looks for another active holder: every
//! such write, on any node, queues on that lock, and since each statement
//! under READ COMMITTED sees everything committed before it started, the
//! second of two racing writes counts the holders after the first one
//! committed. Two admins demoting each other at the same moment: one wins,
//! the other is refused. Writes that keep or add holders take no lock.
//!
//! [`UserStore::set_roles`]: crate::store::UserStore::set_roles
//! [`UserStore::set_status`]: crate::store::UserStore::set_status
//! [`UserStore::delete_user`]: crate::store::UserStore::delete_user

use sqlx::postgres::PgConnection;
use sqlx::{Row, query};

use super::{PostgresStore, USER_COLUMNS, backend, unstorable, user_from_row};
use crate::core::time::to_millis;
use crate::store::guard::Write;
use crate::store::{StoreError, StoreResult, UserWrite, forget};

/// The advisory lock that serialises writes taking a role away from an
/// active holder ("tessera" and a number, apart from the logs' and the key
/// rotation's).
const HOLDERS_LOCK: i64 = 0x7465_7373_6572_6141;

pub(super) async fn guarded(
    store: &PostgresStore,
    id: &str,
    keep: Option<&str>,
    write: Write<'_>,
) -> StoreResult<UserWrite> {
    if unstorable(&[id]) {
        return Ok(UserWrite::NoSuchUser);
    }
    // A role with a NUL cannot be held by anyone: nothing to keep.
    let keep = keep.filter(|role| !unstorable(&[role]));
    let mut tx = store.pool.begin().await.map_err(backend)?;
    let outcome = guarded_in(&mut tx, id, keep, &write).await?;
    if outcome == UserWrite::Done {
        tx.commit().await.map_err(backend)?;
    } else {
        tx.rollback().await.map_err(backend)?;
    }
    Ok(outcome)
}

async fn guarded_in(
    conn: &mut PgConnection,
    id: &str,
    keep: Option<&str>,
    write: &Write<'_>,
) -> StoreResult<UserWrite> {
    let row = query(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS}, email_key FROM users WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    let Some(row) = row else {
        return Ok(UserWrite::NoSuchUser);
    };
    let user = user_from_row(&row)?;
    if let Some(role) = keep
        && write.takes_away(&user, role)
    {
        query("SELECT pg_advisory_xact_lock($1)")
            .bind(HOLDERS_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        let other = query(
            "SELECT 1 FROM users WHERE id <> $1 AND status = 'active' AND $2 = ANY(roles) LIMIT 1",
        )
        .bind(id)
        .bind(role)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
        if other.is_none() {
            return Ok(UserWrite::LastHolder);
        }
    }
    match write {
        Write::Roles(roles, at) => {
            query("UPDATE users SET roles = $1, updated_at = $2 WHERE id = $3")
                .bind(*roles)
                .bind(to_millis(*at))
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
        Write::Status(status, at) => {
            query("UPDATE users SET status = $1, updated_at = $2 WHERE id = $3")
                .bind(status.as_str())
                .bind(to_millis(*at))
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
        Write::Delete => {
            let email_key: String = row.try_get("email_key").map_err(backend)?;
            forget_email(conn, id, &forget::forms(&user.email, &email_key)).await?;
            // Sessions and refresh families (and so their tokens) go with
            // the row: ON DELETE CASCADE.
            query("DELETE FROM users WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
    }
    Ok(UserWrite::Done)
}

/// The user's audit events lose every string that mentions the email, or
/// an address they recorded as the user's (see [`forget`]); only events
/// holding an at sign are read.
async fn forget_email(conn: &mut PgConnection, id: &str, forms: &[String]) -> StoreResult<()> {
    let any_at = forget::AT_SIGNS
        .iter()
        .map(|c| {
            format!(
                "strpos(detail::text, '{c}') > 0 OR strpos(coalesce(user_agent, ''), '{c}') > 0"
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let rows = query(sqlx::AssertSqlSafe(format!(
        "SELECT id, user_agent, detail::text AS detail FROM audit_events
         WHERE user_id = $1 AND ({any_at})"
    )))
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let event: String = row.try_get("id").map_err(backend)?;
        let user_agent: Option<String> = row.try_get("user_agent").map_err(backend)?;
        let detail: String = row.try_get("detail").map_err(backend)?;
        let detail: serde_json::Value = serde_json::from_str(&detail)
            .map_err(|e| StoreError::Backend(format!("bad detail column: {e}")))?;
        events.push((event, user_agent, detail));
    }
    let mut forms = forms.to_vec();
    for (_, _, detail) in &events {
        forget::add_recorded(&mut forms, detail);
    }
    for (event, user_agent, mut detail) in events {
        let scrubbed_detail = forget::scrub(&mut detail, &forms);
        let scrubbed_agent = forget::scrub_text(user_agent.as_deref(), &forms);
        if !scrubbed_detail && scrubbed_agent.is_none() {
            continue;
        }
        query("UPDATE audit_events SET detail = $1::jsonb, user_agent = $2 WHERE id = $3")
            .bind(detail.to_string())
            .bind(scrubbed_agent.or(user_agent))
            .bind(&event)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}
