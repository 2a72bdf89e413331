//! `/`, `/login`, `/register` and `/logout`.
//!
//! Login and register have no session yet, so their CSRF defence is the
//! request's provenance ([`PageFresh`]): this stops login CSRF (signing a
//! victim into the attacker's account). A login destroys any session the
//! browser already carried (no fixation), and a wrong email and a wrong
//! password read the same.
//!
//! A browser that refuses the `Secure` session cookie (plain HTTP off
//! localhost, or Safari even on `http://localhost`) would land back on an
//! empty login form after a correct password, with no word why. So when the
//! public URL is plain HTTP and cookies are `Secure`, a page sign-in also
//! sets a marker cookie, `tessera_signed_in`, that is *not* `Secure` (so it
//! survives where the session cookie does not), lives a minute, and carries
//! no secret (its value is `1`). A login page requested with the marker but
//! without any of Tessera's cookies means the session cookie did not come
//! back: the page says why and what to do. The marker only ever changes
//! that explanation, so a planted one can do no more than show it; the
//! login page consumes it, and signing out (`done=…`) or a dropped dead
//! session never shows it.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::browser::{SignInFailed, clearing_cookies, current, sign_in};
use super::support::{
    Flash, Nav, PageError, PageForm, PageFresh, SignedInForm, add_retry_after, core_message,
    form_status, parse_query, render, see_other, see_other_with_cookies, signed_out_to,
};
use crate::core::accounts::{NewAccount, Password};
use crate::core::error::CoreError;
use crate::core::registration::Registration;
use crate::core::verification::EmailVerification;
use crate::http::AppState;
use crate::http::cookies::read_cookie;
use crate::http::extract::Client;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    flash: Option<Flash>,
    error: Option<String>,
    email: String,
    next: &'static str,
    /// Where to go after sign-in (`/login?return_to=`), already checked
    /// by [`safe_return_to`]; empty for the default page.
    return_to: String,
    /// The sign-in worked but its cookie did not come back.
    cookie_refused: Option<CookieRefused>,
    /// The password matched but the email is not verified (offer a new
    /// link).
    unverified: bool,
    /// Whether to offer "Create an account" (not when registration is
    /// closed or needs an invitation).
    registration_open: bool,
}

/// What the login page says when the browser refused the session cookie.
struct CookieRefused {
    /// The plain-HTTP public URL the browser uses.
    public_url: String,
    /// Whether that is localhost (where only Safari refuses the cookie).
    loopback: bool,
}

/// The "a page sign-in just happened" marker (see the module docs).
pub(super) const LOGIN_MARKER: &str = "tessera_signed_in";

/// Whether browsers may refuse this server's session cookie: it is
/// `Secure` and the public URL is plain HTTP.
fn cookie_may_be_refused(state: &AppState) -> bool {
    state.settings.cookie_secure && !state.settings.public_url.is_https
}

/// `Set-Cookie` for the marker: deliberately not `Secure` and without the
/// `__Host-` prefix (both would make browsers drop it exactly where it is
/// needed); a minute is plenty for the redirect that follows a sign-in.
fn login_marker() -> HeaderValue {
    HeaderValue::from_static("tessera_signed_in=1; Path=/; HttpOnly; SameSite=Lax; Max-Age=60")
}

/// `Set-Cookie` that drops the marker.
pub(super) fn clear_login_marker() -> HeaderValue {
    HeaderValue::from_static("tessera_signed_in=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// The 303 after a successful page sign-in: the credential's cookies and,
/// where a browser may refuse them, the marker.
fn signed_in_redirect(state: &AppState, location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = see_other_with_cookies(location, cookies);
    if cookie_may_be_refused(state) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, login_marker());
    }
    response
}

/// When the last "cookie refused" WARN line was written: at most one a
/// minute (anyone can send the marker; the log must not grow with it).
static LAST_REFUSED_COOKIE_WARNING: std::sync::Mutex<Option<std::time::Instant>> =
    std::sync::Mutex::new(None);

