//! `/account`: profile, signed-in devices (each with a sign-out button),
//! sign out everywhere, change password.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::browser::{Via, fresh_family_cookies};
use super::support::{
    Flash, Nav, PageError, SignedIn, SignedInForm, ago, core_message, describe_user_agent,
    parse_query, render, see_other, see_other_with_cookie, see_other_with_cookies, signed_out_to,
    when,
};
use crate::core::accounts::Password;
use crate::core::error::CoreError;
use crate::core::tokens::FIRST_PARTY_CLIENT;
use crate::http::AppState;
use crate::http::cookies::session_cookie;
use crate::http::extract::Client;

struct SessionRow {
    id: String,
    device: String,
    user_agent: String,
    ip: String,
    created: String,
    created_ago: String,
    last_seen: String,
    last_seen_ago: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: Nav,
    flash: Option<Flash>,
    csrf_token: String,
    email: String,
    user_id: String,
    roles: Vec<String>,
    created: String,
    sessions: Vec<SessionRow>,
    password_error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AccountQuery {
    done: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SessionForm {
    session_id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    current_password: String,
    new_password: String,
    confirm_password: String,
}

fn flash_for(done: &str) -> Option<Flash> {
    Some(match done {
        "welcome" => Flash::ok(format!(
            "Welcome to {}! Your account is ready.",
            super::brand::product_name()
        )),
        "password" => Flash::ok("Your password was changed. Every other device was signed out."),
        "session_revoked" => Flash::ok("That device was signed out."),
        "session_gone" => Flash::info("That session had already ended."),
        _ => return None,
    })
}

async fn account_page(
    state: &AppState,
    who: &SignedIn,
    flash: Option<Flash>,
    password_error: Option<String>,
) -> Result<AccountPage, PageError> {
    let user = &who.user;
    let now = state.core.now();
    let mut sessions = match &who.via {
        Via::Session(_) => state
            .core
            .sessions_of(&user.id)
            .await
            .map_err(PageError::core)?
            .into_iter()
            .map(|s| SessionRow {
                current: s.id == who.via.id(),
                device: describe_user_agent(s.user_agent.as_deref()),
                user_agent: s.user_agent.unwrap_or_default(),
                ip: s.ip.unwrap_or_else(|| "unknown".to_owned()),
                created: when(s.created_at),
                created_ago: ago(now, s.created_at),
                last_seen: when(s.last_seen_at),
                last_seen_ago: ago(now, s.last_seen_at),
                id: s.id,
            })
            .collect::<Vec<_>>(),
        // jwt-cookie mode: the devices are refresh families (browsers and
        // apps); "last active" is their last refresh. Families keep no
        // address or user agent.
        Via::Family(_) => state
            .core
            .families_of(&user.id)
            .await
            .map_err(PageError::core)?
            .into_iter()
            .map(|f| SessionRow {
                current: f.family.id == who.via.id(),
                device: if f.family.client_id == FIRST_PARTY_CLIENT {
                    "Browser".to_owned()
                } else {
                    format!("App ({})", f.family.client_id)
                },
                user_agent: String::new(),
                ip: "not recorded".to_owned(),
                created: when(f.family.created_at),
                created_ago: ago(now, f.family.created_at),
                last_seen: when(f.last_used_at),
                last_seen_ago: ago(now, f.last_used_at),
                id: f.family.id,
            })
            .collect::<Vec<_>>(),
    };
    // The device in hand first, then the others newest first (the core's
    // order; the sort is stable).
    sessions.sort_by_key(|s| !s.current);
    Ok(AccountPage {
        nav: who.nav("account"),
        flash,
        csrf_token: who.csrf_token.clone(),
        email: user.email.clone(),
        user_id: user.id.clone(),
        roles: user.roles.clone(),
        created: when(user.created_at),
        sessions,
        password_error,
    })
}

pub async fn page(
    State(state): State<AppState>,
    who: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query: AccountQuery = parse_query(query.as_deref())?;
    let page = account_page(&state, &who, flash_for(&query.done), None).await?;
    Ok(render(StatusCode::OK, &page))
}

/// Signs out one of the user's devices; signing out this one is a logout.
pub async fn revoke_session(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<SessionForm>,
) -> Result<Response, PageError> {
    if form.session_id == who.via.id() {
        who.sign_out(&state).await.map_err(PageError::core)?;
        return Ok(signed_out_to(&state, "/login?done=signed_out"));
    }
    let ended = match who.via {
        Via::Session(_) => {
            state
                .core
                .revoke_session(who.user_id(), &form.session_id)
                .await
        }
        Via::Family(_) => {
            state
                .core
                .end_family_of(who.user_id(), &form.session_id)
                .await
        }
    };
    match ended {
        Ok(()) => Ok(see_other("/account?done=session_revoked")),
        Err(CoreError::NotFound(_)) => Ok(see_other("/account?done=session_gone")),
        Err(e) => Err(PageError::core(e)),
    }
}

/// Ends every session (this one too), refresh family and access token.
pub async fn logout_all(
    State(state): State<AppState>,
    SignedInForm { who, .. }: SignedInForm<super::auth::NoFields>,
) -> Result<Response, PageError> {
    state
        .core
        .logout_all(who.user_id())
        .await
        .map_err(PageError::core)?;
    Ok(signed_out_to(&state, "/login?done=signed_out_everywhere"))
}

/// Changes the password; every other device is signed out and this one
/// gets a fresh session or refresh family (rotation on a privilege
/// change).
pub async fn change_password(
    State(state): State<AppState>,
    Client(client): Client,
    SignedInForm { who, form }: SignedInForm<PasswordForm>,
) -> Result<Response, PageError> {
    if form.current_password.is_empty() || form.new_password.is_empty() {
        return refuse(
            &state,
            &who,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your current password and a new one.".to_owned(),
        )
        .await;
    }
    if form.new_password != form.confirm_password {
        return refuse(
            &state,
            &who,
            StatusCode::UNPROCESSABLE_ENTITY,
            "The two new passwords do not match.".to_owned(),
        )
        .await;
    }
    let session = match &who.via {
        Via::Session(session) => Some(session.as_ref()),
        Via::Family(_) => None,
    };
    let result = state
        .core
        .change_password(
            who.user_id(),
            Password::new(form.current_password),
            Password::new(form.new_password),
            session,
            &client,
        )
        .await;
    match result {
        Ok(Some(new)) => {
            let max_age = (new.auth.session.expires_at - state.core.now()).whole_seconds();
            let cookie = session_cookie(&state.settings, new.secret.expose(), max_age);
            Ok(see_other_with_cookie("/account?done=password", cookie))
        }
        // jwt-cookie mode: every family of the user was revoked, this one
        // too; the browser gets a new one.
        Ok(None) => match fresh_family_cookies(&state, &who.user).await {
            Ok(cookies) => Ok(see_other_with_cookies("/account?done=password", cookies)),
            Err(e) => {
                tracing::warn!(error = %e, "a new refresh family after a password change failed");
                Ok(signed_out_to(&state, "/login?done=password_changed"))
            }
        },
        Err(CoreError::InvalidCredentials) => {
            refuse(
                &state,
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                "The current password is incorrect.".to_owned(),
            )
            .await
        }
        Err(CoreError::Validation(m)) => {
            let message = match m.strip_prefix("password ") {
                Some(rest) => format!("The new password {rest}."),
                None => core_message(&CoreError::Validation(m)).into_owned(),
            };
            refuse(&state, &who, StatusCode::UNPROCESSABLE_ENTITY, message).await
        }
        Err(e) => Err(PageError::core(e)),
    }
}

/// The account page again, with the password form's error.
async fn refuse(
    state: &AppState,
    who: &SignedIn,
    status: StatusCode,
    message: String,
) -> Result<Response, PageError> {
    let page = account_page(state, who, None, Some(message)).await?;
    Ok(render(status, &page))
}
