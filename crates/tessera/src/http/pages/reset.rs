//! `/forgot` and `/reset`: asking for a password reset link and setting a
//! new password with it, as plain forms (no JavaScript).
//!
//! `/forgot` keeps the API's promise: the same page whether or not the
//! email has an account (the lookup and the mail happen off the request).
//! `/reset?token=…` carries the token in a hidden field of its form, never
//! in a link of its own; its responses send `Referrer-Policy: no-referrer`
//! so the address with the token is not sent anywhere, and the access log
//! records only the route. Both forms are checked like the login's
//! (provenance: no session yet).

use askama::Template;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::support::{
    Flash, Nav, PageError, PageForm, PageFresh, add_retry_after, core_message, form_status,
    parse_query, render, see_other,
};
use crate::core::accounts::Password;
use crate::core::error::CoreError;
use crate::http::AppState;
use crate::http::csrf::check_provenance;
use crate::http::extract::Client;

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    nav: Nav,
    flash: Option<Flash>,
    error: Option<String>,
    email: String,
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    nav: Nav,
    error: Option<String>,
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ForgotForm {
    email: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ResetQuery {
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ResetForm {
    token: String,
    password: String,
    confirm_password: String,
}

/// What `/forgot` says once a request was accepted, whatever the email.
pub const SENT: &str = "If an account has this email, a link to reset its password is on its way. It works once, for a limited time.";

pub async fn forgot_page(State(state): State<AppState>) -> Response {
    render(
        StatusCode::OK,
        &ForgotPage {
            nav: Nav::anonymous(&state, "login"),
            flash: None,
            error: None,
            email: String::new(),
        },
    )
}

pub async fn forgot(
    State(state): State<AppState>,
    _: PageFresh,
    Client(client): Client,
    PageForm(form): PageForm<ForgotForm>,
) -> Response {
    let email = form.email.trim().to_owned();
    match state.core.request_password_reset(&email, &client).await {
        Ok(()) => render(
            StatusCode::OK,
            &ForgotPage {
                nav: Nav::anonymous(&state, "login"),
                flash: Some(Flash::ok(SENT)),
                error: None,
                email: String::new(),
            },
        ),
        Err(e) => {
            let mut response = render(
                form_status(&e),
                &ForgotPage {
                    nav: Nav::anonymous(&state, "login"),
                    flash: None,
                    error: Some(core_message(&e).into_owned()),
                    email,
                },
            );
            add_retry_after(&mut response, &e);
            response
        }
    }
}

/// Responses that carry the token in their address or form.
pub(super) fn no_referrer(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub async fn reset_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let query: ResetQuery = parse_query(query.as_deref())?;
    let (status, error) = if query.token.is_empty() {
        (
            StatusCode::BAD_REQUEST,
            Some(core_message(&CoreError::InvalidToken).into_owned()),
        )
    } else {
        (StatusCode::OK, None)
    };
    Ok(no_referrer(render(
        status,
        &ResetPage {
            nav: Nav::anonymous(&state, "login"),
            error,
            token: query.token,
        },
    )))
}

/// The provenance check of the `/reset` form. Its page sends
/// `Referrer-Policy: no-referrer`, so browsers post it with `Origin: null`:
/// that is accepted unless `Sec-Fetch-Site` says `cross-site`; any other
/// `Origin` must be the public URL's, as on every form. (A forged post
/// could only carry a token its author already has, and starts no session.)
pub struct ResetFresh;

impl FromRequestParts<AppState> for ResetFresh {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let null_origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("null"))
            && parts.headers.get_all(header::ORIGIN).iter().count() == 1;
        if null_origin {
            let mut rest = parts.headers.clone();
            rest.remove(header::ORIGIN);
            let origin = &state.settings.public_url.origin;
            check_provenance(&rest, origin).map_err(|r| PageError::refused(&r, origin))?;
            return Ok(ResetFresh);
        }
        PageFresh::from_request_parts(parts, state).await?;
        Ok(ResetFresh)
    }
}

pub async fn reset(
    State(state): State<AppState>,
    _: ResetFresh,
    Client(client): Client,
    PageForm(form): PageForm<ResetForm>,
) -> Response {
    let failed = |status: StatusCode, message: String, token: String| {
        no_referrer(render(
            status,
            &ResetPage {
                nav: Nav::anonymous(&state, "login"),
                error: Some(message),
                token,
            },
        ))
    };
    if form.password != form.confirm_password {
        return failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The two passwords do not match.".to_owned(),
            form.token,
        );
    }
    let password = Password::new(form.password);
    match state
        .core
        .confirm_password_reset(&form.token, password, &client)
        .await
    {
        Ok(()) => no_referrer(see_other("/login?done=password_reset")),
        Err(e) => {
            let mut response = failed(form_status(&e), core_message(&e).into_owned(), form.token);
            add_retry_after(&mut response, &e);
            response
        }
    }
}
