//! The requests `tessera doctor --url` makes: the metadata document, the
//! JWKS and the login page, and, given credentials, a real login whose
//! cookie is examined, followed by a logout so nothing is left behind. The
//! rules live in [`super::remote`]; this file only fetches.
//!
//! Secrets stay inside: the password goes only into the login request body,
//! the cookie values and the CSRF token only into the logout and the
//! follow-up request. Findings name cookies, never their values.

use std::time::Duration;

use anyhow::Context;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::Finding;
use super::remote::{self, Expect, SetCookie, Target};
use crate::config::Settings;
use crate::core::accounts::Password;
use crate::inspect::Severity::{Info, Warning};

/// Each request gets this long in all; the connection, less.
const TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

const METADATA: &str = "/.well-known/oauth-authorization-server";
const JWKS: &str = "/.well-known/jwks.json";
const LOGIN_PAGE: &str = "/login";

/// An account to sign in with (`--email`, `--password-stdin`).
pub struct Credentials {
    pub email: String,
    pub password: Password,
}

/// An error and its causes on one line ("…: tcp connect error: Connection
/// refused").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn f(severity: crate::inspect::Severity, problem: String, fix: &str) -> Finding {
    Finding::new(severity, problem, fix)
}

/// Examines the server at `url`. `Err` only when it cannot be reached at
/// all (or `url` is not a URL); everything else is a finding.
pub async fn examine(
    url: &str,
    settings: &Settings,
    credentials: Option<Credentials>,
) -> anyhow::Result<Vec<Finding>> {
    let target = Target::parse(url).map_err(|e| anyhow::anyhow!("--url {e}"))?;
    let expect = Expect::from_settings(settings);
    let mut builder = Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tessera-doctor/", env!("CARGO_PKG_VERSION")));
    if target.is_loopback {
        builder = builder.no_proxy();
    }
    let client = builder.build().context("cannot set up the HTTP client")?;
    let mut out = Vec::new();

    let sent = OffsetDateTime::now_utc();
    let response = client
        .get(target.endpoint(METADATA))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {}: {}", target.url, chain(&e)))?;
    let received = OffsetDateTime::now_utc();
    out.push(remote::server_clock(
        response
            .headers()
            .get(header::DATE)
            .and_then(|v| v.to_str().ok()),
        sent,
        received,
        expect.clock_leeway,
    ));
    if let Some(body) = json_body(METADATA, response, &mut out).await {
        out.extend(remote::metadata(&body, &target, &expect));
    }

    match client.get(target.endpoint(JWKS)).send().await {
        Ok(response) => {
            if let Some(body) = json_body(JWKS, response, &mut out).await {
                out.extend(remote::jwks(&body, &expect));
            }
        }
        Err(e) => out.push(unreachable(JWKS, &e)),
    }

    match client.get(target.endpoint(LOGIN_PAGE)).send().await {
        Ok(response) if response.status() == StatusCode::OK => {
            out.extend(remote::page_headers(
                LOGIN_PAGE,
                response.headers(),
                &target,
            ));
        }
        Ok(response) => out.push(unexpected(LOGIN_PAGE, &response)),
        Err(e) => out.push(unreachable(LOGIN_PAGE, &e)),
    }

    if let Some(credentials) = credentials {
        out.extend(login_round_trip(&client, &target, &expect, credentials).await);
    }
    Ok(out)
}

fn unreachable(path: &str, e: &reqwest::Error) -> Finding {
    f(
        Warning,
        format!("GET {path} failed: {}", chain(e)),
        "check that the proxy routes this path to Tessera",
    )
}

fn unexpected(path: &str, response: &Response) -> Finding {
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return f(
            Warning,
            format!("GET {path} redirects ({}) to {to}", status.as_u16()),
            "run the doctor against the URL clients end up on (https://…); Tessera itself never redirects this path",
        );
    }
    f(
        Warning,
        format!("GET {path} answered {status}, not 200"),
        "check that the proxy routes this path to Tessera",
    )
}

