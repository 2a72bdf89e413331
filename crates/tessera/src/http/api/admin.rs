//! The administration API (role `admin`, by session + CSRF or Bearer): users,
//! signing keys, the audit log. Role changes and suspension take effect at
//! the user's very next request (caches are evicted, earlier tokens cut off).

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::core::accounts::{User, UserQuery, UserStatus};
use crate::core::audit::{AuditEvent, AuditQuery};
use crate::core::signing::KeyInfo;
use crate::http::AppState;
use crate::http::api::responses::{
    BadId, BadJsonOrId, FailClosed, JsonBodyErrors, NoSuchUser, NotAdmin, NotAdminOrCsrfFailed,
    Unauthenticated,
};
use crate::http::api::views::UserEnvelope;
use crate::http::caller::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Json;
use crate::http::openapi as doc;

/// A caller holding the `admin` role.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.has_role("admin") {
            return Err(ApiError::forbidden("the admin role is required"));
        }
        Ok(Admin(caller))
    }
}

/// `GET /v1/admin/keys` and `POST /v1/admin/keys/rotate`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// `GET /v1/admin/users`: a page of users by id.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserPage<'a> {
    pub users: &'a [User],
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub cursor: Option<&'a str>,
}

/// `GET /v1/admin/audit`: audit events, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage<'a> {
    pub events: &'a [AuditEvent],
    /// Pass as `before` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub cursor: Option<&'a str>,
}

/// The signing keys: the active one and those still accepted or retired.
#[utoipa::path(
    get,
    path = "/v1/admin/keys",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    responses(
        (status = 200, description = "The signing keys", body = KeyList),
        Unauthenticated,
        NotAdmin,
        FailClosed,
    ),
)]
pub async fn keys(State(state): State<AppState>, _: Admin) -> ApiResult<Response> {
    let keys = state.core.key_list().await?;
    Ok(axum::Json(KeyList { keys }).into_response())
}

