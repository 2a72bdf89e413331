//! The JSON shapes of the contract's objects.

use serde::Serialize;
use time::OffsetDateTime;

use crate::core::accounts::User;
use crate::core::sessions::{SessionPolicy, SessionRecord};
use crate::core::time::serde_rfc3339;

/// The contract's session object.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView<'a> {
    /// `ses_…` (in jwt-cookie mode, the refresh family's id).
    #[schema(example = "ses_Qe6L0m2cQy8p9v1rX3aT5w")]
    pub id: &'a str,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: OffsetDateTime,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub idle_expires_at: OffsetDateTime,
}

impl<'a> SessionView<'a> {
    pub fn new(s: &'a SessionRecord, policy: &SessionPolicy) -> Self {
        Self {
            id: &s.id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            idle_expires_at: policy.idle_expires_at(s),
        }
    }
}

/// `{user, session, csrf_token}`: the answer to a login and to `GET /v1/session`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionState<'a> {
    pub user: &'a User,
    pub session: SessionView<'a>,
    /// Send it back as `X-CSRF-Token` on unsafe requests made with the cookie.
    pub csrf_token: &'a str,
}

/// One row of `GET /v1/sessions`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionListItem<'a> {
    pub id: &'a str,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: OffsetDateTime,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// Whether this is the session (or refresh family) the request used.
    pub current: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionList<'a> {
    pub sessions: Vec<SessionListItem<'a>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserEnvelope<'a> {
    pub user: &'a User,
}
