//! `POST /v1/password-reset` and `POST /v1/password-reset/confirm`.
//!
//! Asking answers 202 with the same body whether the email has an account
//! (the lookup and the mail happen off the request, see `core::links`);
//! the link is built from the public URL, never from this request's
//! `Host`. The token travels in the body, so no access log line or proxy
//! log of the path carries it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::core::accounts::Password;
use crate::http::AppState;
use crate::http::api::responses::{
    BadJson, HashingSaturated, JsonBodyErrors, MailRateLimited, RateLimited, StoreDown,
};
use crate::http::csrf::FreshRequest;
use crate::http::error::ApiResult;
use crate::http::extract::{Client, Json};
use crate::http::openapi as doc;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ResetRequestBody {
    #[schema(schema_with = doc::email_schema)]
    email: String,
}

/// The one answer to every accepted request.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ResetRequested {
    #[schema(example = "if an account has this email, a link to reset its password is on its way")]
    message: &'static str,
}

pub const RESET_REQUESTED: &str =
    "if an account has this email, a link to reset its password is on its way";

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ResetConfirmBody {
    /// The `token` of the mailed `/reset?token=…` link.
    #[schema(
        min_length = 43,
        max_length = 43,
        example = "Jm2fQ0u1bq3o8yqQ7pVf0AJm2fQ0u1bq3o8yqQ7pVf0"
    )]
    token: String,
    #[schema(
        min_length = 8,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    password: String,
}

/// Mails a password reset link (`/reset?token=…`, valid 30 minutes by
/// default) to the account with this email, if there is one. The answer is
/// the same either way.
#[utoipa::path(
    post,
    path = "/v1/password-reset",
    tag = "accounts",
    request_body(content = ResetRequestBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the same answer whether or not an account has this email", body = ResetRequested),
        BadJson,
        (status = 403, description = "`csrf_failed`: `Origin` is foreign or `Sec-Fetch-Site` is `cross-site`", body = doc::Error),
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: the email is missing or not valid", body = doc::Error),
        MailRateLimited,
        StoreDown,
    ),
)]
pub async fn request(
    State(state): State<AppState>,
    _: FreshRequest,
    Client(client): Client,
    Json(body): Json<ResetRequestBody>,
) -> ApiResult<Response> {
    state
        .core
        .request_password_reset(&body.email, &client)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(ResetRequested {
            message: RESET_REQUESTED,
        }),
    )
        .into_response())
}

/// Sets a new password with a reset link's token. The token works once;
/// on success every session, refresh token family and earlier access token
/// of the user is revoked, and the user is mailed a notice.
#[utoipa::path(
    post,
    path = "/v1/password-reset/confirm",
    tag = "accounts",
    request_body(content = ResetConfirmBody, content_type = "application/json"),
    responses(
        (status = 204, description = "The password is set; every session and token of the user is revoked"),
        (status = 400, description = "`invalid_token`: the token is used, expired, unknown or not a reset token; `invalid_request`: the body is not valid JSON", body = doc::Error),
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: a field is missing or not a string, or the password breaks a rule (named in `error_description`)", body = doc::Error),
        RateLimited,
        HashingSaturated,
    ),
)]
pub async fn confirm(
    State(state): State<AppState>,
    Client(client): Client,
    Json(body): Json<ResetConfirmBody>,
) -> ApiResult<Response> {
    state
        .core
        .confirm_password_reset(&body.token, Password::new(body.password), &client)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
