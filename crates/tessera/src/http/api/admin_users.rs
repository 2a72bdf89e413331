//! Administrators' actions on accounts beyond roles and status: creating a
//! user, setting a user's password, deleting a user (role `admin`, by
//! session + CSRF or Bearer). The core does the work and the auditing
//! (`user_created`, `password_reset`, `user_deleted`, with the
//! administrator as `detail.actor`) and refuses to delete the last active
//! admin (409 `last_admin`).
//!
//! Tessera sends no mail yet, so the two forms of the contract that need it
//! are refused with a 422 that says so rather than pretending: creating a
//! user without a password (the contract mails a set-password link), and
//! `{"send_reset": true}` (the contract mails a reset link).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::openapi::schema::{Array, ArrayBuilder, SchemaType};
use utoipa::openapi::{ObjectBuilder, Type};

use super::admin::Admin;
use crate::core::accounts::{NewAccount, Password};
use crate::http::AppState;
use crate::http::api::views::UserEnvelope;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Json;
use crate::http::openapi as doc;

/// What the contract's mail-sending forms answer until Tessera sends mail.
const NO_MAIL: &str = "Tessera cannot send mail yet (no mailer is available on this server)";

/// `NewUser.roles`: the role rules of `core::accounts::validate_roles`.
fn new_roles_schema() -> Array {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[a-z0-9_:.-]{1,64}$")),
        )
        .max_items(Some(32))
        .description(Some(
            "The new user's roles (default none): up to 32, each 1 to 64 of `a-z 0-9 _ - : .`",
        ))
        .build()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(schema_with = doc::email_schema)]
    email: String,
    #[schema(schema_with = new_roles_schema)]
    roles: Option<Vec<String>>,
    /// The new user's password. Required for now: without one the contract
    /// mails the user a link to set it, and Tessera sends no mail yet (422).
    #[schema(
        value_type = String,
        required = true,
        min_length = 8,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    password: Option<String>,
}

