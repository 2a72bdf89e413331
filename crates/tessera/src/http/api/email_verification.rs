//! `POST /v1/email-verification` and `POST /v1/email-verification/confirm`.
//!
//! Asking for a link works two ways: with `{email}` and no credentials
//! (the same 202 whether the address has an account, under the origin
//! rules of a login, like a password reset), or signed in (session cookie
//! with its CSRF token, or Bearer) with no body or one without `email`:
//! a new link to the caller's own address. The token of a link travels in
//! the confirming request's body, never in a logged path.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::http::AppState;
use crate::http::api::responses::{
    BadJson, BodyTooLarge, JsonBodyErrors, MailRateLimited, RateLimited, StoreDown,
};
use crate::http::caller::Caller;
use crate::http::csrf::FreshRequest;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Client, Json, MAX_BODY_BYTES};
use crate::http::openapi as doc;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationRequestBody {
    /// The address to send a link to; leave it out when signed in.
    #[schema(schema_with = doc::optional_email_schema)]
    email: Option<String>,
}

/// The one answer to every accepted request.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VerificationRequested {
    #[schema(
        example = "if an account has this email and it is not verified yet, a link to verify it is on its way"
    )]
    message: &'static str,
}

pub const VERIFICATION_REQUESTED: &str =
    "if an account has this email and it is not verified yet, a link to verify it is on its way";

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationConfirmBody {
    /// The `token` of the mailed `/verify-email?token=…` link.
    #[schema(
        min_length = 43,
        max_length = 43,
        example = "Jm2fQ0u1bq3o8yqQ7pVf0AJm2fQ0u1bq3o8yqQ7pVf0"
    )]
    token: String,
}

/// Mails a link to verify an email address (`/verify-email?token=…`, valid
/// 24 hours by default): to `email` when given (the same answer whether an
/// account has it), or to the signed-in caller's own address.
#[utoipa::path(
    post,
    path = "/v1/email-verification",
    operation_id = "request_email_verification",
    tag = "accounts",
    security((), ("bearerAuth" = []), ("sessionCookie" = []), ("accessCookie" = [])),
    params(("X-CSRF-Token" = Option<String>, Header, nullable = false, description = "Required when the request is authenticated by a cookie: the `csrf_token` of the session (or jwt-cookie refresh family)")),
    request_body(content = Option<VerificationRequestBody>, content_type = "application/json",
        description = "`{email}` without credentials; no body (or no `email`) when signed in"),
    responses(
        (status = 202, description = "Accepted: the same answer whether or not an account has this email, or is verified already", body = VerificationRequested),
        BadJson,
        (status = 401, description = "`unauthenticated`: no `email` and no valid session cookie or access token", body = doc::Error),
        (status = 403, description = "`csrf_failed`: `Origin` is foreign or `Sec-Fetch-Site` is `cross-site`, or a cookie-authenticated request without the right `X-CSRF-Token`", body = doc::Error),
        BodyTooLarge,
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = doc::Error),
        (status = 422, description = "`validation_failed`: the email is not valid, or an unknown field", body = doc::Error),
        MailRateLimited,
        StoreDown,
    ),
)]
pub async fn request(
    State(state): State<AppState>,
    Client(client): Client,
    request: Request,
) -> ApiResult<Response> {
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::payload_too_large())?;
    // No body, or `null`: the signed-in form.
    let trimmed = bytes.trim_ascii();
    let email = if trimmed.is_empty() || trimmed == b"null" {
        None
    } else {
        let request = Request::from_parts(parts.clone(), axum::body::Body::from(bytes));
        let Json(body) = Json::<VerificationRequestBody>::from_request(request, &state).await?;
        body.email
    };
    match email {
        Some(email) => {
            FreshRequest::from_request_parts(&mut parts, &state).await?;
            state
                .core
                .request_email_verification(&email, &client)
                .await?;
        }
        None => {
            let caller = Caller::from_request_parts(&mut parts, &state).await?;
            state
                .core
                .resend_email_verification(caller.user_id(), &client)
                .await?;
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(VerificationRequested {
            message: VERIFICATION_REQUESTED,
        }),
    )
        .into_response())
}

/// Verifies the address a link was mailed to. The token works once.
#[utoipa::path(
    post,
    path = "/v1/email-verification/confirm",
    operation_id = "confirm_email_verification",
    tag = "accounts",
    request_body(content = VerificationConfirmBody, content_type = "application/json"),
    responses(
        (status = 204, description = "The address is verified (`email_verified: true` in `/v1/me` and the admin list; audited `email_verified`)"),
        (status = 400, description = "`invalid_token`: the token is used, expired, unknown or not a verification token; `invalid_request`: the body is not valid JSON", body = doc::Error),
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: `token` is missing or not a string, or an unknown field", body = doc::Error),
        RateLimited,
        StoreDown,
    ),
)]
pub async fn confirm(
    State(state): State<AppState>,
    Client(client): Client,
    Json(body): Json<VerificationConfirmBody>,
) -> ApiResult<Response> {
    state
        .core
        .confirm_email_verification(&body.token, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
