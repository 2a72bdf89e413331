//! `POST /v1/accounts`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::core::accounts::{NewAccount, Password};
use crate::http::AppState;
use crate::http::api::responses::{
    BadJson, EmailTaken, HashingSaturated, JsonBodyErrors, RateLimited,
};
use crate::http::api::views::UserEnvelope;
use crate::http::csrf::FreshRequest;
use crate::http::error::ApiResult;
use crate::http::extract::{Client, Json};
use crate::http::openapi as doc;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RegisterBody {
    #[schema(schema_with = doc::email_schema)]
    email: String,
    #[schema(
        min_length = 8,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    password: String,
    /// The `invitation` of an invitation link (`/register?invitation=…`):
    /// needed under `registration = invite`; the account gets the
    /// invitation's roles.
    #[schema(min_length = 43, max_length = 43)]
    invitation: Option<String>,
}

/// Creates an account (with no roles, or an invitation's), if
/// `registration` and `allowed_email_domains` allow it; unless
/// `email_verification` is `off`, the address is mailed a link to verify it.
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    request_body(content = RegisterBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The account was created", body = UserEnvelope),
        BadJson,
        (status = 403, description = "`csrf_failed`: `Origin` is foreign or `Sec-Fetch-Site` is `cross-site`; `registration_closed`: registration is closed, needs an invitation, is not open to this email's domain, or the invitation is invalid, used, expired or for another email (the description says which)", body = doc::Error),
        EmailTaken,
        JsonBodyErrors,
        (status = 422, description = "`validation_failed`: a field is missing or not a string, the email is not valid, or the password is not 8 to 1024 characters or is too easy to guess (a common password, a pattern, or made from the email: the rule is named in `error_description`)", body = doc::Error),
        RateLimited,
        HashingSaturated,
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    _: FreshRequest,
    Client(client): Client,
    Json(body): Json<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    state.core.check_ip_rate(&client).await?;
    let user = state
        .core
        .register_from(
            NewAccount {
                email: body.email,
                password: Password::new(body.password),
                roles: Vec::new(),
            },
            body.invitation.as_deref(),
            &client,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(UserEnvelope { user: &user }),
    )
        .into_response())
}
