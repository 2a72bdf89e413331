//! `POST /v1/accounts`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::core::accounts::{NewAccount, Password};
use crate::http::AppState;
use crate::http::api::views::UserEnvelope;
use crate::http::csrf::FreshRequest;
use crate::http::error::ApiResult;
use crate::http::extract::{Client, Json};

#[derive(Deserialize)]
pub struct RegisterBody {
    email: String,
    password: String,
}

pub async fn register(
    State(state): State<AppState>,
    _: FreshRequest,
    Client(client): Client,
    Json(body): Json<RegisterBody>,
) -> ApiResult<impl IntoResponse> {
    state.core.check_ip_rate(&client).await?;
    let user = state
        .core
        .register(NewAccount {
            email: body.email,
            password: Password::new(body.password),
            roles: Vec::new(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(UserEnvelope { user: &user }),
    )
        .into_response())
}
