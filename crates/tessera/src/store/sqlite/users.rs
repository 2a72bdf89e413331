//! The guarded writes to users on SQLite ([`UserStore::set_roles`],
//! [`UserStore::set_status`], [`UserStore::delete_user`]): each is one
//! `BEGIN IMMEDIATE` transaction, which takes the database's write lock
//! before it reads anything, so the check for the last active holder of a
//! role and the write see and change one state that no other writer, in
//! this process or another, interleaves with.
//!
//! [`UserStore::set_roles`]: crate::store::UserStore::set_roles
//! [`UserStore::set_status`]: crate::store::UserStore::set_status
//! [`UserStore::delete_user`]: crate::store::UserStore::delete_user

use sqlx::{Row, SqliteConnection, query};

use super::{SqliteStore, USER_COLUMNS, backend, user_from_row};
use crate::core::time::to_millis;
use crate::store::guard::Write;
use crate::store::{StoreError, StoreResult, UserWrite, forget};

pub(super) async fn guarded(
    store: &SqliteStore,
    id: &str,
    keep: Option<&str>,
    write: Write<'_>,
) -> StoreResult<UserWrite> {
    let mut tx = store
        .write
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(backend)?;
    let outcome = guarded_in(&mut tx, id, keep, &write).await?;
    if outcome == UserWrite::Done {
        tx.commit().await.map_err(backend)?;
    } else {
        tx.rollback().await.map_err(backend)?;
    }
    Ok(outcome)
}

async fn guarded_in(
    conn: &mut SqliteConnection,
    id: &str,
    keep: Option<&str>,
    write: &Write<'_>,
) -> StoreResult<UserWrite> {
    let row = query(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS}, email_key FROM users WHERE id = ?"
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
        && !other_holder(conn, id, role).await?
    {
        return Ok(UserWrite::LastHolder);
    }
    match write {
        Write::Roles(roles, at) => {
            let roles =
                serde_json::to_string(roles).map_err(|e| StoreError::Backend(e.to_string()))?;
            query("UPDATE users SET roles = ?, updated_at = ? WHERE id = ?")
                .bind(roles)
                .bind(to_millis(*at))
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
        Write::Status(status, at) => {
            query("UPDATE users SET status = ?, updated_at = ? WHERE id = ?")
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
            query("DELETE FROM users WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
    }
    Ok(UserWrite::Done)
}

/// Whether a user other than `id` is an active holder of `role`.
async fn other_holder(conn: &mut SqliteConnection, id: &str, role: &str) -> StoreResult<bool> {
    let row = query(
        "SELECT 1 FROM users AS u, json_each(u.roles) AS r
         WHERE u.id <> ? AND u.status = 'active' AND r.value = ? LIMIT 1",
    )
    .bind(id)
    .bind(role)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(row.is_some())
}

/// The user's audit events lose every string that mentions the email, or
/// an address they recorded as the user's (see [`forget`]); only events
/// holding an at sign are read.
async fn forget_email(conn: &mut SqliteConnection, id: &str, forms: &[String]) -> StoreResult<()> {
    let any_at = forget::AT_SIGNS
        .iter()
        .map(|c| format!("instr(detail, '{c}') > 0 OR instr(coalesce(user_agent, ''), '{c}') > 0"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let rows = query(sqlx::AssertSqlSafe(format!(
        "SELECT id, user_agent, detail FROM audit_events WHERE user_id = ? AND ({any_at})"
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
        query("UPDATE audit_events SET detail = ?, user_agent = ? WHERE id = ?")
            .bind(detail.to_string())
            .bind(scrubbed_agent.or(user_agent))
            .bind(&event)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}
