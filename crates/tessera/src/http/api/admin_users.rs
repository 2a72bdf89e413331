//! Administrators' actions on accounts beyond roles and status: creating a
//! user, setting a user's password, deleting a user (role `admin`, by
//! session + CSRF or Bearer). The core does the work and the auditing
//! (`user_created`, `password_reset`, `user_deleted`, with the
//! administrator as `detail.actor`) and refuses to delete the last active
//! admin (409 `last_admin`).
//!
//! Two forms mail the user (through the outbox, `crate::mail`): creating a
//! user without a password (the password is one nobody knows, and the user
//! is mailed a link to set one), and `{"send_reset": true}` (the current
//! password stops working and the user is mailed a reset link).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::openapi::schema::{Array, ArrayBuilder, SchemaType};
use utoipa::openapi::{ObjectBuilder, Type};

use super::admin::Admin;
use crate::core::accounts::{NewAccount, Password};
use crate::core::secret::BearerSecret;
use crate::http::AppState;
use crate::http::api::responses::{
    BadId, BadJson, BadJsonOrId, EmailTaken, FailClosed, HashingSaturated, JsonBodyErrors,
    NoSuchUser, NotAdminOrCsrfFailed, Unauthenticated,
};
use crate::http::api::views::UserEnvelope;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Json;
use crate::http::openapi as doc;

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
    /// The new user's password. Without one, the user is mailed a link to
    /// set it (and no password works until then).
    #[schema(
        value_type = String,
        min_length = 8,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    password: Option<String>,
}

/// `POST /v1/admin/users` `{email, roles?, password?}`: creates a user.
#[utoipa::path(
    post,
    path = "/v1/admin/users",
    tag = "admin",
    security(("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)")),
    request_body(content = NewUser, content_type = "application/json"),
    responses(
        (status = 201, description = "The user was created (audited as `user_created`, the administrator as `detail.actor`); without a password, the user was mailed a link to set one (which also verifies the address); with one, unless `email_verification` is `off`, a link to verify the address", body = UserEnvelope),
        BadJson,
        Unauthenticated,
        NotAdminOrCsrfFailed,
        EmailTaken,
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: an unknown field, a field of the wrong type, the email is not valid, a role is not valid, or the password is not 8 to 1024 characters or is too easy to guess (named in `error_description`)", body = doc::Error),
        HashingSaturated,
    ),
)]
pub async fn create_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(body): Json<NewUser>,
) -> ApiResult<Response> {
    // Without a password: one nobody knows, and a mailed link to set one.
    let mail_link = body.password.is_none();
    let password = body.password.map_or_else(
        || Password::new(BearerSecret::generate().expose().to_owned()),
        Password::new,
    );
    let user = state
        .core
        .create_user_by(
            Some(admin.user_id()),
            NewAccount {
                email: body.email,
                password,
                roles: body.roles.unwrap_or_default(),
            },
        )
        .await?;
    if mail_link {
        // The link also verifies the address when it is used.
        state.core.mail_welcome_link_to(&user).await?;
    } else {
        state.core.mail_verification_link(&user).await?;
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(UserEnvelope { user: &user }),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordSet {
    /// The user's new password (or, instead, `send_reset: true`).
    #[schema(
        value_type = String,
        min_length = 8,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    password: Option<String>,
    /// `true` instead of a password: the current password stops working
    /// at once and the user is mailed a link to choose a new one.
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
        (status = 204, description = "The password is set (with `send_reset: true`: replaced by one nobody knows, and the user mailed a reset link); every session, refresh family and earlier access token of the user is revoked (audited as `password_reset`, the administrator as `detail.actor`)"),
        BadJsonOrId,
        Unauthenticated,
        NotAdminOrCsrfFailed,
        NoSuchUser,
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: an unknown field, a field of the wrong type, neither or both of a password and `send_reset: true`, or a password that is not 8 to 1024 characters or is too easy to guess (named in `error_description`)", body = doc::Error),
        HashingSaturated,
    ),
)]
pub async fn set_password(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(body): Json<PasswordSet>,
) -> ApiResult<Response> {
    let password = match (body.send_reset, body.password) {
        (true, Some(_)) => {
            return Err(ApiError::validation(
                "give either a password or send_reset: true, not both",
            ));
        }
        (true, None) => {
            state
                .core
                .force_password_reset_by(Some(admin.user_id()), &id)
                .await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        (false, Some(password)) => password,
        (false, None) => {
            return Err(ApiError::validation(
                "password is required (or send_reset: true to mail the user a reset link)",
            ));
        }
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
        BadId,
        Unauthenticated,
        NotAdminOrCsrfFailed,
        NoSuchUser,
        (status = 409, description = "`last_admin`: the user is the last active admin", body = doc::Error),
        FailClosed,
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
