//! `/`, `/login`, `/register` and `/logout`.
//!
//! Login and register have no session yet, so their CSRF defence is the
//! request's provenance ([`PageFresh`]): this stops login CSRF (signing a
//! victim into the attacker's account). A login destroys any session the
//! browser already carried (no fixation), and a wrong email and a wrong
//! password read the same.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::support::{
    Flash, Nav, PageError, PageForm, PageFresh, SignedInForm, add_retry_after, core_message,
    current_session, form_status, parse_query, render, see_other, see_other_with_cookie,
};
use crate::config::BrowserMode;
use crate::core::accounts::{NewAccount, Password};
use crate::core::error::CoreError;
use crate::core::secret::BearerSecret;
use crate::http::AppState;
use crate::http::cookies::{clear_session_cookie, read_cookie, session_cookie};
use crate::http::extract::Client;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    flash: Option<Flash>,
    error: Option<String>,
    email: String,
    next: &'static str,
    jwt_mode: bool,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    nav: Nav,
    error: Option<String>,
    email: String,
    jwt_mode: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginQuery {
    done: String,
    next: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    email: String,
    password: String,
    next: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegisterForm {
    email: String,
    password: String,
    confirm_password: String,
}

/// Fields-free forms (sign out): only the CSRF token, checked by the
/// extractor.
#[derive(Deserialize, Default)]
pub struct NoFields {}

/// Where to go after login: only our own pages, never an arbitrary URL (no
/// open redirect).
fn safe_next(next: &str) -> &'static str {
    match next {
        "/admin" => "/admin",
        _ => "/account",
    }
}

fn jwt_mode(state: &AppState) -> bool {
    state.settings.browser_mode != BrowserMode::Session
}

/// `/`: the account when signed in, else the login page.
pub async fn root(State(state): State<AppState>, parts: Parts) -> Result<Response, PageError> {
    match current_session(&parts, &state).await? {
        Ok(_) => Ok(see_other("/account")),
        Err(dead_cookie) => Ok(signed_out_redirect(&state, "/login", dead_cookie)),
    }
}

fn signed_out_redirect(state: &AppState, to: &str, dead_cookie: bool) -> Response {
    if dead_cookie {
        see_other_with_cookie(to, clear_session_cookie(&state.settings))
    } else {
        see_other(to)
    }
}

pub async fn login_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    parts: Parts,
) -> Result<Response, PageError> {
    let query: LoginQuery = parse_query(query.as_deref())?;
    let next = safe_next(&query.next);
    let dead_cookie = match current_session(&parts, &state).await? {
        Ok(_) => return Ok(see_other(next)),
        Err(dead_cookie) => dead_cookie,
    };
    let flash = match query.done.as_str() {
        "signed_out" => Some(Flash::ok("You have been signed out.")),
        "signed_out_everywhere" => Some(Flash::ok(
            "You have been signed out on every device, and every API token was revoked.",
        )),
        "registered" => Some(Flash::ok("Your account is ready. Sign in to continue.")),
        _ => None,
    };
    let page = LoginPage {
        nav: Nav::anonymous("login"),
        flash,
        error: None,
        email: String::new(),
        next,
        jwt_mode: jwt_mode(&state),
    };
    let mut response = render(StatusCode::OK, &page);
    if dead_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear_session_cookie(&state.settings));
    }
    Ok(response)
}

/// The session cookie the browser sent, valid or not: login ends it.
fn carried_session(headers: &HeaderMap, state: &AppState) -> Option<BearerSecret> {
    read_cookie(headers, state.settings.session_cookie_name()).and_then(BearerSecret::parse)
}

fn set_session(
    state: &AppState,
    secret: &BearerSecret,
    expires_at: time::OffsetDateTime,
) -> HeaderValue {
    let max_age = (expires_at - state.core.now()).whole_seconds();
    session_cookie(&state.settings, secret.expose(), max_age)
}