/// Whether a once-a-minute log line may be written now (and if so, notes
/// that it was).
fn warn_now(last: &std::sync::Mutex<Option<std::time::Instant>>) -> bool {
    let now = std::time::Instant::now();
    let mut last = last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match *last {
        Some(at) if now.saturating_duration_since(at) < std::time::Duration::from_secs(60) => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

/// Whether the request carries any of Tessera's own (possibly `Secure`)
/// cookies: the session cookie, or the jwt-cookie mode's two.
fn carries_tessera_cookie(headers: &HeaderMap, state: &AppState) -> bool {
    let s = &state.settings;
    [
        s.session_cookie_name(),
        s.access_cookie_name(),
        s.refresh_cookie_name(),
    ]
    .iter()
    .any(|name| read_cookie(headers, name).is_some())
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    nav: Nav,
    error: Option<String>,
    email: String,
    /// The invitation the form carries (hidden), if any.
    invitation: String,
    /// Why there is no form (registration closed, or an invitation is
    /// needed or not valid).
    closed: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegisterQuery {
    invitation: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginQuery {
    done: String,
    next: String,
    return_to: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    email: String,
    password: String,
    next: String,
    return_to: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegisterForm {
    email: String,
    password: String,
    confirm_password: String,
    invitation: String,
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

/// The `return_to` a sign-in may send the browser back to, as it will be
/// sent (`None`: the default page instead). Never an open redirect: only
/// a path on this server (`/…`, not `//…`, printable ASCII without
/// backslashes, which browsers would read as another host), or an
/// absolute `http`/`https` URL without credentials whose origin is the
/// public URL's or one of `return_origins`.
fn safe_return_to(raw: &str, public_origin: &str, return_origins: &[String]) -> Option<String> {
    const MAX_LEN: usize = 2048;
    if raw.is_empty()
        || raw.len() > MAX_LEN
        || !raw.bytes().all(|b| b.is_ascii_graphic())
        || raw.contains('\\')
    {
        return None;
    }
    if raw.starts_with('/') {
        return (!raw.starts_with("//")).then(|| raw.to_owned());
    }
    let url = url::Url::parse(raw).ok()?;
    let origin = crate::config::origin_of(&url)?;
    (origin == public_origin || return_origins.contains(&origin)).then(|| url.to_string())
}

/// [`safe_return_to`] with this server's settings.
fn return_to(state: &AppState, raw: &str) -> Option<String> {
    safe_return_to(
        raw,
        &state.settings.public_url.origin,
        &state.settings.return_origins,
    )
}

/// Whether anyone may open the registration form without an invitation.
fn registration_open(state: &AppState) -> bool {
    state.core.registration() == Registration::Open
}

/// `/`: the account when signed in, else the login page.
pub async fn root(State(state): State<AppState>, parts: Parts) -> Result<Response, PageError> {
    match current(&parts, &state).await? {
        Ok(_) => Ok(see_other("/account")),
        Err(dead_cookie) => Ok(signed_out_redirect(&state, "/login", dead_cookie)),
    }
}

fn signed_out_redirect(state: &AppState, to: &str, dead_cookie: bool) -> Response {
    if dead_cookie {
        let mut response = signed_out_to(state, to);
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear_login_marker());
        response
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
    let return_to = return_to(&state, &query.return_to);
    let dead_cookie = match current(&parts, &state).await? {
        Ok(_) => return Ok(see_other(return_to.as_deref().unwrap_or(next))),
        Err(dead_cookie) => dead_cookie,
    };
    let flash = match query.done.as_str() {
        "signed_out" => Some(Flash::ok("You have been signed out.")),
        "signed_out_everywhere" => Some(Flash::ok(
            "You have been signed out on every device, and every API token was revoked.",
        )),
        "registered" => Some(Flash::ok("Your account is ready. Sign in to continue.")),
        "verify_email" => Some(Flash::ok(
            "Your account is ready. We mailed you a link to verify your email address: \
             open it, then sign in.",
        )),
        "password_reset" => Some(Flash::ok(
            "Your new password is set, and every device was signed out. Sign in with it.",
        )),
        "password_changed" => Some(Flash::ok(
            "Your password was changed and every device was signed out. Sign in with the new one.",
        )),
        _ => None,
    };
    // A sign-in a moment ago whose cookie did not come back (and not a
    // sign-out, which ends the cookie on purpose).
    let marker = read_cookie(&parts.headers, LOGIN_MARKER).is_some();
    let cookie_refused = (marker
        && cookie_may_be_refused(&state)
        && query.done.is_empty()
        && !carries_tessera_cookie(&parts.headers, &state))
    .then(|| CookieRefused {
        public_url: state.settings.public_url.url.clone(),
        loopback: state.settings.public_url.is_loopback,
    });
    if cookie_refused.is_some() && warn_now(&LAST_REFUSED_COOKIE_WARNING) {
        tracing::warn!(
            public_url = %state.settings.public_url.url,
            "a browser signed in but did not keep the Secure session cookie: the public URL is \
             plain HTTP; serve Tessera over HTTPS (or, for development only, set \
             TESSERA_COOKIE_SECURE=false)"
        );
    }
    let page = LoginPage {
        nav: Nav::anonymous(&state, "login"),
        flash,
        error: None,
        email: String::new(),
        next,
        return_to: return_to.unwrap_or_default(),
        cookie_refused,
        unverified: false,
        registration_open: registration_open(&state),
    };
    let mut response = render(StatusCode::OK, &page);
    if dead_cookie {
        for cookie in clearing_cookies(&state) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    if marker {
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear_login_marker());
    }
    Ok(response)
}

pub async fn login(
    State(state): State<AppState>,
    _: PageFresh,
    headers: HeaderMap,
    Client(client): Client,
    PageForm(form): PageForm<LoginForm>,
) -> Response {
    let next = safe_next(&form.next);
    // Checked again: the form is the client's to change.
    let return_to = return_to(&state, &form.return_to);
    let email = form.email.trim().to_owned();
    let failed_unverified = |status: StatusCode, message: String, email: String, unverified| {
        let page = LoginPage {
            nav: Nav::anonymous(&state, "login"),
            flash: None,
            error: Some(message),
            email,
            next,
            return_to: return_to.clone().unwrap_or_default(),
            cookie_refused: None,
            unverified,
            registration_open: registration_open(&state),
        };
        render(status, &page)
    };
    let failed = |status, message, email| failed_unverified(status, message, email, false);
    if email.is_empty() || form.password.is_empty() {
        return failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your email and your password.".to_owned(),
            email,
        );
    }
    let result = sign_in(
        &state,
        &headers,
        &email,
        Password::new(form.password),
        client,
    )
    .await;
    match result {
        Ok(cookies) => signed_in_redirect(&state, return_to.as_deref().unwrap_or(next), cookies),
        Err(SignInFailed { error: e, clear }) => {
            let unverified = matches!(e, CoreError::EmailNotVerified);
            let mut response = failed_unverified(
                form_status(&e),
                core_message(&e).into_owned(),
                email,
                unverified,
            );
            add_retry_after(&mut response, &e);
            // What the browser carried was ended, even though this login
            // failed: drop its cookies too.
            for cookie in clear {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
    }
}

pub async fn register_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    parts: Parts,
) -> Result<Response, PageError> {
    let query: RegisterQuery = parse_query(query.as_deref())?;
    if current(&parts, &state).await?.is_ok() {
        return Ok(see_other("/account"));
    }
    let mut page = RegisterPage {
        nav: Nav::anonymous(&state, "register"),
        error: None,
        email: String::new(),
        invitation: String::new(),
        closed: None,
    };
    let registration = state.core.registration();
    if registration == Registration::Closed {
        page.closed = Some(
            "Registration is closed on this server: ask an administrator for an account.".into(),
        );
    } else if !query.invitation.is_empty() {
        match state
            .core
            .invitation_email(&query.invitation)
            .await
            .map_err(PageError::core)?
        {
            Some(email) => {
                page.email = email;
                page.invitation = query.invitation;
            }
            None => {
                page.closed =
                    Some("This invitation is invalid, used or expired: ask for a new one.".into());
            }
        }
    } else if registration == Registration::Invite {
        page.closed = Some(
            "Registration on this server needs an invitation: open the link you were sent, \
             or ask an administrator for one."
                .into(),
        );
    }
    let status = if page.closed.is_some() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    let mut response = render(status, &page);
    if !page.invitation.is_empty() {
        response.headers_mut().insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    Ok(response)
}

pub async fn register(
    State(state): State<AppState>,
    _: PageFresh,
    headers: HeaderMap,
    Client(client): Client,
    PageForm(form): PageForm<RegisterForm>,
) -> Response {
    let email = form.email.trim().to_owned();
    let invitation = form.invitation.clone();
    let failed = |status: StatusCode, message: String, email: String| {
        let page = RegisterPage {
            nav: Nav::anonymous(&state, "register"),
            error: Some(message),
            email,
            invitation: invitation.clone(),
            closed: None,
        };
        render(status, &page)
    };
    // Registration closed to this form (closed, or an invitation that does
    // not work): the notice, not the form again.
    let closed = |message: String| {
        let page = RegisterPage {
            nav: Nav::anonymous(&state, "register"),
            error: None,
            email: String::new(),
            invitation: String::new(),
            closed: Some(message),
        };
        render(StatusCode::FORBIDDEN, &page)
    };
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
            Some(form.invitation.as_str()).filter(|i| !i.is_empty()),
            &client,
        )
        .await;
    let user = match created {
        Ok(user) => user,
        Err(CoreError::RegistrationClosed(why))
            if state.core.registration() != Registration::Open || !invitation.is_empty() =>
        {
            return closed(super::support::sentence(&why));
        }
        Err(e) => {
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
    };
    if state.core.email_verification() == EmailVerification::Required && !user.email_verified {
        return see_other("/login?done=verify_email");
    }
    // Signed in straight away; if that fails (a busy server), the account
    // exists and the login page says so.
    match sign_in(&state, &headers, &email, password, client).await {
        Ok(cookies) => signed_in_redirect(&state, "/account?done=welcome", cookies),
        Err(SignInFailed { error, clear }) => {
            tracing::warn!(error = %error, "sign-in right after registration failed");
            see_other_with_cookies("/login?done=registered", clear)
        }
    }
}

/// Ends this browser's session (or refresh family).
pub async fn logout(
    State(state): State<AppState>,
    SignedInForm { who, .. }: SignedInForm<NoFields>,
) -> Result<Response, PageError> {
    who.sign_out(&state).await.map_err(PageError::core)?;
    Ok(signed_out_to(&state, "/login?done=signed_out"))
}

#[cfg(test)]
mod tests {
    use super::safe_return_to;

    const PUBLIC: &str = "https://public.example";

    fn check(raw: &str) -> Option<String> {
        safe_return_to(raw, PUBLIC, &["http://app.example:8443".to_owned()])
    }

    #[test]
    fn paths_on_this_server_and_allowed_origins_are_returned_to() {
        for (raw, to) in [
            ("/app/", "/app/"),
            ("/app/x?a=1&b=%2F#frag", "/app/x?a=1&b=%2F#frag"),
            ("/", "/"),
            ("https://public.example/app/", "https://public.example/app/"),
            ("HTTPS://PUBLIC.example/app", "https://public.example/app"),
            ("https://public.example:443/x", "https://public.example/x"),
            ("http://app.example:8443/y?z", "http://app.example:8443/y?z"),
        ] {
            assert_eq!(check(raw).as_deref(), Some(to), "{raw}");
        }
    }

    #[test]
    fn never_an_open_redirect() {
        for raw in [
            "",
            "//evil.com",
            "//evil.com/x",
            "///evil.com",
            "/\\evil.com",
            "/\\/evil.com",
            "\\\\evil.com",
            "/\t/evil.com",
            "/\n/evil.com",
            "/ /evil.com",
            "/\u{3000}/evil.com",
            "https://evil.com",
            "https://evil.com/https://public.example",
            "https://public.example@evil.com",
            "https://public.example:x@evil.com/",
            "https://user@public.example/",
            "https://public.example.evil.com/",
            "https://evil.com#https://public.example",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "jAvAsCrIpT://public.example/%0aalert(1)",
            "data:text/html,<script>alert(1)</script>",
            "http://public.example/",
            "https://public.example:8443/",
            "http://app.example/",
            "https://app.example:8443/",
            "HTTP://APP.EXAMPLE:9443/",
            "evil.com",
            "app/relative",
            "?x=1",
            "#x",
        ] {
            assert_eq!(check(raw), None, "{raw:?}");
        }
        let long = format!("/{}", "a".repeat(5000));
        assert_eq!(check(&long), None);
    }
}
