//! `/verify-email`: confirming an address with a mailed link, and asking
//! for a new link, as plain forms (no JavaScript).
//!
//! Opening the link only shows a button: the token is used by the form's
//! post, so a mail scanner that fetches links does not spend it. The token
//! travels in a hidden field, and the pages that carry it send
//! `Referrer-Policy: no-referrer` (as `/reset` does). Asking for a new link
//! answers the same whether or not the address has an account.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::reset::{ResetFresh, no_referrer};
use super::support::{
    Flash, Nav, PageError, PageForm, PageFresh, add_retry_after, core_message, form_status,
    parse_query, render,
};
use crate::http::AppState;
use crate::http::extract::Client;

#[derive(Template)]
#[template(path = "verify_email.html")]
struct VerifyPage {
    nav: Nav,
    flash: Option<Flash>,
    error: Option<String>,
    token: String,
    email: String,
    verified: bool,
    /// A new link was asked for: the form is not shown again.
    resent: bool,
}

impl VerifyPage {
    fn new(state: &AppState) -> Self {
        Self {
            nav: Nav::anonymous(state, "login"),
            flash: None,
            error: None,
            token: String::new(),
            email: String::new(),
            verified: false,
            resent: false,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TokenQuery {
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TokenForm {
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ResendForm {
    email: String,
}

/// What the resend form says once a request was accepted, whatever the
/// email.
pub const RESENT: &str = "If an account has this email and it is not verified yet, a new link is on its way. It works once, for a limited time.";

pub async fn page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query: TokenQuery = parse_query(query.as_deref())?;
    Ok(no_referrer(render(
        StatusCode::OK,
        &VerifyPage {
            token: query.token,
            ..VerifyPage::new(&state)
        },
    )))
}

pub async fn confirm(
    State(state): State<AppState>,
    _: ResetFresh,
    Client(client): Client,
    PageForm(form): PageForm<TokenForm>,
) -> Response {
    match state
        .core
        .confirm_email_verification(&form.token, &client)
        .await
    {
        Ok(user) => no_referrer(render(
            StatusCode::OK,
            &VerifyPage {
                flash: Some(Flash::ok(format!("{} is verified. Thank you.", user.email))),
                verified: true,
                ..VerifyPage::new(&state)
            },
        )),
        Err(e) => {
            // The token is spent or bad: offer a new link instead.
            let mut response = no_referrer(render(
                form_status(&e),
                &VerifyPage {
                    error: Some(core_message(&e).into_owned()),
                    ..VerifyPage::new(&state)
                },
            ));
            add_retry_after(&mut response, &e);
            response
        }
    }
}

pub async fn resend(
    State(state): State<AppState>,
    _: PageFresh,
    Client(client): Client,
    PageForm(form): PageForm<ResendForm>,
) -> Response {
    let email = form.email.trim().to_owned();
    match state.core.request_email_verification(&email, &client).await {
        Ok(()) => render(
            StatusCode::OK,
            &VerifyPage {
                flash: Some(Flash::ok(RESENT)),
                resent: true,
                ..VerifyPage::new(&state)
            },
        ),
        Err(e) => {
            let mut response = render(
                form_status(&e),
                &VerifyPage {
                    error: Some(core_message(&e).into_owned()),
                    email,
                    ..VerifyPage::new(&state)
                },
            );
            add_retry_after(&mut response, &e);
            response
        }
    }
}