/// The JSON body of a 200 answer; anything else becomes a finding.
async fn json_body(path: &str, response: Response, out: &mut Vec<Finding>) -> Option<Value> {
    if response.status() != StatusCode::OK {
        out.push(unexpected(path, &response));
        return None;
    }
    match response.json::<Value>().await {
        Ok(v) => Some(v),
        Err(e) => {
            out.push(f(
                Warning,
                format!("GET {path}: the answer is not JSON ({})", chain(&e)),
                "check that the proxy routes this path to Tessera",
            ));
            None
        }
    }
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// Signs in, checks the cookie, signs out, and checks the session is gone.
async fn login_round_trip(
    client: &Client,
    target: &Target,
    expect: &Expect,
    credentials: Credentials,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if !target.is_https && !target.is_loopback {
        out.push(f(
            Warning,
            format!(
                "login not tried: the password would cross the network in clear text to {}",
                target.url
            ),
            "run the doctor against the https:// URL",
        ));
        return out;
    }
    let body = Zeroizing::new(
        serde_json::json!({
            "email": credentials.email,
            "password": credentials.password.expose(),
        })
        .to_string(),
    );
    let response = client
        .post(target.endpoint("/v1/sessions"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(body.as_bytes().to_vec())
        .send()
        .await;
    drop(body);
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            out.push(f(
                Warning,
                format!("login: POST /v1/sessions failed: {}", chain(&e)),
                "check that the proxy routes /v1/ to Tessera",
            ));
            return out;
        }
    };
    let status = response.status();
    let headers = response.headers().clone();
    if status != StatusCode::CREATED {
        let body = response.json::<Value>().await.ok();
        let field = |name: &str| {
            body.as_ref()
                .and_then(|v| v.get(name).and_then(Value::as_str))
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>()
        };
        let (code, message) = (field("error"), field("message"));
        let invalid_fix;
        out.push(f(
            Warning,
            format!("login: POST /v1/sessions answered {status} {code}: cookie checks skipped"),
            match status {
                StatusCode::UNAUTHORIZED => "check the email and password given to the doctor",
                StatusCode::TOO_MANY_REQUESTS => "wait for Retry-After, then run the doctor again",
                StatusCode::FORBIDDEN => "check the account (suspended?) and that the proxy does not add a foreign Origin",
                // The server read the request and refused its content: the
                // account details given to the doctor, not the routing.
                StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
                    invalid_fix = format!(
                        "give --email an account's email address and its password (the server said: {})",
                        if message.is_empty() { "the request is invalid" } else { &message }
                    );
                    &invalid_fix
                }
                _ => "check that the proxy routes POST /v1/sessions to Tessera",
            },
        ));
        return out;
    }
    let login_cookies = set_cookies(&headers);
    out.extend(remote::secret_response("login", &headers));
    out.extend(remote::login_cookies(&login_cookies, target, expect));
    let csrf = Zeroizing::new(
        response
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| {
                v.get("csrf_token")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default(),
    );
    if csrf.is_empty() {
        out.push(f(
            Warning,
            "login: the answer has no csrf_token: browsers cannot make any state-changing request"
                .to_owned(),
            "let Tessera's JSON answer through the proxy unchanged",
        ));
    }
    // The cookies as a browser would send them back (values never shown).
    let names: Vec<String> = login_cookies
        .iter()
        .filter_map(|c| SetCookie::parse(c))
        .filter(|c| !c.value_empty)
        .map(|c| c.name)
        .collect();
    let jar = Zeroizing::new(
        login_cookies
            .iter()
            .filter_map(|c| c.split(';').next())
            .map(str::trim)
            .filter(|pair| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
            .collect::<Vec<_>>()
            .join("; "),
    );
    if jar.is_empty() {
        return out;
    }
    let Ok(mut cookie_header) = HeaderValue::from_str(&jar) else {
        out.push(f(
            Warning,
            "login: the cookie cannot be sent back (not a valid header value)".to_owned(),
            "let Tessera's Set-Cookie through unchanged",
        ));
        return out;
    };
    cookie_header.set_sensitive(true);
    let mut logout = client
        .delete(target.endpoint("/v1/session"))
        .header(header::COOKIE, cookie_header.clone());
    if let Ok(mut value) = HeaderValue::from_str(&csrf) {
        value.set_sensitive(true);
        logout = logout.header("x-csrf-token", value);
    }
    let logout_status = match logout.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            out.extend(remote::logout(status, &set_cookies(r.headers()), &names));
            status
        }
        Err(e) => {
            out.push(f(
                Warning,
                format!(
                    "logout: DELETE /v1/session failed ({}): the doctor's session may remain until it expires",
                    chain(&e)
                ),
                "`tessera user revoke ID` ends every session of the account",
            ));
            return out;
        }
    };
    if logout_status != 204 {
        return out;
    }
    match client
        .get(target.endpoint("/v1/session"))
        .header(header::COOKIE, cookie_header)
        .send()
        .await
    {
        Ok(r) if r.status() == StatusCode::UNAUTHORIZED => out.push(f(
            Info,
            "login and logout: the session ended server-side; the doctor left nothing behind"
                .to_owned(),
            "none needed",
        )),
        Ok(r) if r.status().is_success() => out.push(f(
            crate::inspect::Severity::Danger,
            "logout: the session still works after DELETE /v1/session answered 204: a stolen cookie outlives sign-out".to_owned(),
            "check for a cache or proxy answering /v1/session on Tessera's behalf; `tessera user revoke ID` ends the account's sessions",
        )),
        Ok(r) => out.push(f(
            Warning,
            format!(
                "logout: GET /v1/session with the old cookie answered {}, expected 401",
                r.status()
            ),
            "check that the proxy routes /v1/session to Tessera",
        )),
        Err(e) => out.push(unreachable("/v1/session", &e)),
    }
    out
}
