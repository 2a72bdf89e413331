//! What every page shares: rendering, the one page error type, the
//! signed-in extractors (session check + CSRF for forms), form bodies that
//! fail as HTML pages, and display helpers.
//!
//! CSRF for forms, exactly as the contract states it:
//! - login and register have no session yet: they are refused when `Origin`
//!   is present and foreign or `Sec-Fetch-Site` is `cross-site`
//!   ([`PageFresh`], built on [`check_fresh_request`]);
//! - every form posted by a signed-in browser must carry the hidden field
//!   `csrf_token` equal to the session's CSRF token, or in jwt-cookie mode
//!   the refresh family's (constant-time compare),
//!   and any `Origin` it has must be the public URL's, `Origin: null` being
//!   foreign ([`check_session_form`], enforced by [`SignedInForm`], so a
//!   handler cannot forget it).

use std::borrow::Cow;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::de::DeserializeOwned;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use super::browser::{Via, clearing_cookies, current};
use crate::core::accounts::User;
use crate::core::error::CoreError;
use crate::core::registration::Registration;
use crate::core::secret::secrets_equal;
use crate::http::AppState;
use crate::http::csrf::{Refusal, Seen, check_fresh_request, check_provenance};
use crate::http::error::{retry_after, status_and_code};

/// Name of the hidden form field carrying the session's CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";

/// The header of every page: who is signed in, and the token its sign-out
/// form needs.
#[derive(Clone, Default)]
pub struct Nav {
    pub email: Option<String>,
    pub is_admin: bool,
    pub csrf_token: String,
    /// Which page is current: `login`, `register`, `account`, `admin`.
    pub section: &'static str,
    /// Show the sign-in / register links (off on error pages).
    pub links: bool,
    /// Offer "Create account" (not when registration is closed or needs
    /// an invitation).
    pub register: bool,
}

impl Nav {
    /// The header of a page for someone not signed in.
    pub fn anonymous(state: &AppState, section: &'static str) -> Self {
        Self {
            section,
            links: true,
            register: state.core.registration() == Registration::Open,
            ..Self::default()
        }
    }
}

/// A one-line result message shown at the top of a page.
#[derive(Clone)]
pub struct Flash {
    /// `ok`, `info` or `error` (a CSS modifier).
    pub kind: &'static str,
    pub text: Cow<'static, str>,
}

impl Flash {
    pub fn ok(text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind: "ok",
            text: text.into(),
        }
    }

    pub fn info(text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind: "info",
            text: text.into(),
        }
    }

    pub fn error(text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind: "error",
            text: text.into(),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Nav,
    status: u16,
    title: &'a str,
    message: &'a str,
    code: &'a str,
    /// Where the page's button leads instead of `/` (an absolute URL).
    continue_to: Option<&'a str>,
}

/// Renders a template with a status; a rendering failure (a bug) is a bare
/// 500 page, never a panic.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(
                    "<!doctype html><title>Error · Tessera</title>\
                     <h1>Something went wrong on our side.</h1>",
                ),
            )
                .into_response()
        }
    }
}

/// The error page a browser gets for an address no route has (404) or a
/// method the route does not take (405), with the pages' security headers
/// (`http::middleware` chooses it over the contract's JSON by `Accept`).
pub fn status_page(
    settings: &std::sync::Arc<crate::config::Settings>,
    status: StatusCode,
) -> Response {
    let (title, message, code) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "Method not allowed",
            "This address does not accept that kind of request. Go back to the start and use \
             the page's own links and buttons.",
            "invalid_request",
        ),
        _ => (
            "Page not found",
            "There is no page at this address. Check the link, or go back to the start.",
            "not_found",
        ),
    };
    super::brand::sync_scope(settings.clone(), || {
        let page = ErrorPage {
            nav: Nav::default(),
            status: status.as_u16(),
            title,
            message,
            code,
            continue_to: None,
        };
        let mut response = render(status, &page);
        super::page_headers(response.headers_mut());
        response
    })
}

