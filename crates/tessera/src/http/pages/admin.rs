//! `/admin` (role `admin` only): users (search, roles, suspend/reactivate,
//! sign out everywhere; `users`: create, set a password, delete), signing
//! keys (list, rotate), service clients (`clients`: create, disable/enable, new secret, delete) and the audit log
//! (filtered by type and user). Every action is a CSRF-checked form.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::support::{
    Flash, Nav, PageError, SignedIn, SignedInForm, ago, core_message, day, form_status,
    parse_query, render, see_other, signed_out_to, when, with_query,
};
use crate::core::accounts::UserQuery;
use crate::core::accounts::{ADMIN_ROLE, UserStatus};
use crate::core::audit::AUDIT_TYPES;
use crate::core::error::CoreError;
use crate::core::secret::is_id;
use crate::http::AppState;

pub(super) mod clients;
pub(super) mod invitations;
pub(super) mod users;

/// Users per page.
const PAGE_SIZE: u32 = 25;
/// Audit events per page.
const AUDIT_LIMIT: u32 = 50;
const MAX_QUERY_CHARS: usize = 254;

struct UserRow {
    id: String,
    email: String,
    roles_text: String,
    suspended: bool,
    created: String,
    is_self: bool,
    email_verified: bool,
}

struct KeyRow {
    kid: String,
    alg: &'static str,
    created: String,
    created_ago: String,
    status: &'static str,
}

struct EventRow {
    id: String,
    at: String,
    at_ago: String,
    event_type: String,
    user_id: String,
    /// The user's email when the account still exists.
    user_email: String,
    ip: String,
    detail: String,
}

