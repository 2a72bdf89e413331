//! The user forms of `/admin` beyond roles and status: create a user, set a
//! user's password, delete a user (after ticking a confirmation box); and
//! the words for the last-admin rule, which the core enforces for every
//! door and these pages only explain ([`last_admin_message`]).
//!
//! Every form is CSRF-checked like the rest of the page ([`SignedInForm`])
//! and acts as the signed-in admin (the audit log's `detail.actor`). A
//! password typed here is handed to the core and never echoed back: a
//! refused form comes back with its password fields empty.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::super::support::{
    Flash, PageError, SignedIn, SignedInForm, core_message, form_status, signed_out_to,
};
use super::{done, refuse, require_admin};
use crate::core::accounts::{NewAccount, Password};
use crate::core::error::CoreError;
use crate::core::secret::BearerSecret;
use crate::http::AppState;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NewUserForm {
    email: String,
    /// Separated by spaces or commas.
    roles: String,
    password: String,
    confirm_password: String,
    /// The search the admin was looking at, kept across the redirect.
    q: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    user_id: String,
    password: String,
    confirm_password: String,
    q: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EmailForm {
    user_id: String,
    email: String,
    q: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DeleteForm {
    user_id: String,
    /// `yes` once the admin ticked the confirmation box.
    confirm: String,
    q: String,
}

/// What the admin tried on the last active admin.
#[derive(Clone, Copy)]
pub(super) enum LastAdminAction {
    RemoveRole,
    Suspend,
    Delete,
}

/// The core's `last_admin` refusal in the admin's words: whose account it
/// is, what was refused, and the way out.
pub(super) fn last_admin_message(action: LastAdminAction, is_self: bool) -> String {
    let what = match (action, is_self) {
        (LastAdminAction::RemoveRole, true) => "you cannot remove your own admin role",
        (LastAdminAction::RemoveRole, false) => "the admin role cannot be removed from them",
        (LastAdminAction::Suspend, true) => "you cannot suspend your own account",
        (LastAdminAction::Suspend, false) => "they cannot be suspended",
        (LastAdminAction::Delete, true) => "you cannot delete your own account",
        (LastAdminAction::Delete, false) => "they cannot be deleted",
    };
    let who = if is_self {
        "You are the last active administrator"
    } else {
        "This is the last active administrator"
    };
    format!("{who}: {what}. Give another active user the admin role first.")
}

/// A refused user form: the page again with the error, or the error page
/// when the store is down or the admin's own session ended meanwhile.
pub(super) async fn refused(
    state: &AppState,
    who: &SignedIn,
    q: &str,
    target: &str,
    action: Option<LastAdminAction>,
    e: CoreError,
) -> Result<Response, PageError> {
    match (e, action) {
        (e @ (CoreError::Unavailable | CoreError::Unauthenticated), _) => Err(PageError::core(e)),
        (CoreError::LastAdmin, Some(action)) => {
            let message = last_admin_message(action, target == who.user_id());
            refuse(state, who, q, StatusCode::CONFLICT, message).await
        }
        (e, _) => {
            let status = form_status(&e);
            refuse(state, who, q, status, core_message(&e).into_owned()).await
        }
    }
}

/// After the admin's own sessions ended (their own password set, their
/// own account deleted or suspended): to the login page, cookies dropped.
pub(super) fn signed_out(state: &AppState) -> Response {
    signed_out_to(state, "/login?done=signed_out_everywhere")
}

pub(super) fn flash_for(done: &str) -> Option<Flash> {
    Some(match done {
        "created" => Flash::ok("User created. They can sign in with the password you gave."),
        "created_mailed" => Flash::ok(
            "User created. They were mailed a link to choose their password; until then no password works.",
        ),
        "password" => Flash::ok(
            "Password set: every session, refresh token and access token of the user was revoked.",
        ),
        "email" => Flash::ok(
            "Email changed: it is their login from now on. It is not verified yet; unless verification is off, the new address was mailed a link.",
        ),
        "deleted" => Flash::ok(
            "User deleted: every session and token ended, and the audit log no longer shows their email.",
        ),
        _ => return None,
    })
}

fn split_roles(roles: &str) -> Vec<String> {
    roles
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Creates a user with the password the admin typed twice or, with both
/// password fields left empty, with a password nobody knows and a mailed
/// link to choose one (as `POST /v1/admin/users` without a password).
pub async fn create(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<NewUserForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    let mail_link = form.password.is_empty() && form.confirm_password.is_empty();
    let problem = if form.email.trim().is_empty() {
        Some("Enter the new user's email.")
    } else if form.password != form.confirm_password {
        Some("The two passwords do not match.")
    } else {
        None
    };
    if let Some(problem) = problem {
        return refuse(
            &state,
            &who,
            &form.q,
            StatusCode::UNPROCESSABLE_ENTITY,
            problem.to_owned(),
        )
        .await;
    }
    let password = if mail_link {
        Password::new(BearerSecret::generate().expose().to_owned())
    } else {
        Password::new(form.password)
    };
    let created = state
        .core
        .create_user_by(
            Some(who.user_id()),
            NewAccount {
                email: form.email,
                password,
                roles: split_roles(&form.roles),
            },
        )
        .await;
    let user = match created {
        Ok(user) => user,
        Err(e) => return refused(&state, &who, &form.q, "", None, e).await,
    };
    if !mail_link {
        if let Err(e) = state.core.mail_verification_link(&user).await {
            return refused(&state, &who, &form.q, &user.id, None, e).await;
        }
        return Ok(done(&form.q, "created"));
    }
    match state.core.mail_welcome_link_to(&user).await {
        Ok(()) => Ok(done(&form.q, "created_mailed")),
        Err(e) => refused(&state, &who, &form.q, &user.id, None, e).await,
    }
}

/// Sets a user's password; every session and token of theirs ends.
pub async fn set_password(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<PasswordForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    if form.password.is_empty() || form.password != form.confirm_password {
        let problem = if form.password.is_empty() {
            "Enter the new password twice."
        } else {
            "The two passwords do not match."
        };
        return refuse(
            &state,
            &who,
            &form.q,
            StatusCode::UNPROCESSABLE_ENTITY,
            problem.to_owned(),
        )
        .await;
    }
    let set = state
        .core
        .set_password_by(
            Some(who.user_id()),
            &form.user_id,
            Password::new(form.password),
        )
        .await;
    match set {
        // That ended this browser's session too.
        Ok(_) if form.user_id == who.user_id() => Ok(signed_out(&state)),
        Ok(_) => Ok(done(&form.q, "password")),
        Err(e) => refused(&state, &who, &form.q, &form.user_id, None, e).await,
    }
}

/// Gives a user a new email (as `PATCH /v1/admin/users/{id}` `{email}`):
/// unverified, with a link mailed to it unless verification is off.
pub async fn set_email(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<EmailForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    let changed = state
        .core
        .set_email_by(Some(who.user_id()), &form.user_id, &form.email)
        .await;
    let user = match changed {
        Ok(user) => user,
        Err(e) => return refused(&state, &who, &form.q, &form.user_id, None, e).await,
    };
    match state.core.mail_verification_link(&user).await {
        Ok(()) => Ok(done(&form.q, "email")),
        Err(e) => refused(&state, &who, &form.q, &form.user_id, None, e).await,
    }
}

/// Deletes a user once the admin ticked the confirmation box.
pub async fn delete(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<DeleteForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    if form.confirm != "yes" {
        return refuse(
            &state,
            &who,
            &form.q,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Tick the box to confirm the deletion: it cannot be undone.".to_owned(),
        )
        .await;
    }
    let deleted = state
        .core
        .delete_user_by(Some(who.user_id()), &form.user_id)
        .await;
    match deleted {
        Ok(_) if form.user_id == who.user_id() => Ok(signed_out(&state)),
        Ok(_) => Ok(done(&form.q, "deleted")),
        Err(e) => {
            refused(
                &state,
                &who,
                &form.q,
                &form.user_id,
                Some(LastAdminAction::Delete),
                e,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_admin_is_explained_from_the_admins_side() {
        assert_eq!(
            last_admin_message(LastAdminAction::RemoveRole, true),
            "You are the last active administrator: you cannot remove your own admin role. Give another active user the admin role first."
        );
        assert_eq!(
            last_admin_message(LastAdminAction::Delete, false),
            "This is the last active administrator: they cannot be deleted. Give another active user the admin role first."
        );
    }
}
