//! The rules `tessera doctor --url` applies to what a running server answers:
//! response headers and JSON in, findings out. No network here (see
//! [`super::probe`]), so each rule is unit-tested with the bytes a broken
//! deployment would send.
//!
//! Severities follow the local doctor: *danger* is a hole an attacker can use
//! today (a published private key, a cookie readable by scripts or sent to
//! other hosts, clear-text tokens, a clock beyond the leeway, a frameable
//! login page); *warning* is a departure from the contract or a weakness
//! (missing prefix, missing header, an issuer that does not match); *info*
//! is what was checked and found fine. Nothing here ever repeats a cookie
//! value, a token or a password: findings name cookies and attributes only.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;
use time::OffsetDateTime;

use super::Finding;
use crate::config::Settings;
use crate::core::keys::TokenAlg;
use crate::inspect::Severity::{self, Danger, Info, Warning};

/// JWK members that belong to a private or symmetric key (RFC 7518 §6).
const PRIVATE_JWK_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Browsers cap cookie lifetimes at 400 days (RFC 6265bis).
const BROWSER_COOKIE_CAP: Duration = Duration::from_secs(400 * 86_400);

/// HSTS shorter than this protects little (the usual floor is 180 days).
const HSTS_MIN_SECS: u64 = 180 * 86_400;

/// What this machine's configuration says the server should look like.
#[derive(Debug, Clone)]
pub struct Expect {
    /// `TESSERA_PUBLIC_URL` as configured here.
    pub public_url: String,
    pub token_alg: TokenAlg,
    pub clock_leeway: Duration,
    pub session_lifetime: Duration,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl Expect {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            public_url: s.public_url.url.clone(),
            token_alg: s.token_alg,
            clock_leeway: s.clock_leeway,
            session_lifetime: s.session_absolute_timeout,
            access_ttl: s.access_token_ttl,
            refresh_ttl: s.refresh_token_ttl,
        }
    }
}

/// The server as `--url` addresses it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL given, with a trailing `/` so endpoints join under it.
    pub base: url::Url,
    /// The URL given, without a trailing `/` (what an issuer would be).
    pub url: String,
    /// `scheme://host[:port]`.
    pub origin: String,
    pub is_https: bool,
    pub is_loopback: bool,
}

