//! `POST /v1/admin/invitations`: an administrator invites an address to
//! register (role `admin`, by session + CSRF or Bearer). The answer carries
//! the one-time link (`/register?invitation=…`, built from the public URL)
//! for the administrator to hand over; with `"mail": true` (the default)
//! it is also mailed to the address. The core audits
//! `invitation_created`, never with the link.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::admin::Admin;
use crate::http::AppState;
use crate::http::api::responses::{
    BadJson, EmailTaken, JsonBodyErrors, NotAdminOrCsrfFailed, StoreDown, Unauthenticated,
};
use crate::http::error::ApiResult;
use crate::http::extract::Json;
use crate::http::openapi as doc;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    /// The address invited: only a registration with it can use the link.
    #[schema(schema_with = doc::email_schema)]
    email: String,
    /// The roles the new account gets (default none).
    #[schema(schema_with = doc::roles_schema)]
    roles: Option<Vec<String>>,
    /// Mail the link to the address too (default `true`). A mailed
    /// invitation also verifies the address when it is used.
    mail: Option<bool>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InvitationCreated {
    /// The one-time registration link; give it to the invited person only.
    #[schema(
        example = "https://auth.example.com/register?invitation=Jm2fQ0u1bq3o8yqQ7pVf0AJm2fQ0u1bq3o8yqQ7pVf0"
    )]
    url: String,
    #[schema(value_type = String, format = DateTime)]
    expires_at: String,
    /// Whether the link was mailed to the address.
    mailed: bool,
}

/// Invites an address to register (needed under `registration = invite`).
#[utoipa::path(
    post,
    path = "/v1/admin/invitations",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)")),
    request_body(content = NewInvitation, content_type = "application/json"),
    responses(
        (status = 201, description = "The invitation (audited `invitation_created`, the administrator as `detail.actor`); single use, bound to the address, valid for `invitation_ttl` (7 days by default)", body = InvitationCreated),
        BadJson,
        Unauthenticated,
        NotAdminOrCsrfFailed,
        EmailTaken,
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: an unknown field, a field of the wrong type, the email is not valid, or a role is not valid", body = doc::Error),
        StoreDown,
    ),
)]
pub async fn create_invitation(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(body): Json<NewInvitation>,
) -> ApiResult<Response> {
    let invitation = state
        .core
        .invite_by(
            Some(admin.user_id()),
            &body.email,
            &body.roles.unwrap_or_default(),
            body.mail.unwrap_or(true),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(InvitationCreated {
            url: invitation.url,
            expires_at: crate::core::time::rfc3339(invitation.expires_at),
            mailed: invitation.mailed,
        }),
    )
        .into_response())
}