pub async fn login(
    State(state): State<AppState>,
    _: PageFresh,
    headers: HeaderMap,
    Client(client): Client,
    PageForm(form): PageForm<LoginForm>,
) -> Response {
    let next = safe_next(&form.next);
    let email = form.email.trim().to_owned();
    let failed = |status: StatusCode, message: String, email: String| {
        let page = LoginPage {
            nav: Nav::anonymous("login"),
            flash: None,
            error: Some(message),
            email,
            next,
            jwt_mode: jwt_mode(&state),
        };
        render(status, &page)
    };
    if jwt_mode(&state) {
        return failed(
            StatusCode::BAD_REQUEST,
            "This server signs browsers in through the API (jwt-cookie mode).".to_owned(),
            email,
        );
    }
    if email.is_empty() || form.password.is_empty() {
        return failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your email and your password.".to_owned(),
            email,
        );
    }
    let carried = carried_session(&headers, &state);
    let result = state
        .core
        .login(
            &email,
            Password::new(form.password),
            carried.as_ref(),
            client,
        )
        .await;
    match result {
        Ok(new) => see_other_with_cookie(
            next,
            set_session(&state, &new.secret, new.auth.session.expires_at),
        ),
        Err(e) => {
            let mut response = failed(form_status(&e), core_message(&e).into_owned(), email);
            add_retry_after(&mut response, &e);
            // The core ended the session the browser carried, even though
            // this login failed: drop the cookie too.
            if carried.is_some() {
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, clear_session_cookie(&state.settings));
            }
            response
        }
    }
}

pub async fn register_page(
    State(state): State<AppState>,
    parts: Parts,
) -> Result<Response, PageError> {
    if current_session(&parts, &state).await?.is_ok() {
        return Ok(see_other("/account"));
    }
    let page = RegisterPage {
        nav: Nav::anonymous("register"),
        error: None,
        email: String::new(),
        jwt_mode: jwt_mode(&state),
    };
    Ok(render(StatusCode::OK, &page))
}

pub async fn register(
    State(state): State<AppState>,
    _: PageFresh,
    headers: HeaderMap,
    Client(client): Client,
    PageForm(form): PageForm<RegisterForm>,
) -> Response {
    let email = form.email.trim().to_owned();
    let failed = |status: StatusCode, message: String, email: String| {
        let page = RegisterPage {
            nav: Nav::anonymous("register"),
            error: Some(message),
            email,
            jwt_mode: jwt_mode(&state),
        };
        render(status, &page)
    };
    if jwt_mode(&state) {
        return failed(
            StatusCode::BAD_REQUEST,
            "This server creates accounts through the API (jwt-cookie mode).".to_owned(),
            email,
        );
    }
    if email.is_empty() {
        return failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your email address.".to_owned(),
            email,
        );
    }
    if form.password != form.confirm_password {
        return failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The two passwords do not match.".to_owned(),
            email,
        );
    }
    if let Err(e) = state.core.check_ip_rate(&client).await {
        let mut response = failed(form_status(&e), core_message(&e).into_owned(), email);
        add_retry_after(&mut response, &e);
        return response;
    }
    let password = Password::new(form.password);
    let created = state
        .core
        .register_from(
            NewAccount {
                email: email.clone(),
                password: password.clone(),
                roles: Vec::new(),
            },
            &client,
        )
        .await;
    if let Err(e) = created {
        let message = match &e {
            CoreError::Conflict(_) => {
                "An account with this email already exists. Sign in instead.".to_owned()
            }
            other => core_message(other).into_owned(),
        };
        let mut response = failed(form_status(&e), message, email);
        add_retry_after(&mut response, &e);
        return response;
    }
    // Signed in straight away; if that fails (a busy server), the account
    // exists and the login page says so.
    let carried = carried_session(&headers, &state);
    match state
        .core
        .login(&email, password, carried.as_ref(), client)
        .await
    {
        Ok(new) => see_other_with_cookie(
            "/account?done=welcome",
            set_session(&state, &new.secret, new.auth.session.expires_at),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "sign-in right after registration failed");
            signed_out_redirect(&state, "/login?done=registered", carried.is_some())
        }
    }
}

/// Ends this browser's session.
pub async fn logout(
    State(state): State<AppState>,
    SignedInForm { who, .. }: SignedInForm<NoFields>,
) -> Result<Response, PageError> {
    state
        .core
        .logout(&who.auth)
        .await
        .map_err(PageError::core)?;
    Ok(see_other_with_cookie(
        "/login?done=signed_out",
        clear_session_cookie(&state.settings),
    ))
}
