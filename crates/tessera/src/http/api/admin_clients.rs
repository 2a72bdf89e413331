//! The administration API for service clients (role `admin`, by session +
//! CSRF or Bearer): list them, disable and enable them, delete them, and
//! give them a new secret. A disabled or deleted client, or an old secret,
//! fails HTTP Basic authentication from the next request on, on every node
//! (clients are never cached). Every change is audited with the admin as
//! the actor; the new secret appears only in the one response that carries
//! it (`Cache-Control: no-store`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::admin::Admin;
use crate::core::clients::{Actor, ServiceClient};
use crate::core::time::serde_rfc3339;
use crate::http::AppState;
use crate::http::api::responses::{
    BadId, BadJsonOrId, FailClosed, JsonBodyErrors, NoSuchClient, NotAdmin, NotAdminOrCsrfFailed,
    Unauthenticated,
};
use crate::http::error::ApiResult;
use crate::http::extract::Json;
use crate::http::openapi as doc;

/// A service client as the admin API shows it (never its secret or hash).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientView {
    #[schema(example = "cli_Vx3b0Qm2Yf1pL8sK4tWd9g")]
    pub client_id: String,
    #[schema(example = "billing-service")]
    pub name: String,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// A disabled client fails HTTP Basic authentication until enabled
    /// again.
    pub disabled: bool,
}

impl From<&ServiceClient> for ClientView {
    fn from(c: &ServiceClient) -> Self {
        Self {
            client_id: c.id.clone(),
            name: c.name.clone(),
            created_at: c.created_at,
            disabled: c.disabled(),
        }
    }
}

/// `GET /v1/admin/clients`: every service client, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientList {
    pub clients: Vec<ClientView>,
}

/// `PATCH /v1/admin/clients/{client_id}`: the client after the change.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientEnvelope {
    pub client: ClientView,
}

/// `POST /v1/admin/clients/{client_id}/secret`: the new secret, shown this
/// once (only its SHA-256 is stored).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientSecret {
    #[schema(example = "cli_Vx3b0Qm2Yf1pL8sK4tWd9g")]
    pub client_id: String,
    /// 256 random bits, base64url (43 characters).
    #[schema(min_length = 43, max_length = 43)]
    pub client_secret: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    /// `true` disables the client (its secret is kept), `false` enables it
    /// again.
    disabled: bool,
}

/// Every service client, oldest first, disabled ones included.
#[utoipa::path(
    get,
    path = "/v1/admin/clients",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    responses(
        (status = 200, description = "Every service client, oldest first", body = ClientList),
        Unauthenticated,
        NotAdmin,
        FailClosed,
    ),
)]
pub async fn clients(State(state): State<AppState>, _: Admin) -> ApiResult<Response> {
    let clients = state.core.list_clients().await?;
    let clients = clients.iter().map(ClientView::from).collect();
    Ok(axum::Json(ClientList { clients }).into_response())
}

/// `PATCH /v1/admin/clients/{client_id}` `{disabled}`: disables a client
/// (its next authentication fails, everywhere; an open revocation-feed
/// stream of it ends within a second) or enables it again. Setting the
/// state it has already changes and records nothing.
#[utoipa::path(
    patch,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(
        ("client_id" = String, Path, description = "A service client id (`cli_…`)"),
        ("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)"),
    ),
    request_body(content = ClientPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The client after the change", body = ClientEnvelope),
        BadJsonOrId,
        Unauthenticated,
        NotAdminOrCsrfFailed,
        NoSuchClient,
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: `disabled` is missing or not a boolean, or the body has another field", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn update_client(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(client_id): Path<String>,
    Json(patch): Json<ClientPatch>,
) -> ApiResult<Response> {
    let actor = Actor::User(admin.user_id().to_owned());
    let client = state
        .core
        .set_client_disabled(&actor, &client_id, patch.disabled)
        .await?;
    Ok(axum::Json(ClientEnvelope {
        client: ClientView::from(&client),
    })
    .into_response())
}

/// `DELETE /v1/admin/clients/{client_id}`: deletes a client for good (its
/// next authentication fails, everywhere).
#[utoipa::path(
    delete,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(
        ("client_id" = String, Path, description = "A service client id (`cli_…`)"),
        ("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)"),
    ),
    responses(
        (status = 204, description = "The client is deleted"),
        BadId,
        Unauthenticated,
        NotAdminOrCsrfFailed,
        (status = 404, description = "`not_found`: no such client (or it was deleted already)", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn delete_client(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(client_id): Path<String>,
) -> ApiResult<Response> {
    let actor = Actor::User(admin.user_id().to_owned());
    state.core.delete_client(&actor, &client_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/admin/clients/{client_id}/secret`: a new secret for the
/// client, returned this once; the old secret fails from the next request
/// on, everywhere. A disabled client stays disabled.
#[utoipa::path(
    post,
    path = "/v1/admin/clients/{client_id}/secret",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(
        ("client_id" = String, Path, description = "A service client id (`cli_…`)"),
        ("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)"),
    ),
    responses(
        (status = 200, description = "The new secret, shown only this once", body = ClientSecret,
            headers(("Cache-Control" = String, description = "Always sent: `no-store`"))),
        BadId,
        Unauthenticated,
        NotAdminOrCsrfFailed,
        NoSuchClient,
        FailClosed,
    ),
)]
pub async fn rotate_client_secret(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(client_id): Path<String>,
) -> ApiResult<Response> {
    let actor = Actor::User(admin.user_id().to_owned());
    let new = state.core.rotate_client_secret(&actor, &client_id).await?;
    let mut response = axum::Json(ClientSecret {
        client_id: new.client.id.clone(),
        client_secret: new.secret.expose().to_owned(),
    })
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