/// Every way a page request can end other than its own page. (No `Debug`:
/// the header it may carry holds the session's CSRF token.)
pub enum PageError {
    /// Not signed in (no session, or it ended): go to the login page,
    /// dropping a dead cookie on the way.
    SignIn {
        clear: Vec<HeaderValue>,
        next: Option<&'static str>,
    },
    /// An error page (with the signed-in header when `nav` is known).
    Page {
        status: StatusCode,
        title: &'static str,
        message: Cow<'static, str>,
        code: &'static str,
        retry_after: Option<u64>,
        nav: Option<Box<Nav>>,
        /// Where the button leads instead of `/`: the public URL, when the
        /// browser is on another address of this server.
        continue_to: Option<String>,
    },
}

impl PageError {
    pub fn page(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::Page {
            status,
            title,
            message: message.into(),
            code,
            retry_after: None,
            nav: None,
            continue_to: None,
        }
    }

    /// Shows the error under the signed-in header.
    pub fn with_nav(self, with: Nav) -> Self {
        match self {
            Self::Page {
                status,
                title,
                message,
                code,
                retry_after,
                continue_to,
                ..
            } => Self::Page {
                status,
                title,
                message,
                code,
                retry_after,
                nav: Some(Box::new(with)),
                continue_to,
            },
            other => other,
        }
    }

    pub fn csrf(reason: impl Into<Cow<'static, str>>) -> Self {
        let reason = reason.into();
        Self::page(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "Request refused",
            format!(
                "Tessera refused this form because it did not come from one of its own pages \
                 ({reason}). Nothing was changed. If you sent it, reload the page and try again."
            ),
        )
    }

    /// A form refused on provenance: where it was sent from, the public URL
    /// (`public_origin`) and the fix; reloading would not help.
    pub fn refused(refusal: &Refusal, public_origin: &str) -> Self {
        let from = match (refusal, refusal.seen()) {
            (Refusal::ForeignOrigin(_), Seen::Origin(o)) => format!("from a page at {o}"),
            (Refusal::CrossSite(_), Seen::Origin(o)) => format!("from another site ({o})"),
            (_, Seen::Null) => "from a page whose origin the browser hides (Origin: null)".into(),
            (Refusal::ForeignOrigin(_), Seen::Unknown) => "from another origin".into(),
            (Refusal::CrossSite(_), Seen::Unknown) => "from another site".into(),
        };
        let operator = match refusal.alias_origin(public_origin) {
            Some(o) => format!(
                " If you run this server and {o} is the address people should use, set \
                 TESSERA_PUBLIC_URL to {o} and restart Tessera."
            ),
            None => String::new(),
        };
        Self::Page {
            status: StatusCode::FORBIDDEN,
            title: "Request refused",
            message: format!(
                "Tessera refused this form because it was sent {from}, and Tessera accepts \
                 forms only from its own pages at its public URL, {public_origin}. Nothing was \
                 changed, and reloading will not help: open {public_origin} in your browser and \
                 try there.{operator}"
            )
            .into(),
            code: "csrf_failed",
            retry_after: None,
            nav: None,
            continue_to: Some(format!("{public_origin}/")),
        }
    }

    pub fn bad_form(message: impl Into<Cow<'static, str>>) -> Self {
        Self::page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Bad request",
            message,
        )
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::page(StatusCode::FORBIDDEN, "forbidden", "Not allowed", message)
    }

    /// The page for a core error that has no better place on its page:
    /// the status and code of the one mapping ([`status_and_code`]), with
    /// a title for a person.
    pub fn core(e: CoreError) -> Self {
        if matches!(e, CoreError::Unauthenticated) {
            return Self::SignIn {
                clear: Vec::new(),
                next: None,
            };
        }
        let (status, code) = status_and_code(&e);
        Self::Page {
            status,
            title: page_title(&e),
            message: core_message(&e),
            code,
            retry_after: retry_after(&e),
            nav: None,
            continue_to: None,
        }
    }
}

/// The error page's title for a core error.
fn page_title(e: &CoreError) -> &'static str {
    match e {
        CoreError::InvalidCredentials | CoreError::Unauthenticated => "Not signed in",
        CoreError::AccountSuspended => "Account suspended",
        CoreError::Forbidden(_) => "Not allowed",
        CoreError::RegistrationClosed(_) => "Registration closed",
        CoreError::EmailNotVerified => "Email not verified",
        CoreError::NotFound(_) => "Not found",
        CoreError::Conflict(_) => "Conflict",
        CoreError::LastAdmin => "Last active admin",
        CoreError::Validation(_) => "Check your input",
        CoreError::Busy | CoreError::Unavailable => "Temporarily unavailable",
        CoreError::RateLimited(_) => "Too many attempts",
        CoreError::InvalidToken => "Invalid link",
        CoreError::InvalidGrant(_) | CoreError::InvalidScope | CoreError::InvalidClient => {
            "Bad request"
        }
    }
}