impl Target {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut base = url::Url::parse(raw.trim()).map_err(|e| format!("{raw:?}: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!("{raw:?}: only http:// and https:// URLs"));
        }
        if base.host_str().is_none() {
            return Err(format!("{raw:?}: no host"));
        }
        if base.query().is_some() || base.fragment().is_some() || !base.username().is_empty() {
            return Err(format!(
                "{raw:?}: give the server's base URL, without query, fragment or user"
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let url = base.as_str().trim_end_matches('/').to_owned();
        Ok(Self {
            origin: base.origin().ascii_serialization(),
            is_https: base.scheme() == "https",
            is_loopback: is_loopback(&base),
            url,
            base,
        })
    }

    /// The absolute URL of `path` (contract paths such as `/v1/session`)
    /// under the base URL.
    pub fn endpoint(&self, path: &str) -> url::Url {
        self.base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone())
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn f(severity: Severity, problem: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding::new(severity, problem, fix)
}

/// `GET /.well-known/jwks.json`: public parameters only, each key usable by
/// a verifier (`kid`, `alg`, `use: sig`), of the configured algorithm.
pub fn jwks(body: &Value, expect: &Expect) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(keys) = body.get("keys").and_then(Value::as_array) else {
        out.push(f(
            Warning,
            "JWKS: the document has no \"keys\" array: resource servers cannot verify tokens",
            "serve Tessera's own /.well-known/jwks.json (check the proxy's routes)",
        ));
        return out;
    };
    let configured = expect.token_alg.as_str();
    if keys.is_empty() {
        if expect.token_alg != TokenAlg::HS256 {
            out.push(f(
                Warning,
                format!("JWKS: no keys, but this configuration signs with {configured}: resource servers cannot verify tokens"),
                "check that --url reaches the server this configuration describes (a server with TESSERA_TOKEN_ALG=HS256 publishes no keys)",
            ));
        } else {
            out.push(f(
                Info,
                "JWKS: empty, as HS256 requires (its secret is never published)",
                "none needed",
            ));
        }
        return out;
    }
    let mut algs: Vec<String> = Vec::new();
    let mut kids: Vec<String> = Vec::new();
    let mut dangerous = false;
    for (i, key) in keys.iter().enumerate() {
        let kid = key.get("kid").and_then(Value::as_str);
        let name = kid.map_or_else(|| format!("#{}", i + 1), |k| format!("{k:?}"));
        let private: Vec<&str> = PRIVATE_JWK_MEMBERS
            .iter()
            .copied()
            .filter(|m| key.get(*m).is_some())
            .collect();
        if !private.is_empty() {
            dangerous = true;
            let symmetric = private.contains(&"k");
            out.push(f(
                Danger,
                format!(
                    "JWKS: key {name} publishes private key material ({}): anyone can mint tokens this server accepts",
                    private.join(", ")
                ),
                if symmetric {
                    "stop publishing the key at once and replace TESSERA_HS256_SECRET; check what serves this JWKS (a proxy, a static file)"
                } else {
                    "stop publishing it at once and run `tessera keys rotate --retire-previous`; check what serves this JWKS (a proxy, a static file)"
                },
            ));
        }
        match kid {
            Some(k) if !k.is_empty() => {
                if kids.iter().any(|seen| seen == k) {
                    out.push(f(
                        Warning,
                        format!("JWKS: kid {name} appears twice: verifiers may pick the wrong key"),
                        "serve Tessera's own JWKS; every key has its own kid",
                    ));
                }
                kids.push(k.to_owned());
            }
            _ => out.push(f(
                Warning,
                format!("JWKS: key {name} has no kid: verifiers cannot match it to a token"),
                "serve Tessera's own JWKS; every key has a kid",
            )),
        }
        match key.get("use").and_then(Value::as_str) {
            Some("sig") => {}
            other => out.push(f(
                Warning,
                format!(
                    "JWKS: key {name} has use {}, not \"sig\"",
                    other.map_or_else(|| "missing".to_owned(), |u| format!("{u:?}"))
                ),
                "publish signing keys with \"use\": \"sig\"",
            )),
        }
        let alg = key.get("alg").and_then(Value::as_str);
        let Some(alg) = alg else {
            out.push(f(
                Warning,
                format!("JWKS: key {name} has no alg: verifiers must guess the algorithm"),
                "publish each key with its \"alg\"",
            ));
            continue;
        };
        if !algs.iter().any(|a| a == alg) {
            algs.push(alg.to_owned());
        }
        if alg.eq_ignore_ascii_case("none") || alg.starts_with("HS") {
            dangerous = true;
            out.push(f(
                Danger,
                format!("JWKS: key {name} has alg {alg:?}: a public key set must never offer it"),
                "serve Tessera's own JWKS; it publishes only asymmetric public keys",
            ));
            continue;
        }
        out.extend(key_shape(&name, alg, key));
    }
    if algs.len() > 1 {
        out.push(f(
            Warning,
            format!(
                "JWKS: keys of several algorithms ({}), but a server accepts exactly one",
                algs.join(", ")
            ),
            "serve the JWKS of one Tessera deployment; after changing TESSERA_TOKEN_ALG every server must restart",
        ));
    }
    if expect.token_alg == TokenAlg::HS256 {
        out.push(f(
            Warning,
            "JWKS: keys are published, but this configuration signs with HS256 (which publishes none)",
            "check that --url reaches the server this configuration describes, or align TESSERA_TOKEN_ALG",
        ));
    } else if !algs.is_empty() && !algs.iter().any(|a| a == configured) {
        out.push(f(
            Warning,
            format!(
                "JWKS: the server's keys are {} but this configuration says TESSERA_TOKEN_ALG={configured}",
                algs.join(", ")
            ),
            "run the doctor with the server's configuration, or align TESSERA_TOKEN_ALG on both",
        ));
    }
    if !dangerous && out.is_empty() {
        out.push(f(
            Info,
            format!(
                "JWKS: {} key(s), {}, public parameters only",
                keys.len(),
                algs.join(", ")
            ),
            "none needed",
        ));
    }
    out
}

/// The key type and size an algorithm needs.
fn key_shape(name: &str, alg: &str, key: &Value) -> Vec<Finding> {
    let kty = key.get("kty").and_then(Value::as_str).unwrap_or("");
    let crv = key.get("crv").and_then(Value::as_str).unwrap_or("");
    let fix = "serve Tessera's own JWKS (it derives kty and crv from the key)";
    let wrong = |want: &str| {
        vec![f(
            Warning,
            format!("JWKS: key {name} is alg {alg} but kty {kty:?} crv {crv:?} (expected {want})"),
            fix,
        )]
    };
    match alg {
        "EdDSA" if !(kty == "OKP" && crv == "Ed25519") => wrong("OKP/Ed25519"),
        "ES256" if !(kty == "EC" && crv == "P-256") => wrong("EC/P-256"),
        "RS256" | "PS256" if kty != "RSA" => wrong("RSA"),
        "RS256" | "PS256" => {
            let bits = key
                .get("n")
                .and_then(Value::as_str)
                .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
                .map(|n| {
                    let leading = n.iter().take_while(|b| **b == 0).count();
                    (n.len() - leading) * 8
                })
                .unwrap_or(0);
            if bits < 2048 {
                vec![f(
                    Danger,
                    format!(
                        "JWKS: RSA key {name} has a {bits}-bit modulus: too small to resist factoring"
                    ),
                    "rotate to a 2048-bit or larger key (`tessera keys rotate --retire-previous`), or use EdDSA",
                )]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

fn trimmed(s: &str) -> &str {
    s.trim_end_matches('/')
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414): the issuer is
/// the URL clients use, HTTPS off localhost, and its endpoints live under it.
pub fn metadata(body: &Value, target: &Target, expect: &Expect) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(issuer) = body.get("issuer").and_then(Value::as_str) else {
        out.push(f(
            Warning,
            "metadata: no \"issuer\" (RFC 8414 requires it): clients cannot check which server they talk to",
            "serve Tessera's own /.well-known/oauth-authorization-server (check the proxy's routes)",
        ));
        return out;
    };
    let issuer_url = match url::Url::parse(issuer) {
        Ok(u) => u,
        Err(_) => {
            out.push(f(
                Warning,
                format!("metadata: the issuer {issuer:?} is not a URL"),
                "set TESSERA_PUBLIC_URL to the https:// URL browsers use",
            ));
            return out;
        }
    };
    let issuer_https = issuer_url.scheme() == "https";
    if !issuer_https && !is_loopback(&issuer_url) {
        out.push(f(
            Danger,
            format!("metadata: the issuer {issuer} is plain HTTP on a non-local host: tokens and cookies cross the network in clear text"),
            "serve Tessera behind TLS and set TESSERA_PUBLIC_URL=https://…",
        ));
    }
    if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
        out.push(f(
            Warning,
            format!(
                "metadata: the issuer {issuer} has a query or fragment (RFC 8414 forbids both)"
            ),
            "set TESSERA_PUBLIC_URL to a plain https:// URL",
        ));
    }
    let issuer = trimmed(issuer);
    let matches_target = issuer == target.url || issuer == target.origin;
    let matches_config = issuer == trimmed(&expect.public_url);
    if !matches_target && matches_config {
        out.push(f(
            Info,
            format!(
                "metadata: checked through {}, the server calls itself {issuer} (TESSERA_PUBLIC_URL)",
                target.url
            ),
            "none needed if that is an internal address of the same server",
        ));
    } else if !matches_target {
        out.push(f(
            Warning,
            format!(
                "metadata: the issuer {issuer} is neither the URL checked ({}) nor this configuration's TESSERA_PUBLIC_URL ({}): verifiers reject its tokens' iss, and browsers on {} fail the CSRF origin check",
                target.url,
                trimmed(&expect.public_url),
                target.origin
            ),
            format!(
                "set TESSERA_PUBLIC_URL={} on the server (the URL browsers and clients use)",
                target.url
            ),
        ));
    }
    if target.is_https && !issuer_https {
        out.push(f(
            Warning,
            format!("metadata: reached over HTTPS but the issuer is {issuer}"),
            format!("set TESSERA_PUBLIC_URL={} on the server", target.url),
        ));
    }
    for field in [
        "jwks_uri",
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        match body.get(field).and_then(Value::as_str) {
            None if field == "jwks_uri" || field == "token_endpoint" => out.push(f(
                Warning,
                format!("metadata: no {field}"),
                "serve Tessera's own metadata document",
            )),
            None => {}
            Some(endpoint) if !endpoint.starts_with(&format!("{issuer}/")) => out.push(f(
                if endpoint.starts_with("http://") && !endpoint_is_loopback(endpoint) {
                    Danger
                } else {
                    Warning
                },
                format!("metadata: {field} {endpoint} is not under the issuer {issuer}"),
                "serve Tessera's own metadata document; its endpoints derive from TESSERA_PUBLIC_URL",
            )),
            Some(_) => {}
        }
    }
    if body
        .get("response_types_supported")
        .and_then(Value::as_array)
        .is_none()
    {
        out.push(f(
            Warning,
            "metadata: no response_types_supported (RFC 8414 requires it)",
            "serve Tessera's own metadata document",
        ));
    }
    if out.is_empty() {
        out.push(f(
            Info,
            format!("metadata: issuer {issuer}, endpoints under it"),
            "none needed",
        ));
    }
    out
}

fn endpoint_is_loopback(endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|u| is_loopback(&u))
}

/// An HTTP `Date` (IMF-fixdate, RFC 9110 §5.6.7).
pub fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(s.trim(), &format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

/// The smallest clock skew (server minus local, seconds) consistent with a
/// `Date` header received between `sent` and `received`: the header has 1 s
/// resolution and the request took time, so only what lies beyond both
/// counts.
pub fn date_skew(date: OffsetDateTime, sent: OffsetDateTime, received: OffsetDateTime) -> f64 {
    let secs = |t: OffsetDateTime| t.unix_timestamp_nanos() as f64 / 1e9;
    let (server_low, server_high) = (secs(date), secs(date) + 1.0);
    let (local_low, local_high) = (secs(sent), secs(received));
    if server_high < local_low {
        server_high - local_low
    } else if server_low > local_high {
        server_low - local_high
    } else {
        0.0
    }
}

/// The `Date` header of a response, as a clock-skew finding.
pub fn server_clock(
    date: Option<&str>,
    sent: OffsetDateTime,
    received: OffsetDateTime,
    leeway: Duration,
) -> Finding {
    match date.and_then(parse_http_date) {
        Some(date) => super::clock_skew(
            "the server's clock (HTTP Date)",
            date_skew(date, sent, received),
            leeway,
        ),
        None => f(
            Warning,
            match date {
                Some(d) => format!(
                    "the server's Date header {d:?} is not an HTTP date: clock skew not checked"
                ),
                None => "the server sends no Date header: clock skew not checked".to_owned(),
            },
            "let the proxy pass the Date header through",
        ),
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The CSP directive `name`'s value, if the policy has it.
fn csp_directive<'a>(csp: &'a str, name: &str) -> Option<&'a str> {
    csp.split(';').map(str::trim).find_map(|d| {
        let (n, v) = d.split_once(' ').unwrap_or((d, ""));
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// Security headers of an HTML page (`/login`): CSP, no framing, `nosniff`,
/// HSTS over HTTPS, a referrer policy that keeps form posts' `Origin`.
pub fn page_headers(path: &str, headers: &HeaderMap, target: &Target) -> Vec<Finding> {
    let mut out = Vec::new();
    let csp = header_str(headers, header::CONTENT_SECURITY_POLICY);
    let frame_ancestors = csp.and_then(|c| csp_directive(c, "frame-ancestors"));
    let xfo = header_str(headers, header::X_FRAME_OPTIONS)
        .map(|v| v.trim().to_ascii_uppercase())
        .filter(|v| v == "DENY" || v == "SAMEORIGIN");
    let framing_blocked = frame_ancestors.is_some_and(|v| !v.contains('*')) || xfo.is_some();
    if !framing_blocked {
        out.push(f(
            Danger,
            format!("{path}: any site can frame the page (no CSP frame-ancestors, no X-Frame-Options): clickjacking of sign-in and account actions"),
            "let Tessera's headers through the proxy (CSP frame-ancestors 'none', X-Frame-Options: DENY), or set them there",
        ));
    }
    match csp {
        None => out.push(f(
            Warning,
            format!("{path}: no Content-Security-Policy: an injected script would run"),
            "let Tessera's Content-Security-Policy (default-src 'self'; frame-ancestors 'none') through the proxy",
        )),
        Some(csp) => {
            let scripts = csp_directive(csp, "script-src").or_else(|| csp_directive(csp, "default-src"));
            match scripts {
                None => out.push(f(
                    Warning,
                    format!("{path}: the Content-Security-Policy restricts no scripts (no default-src or script-src)"),
                    "use Tessera's policy: default-src 'self'",
                )),
                Some(s) if s.contains("'unsafe-inline'") || s.contains("'unsafe-eval'") || s.split_whitespace().any(|t| t == "*") => {
                    out.push(f(
                        Warning,
                        format!("{path}: the Content-Security-Policy allows inline, eval'd or any-origin scripts"),
                        "use Tessera's policy: default-src 'self' (the pages need no inline script)",
                    ));
                }
                Some(_) => {}
            }
        }
    }
    if !header_str(headers, header::X_CONTENT_TYPE_OPTIONS)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("nosniff"))
    {
        out.push(f(
            Warning,
            format!("{path}: no X-Content-Type-Options: nosniff"),
            "let Tessera's X-Content-Type-Options header through the proxy",
        ));
    }
    if let Some(policy) = header_str(headers, header::REFERRER_POLICY) {
        let policy = policy.trim().to_ascii_lowercase();
        if policy.split(',').any(|p| p.trim() == "no-referrer") {
            out.push(f(
                Warning,
                format!("{path}: Referrer-Policy: no-referrer makes browsers send Origin: null on the page's own forms, which CSRF checks refuse"),
                "use Referrer-Policy: same-origin (Tessera's own)",
            ));
        } else if policy.split(',').any(|p| p.trim() == "unsafe-url") {
            out.push(f(
                Warning,
                format!("{path}: Referrer-Policy: unsafe-url leaks full URLs to other sites"),
                "use Referrer-Policy: same-origin (Tessera's own)",
            ));
        }
    }
    if target.is_https {
        match header_str(headers, header::STRICT_TRANSPORT_SECURITY) {
            None => out.push(f(
                Warning,
                format!("{path}: no Strict-Transport-Security: a first visit over plain HTTP can be intercepted"),
                "make the TLS proxy send Strict-Transport-Security: max-age=31536000; includeSubDomains",
            )),
            Some(hsts) => {
                let max_age = hsts.split(';').find_map(|d| {
                    let (k, v) = d.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("max-age")
                        .then(|| v.trim().trim_matches('"').parse::<u64>().ok())?
                });
                if max_age.is_none_or(|a| a < HSTS_MIN_SECS) {
                    out.push(f(
                        Warning,
                        format!("{path}: Strict-Transport-Security max-age is {} (less than 180 days)", max_age.map_or_else(|| "missing".to_owned(), |a| a.to_string())),
                        "send Strict-Transport-Security: max-age=31536000",
                    ));
                }
            }
        }
    }
    if out.is_empty() {
        out.push(f(
            Info,
            format!(
                "{path}: CSP, no framing, nosniff{} in place",
                if target.is_https { ", HSTS" } else { "" }
            ),
            "none needed",
        ));
    }
    out
}

/// A response that carries a secret (a cookie or a token) must not be
/// stored by any cache.
pub fn secret_response(what: &str, headers: &HeaderMap) -> Vec<Finding> {
    let no_store = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-store"));
    if no_store {
        Vec::new()
    } else {
        vec![f(
            Danger,
            format!(
                "{what}: the response carrying the session cookie has no Cache-Control: no-store: a shared cache may hand it to someone else"
            ),
            "let Tessera's Cache-Control: no-store through the proxy and do not cache /v1/*",
        )]
    }
}

/// One `Set-Cookie` header: name and attributes (the value is dropped at
/// once, so no finding can ever show it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    pub name: String,
    pub value_empty: bool,
    pub attributes: Vec<(String, Option<String>)>,
}

impl SetCookie {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(';');
        let (name, value) = parts.next()?.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let attributes = parts
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
                None => (p.to_owned(), None),
            })
            .collect();
        Some(Self {
            name: name.to_owned(),
            value_empty: value.trim().trim_matches('"').is_empty(),
            attributes,
        })
    }

    /// `Some(value)` when the attribute is present (`Some(None)`: a flag).
    pub fn attr(&self, name: &str) -> Option<Option<&str>> {
        self.attributes
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn max_age(&self) -> Option<Result<i64, String>> {
        self.attr("max-age").map(|v| {
            let v = v.unwrap_or("");
            v.parse::<i64>().map_err(|_| v.to_owned())
        })
    }
}

/// The cookies a login sets (`Set-Cookie` values): `__Host-` prefix,
/// `Secure`, `HttpOnly`, `SameSite` other than `None`, `Path=/`, no
/// `Domain`, a `Max-Age` within the server's lifetimes.
pub fn login_cookies(set_cookies: &[String], target: &Target, expect: &Expect) -> Vec<Finding> {
    let mut out = Vec::new();
    let cookies: Vec<SetCookie> = set_cookies
        .iter()
        .filter_map(|s| SetCookie::parse(s))
        .collect();
    if cookies.is_empty() {
        out.push(f(
            Warning,
            "login: the response sets no cookie: browsers cannot stay signed in",
            "let Set-Cookie through the proxy",
        ));
        return out;
    }
    for c in &cookies {
        out.extend(login_cookie(c, target, expect));
    }
    if out.is_empty() {
        out.push(f(
            Info,
            format!(
                "login: cookie(s) {} are __Host-, Secure, HttpOnly, SameSite, Path=/, no Domain, with a sane Max-Age",
                cookies
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "none needed",
        ));
    }
    out
}

fn login_cookie(c: &SetCookie, target: &Target, expect: &Expect) -> Vec<Finding> {
    let mut out = Vec::new();
    let name = &c.name;
    let secure = c.attr("secure").is_some();
    let host_prefix = name.starts_with("__Host-");
    if !secure {
        if target.is_loopback && !target.is_https {
            out.push(f(
                Info,
                format!("login cookie {name}: no Secure flag (TESSERA_COOKIE_SECURE=false: plain-HTTP development on localhost)"),
                "keep TESSERA_COOKIE_SECURE at its default (true) anywhere but a development machine",
            ));
        } else {
            out.push(f(
                Danger,
                format!("login cookie {name}: no Secure flag: browsers send it over plain HTTP, where anyone on the path can take the session"),
                "remove TESSERA_COOKIE_SECURE=false (and make sure no proxy rewrites Set-Cookie)",
            ));
        }
    }
    if c.attr("httponly").is_none() {
        out.push(f(
            Danger,
            format!("login cookie {name}: no HttpOnly flag: any script on the site (an XSS) can read and steal it"),
            "let Tessera's Set-Cookie through unchanged; it always sets HttpOnly",
        ));
    }
    match c
        .attr("samesite")
        .map(|v| v.unwrap_or("").to_ascii_lowercase())
    {
        Some(v) if v == "lax" || v == "strict" => {}
        Some(v) if v == "none" => out.push(f(
            Warning,
            format!("login cookie {name}: SameSite=None: browsers send it on cross-site requests"),
            "use TESSERA_COOKIE_SAMESITE=Lax (default) or Strict",
        )),
        other => out.push(f(
            Warning,
            format!(
                "login cookie {name}: SameSite {}: browsers differ in what they do then",
                other.map_or_else(
                    || "missing".to_owned(),
                    |v| format!("{v:?} is not Lax or Strict")
                )
            ),
            "let Tessera's Set-Cookie (SameSite=Lax) through unchanged",
        )),
    }
    if c.attr("domain").is_some() {
        out.push(f(
            Danger,
            format!("login cookie {name}: has a Domain attribute: it is sent to, and can be overwritten by, every subdomain"),
            "remove the Domain attribute (a proxy rewriting cookies?); Tessera never sets one",
        ));
    }
    match c.attr("path") {
        Some(Some("/")) => {}
        other => out.push(f(
            Warning,
            format!(
                "login cookie {name}: Path is {}, not /: pages outside it do not get the session",
                match other {
                    Some(Some(p)) => format!("{p:?}"),
                    _ => "missing (defaults to the login URL's directory)".to_owned(),
                }
            ),
            "let Tessera's Set-Cookie (Path=/) through unchanged; serve Tessera at the root of its host",
        )),
    }
    if secure && !host_prefix {
        out.push(f(
            Warning,
            format!("login cookie {name}: no __Host- prefix: a subdomain or a plain-HTTP page could plant a cookie of the same name (session fixation)"),
            "keep Tessera's cookie names (__Host-tessera_session); with TESSERA_COOKIE_SECURE=true they have the prefix",
        ));
    }
    if host_prefix
        && (!secure || c.attr("domain").is_some() || !matches!(c.attr("path"), Some(Some("/"))))
    {
        out.push(f(
            Warning,
            format!("login cookie {name}: browsers reject a __Host- cookie without Secure, with a Domain or a Path other than /: nobody stays signed in"),
            "let Tessera's Set-Cookie through unchanged",
        ));
    }
    let limit = if name.ends_with("_access") {
        expect.access_ttl
    } else if name.ends_with("_refresh") {
        expect.refresh_ttl
    } else {
        expect.session_lifetime
    }
    .max(Duration::from_secs(60));
    match c.max_age() {
        None if c.attr("expires").is_none() => out.push(f(
            Warning,
            format!("login cookie {name}: no Max-Age: its lifetime is up to the browser, not the server's session lifetime"),
            "let Tessera's Set-Cookie (Max-Age = seconds to absolute expiry) through unchanged",
        )),
        None => {}
        Some(Err(v)) => out.push(f(
            Warning,
            format!("login cookie {name}: Max-Age {v:?} is not a number of seconds"),
            "let Tessera's Set-Cookie through unchanged",
        )),
        Some(Ok(secs)) if secs <= 0 => out.push(f(
            Warning,
            format!("login cookie {name}: Max-Age={secs} deletes the cookie at once: nobody stays signed in"),
            "let Tessera's Set-Cookie through unchanged",
        )),
        Some(Ok(secs)) => {
            let secs = secs.unsigned_abs();
            let lifetime = Duration::from_secs(secs);
            if lifetime > BROWSER_COOKIE_CAP {
                out.push(f(
                    Warning,
                    format!("login cookie {name}: Max-Age={secs} is beyond the 400 days browsers allow"),
                    "keep TESSERA_SESSION_ABSOLUTE_TIMEOUT at 400d or less",
                ));
            } else if lifetime > limit + Duration::from_secs(60) {
                out.push(f(
                    Warning,
                    format!(
                        "login cookie {name}: Max-Age={secs} ({}) outlives what this configuration allows ({})",
                        humantime::format_duration(lifetime),
                        humantime::format_duration(limit)
                    ),
                    "check that --url reaches the server this configuration describes; the cookie should end with its session",
                ));
            }
        }
    }
    out
}

/// What a logout answered: 204 and the cookies cleared.
pub fn logout(status: u16, set_cookies: &[String], cookie_names: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    if status != 204 {
        out.push(f(
            Warning,
            format!("logout: DELETE /v1/session answered {status}, not 204: the doctor's session may remain until it expires"),
            "check that the proxy passes DELETE, the Cookie and the X-CSRF-Token headers; `tessera user revoke ID` ends the account's sessions",
        ));
        return out;
    }
    let cleared: Vec<SetCookie> = set_cookies
        .iter()
        .filter_map(|s| SetCookie::parse(s))
        .filter(|c| c.value_empty || matches!(c.max_age(), Some(Ok(age)) if age <= 0))
        .collect();
    for name in cookie_names {
        if !cleared.iter().any(|c| &c.name == name) {
            out.push(f(
                Warning,
                format!("logout: the response does not clear cookie {name}: the browser keeps sending a dead id"),
                "let Tessera's Set-Cookie (Max-Age=0) through the proxy",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    fn expect() -> Expect {
        Expect::from_settings(&Settings::from_pairs(&[]).unwrap())
    }

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    fn has(f: &[Finding], severity: Severity, needle: &str) -> bool {
        f.iter()
            .any(|x| x.severity == severity && x.problem.contains(needle))
    }

    fn worst(f: &[Finding]) -> Severity {
        f.iter().map(|x| x.severity).max().unwrap_or(Info)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn targets_join_contract_paths_under_the_base_url() {
        let t = target("https://auth.example.com");
        assert_eq!(t.url, "https://auth.example.com");
        assert_eq!(t.origin, "https://auth.example.com");
        assert!(t.is_https && !t.is_loopback);
        assert_eq!(
            t.endpoint("/v1/session").as_str(),
            "https://auth.example.com/v1/session"
        );
        let t = target("http://127.0.0.1:9000/auth");
        assert_eq!(t.url, "http://127.0.0.1:9000/auth");
        assert_eq!(t.origin, "http://127.0.0.1:9000");
        assert!(t.is_loopback);
        assert_eq!(
            t.endpoint("/.well-known/jwks.json").as_str(),
            "http://127.0.0.1:9000/auth/.well-known/jwks.json"
        );
        assert!(target("http://localhost:8080/").is_loopback);
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("https://x/?q=1").is_err());
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn a_good_jwks_is_fine_and_private_members_are_dangerous() {
        let good = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "abc", "kid": "key_1", "alg": "EdDSA", "use": "sig"}]});
        let found = jwks(&good, &expect());
        assert_eq!(worst(&found), Info, "{found:?}");
        assert!(has(&found, Info, "1 key(s), EdDSA"));

        for member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            let mut key = good["keys"][0].clone();
            key[member] = json!("secret");
            let found = jwks(&json!({"keys": [key]}), &expect());
            assert!(
                has(&found, Danger, &format!("private key material ({member})")),
                "{member}: {found:?}"
            );
            assert!(found.iter().all(|x| !x.problem.contains("secret")));
        }
    }

    #[test]
    fn jwks_keys_need_kid_alg_use_and_the_configured_algorithm() {
        let found = jwks(
            &json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "a"}]}),
            &expect(),
        );
        assert!(has(&found, Warning, "has no kid"));
        assert!(has(&found, Warning, "use missing"));
        assert!(has(&found, Warning, "has no alg"));

        let es = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "kid": "k", "alg": "ES256", "use": "enc"}]});
        let found = jwks(&es, &expect());
        assert!(has(&found, Warning, "use \"enc\""));
        assert!(has(&found, Warning, "TESSERA_TOKEN_ALG=EdDSA"));

        let mixed = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": "a", "kid": "k1", "alg": "EdDSA", "use": "sig"},
            {"kty": "OKP", "crv": "Ed25519", "x": "b", "kid": "k1", "alg": "ES256", "use": "sig"},
        ]});
        let found = jwks(&mixed, &expect());
        assert!(has(&found, Warning, "appears twice"));
        assert!(has(&found, Warning, "several algorithms"));
        assert!(has(&found, Warning, "expected EC/P-256"));

        let hs = json!({"keys": [{"kty": "oct", "kid": "k", "alg": "HS256", "use": "sig"}]});
        assert!(has(&jwks(&hs, &expect()), Danger, "alg \"HS256\""));

        let small_rsa = json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB", "kid": "k", "alg": "RS256", "use": "sig"}]});
        assert!(has(&jwks(&small_rsa, &expect()), Danger, "1024-bit"));
        let rsa = json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AQAB", "kid": "k", "alg": "RS256", "use": "sig"}]});
        let mut rs_expect = expect();
        rs_expect.token_alg = TokenAlg::RS256;
        assert_eq!(worst(&jwks(&rsa, &rs_expect)), Info);

        assert!(has(
            &jwks(&json!({"keys": []}), &expect()),
            Warning,
            "no keys"
        ));
        let mut hs_expect = expect();
        hs_expect.token_alg = TokenAlg::HS256;
        assert_eq!(worst(&jwks(&json!({"keys": []}), &hs_expect)), Info);
        assert!(has(&jwks(&json!([]), &expect()), Warning, "no \"keys\""));
    }

    fn meta(issuer: &str) -> Value {
        json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "token_endpoint": format!("{issuer}/v1/token"),
            "revocation_endpoint": format!("{issuer}/v1/token/revoke"),
            "introspection_endpoint": format!("{issuer}/v1/token/introspect"),
            "response_types_supported": [],
        })
    }

    #[test]
    fn the_issuer_is_the_url_checked_and_https_off_localhost() {
        let t = target("https://auth.example.com/");
        let found = metadata(&meta("https://auth.example.com"), &t, &expect());
        assert_eq!(worst(&found), Info, "{found:?}");

        let found = metadata(&meta("http://auth.example.com"), &t, &expect());
        assert!(has(&found, Danger, "plain HTTP on a non-local host"));
        assert!(has(&found, Warning, "reached over HTTPS"));

        let internal = target("http://127.0.0.1:8080");
        let found = metadata(&meta("http://localhost:8080"), &internal, &expect());
        assert_eq!(worst(&found), Info, "the configured public URL: {found:?}");
        assert!(has(&found, Info, "calls itself http://localhost:8080"));
        let found = metadata(&meta("http://localhost:8080"), &t, &expect());
        assert!(has(&found, Warning, "reached over HTTPS"));

        let found = metadata(&meta("https://other.example.com"), &t, &expect());
        assert!(has(&found, Warning, "neither the URL checked"));
        assert!(found.iter().any(|x| {
            x.fix
                .contains("TESSERA_PUBLIC_URL=https://auth.example.com")
        }));

        let mut m = meta("https://auth.example.com");
        m["jwks_uri"] = json!("http://evil.example.net/jwks.json");
        m.as_object_mut()
            .unwrap()
            .remove("response_types_supported");
        let found = metadata(&m, &t, &expect());
        assert!(has(&found, Danger, "jwks_uri"));
        assert!(has(&found, Warning, "response_types_supported"));
        assert!(has(
            &metadata(&json!({}), &t, &expect()),
            Warning,
            "no \"issuer\""
        ));
    }

    #[test]
    fn http_dates_parse_and_skew_ignores_the_header_resolution() {
        let d = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(d.unix_timestamp(), 784_111_777);
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
        let at = |s: f64| OffsetDateTime::from_unix_timestamp_nanos((s * 1e9) as i128).unwrap();
        // Date 100 (meaning 100.0..101.0), request from 100.9 to 101.2: agree.
        assert_eq!(date_skew(at(100.0), at(100.9), at(101.2)), 0.0);
        // The server is 10 s ahead.
        assert!((date_skew(at(110.0), at(100.0), at(100.5)) - 9.5).abs() < 1e-6);
        // The server is 5 s behind.
        assert!((date_skew(at(95.0), at(100.0), at(100.2)) + 4.0).abs() < 1e-6);
        let leeway = Duration::from_secs(60);
        assert_eq!(
            server_clock(None, at(0.0), at(0.0), leeway).severity,
            Warning
        );
        let now = OffsetDateTime::now_utc();
        let header = (now + time::Duration::minutes(10))
            .format(time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            ))
            .unwrap();
        assert_eq!(
            server_clock(Some(&header), now, now, leeway).severity,
            Danger
        );
    }

    #[test]
    fn pages_need_csp_no_framing_nosniff_and_hsts_over_https() {
        let good = headers(&[
            (
                "content-security-policy",
                "default-src 'self'; frame-ancestors 'none'",
            ),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
            ("strict-transport-security", "max-age=31536000"),
        ]);
        let https = target("https://auth.example.com");
        assert_eq!(worst(&page_headers("/login", &good, &https)), Info);

        let found = page_headers("/login", &HeaderMap::new(), &https);
        assert!(has(&found, Danger, "frame the page"));
        assert!(has(&found, Warning, "no Content-Security-Policy"));
        assert!(has(&found, Warning, "nosniff"));
        assert!(has(&found, Warning, "Strict-Transport-Security"));
        let http = target("http://localhost:8080");
        assert!(!has(
            &page_headers("/login", &HeaderMap::new(), &http),
            Warning,
            "Strict-Transport-Security"
        ));

        let xfo_only = headers(&[
            (
                "content-security-policy",
                "script-src 'self' 'unsafe-inline'",
            ),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("strict-transport-security", "max-age=600"),
        ]);
        let found = page_headers("/login", &xfo_only, &https);
        assert!(!has(&found, Danger, "frame"), "{found:?}");
        assert!(has(&found, Warning, "inline"));
        assert!(has(&found, Warning, "Origin: null"));
        assert!(has(&found, Warning, "max-age is 600"));
    }

    #[test]
    fn login_responses_must_not_be_cached() {
        assert!(secret_response("login", &headers(&[("cache-control", "no-store")])).is_empty());
        assert!(has(
            &secret_response(
                "login",
                &headers(&[("cache-control", "private, max-age=60")])
            ),
            Danger,
            "no-store"
        ));
    }

    #[test]
    fn tessera_s_own_cookie_passes() {
        let t = target("https://auth.example.com");
        let found = login_cookies(
            &["__Host-tessera_session=SECRETVALUE; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=2592000".into()],
            &t,
            &expect(),
        );
        assert_eq!(worst(&found), Info, "{found:?}");
        assert!(found.iter().all(|x| !x.problem.contains("SECRETVALUE")));
    }

    #[test]
    fn each_cookie_pitfall_is_reported_without_the_value() {
        let t = target("https://auth.example.com");
        let found = login_cookies(
            &["tessera_session=SECRETVALUE; Domain=example.com; Path=/v1; SameSite=None; Max-Age=99999999".into()],
            &t,
            &expect(),
        );
        assert!(has(&found, Danger, "no Secure flag"));
        assert!(has(&found, Danger, "no HttpOnly"));
        assert!(has(&found, Danger, "Domain"));
        assert!(has(&found, Warning, "SameSite=None"));
        assert!(has(&found, Warning, "Path is \"/v1\""));
        assert!(has(&found, Warning, "400 days"));
        assert!(found.iter().all(|x| !x.problem.contains("SECRETVALUE")));

        let found = login_cookies(
            &[
                "__Host-tessera_session=v; Path=/; HttpOnly; Domain=auth.example.com; Secure"
                    .into(),
            ],
            &t,
            &expect(),
        );
        assert!(has(&found, Warning, "SameSite missing"));
        assert!(has(&found, Warning, "browsers reject a __Host- cookie"));
        assert!(has(&found, Warning, "no Max-Age"));

        let found = login_cookies(
            &["sess=v; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=31536000".into()],
            &t,
            &expect(),
        );
        assert!(has(&found, Warning, "no __Host- prefix"));
        assert!(has(
            &found,
            Warning,
            "outlives what this configuration allows"
        ));
        assert!(has(
            &login_cookies(&[], &t, &expect()),
            Warning,
            "sets no cookie"
        ));

        // Plain-HTTP development on localhost: documented, not dangerous.
        let dev = login_cookies(
            &["tessera_session=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60".into()],
            &target("http://localhost:8080"),
            &expect(),
        );
        assert_eq!(worst(&dev), Info, "{dev:?}");
    }

    #[test]
    fn logout_clears_the_cookies_it_set() {
        let names = vec!["__Host-tessera_session".to_owned()];
        assert!(
            logout(
                204,
                &[
                    "__Host-tessera_session=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"
                        .into()
                ],
                &names
            )
            .is_empty()
        );
        assert!(has(&logout(204, &[], &names), Warning, "does not clear"));
        assert!(has(&logout(403, &[], &names), Warning, "answered 403"));
    }
}