struct TypeOption {
    value: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    nav: Nav,
    flash: Option<Flash>,
    csrf_token: String,
    q: String,
    users: Vec<UserRow>,
    next_page: Option<String>,
    first_page: Option<String>,
    keys: Vec<KeyRow>,
    audit_user: String,
    audit_types: Vec<TypeOption>,
    events: Vec<EventRow>,
    audit_filtered: bool,
    /// Why the filter cannot be applied (an unknown event type).
    audit_error: Option<String>,
    /// Older events (the next page of the audit log).
    audit_next: Option<String>,
    /// Back to the newest events, when on a later page.
    audit_newest: Option<String>,
    clients: Vec<clients::ClientRow>,
    /// A client secret shown once (the answer to creating or rotating).
    shown_secret: Option<clients::ShownSecret>,
    /// A client the admin asked to delete, to confirm first.
    confirm_delete: Option<clients::ClientRow>,
    /// An invitation link shown once (the answer to making it).
    shown_invitation: Option<invitations::ShownInvitation>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct AdminQuery {
    q: String,
    after: String,
    #[serde(rename = "type")]
    event_type: String,
    user: String,
    /// The audit page: events older than this event id.
    before: String,
    done: String,
}

/// The key rotation forms: plain, or retiring the previous keys at once
/// (after a confirmation box).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct KeysForm {
    /// `yes` to retire the previous keys now (key compromise).
    retire_previous: String,
    /// `yes` once the admin ticked the confirmation box.
    confirm: String,
    q: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct UserForm {
    user_id: String,
    roles: String,
    status: String,
    /// The search the admin was looking at, kept across the redirect.
    q: String,
}

fn flash_for(done: &str) -> Option<Flash> {
    Some(match done {
        "roles" => Flash::ok("Roles updated. They apply at the user's next request."),
        "suspended" => Flash::ok("User suspended: every session and token was revoked."),
        "reactivated" => Flash::ok("User reactivated."),
        "revoked" => Flash::ok("The user was signed out everywhere."),
        "rotated" => Flash::ok(
            "A new signing key is active. Earlier keys keep verifying until their tokens expire.",
        ),
        "rotated_retired" => Flash::ok(
            "A new signing key is active and the earlier keys are retired: every token they signed is refused from now on.",
        ),
        _ => return clients::flash_for(done).or_else(|| users::flash_for(done)),
    })
}

fn require_admin(who: &SignedIn) -> Result<(), PageError> {
    if who.user.has_role("admin") {
        Ok(())
    } else {
        Err(PageError::forbidden(
            "This page is for administrators: your account does not have the admin role.",
        )
        .with_nav(who.nav("")))
    }
}

fn clip(s: &str, max: usize) -> String {
    s.trim().chars().take(max).collect()
}

async fn admin_page(
    state: &AppState,
    who: &SignedIn,
    query: &AdminQuery,
    flash: Option<Flash>,
) -> Result<AdminPage, PageError> {
    let now = state.core.now();
    let q = clip(&query.q, MAX_QUERY_CHARS);
    let after = clip(&query.after, 64);
    let after = is_id("usr", &after).then_some(after);
    let mut found = state
        .core
        .list_users(&UserQuery {
            email_contains: (!q.is_empty()).then(|| q.clone()),
            limit: PAGE_SIZE + 1,
            after_id: after.clone(),
        })
        .await
        .map_err(PageError::core)?;
    let more = found.len() > PAGE_SIZE as usize;
    found.truncate(PAGE_SIZE as usize);
    let next_page = match found.last() {
        Some(last) if more => Some(with_query("/admin", &[("q", &q), ("after", &last.id)])),
        _ => None,
    };
    let first_page = after.is_some().then(|| with_query("/admin", &[("q", &q)]));
    let users = found
        .into_iter()
        .map(|u| UserRow {
            roles_text: u.roles.join(" "),
            suspended: u.status == UserStatus::Suspended,
            created: day(u.created_at),
            is_self: u.id == who.user.id,
            // Under `email_verification = off` nothing is flagged.
            email_verified: u.email_verified
                || state.core.email_verification()
                    == crate::core::verification::EmailVerification::Off,
            email: u.email,
            id: u.id,
        })
        .collect();

    let keys = state
        .core
        .key_list()
        .await
        .map_err(PageError::core)?
        .into_iter()
        .map(|k| KeyRow {
            created: when(k.created_at),
            created_ago: ago(now, k.created_at),
            status: k.status.as_str(),
            alg: k.alg,
            kid: k.kid,
        })
        .collect();

    let audit_type = clip(&query.event_type, 64);
    let audit_user = clip(&query.user, 64);
    let before = clip(&query.before, 64);
    let before = is_id("evt", &before).then_some(before);
    // An unknown type matches nothing: say so rather than show an empty log.
    let audit_error = if audit_type.is_empty() {
        None
    } else {
        crate::core::audit::check_type(&audit_type).err()
    };
    let mut events = match audit_error {
        Some(_) => Vec::new(),
        None => state
            .core
            .audit_page(&crate::core::audit::AuditQuery {
                event_type: (!audit_type.is_empty()).then(|| audit_type.clone()),
                user_id: (!audit_user.is_empty()).then(|| audit_user.clone()),
                limit: AUDIT_LIMIT + 1,
                before: before.clone(),
            })
            .await
            .map_err(PageError::core)?,
    };
    let more = events.len() > AUDIT_LIMIT as usize;
    events.truncate(AUDIT_LIMIT as usize);
    let audit_link = |before: &str| {
        let path = with_query(
            "/admin",
            &[
                ("type", audit_type.as_str()),
                ("user", audit_user.as_str()),
                ("before", before),
            ],
        );
        format!("{path}#audit")
    };
    let audit_next = match events.last() {
        Some(last) if more => Some(audit_link(&last.id)),
        _ => None,
    };
    let audit_newest = before.is_some().then(|| audit_link(""));
    // Emails read better than ids: look each distinct user up once.
    let mut emails: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for id in events.iter().filter_map(|e| e.user_id.as_deref()) {
        if !emails.contains_key(id) {
            let email = match state.core.user(id).await {
                Ok(user) => user.email,
                Err(CoreError::NotFound(_)) => String::new(),
                Err(e) => return Err(PageError::core(e)),
            };
            emails.insert(id.to_owned(), email);
        }
    }
    let events = events
        .into_iter()
        .map(|e| {
            let user_id = e.user_id.unwrap_or_default();
            EventRow {
                id: e.id,
                at: when(e.at),
                at_ago: ago(now, e.at),
                user_email: emails.get(&user_id).cloned().unwrap_or_default(),
                user_id,
                ip: e.ip.unwrap_or_default(),
                detail: detail_text(&e.detail),
                event_type: e.event_type,
            }
        })
        .collect();
    let audit_types: Vec<TypeOption> = AUDIT_TYPES
        .iter()
        .map(|t| TypeOption {
            value: (*t).to_owned(),
            selected: *t == audit_type,
        })
        .collect();

    Ok(AdminPage {
        nav: who.nav("admin"),
        flash,
        csrf_token: who.csrf_token.clone(),
        q,
        users,
        next_page,
        first_page,
        keys,
        audit_filtered: !audit_type.is_empty() || !audit_user.is_empty(),
        audit_error,
        audit_next,
        audit_newest,
        audit_user,
        audit_types,
        events,
        clients: clients::rows(state).await?,
        shown_secret: None,
        confirm_delete: None,
        shown_invitation: None,
    })
}

/// An audit event's detail object as `key: value` pairs on one line.
fn detail_text(detail: &serde_json::Value) -> String {
    let text = match detail {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    if text.chars().count() > 160 {
        let mut short: String = text.chars().take(159).collect();
        short.push('…');
        short
    } else {
        text
    }
}

pub async fn page(
    State(state): State<AppState>,
    who: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    let query: AdminQuery = parse_query(query.as_deref())?;
    let page = admin_page(&state, &who, &query, flash_for(&query.done)).await?;
    Ok(render(StatusCode::OK, &page))
}

/// The admin page again with an error at the top (no redirect: the error is
/// the answer to this post).
async fn refuse(
    state: &AppState,
    who: &SignedIn,
    q: &str,
    status: StatusCode,
    message: String,
) -> Result<Response, PageError> {
    let query = AdminQuery {
        q: q.to_owned(),
        ..AdminQuery::default()
    };
    let page = admin_page(state, who, &query, Some(Flash::error(message))).await?;
    Ok(render(status, &page))
}

/// After an action: back to the same search, with the result message.
fn done(form_q: &str, what: &str) -> Response {
    see_other(&with_query(
        "/admin",
        &[("done", what), ("q", &clip(form_q, MAX_QUERY_CHARS))],
    ))
}

pub async fn set_roles(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<UserForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    let roles: Vec<String> = form
        .roles
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    // Whether the admin may take the role from themselves is the core's
    // rule (not while they are the last active admin); the page only words
    // its refusal.
    match state
        .core
        .set_roles_by(Some(&who.user.id), &form.user_id, &roles)
        .await
    {
        // No longer an admin: this page is not theirs any more.
        Ok(user) if user.id == who.user.id && !user.has_role(ADMIN_ROLE) => {
            Ok(see_other("/account"))
        }
        Ok(_) => Ok(done(&form.q, "roles")),
        Err(e) => {
            let action = Some(users::LastAdminAction::RemoveRole);
            users::refused(&state, &who, &form.q, &form.user_id, action, e).await
        }
    }
}

pub async fn set_status(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<UserForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    let Some(status) = UserStatus::parse(form.status.trim()) else {
        return refuse(
            &state,
            &who,
            &form.q,
            StatusCode::UNPROCESSABLE_ENTITY,
            "The status must be active or suspended.".to_owned(),
        )
        .await;
    };
    // Suspending themselves is the core's call too (not while they are the
    // last active admin).
    match state
        .core
        .set_status_by(Some(&who.user.id), &form.user_id, status)
        .await
    {
        // That ended this browser's session.
        Ok(user) if user.id == who.user.id && status == UserStatus::Suspended => {
            Ok(users::signed_out(&state))
        }
        Ok(_) => Ok(done(
            &form.q,
            match status {
                UserStatus::Suspended => "suspended",
                UserStatus::Active => "reactivated",
            },
        )),
        Err(e) => {
            let action = Some(users::LastAdminAction::Suspend);
            users::refused(&state, &who, &form.q, &form.user_id, action, e).await
        }
    }
}

/// Signs a user out everywhere (sessions, refresh families, access tokens).
pub async fn revoke_user(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<UserForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    if let Err(e) = state
        .core
        .revoke_user_by(who.user_id(), &form.user_id)
        .await
    {
        if matches!(e, CoreError::Unavailable | CoreError::Unauthenticated) {
            return Err(PageError::core(e));
        }
        let status = form_status(&e);
        return refuse(&state, &who, &form.q, status, core_message(&e).into_owned()).await;
    }
    if form.user_id == who.user.id {
        // That included this browser's session.
        return Ok(signed_out_to(&state, "/login?done=signed_out_everywhere"));
    }
    Ok(done(&form.q, "revoked"))
}

/// Rotates the signing key; with `retire_previous=yes` (and the
/// confirmation box ticked) the earlier keys are retired at once.
pub async fn rotate_keys(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<KeysForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    let retire_previous = form.retire_previous == "yes";
    if retire_previous && form.confirm != "yes" {
        return refuse(
            &state,
            &who,
            &form.q,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Tick the box to confirm: retiring the previous keys refuses every access token they signed at once. Nothing was changed.".to_owned(),
        )
        .await;
    }
    match state
        .core
        .rotate_keys_with(Some(who.user_id()), retire_previous)
        .await
    {
        Ok(_) if retire_previous => Ok(done(&form.q, "rotated_retired")),
        Ok(_) => Ok(done(&form.q, "rotated")),
        Err(e @ CoreError::Validation(_)) => {
            refuse(
                &state,
                &who,
                &form.q,
                StatusCode::UNPROCESSABLE_ENTITY,
                core_message(&e).into_owned(),
            )
            .await
        }
        Err(e) => Err(PageError::core(e)),
    }
}