/// The status a page answers a failed form with, when the page is shown
/// again with the error (the one mapping's, [`status_and_code`]).
pub fn form_status(e: &CoreError) -> StatusCode {
    status_and_code(e).0
}

/// `Retry-After` on a response, when the error asks for one.
pub fn add_retry_after(response: &mut Response, e: &CoreError) {
    if let Some(secs) = retry_after(e) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// `in 45 seconds`, `in 3 minutes`.
fn wait_text(secs: u64) -> String {
    match secs {
        0..=1 => "in a second".to_owned(),
        2..=90 => format!("in {secs} seconds"),
        _ => format!("in {} minutes", secs.div_ceil(60)),
    }
}

/// A core error as a sentence for a person.
pub fn core_message(e: &CoreError) -> Cow<'static, str> {
    match e {
        CoreError::InvalidCredentials => "The email or password is incorrect.".into(),
        CoreError::AccountSuspended => "This account is suspended.".into(),
        CoreError::EmailNotVerified => "This account's email address is not verified yet. \
             Open the link we mailed you, or ask for a new one."
            .into(),
        CoreError::Busy => "The server is busy right now. Please try again in a moment.".into(),
        CoreError::Unavailable => {
            "Tessera cannot reach its database right now. Please try again shortly.".into()
        }
        CoreError::Unauthenticated => "Please sign in again.".into(),
        CoreError::RateLimited(secs) => format!(
            "Too many attempts. Please wait and try again {}.",
            wait_text(*secs)
        )
        .into(),
        other => sentence(&other.to_string()).into(),
    }
}

/// `"password must be …"` → `"Password must be …."`.
pub fn sentence(s: &str) -> String {
    let s = s.trim();
    let mut out = String::with_capacity(s.len() + 1);
    let mut chars = s.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn { clear, next } => {
                let location = match next {
                    Some("/admin") => "/login?next=%2Fadmin",
                    _ => "/login",
                };
                let mut response = see_other(location);
                if !clear.is_empty() {
                    for cookie in clear {
                        response.headers_mut().append(header::SET_COOKIE, cookie);
                    }
                    // The session ended here: a sign-in marker still held
                    // must not read as a refused cookie on the login page.
                    response
                        .headers_mut()
                        .append(header::SET_COOKIE, super::auth::clear_login_marker());
                }
                response
            }
            PageError::Page {
                status,
                title,
                message,
                code,
                retry_after,
                nav,
                continue_to,
            } => {
                let page = ErrorPage {
                    nav: nav.map(|n| *n).unwrap_or_default(),
                    status: status.as_u16(),
                    title,
                    message: &message,
                    code,
                    continue_to: continue_to.as_deref(),
                };
                let mut response = render(status, &page);
                if let Some(secs) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                response
            }
        }
    }
}

/// 303 See Other: the post/redirect/get step (and every page redirect).
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// 303 that also sets (or clears) the session cookie.
pub fn see_other_with_cookie(location: &str, cookie: HeaderValue) -> Response {
    see_other_with_cookies(location, vec![cookie])
}

