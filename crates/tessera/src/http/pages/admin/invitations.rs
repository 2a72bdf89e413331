//! The "Invite someone" form of `/admin`'s Users section: an invitation to
//! register (needed under `registration = invite`), mailed to the address
//! unless the admin unticks it. The link is never put in a URL: the answer
//! to the post is the admin page itself, with the link shown once at the
//! top (`no-store`, like every page), for the admin to hand over.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::super::support::{PageError, SignedInForm, core_message, form_status, render, when};
use super::{AdminQuery, admin_page, refuse, require_admin};
use crate::core::error::CoreError;
use crate::http::AppState;

/// An invitation shown this once, at the top of the page.
pub(super) struct ShownInvitation {
    pub(super) email: String,
    pub(super) url: String,
    pub(super) expires: String,
    pub(super) mailed: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InviteForm {
    email: String,
    roles: String,
    /// `yes` when the "mail it" box is ticked (an unticked box sends
    /// nothing).
    mail: String,
}

/// `POST /admin/users/invite` `email`, `roles`, `mail=yes`.
pub async fn create(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<InviteForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    let roles: Vec<String> = form
        .roles
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    let mail = form.mail == "yes";
    match state
        .core
        .invite_by(Some(who.user_id()), &form.email, &roles, mail)
        .await
    {
        Ok(invitation) => {
            let mut page = admin_page(&state, &who, &AdminQuery::default(), None).await?;
            page.shown_invitation = Some(ShownInvitation {
                email: form.email.trim().to_owned(),
                url: invitation.url,
                expires: when(invitation.expires_at),
                mailed: invitation.mailed,
            });
            Ok(render(StatusCode::OK, &page))
        }
        Err(e @ (CoreError::Unavailable | CoreError::Busy | CoreError::Unauthenticated)) => {
            Err(PageError::core(e))
        }
        Err(e) => {
            refuse(
                &state,
                &who,
                "",
                form_status(&e),
                core_message(&e).into_owned(),
            )
            .await
        }
    }
}
