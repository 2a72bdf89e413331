//! The "Service clients" section of `/admin`: the list (id, name, created,
//! state) and its forms: create a client, disable or enable one, give one a
//! new secret, delete one (after a confirmation step). Every form is
//! CSRF-checked like the rest of the page ([`SignedInForm`]) and acts as the
//! signed-in admin (the audit log's actor). A new secret is never put in a
//! URL: the answer to the post that made it is the admin page itself, with
//! the secret shown once at the top (`no-store`, like every page).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::super::support::{
    Flash, PageError, SignedIn, SignedInForm, core_message, day, form_status, render, see_other,
};
use super::{AdminQuery, admin_page, refuse, require_admin};
use crate::core::clients::{Actor, NewClient, ServiceClient};
use crate::core::error::CoreError;
use crate::core::secret::BearerSecret;
use crate::http::AppState;

/// One client in the section's table.
pub(super) struct ClientRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) created: String,
    pub(super) disabled: bool,
}

impl From<ServiceClient> for ClientRow {
    fn from(c: ServiceClient) -> Self {
        Self {
            created: day(c.created_at),
            disabled: c.disabled(),
            id: c.id,
            name: c.name,
        }
    }
}

/// A secret shown this once, at the top of the page that answers the post
/// which made it.
pub(super) struct ShownSecret {
    pub(super) client_id: String,
    pub(super) name: String,
    pub(super) secret: BearerSecret,
    /// A rotation (the old secret stopped working), not a creation.
    pub(super) rotated: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ClientForm {
    client_id: String,
    name: String,
    /// `true` or `false` (the state to set).
    disabled: String,
    /// `yes` once the admin confirmed a deletion.
    confirm: String,
}

/// The section's rows, oldest client first.
pub(super) async fn rows(state: &AppState) -> Result<Vec<ClientRow>, PageError> {
    let clients = state.core.list_clients().await.map_err(PageError::core)?;
    Ok(clients.into_iter().map(ClientRow::from).collect())
}

/// The result messages of the section's redirects (`/admin?done=…`).
pub(super) fn flash_for(done: &str) -> Option<Flash> {
    Some(match done {
        "client_disabled" => Flash::ok(
            "Service client disabled: it is refused from its next request on. Enable it to let it back in.",
        ),
        "client_enabled" => Flash::ok("Service client enabled: its secret works again."),
        "client_deleted" => {
            Flash::ok("Service client deleted: it is refused from its next request on.")
        }
        _ => return None,
    })
}

fn actor(who: &SignedIn) -> Actor {
    Actor::User(who.user_id().to_owned())
}

/// A failed client action: the page again with the error at the top, or
/// the error page when the store is down.
async fn refused(state: &AppState, who: &SignedIn, e: CoreError) -> Result<Response, PageError> {
    match e {
        CoreError::Unavailable | CoreError::Busy | CoreError::Unauthenticated => {
            Err(PageError::core(e))
        }
        e => {
            let status = form_status(&e);
            refuse(state, who, "", status, core_message(&e).into_owned()).await
        }
    }
}

/// The admin page with a new secret shown at the top.
async fn show_secret(
    state: &AppState,
    who: &SignedIn,
    new: NewClient,
    rotated: bool,
) -> Result<Response, PageError> {
    let mut page = admin_page(state, who, &AdminQuery::default(), None).await?;
    page.shown_secret = Some(ShownSecret {
        client_id: new.client.id,
        name: new.client.name,
        secret: new.secret,
        rotated,
    });
    Ok(render(StatusCode::OK, &page))
}

/// `POST /admin/clients/create` `name`: a new client, its secret shown once.
pub async fn create(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<ClientForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    match state
        .core
        .create_client_by(Some(&actor(&who)), &form.name)
        .await
    {
        Ok(new) => show_secret(&state, &who, new, false).await,
        Err(e) => refused(&state, &who, e).await,
    }
}

/// `POST /admin/clients/status` `client_id`, `disabled=true|false`.
pub async fn set_status(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<ClientForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    let disabled = match form.disabled.trim() {
        "true" => true,
        "false" => false,
        _ => {
            return refuse(
                &state,
                &who,
                "",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Choose whether to disable or enable the client.".to_owned(),
            )
            .await;
        }
    };
    match state
        .core
        .set_client_disabled(&actor(&who), &form.client_id, disabled)
        .await
    {
        Ok(_) if disabled => Ok(see_other("/admin?done=client_disabled#clients")),
        Ok(_) => Ok(see_other("/admin?done=client_enabled#clients")),
        Err(e) => refused(&state, &who, e).await,
    }
}

/// `POST /admin/clients/secret` `client_id`: a new secret, shown once; the
/// old one stops working at once.
pub async fn rotate_secret(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<ClientForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    match state
        .core
        .rotate_client_secret(&actor(&who), &form.client_id)
        .await
    {
        Ok(new) => show_secret(&state, &who, new, true).await,
        Err(e) => refused(&state, &who, e).await,
    }
}

/// `POST /admin/clients/delete` `client_id`: without `confirm=yes`, the
/// page asks first (nothing is deleted); with it, the client is deleted.
pub async fn delete(
    State(state): State<AppState>,
    SignedInForm { who, form }: SignedInForm<ClientForm>,
) -> Result<Response, PageError> {
    require_admin(&who)?;
    if form.confirm != "yes" {
        let client = match state.core.client(&form.client_id).await {
            Ok(client) => client,
            Err(e) => return refused(&state, &who, e).await,
        };
        let mut page = admin_page(&state, &who, &AdminQuery::default(), None).await?;
        page.confirm_delete = Some(ClientRow::from(client));
        return Ok(render(StatusCode::OK, &page));
    }
    match state
        .core
        .delete_client(&actor(&who), &form.client_id)
        .await
    {
        Ok(_) => Ok(see_other("/admin?done=client_deleted#clients")),
        Err(e) => refused(&state, &who, e).await,
    }
}