/// 303 that also sets (or clears) cookies.
pub fn see_other_with_cookies(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = see_other(location);
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The 303 after the browser's own credential ended (signed out, signed
/// out everywhere, its account changed by its own admin): to the login
/// page, with the cookies dropped.
pub fn signed_out_to(state: &AppState, location: &str) -> Response {
    see_other_with_cookies(location, clearing_cookies(state))
}

/// A page location with a query built safely from pairs (empty values
/// dropped).
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    match serde_urlencoded::to_string(&kept) {
        Ok(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// CSRF

/// The request-header half of [`check_session_form`]: the same provenance
/// rule as login and register ([`SignedInForm`] checks it first, before the
/// body is read, and shows the full [`PageError::refused`] page).
fn form_provenance(headers: &HeaderMap, public_origin: &str) -> Result<(), &'static str> {
    check_fresh_request(headers, public_origin)
        .map_err(|_| "the request comes from another origin or site")
}

/// The form-field variant of the session CSRF check: `presented` is the
/// form's `csrf_token` field, `expected` the session's token. Any `Origin`
/// must be the public URL's (`null` is foreign); a `Sec-Fetch-Site:
/// cross-site` post is refused as well (defence in depth: no signed-in form
/// is ever legitimately posted from another site).
pub fn check_session_form(
    headers: &HeaderMap,
    public_origin: &str,
    expected: &str,
    presented: Option<&str>,
) -> Result<(), &'static str> {
    form_provenance(headers, public_origin)?;
    match presented {
        Some(token) if !token.is_empty() && secrets_equal(token, expected) => Ok(()),
        Some(t) if !t.is_empty() => Err("the form's security token is wrong"),
        _ => Err("the form's security token is missing"),
    }
}

/// Login and register: refused before the body is read when the request
/// comes from another origin or site.
pub struct PageFresh;

impl FromRequestParts<AppState> for PageFresh {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let origin = &state.settings.public_url.origin;
        check_provenance(&parts.headers, origin).map_err(|r| PageError::refused(&r, origin))?;
        Ok(PageFresh)
    }
}

// ---------------------------------------------------------------------------
// Signed-in browsers

/// A signed-in browser, on a page: by its session, or (jwt-cookie mode)
/// by its access cookie ([`super::browser`]).
pub struct SignedIn {
    /// The user as the store has it now (not as a token once said).
    pub user: Arc<User>,
    pub via: Via,
    /// What the page's forms must carry: the session's CSRF token, or the
    /// refresh family's.
    pub csrf_token: String,
}

impl SignedIn {
    pub fn nav(&self, section: &'static str) -> Nav {
        Nav {
            email: Some(self.user.email.clone()),
            is_admin: self.user.has_role("admin"),
            csrf_token: self.csrf_token.clone(),
            section,
            links: true,
            // Signed in: the header shows the account, not these links.
            register: false,
        }
    }

    pub fn user_id(&self) -> &str {
        &self.user.id
    }
}

/// Where a signed-out visitor of `path` should come back to after login.
fn next_for(path: &str) -> Option<&'static str> {
    (path == "/admin").then_some("/admin")
}

async fn signed_in(parts: &Parts, state: &AppState) -> Result<SignedIn, PageError> {
    match current(parts, state).await? {
        Ok(who) => Ok(who),
        Err(dead_cookie) => Err(PageError::SignIn {
            clear: if dead_cookie {
                clearing_cookies(state)
            } else {
                Vec::new()
            },
            next: next_for(parts.uri.path()),
        }),
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        signed_in(parts, state).await
    }
}

/// A form posted by a signed-in browser: session verified, origin checked
/// before the body is read, then the `csrf_token` field checked, then the
/// fields parsed into `T` (which ignores the token field).
pub struct SignedInForm<T> {
    pub who: SignedIn,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for SignedInForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (parts, body) = req.into_parts();
        let who = signed_in(&parts, state).await?;
        let origin = &state.settings.public_url.origin;
        // Provenance first: a foreign post is refused before its body is read.
        check_provenance(&parts.headers, origin).map_err(|r| PageError::refused(&r, origin))?;
        let headers = parts.headers.clone();
        let bytes = form_bytes(Request::from_parts(parts, body), state).await?;
        let presented = single_field(&bytes, CSRF_FIELD)?;
        check_session_form(&headers, origin, &who.csrf_token, presented.as_deref())
            .map_err(PageError::csrf)?;
        let form = parse_form(&bytes)?;
        Ok(SignedInForm { who, form })
    }
}

/// A form body (for login and register).
pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let bytes = form_bytes(req, state).await?;
        parse_form(&bytes).map(PageForm)
    }
}

async fn form_bytes(req: Request, state: &AppState) -> Result<Bytes, PageError> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(PageError::page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported form",
            "Send the form as application/x-www-form-urlencoded, as the page's own forms do.",
        ));
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            PageError::page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Form too large",
                "The form is larger than 64 KiB.",
            )
        } else {
            PageError::bad_form("The form could not be read.")
        }
    })
}

fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PageError> {
    serde_urlencoded::from_bytes(bytes).map_err(|_| {
        PageError::bad_form("The form could not be read: a field is repeated or malformed.")
    })
}

