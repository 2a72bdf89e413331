//! The audit log: who did what, when, from where. Never a password, token,
//! session id or secret: events carry ids and a small detail object only.
//! Recording failures are logged and do not fail the request that caused them.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::Tessera;
use super::secret::new_id;
use super::sessions::ClientInfo;
use super::time::serde_rfc3339;

/// Every audit event type Tessera records (the contract's list, plus
/// `user_reactivated`, `password_change_failed`: a wrong current
/// password at a password change, counted and limited like a failed
/// login, `email_changed`: an administrator gave a user a new email, and
/// `key_created`: the deployment's first signing key, which rotates
/// nothing out).
pub const AUDIT_TYPES: &[&str] = &[
    "login_succeeded",
    "login_failed",
    "logout",
    "logout_all",
    "session_revoked",
    "refresh_rotated",
    "refresh_reuse_detected",
    "token_revoked",
    "password_changed",
    "password_change_failed",
    "roles_changed",
    "user_suspended",
    "user_reactivated",
    "user_created",
    "user_deleted",
    "password_reset",
    "email_verified",
    "email_changed",
    "invitation_created",
    "key_created",
    "key_rotated",
    "rate_limited",
    "client_created",
    "client_changed",
    "mail_failed",
];

/// A page request for the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub event_type: Option<String>,
    pub user_id: Option<String>,
    pub limit: u32,
    /// The id of the last event of the previous page.
    pub before: Option<String>,
}

/// Refuses an audit type filter that names no known type, with a message
/// listing the known ones (an unknown filter would otherwise match nothing
/// and look like an empty log).
pub fn check_type(event_type: &str) -> Result<(), String> {
    if AUDIT_TYPES.contains(&event_type) {
        Ok(())
    } else {
        let shown: String = event_type.chars().take(40).collect();
        Err(format!(
            "unknown audit event type {shown:?}; known types: {}",
            AUDIT_TYPES.join(", ")
        ))
    }
}

/// A page of the audit log oldest first (for exports): events at or after
/// `since`, strictly after the `after` position (the `(at, id)` of the
/// last event of the previous page).
#[derive(Debug, Clone, Default)]
pub struct AuditExportQuery {
    pub event_type: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub after: Option<(OffsetDateTime, String)>,
    pub limit: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    #[schema(example = "evt_Jm2fQ0u1bq3o8yqQ7pVf0A")]
    pub id: String,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// One of the audit types (`login_succeeded`, `login_failed`, `logout`, …).
    #[serde(rename = "type")]
    pub event_type: String,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Ids and small facts about the event; never a secret.
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl Tessera {
    /// An event stamped now, for stores that record it themselves (in the
    /// same transaction as the change it describes).
    pub(crate) fn audit_event(
        &self,
        event_type: &'static str,
        user_id: Option<&str>,
        client: Option<&ClientInfo>,
        detail: Value,
    ) -> AuditEvent {
        AuditEvent {
            id: new_id("evt"),
            at: self.now(),
            event_type: event_type.to_owned(),
            user_id: user_id.map(str::to_owned),
            ip: client.and_then(|c| c.ip.clone()),
            user_agent: client.and_then(|c| c.user_agent.clone()),
            detail,
        }
    }

    pub(crate) async fn audit(
        &self,
        event_type: &'static str,
        user_id: Option<&str>,
        client: Option<&ClientInfo>,
        detail: Value,
    ) {
        let event = self.audit_event(event_type, user_id, client, detail);
        if let Err(e) = self.stores.audit.record(&event).await {
            tracing::error!(error = %e, event = event_type, "could not record an audit event");
        }
    }

    /// Audit events, newest first.
    pub async fn audit_events(
        &self,
        event_type: Option<&str>,
        user_id: Option<&str>,
        limit: u32,
    ) -> super::error::CoreResult<Vec<AuditEvent>> {
        self.audit_page(&AuditQuery {
            event_type: event_type.map(str::to_owned),
            user_id: user_id.map(str::to_owned),
            limit,
            before: None,
        })
        .await
    }

    /// One page of the audit log.
    /// A page of the audit log, each parameter bounded first (see
    /// [`Tessera::list_users`]).
    pub async fn audit_page(
        &self,
        query: &AuditQuery,
    ) -> super::error::CoreResult<Vec<AuditEvent>> {
        use super::accounts::{ID_MAX_LEN, check_len};
        check_len("type", query.event_type.as_deref(), ID_MAX_LEN)?;
        check_len("user_id", query.user_id.as_deref(), ID_MAX_LEN)?;
        check_len("before", query.before.as_deref(), ID_MAX_LEN)?;
        Ok(self.stores.audit.audit_events(query).await?)
    }

    /// A page of the audit log oldest first, for exports: page on by
    /// passing the last event's `(at, id)` as `after`.
    pub async fn audit_export_page(
        &self,
        query: &AuditExportQuery,
    ) -> super::error::CoreResult<Vec<AuditEvent>> {
        if let Some(t) = query.event_type.as_deref() {
            check_type(t).map_err(super::error::CoreError::Validation)?;
        }
        Ok(self.stores.audit.audit_events_oldest_first(query).await?)
    }

    /// Drops events past the retention period.
    pub(crate) async fn prune_audit(&self) {
        let before = self.now() - self.audit_retention;
        match self.stores.audit.prune_audit(before).await {
            Ok(n) if n > 0 => tracing::info!(count = n, "old audit events deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
        }
    }
}