/// Makes a new key active at once; earlier keys stay accepted until every
/// token they signed has expired.
#[utoipa::path(
    post,
    path = "/v1/admin/keys/rotate",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)")),
    responses(
        (status = 200, description = "The signing keys after the rotation", body = KeyList),
        Unauthenticated,
        NotAdminOrCsrfFailed,
        (status = 422, description = "`validation_failed`: HS256 keys come from `TESSERA_HS256_SECRET` and cannot be rotated here", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn rotate_keys(
    State(state): State<AppState>,
    Admin(caller): Admin,
) -> ApiResult<Response> {
    state.core.rotate_keys(Some(caller.user_id())).await?;
    let keys = state.core.key_list().await?;
    Ok(axum::Json(KeyList { keys }).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Only users whose email contains this.
    q: Option<String>,
    /// Page size, 1 to 200 (default 50; other values are clamped).
    #[param(minimum = 0, maximum = 4294967295_u64, format = Int64)]
    limit: Option<u32>,
    /// The `cursor` of the previous page.
    cursor: Option<String>,
}

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// `GET /v1/admin/users?q=&limit=&cursor=`: a page of users by id; `cursor`
/// is returned while more may follow.
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(UsersQuery),
    responses(
        (status = 200, description = "A page of users, by id", body = UserPage),
        (status = 400, description = "`invalid_request`: the query string is malformed (e.g. `limit` is not a whole number)", body = doc::Error),
        Unauthenticated,
        NotAdmin,
        (status = 422, description = "`validation_failed`: `q` is longer than an email can be, or `cursor` longer than an id", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn users(
    State(state): State<AppState>,
    _: Admin,
    Query(query): Query<UsersQuery>,
) -> ApiResult<Response> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let users = state
        .core
        .list_users(&UserQuery {
            email_contains: query.q.filter(|q| !q.is_empty()),
            limit,
            after_id: query.cursor.filter(|c| !c.is_empty()),
        })
        .await?;
    let cursor = (users.len() == limit as usize)
        .then(|| users.last().map(|u| u.id.as_str()))
        .flatten();
    Ok(axum::Json(UserPage {
        users: &users,
        cursor,
    })
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// The new roles (replacing the old): up to 32, each 1 to 64 of
    /// `a-z 0-9 _ - : .`.
    #[schema(schema_with = doc::roles_schema)]
    roles: Option<Vec<String>>,
    /// `suspended` revokes everything of the user and refuses their logins.
    #[schema(value_type = Option<UserStatus>)]
    status: Option<String>,
    /// A new email (unique, case-insensitively): it starts unverified, the
    /// user's earlier verification and reset links die, and (unless
    /// `email_verification` is `off`) the new address is mailed a link.
    #[schema(schema_with = doc::optional_email_schema)]
    email: Option<String>,
    /// `true`: the administrator vouches for the address (audited
    /// `email_verified`, `via: admin`). Only `true` is accepted.
    #[schema(schema_with = doc::vouch_schema)]
    email_verified: Option<bool>,
}

/// `PATCH /v1/admin/users/{id}` `{roles?, status?, email?, email_verified?}`.
#[utoipa::path(
    patch,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(
        ("id" = String, Path, description = "A user id (`usr_…`)"),
        ("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)"),
    ),
    request_body(content = UserPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The user after the change", body = UserEnvelope),
        BadJsonOrId,
        Unauthenticated,
        NotAdminOrCsrfFailed,
        NoSuchUser,
        (status = 409, description = "`last_admin`: the change would take the `admin` role from, or suspend, the last active admin; `conflict`: another account has this email", body = doc::Error),
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: an unknown field, a field of the wrong type, a role that is not valid, a status other than `active` or `suspended`, an email that is not valid, or `email_verified` other than `true`", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn update_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(patch): Json<UserPatch>,
) -> ApiResult<Response> {
    let status =
        match patch.status.as_deref() {
            None => None,
            Some(s) => Some(UserStatus::parse(s).ok_or_else(|| {
                ApiError::validation("status must be \"active\" or \"suspended\"")
            })?),
        };
    if patch.email_verified == Some(false) {
        return Err(ApiError::validation(
            "email_verified can only be set to true (a changed email starts unverified)",
        ));
    }
    let mut user = state.core.user(&id).await?;
    if let Some(email) = &patch.email
        && *email != user.email
    {
        user = state
            .core
            .set_email_by(Some(admin.user_id()), &id, email)
            .await?;
        state.core.mail_verification_link(&user).await?;
    }
    if patch.email_verified == Some(true) && !user.email_verified {
        user = state
            .core
            .verify_email_by(Some(admin.user_id()), &id)
            .await?;
    }
    if let Some(roles) = &patch.roles {
        user = state
            .core
            .set_roles_by(Some(admin.user_id()), &id, roles)
            .await?;
    }
    if let Some(status) = status
        && status != user.status
    {
        user = state
            .core
            .set_status_by(Some(admin.user_id()), &id, status)
            .await?;
    }
    Ok(axum::Json(UserEnvelope { user: &user }).into_response())
}

/// `POST /v1/admin/users/{id}/revoke`: logout everywhere for that user.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/revoke",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(
        ("id" = String, Path, description = "A user id (`usr_…`)"),
        ("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)"),
    ),
    responses(
        (status = 204, description = "Every session, refresh family and earlier access token of the user is revoked"),
        BadId,
        Unauthenticated,
        NotAdminOrCsrfFailed,
        NoSuchUser,
        FailClosed,
    ),
)]
pub async fn revoke_user(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.core.revoke_user_by(caller.user_id(), &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only events of this user.
    user_id: Option<String>,
    /// Only events of this type (another is 400 `invalid_request`).
    #[serde(rename = "type")]
    #[param(schema_with = audit_type_schema)]
    event_type: Option<String>,
    /// Page size, 1 to 200 (default 50; other values are clamped).
    #[param(minimum = 0, maximum = 4294967295_u64, format = Int64)]
    limit: Option<u32>,
    /// The `cursor` of the previous page: events older than that one.
    before: Option<String>,
}

/// The audit `type` filter: one of the known types.
fn audit_type_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(crate::core::audit::AUDIT_TYPES.iter().copied()))
        .build()
}

/// `GET /v1/admin/audit?user_id=&type=&limit=&before=`, newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "A page of audit events, newest first", body = AuditPage),
        (status = 400, description = "`invalid_request`: the query string is malformed (e.g. `limit` is not a whole number), or `type` is not a known audit type (the description lists them)", body = doc::Error),
        Unauthenticated,
        NotAdmin,
        (status = 422, description = "`validation_failed`: `type`, `user_id` or `before` is longer than 64 bytes", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn audit(
    State(state): State<AppState>,
    _: Admin,
    Query(params): Query<AuditParams>,
) -> ApiResult<Response> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    // An unknown type would match nothing and pass for an empty log (an
    // oversized one is the core's 422, like the other parameters).
    if let Some(t) = params
        .event_type
        .as_deref()
        .filter(|t| !t.is_empty() && t.len() <= crate::core::accounts::ID_MAX_LEN)
    {
        crate::core::audit::check_type(t).map_err(ApiError::invalid_request)?;
    }
    let events = state
        .core
        .audit_page(&AuditQuery {
            event_type: params.event_type.filter(|t| !t.is_empty()),
            user_id: params.user_id.filter(|u| !u.is_empty()),
            limit,
            before: params.before.filter(|b| !b.is_empty()),
        })
        .await?;
    let cursor = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id.as_str()))
        .flatten();
    Ok(axum::Json(AuditPage {
        events: &events,
        cursor,
    })
    .into_response())
}