/// The one value of field `name`; a repeated field is malformed.
fn single_field(bytes: &[u8], name: &str) -> Result<Option<String>, PageError> {
    let mut found = None;
    for (k, v) in url::form_urlencoded::parse(bytes) {
        if k == name {
            if found.is_some() {
                return Err(PageError::csrf("the security token is repeated"));
            }
            found = Some(v.into_owned());
        }
    }
    Ok(found)
}

/// A query string parsed into `T`; malformed → a 400 page.
pub fn parse_query<T: DeserializeOwned + Default>(raw: Option<&str>) -> Result<T, PageError> {
    match raw {
        None | Some("") => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|_| PageError::bad_form("The address has a malformed query string.")),
    }
}

// ---------------------------------------------------------------------------
// Display helpers

/// `2026-11-23`.
pub fn day(t: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]");
    t.to_offset(UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| crate::core::time::rfc3339(t))
}

/// `2026-11-23 14:05 UTC`.
pub fn when(t: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.to_offset(UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| crate::core::time::rfc3339(t))
}

/// `just now`, `5 minutes ago`, `3 hours ago`, `2 days ago`.
pub fn ago(now: OffsetDateTime, t: OffsetDateTime) -> String {
    let secs = (now - t).whole_seconds();
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        s if s < 60 => "just now".to_owned(),
        s if s < 3_600 => plural(s / 60, "minute"),
        s if s < 86_400 => plural(s / 3_600, "hour"),
        s => plural(s / 86_400, "day"),
    }
}

/// A short name for a user agent: `Chrome on Linux`, `Firefox on macOS`,
/// `curl`; the full string is shown on hover.
pub fn describe_user_agent(ua: Option<&str>) -> String {
    let Some(ua) = ua.filter(|u| !u.trim().is_empty()) else {
        return "Unknown device".to_owned();
    };
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("HeadlessChrome/", "Headless Chrome"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(o)) => format!("Browser on {o}"),
        (None, None) => ua.chars().take(40).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "http://localhost:8080";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn session_forms_need_the_field_and_a_matching_origin() {
        let none = headers(&[]);
        let same = headers(&[("origin", ORIGIN), ("sec-fetch-site", "same-origin")]);
        assert!(check_session_form(&none, ORIGIN, "tok", Some("tok")).is_ok());
        assert!(check_session_form(&same, ORIGIN, "tok", Some("tok")).is_ok());
        assert!(check_session_form(&none, ORIGIN, "tok", None).is_err());
        assert!(check_session_form(&none, ORIGIN, "tok", Some("")).is_err());
        assert!(check_session_form(&none, ORIGIN, "tok", Some("tok2")).is_err());
        for bad in [
            headers(&[("origin", "null")]),
            headers(&[("origin", "http://localhost:9999")]),
            headers(&[("origin", "http://127.0.0.1:8080")]),
            headers(&[("origin", ORIGIN), ("origin", "http://evil.example")]),
            headers(&[("sec-fetch-site", "cross-site")]),
        ] {
            assert!(check_session_form(&bad, ORIGIN, "tok", Some("tok")).is_err());
        }
    }

    #[test]
    fn sentences_and_times_read_well() {
        assert_eq!(
            sentence("password must be at least 8 characters"),
            "Password must be at least 8 characters."
        );
        assert_eq!(sentence("Done."), "Done.");
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        assert_eq!(when(t), "2024-10-04 00:00 UTC");
        assert_eq!(ago(t, t), "just now");
        assert_eq!(ago(t + time::Duration::minutes(1), t), "1 minute ago");
        assert_eq!(ago(t + time::Duration::hours(5), t), "5 hours ago");
        assert_eq!(ago(t + time::Duration::days(2), t), "2 days ago");
    }

    #[test]
    fn user_agents_are_summarised() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      HeadlessChrome/156.0.0.0 Safari/537.36";
        assert_eq!(
            describe_user_agent(Some(chrome)),
            "Headless Chrome on Linux"
        );
        assert_eq!(describe_user_agent(Some("curl/8.1")), "curl");
        assert_eq!(describe_user_agent(None), "Unknown device");
    }

    #[test]
    fn queries_are_built_encoded() {
        assert_eq!(
            with_query("/admin", &[("done", "roles"), ("q", "a&b c"), ("x", "")]),
            "/admin?done=roles&q=a%26b+c"
        );
        assert_eq!(with_query("/admin", &[("q", "")]), "/admin");
    }
}