/// `POST /v1/admin/users` `{email, roles?, password}`: creates a user.
#[utoipa::path(
    post,
    path = "/v1/admin/users",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)")),
    request_body(content = NewUser, content_type = "application/json"),
    responses(
        (status = 201, description = "The user was created (audited as `user_created`, the administrator as `detail.actor`)", body = UserEnvelope),
        (status = 400, description = "`invalid_request`: the body is not valid JSON", body = doc::Error),
        (status = 401, description = "`unauthenticated`: no valid session cookie or access token (a refused Bearer token gets the RFC 6750 challenge)", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tessera\", error=\"invalid_token\"` when the request presented a Bearer token"))),
        (status = 403, description = "`forbidden`: the caller lacks the `admin` role; `csrf_failed`: a cookie-authenticated request without the right `X-CSRF-Token`, or with a foreign `Origin`", body = doc::Error),
        (status = 409, description = "`conflict`: an account with this email already exists", body = doc::Error),
        (status = 413, description = "`payload_too_large`: the body is larger than 64 KiB", body = doc::Error),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`", body = doc::Error),
        (status = 422, description = "`validation_failed`: an unknown field, a field of the wrong type, the email is not valid, a role is not valid, the password is not 8 to 1024 characters, or there is no password (Tessera sends no mail yet, so it cannot mail a set-password link)", body = doc::Error),
        (status = 503, description = "`unavailable`: password hashing is saturated (with `Retry-After`) or a store is down", body = doc::Error,
            headers(("Retry-After" = u64, description = "Seconds to wait, when hashing is saturated"))),
    ),
)]
pub async fn create_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(body): Json<NewUser>,
) -> ApiResult<Response> {
    let Some(password) = body.password else {
        return Err(ApiError::validation(format!(
            "password is required: {NO_MAIL} to send a link to set one"
        )));
    };
    let user = state
        .core
        .create_user_by(
            Some(admin.user_id()),
            NewAccount {
                email: body.email,
                password: Password::new(password),
                roles: body.roles.unwrap_or_default(),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(UserEnvelope { user: &user }),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordSet {
    /// The user's new password.
    #[schema(
        value_type = String,
        required = true,
        min_length = 8,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    password: Option<String>,
    /// `true` asks Tessera to mail the user a reset link instead; Tessera
    /// sends no mail yet, so it is refused (422).
    #[serde(default)]
    send_reset: bool,
}

/// `POST /v1/admin/users/{id}/password` `{password}`: sets the user's
/// password; every session, refresh family and earlier access token of the
/// user is revoked.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/password",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(
        ("id" = String, Path, description = "A user id (`usr_…`)"),
        ("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)"),
    ),
    request_body(content = PasswordSet, content_type = "application/json"),
    responses(
        (status = 204, description = "The password is set; every session, refresh family and earlier access token of the user is revoked (audited as `password_reset`, the administrator as `detail.actor`)"),
        (status = 400, description = "`invalid_request`: the body is not valid JSON, or the id is not valid UTF-8 once percent-decoded", body = doc::Error),
        (status = 401, description = "`unauthenticated`: no valid session cookie or access token (a refused Bearer token gets the RFC 6750 challenge)", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tessera\", error=\"invalid_token\"` when the request presented a Bearer token"))),
        (status = 403, description = "`forbidden`: the caller lacks the `admin` role; `csrf_failed`: a cookie-authenticated request without the right `X-CSRF-Token`, or with a foreign `Origin`", body = doc::Error),
        (status = 404, description = "`not_found`: no such user", body = doc::Error),
        (status = 413, description = "`payload_too_large`: the body is larger than 64 KiB", body = doc::Error),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`", body = doc::Error),
        (status = 422, description = "`validation_failed`: an unknown field, a field of the wrong type, no password, a password that is not 8 to 1024 characters, or `send_reset: true` (Tessera sends no mail yet)", body = doc::Error),
        (status = 503, description = "`unavailable`: password hashing is saturated (with `Retry-After`) or a store is down", body = doc::Error,
            headers(("Retry-After" = u64, description = "Seconds to wait, when hashing is saturated"))),
    ),
)]
pub async fn set_password(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(body): Json<PasswordSet>,
) -> ApiResult<Response> {
    if body.send_reset {
        return Err(ApiError::validation(format!(
            "send_reset is not available: {NO_MAIL}; set a password instead"
        )));
    }
    let Some(password) = body.password else {
        return Err(ApiError::validation("password is required"));
    };
    state
        .core
        .set_password_by(Some(admin.user_id()), &id, Password::new(password))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/admin/users/{id}`: deletes the user.
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(
        ("id" = String, Path, description = "A user id (`usr_…`)"),
        ("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)"),
    ),
    responses(
        (status = 204, description = "The user is deleted: their sessions, refresh families and tokens are gone and their access tokens refused at once; their audit events keep the id and lose the email; the email can be registered again (audited as `user_deleted`, the administrator as `detail.actor`)"),
        (status = 400, description = "`invalid_request`: the id is not valid UTF-8 once percent-decoded", body = doc::Error),
        (status = 401, description = "`unauthenticated`: no valid session cookie or access token (a refused Bearer token gets the RFC 6750 challenge)", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tessera\", error=\"invalid_token\"` when the request presented a Bearer token"))),
        (status = 403, description = "`forbidden`: the caller lacks the `admin` role; `csrf_failed`: a cookie-authenticated request without the right `X-CSRF-Token`, or with a foreign `Origin`", body = doc::Error),
        (status = 404, description = "`not_found`: no such user", body = doc::Error),
        (status = 409, description = "`last_admin`: the user is the last active admin", body = doc::Error),
        (status = 503, description = "`unavailable`: a store is down (requests fail closed)", body = doc::Error),
    ),
)]
pub async fn delete_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state
        .core
        .delete_user_by(Some(admin.user_id()), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
