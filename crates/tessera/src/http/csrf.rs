//! CSRF defence, exactly as the contract states it.
//!
//! - A request authenticated by the session cookie with an unsafe method must
//!   carry `X-CSRF-Token` equal to the session's token (compared in constant
//!   time), and any `Origin` it has must be the public URL's; `Origin: null`
//!   is foreign.
//! - Requests that have no session yet (login, register) are refused when
//!   `Origin` is present and foreign, or `Sec-Fetch-Site` is `cross-site`:
//!   this stops login CSRF (signing a victim into the attacker's account).
//! - Bearer-authenticated requests carry no ambient credentials and are exempt.
//!
//! A refusal on provenance is usually not an attack but a browser on the
//! wrong address (`http://127.0.0.1:8080` when the public URL is
//! `http://localhost:8080`), which reloading cannot fix. So a refusal names
//! the origin the request came from and the public URL, and says how to fix
//! it; and the log gets a WARN line for it, at most one a minute per origin
//! (`WarnLimiter`). What is repeated from the request is only ever
//! `scheme://host[:port]` ([`shown_origin`]), bounded in length: never a
//! path, a query or anything else a request carries.

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use super::AppState;
use super::error::ApiError;
use crate::core::secret::secrets_equal;

pub const CSRF_HEADER: &str = "x-csrf-token";

/// The longest origin a refusal repeats; a longer one is not shown.
const MAX_SHOWN_ORIGIN: usize = 100;

pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Where a refused request came from, as far as it can be told safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A readable `scheme://host[:port]` (http or https, at most 100
    /// characters).
    Origin(String),
    /// `Origin: null`: an opaque origin (a sandboxed frame, a local file, a
    /// redirect across origins, or a page sent with `no-referrer`).
    Null,
    /// Nothing readable.
    Unknown,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Origin(o) => f.write_str(o),
            Seen::Null => f.write_str("null"),
            Seen::Unknown => f.write_str("unknown"),
        }
    }
}

/// Why a request was refused on provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin` is present and is not the public URL's.
    ForeignOrigin(Seen),
    /// `Sec-Fetch-Site: cross-site` (what `Referer` says of its origin).
    CrossSite(Seen),
}

impl Refusal {
    /// Where the refused request came from.
    pub fn seen(&self) -> &Seen {
        match self {
            Refusal::ForeignOrigin(seen) | Refusal::CrossSite(seen) => seen,
        }
    }

    /// The refused origin when it is plausibly this very server under
    /// another address (a loopback address, or the public URL's host on
    /// another scheme or port), so that setting `TESSERA_PUBLIC_URL` to it
    /// may be the fix. Never for another site: anyone can make a browser
    /// post from their page, and a refusal must not read as advice to trust
    /// it (the WARN log, which only operators read, names it always).
    pub fn alias_origin(&self, public_origin: &str) -> Option<&str> {
        let Refusal::ForeignOrigin(Seen::Origin(o)) = self else {
            return None;
        };
        let (Ok(seen), Ok(public)) = (url::Url::parse(o), url::Url::parse(public_origin)) else {
            return None;
        };
        let loopback = match seen.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        (loopback || seen.host() == public.host()).then_some(o.as_str())
    }

    /// One sentence for `error_description`: where the request came from,
    /// the public URL, and the fix.
    pub fn description(&self, public_origin: &str) -> String {
        let rule = format!(
            "Tessera accepts sign-ins and cookie-authenticated changes only from pages at its \
             public URL {public_origin}"
        );
        match (self, self.seen()) {
            (_, Seen::Origin(o)) => format!(
                "the request comes from {o}{}, but {rule}: open {public_origin} in the browser \
                 instead of {o}{}",
                match self {
                    Refusal::CrossSite(_) => " (another site)",
                    Refusal::ForeignOrigin(_) => "",
                },
                match self.alias_origin(public_origin) {
                    Some(o) => format!(
                        ", or, if {o} is the address clients should use, set \
                         TESSERA_PUBLIC_URL={o} and restart Tessera"
                    ),
                    None => String::new(),
                }
            ),
            (_, Seen::Null) => format!(
                "the request comes from an opaque origin (Origin: null: a sandboxed frame, a \
                 local file or a redirect across origins), and {rule}: send it from a page at \
                 {public_origin}"
            ),
            (Refusal::ForeignOrigin(_), Seen::Unknown) => format!(
                "the request comes from another origin, and {rule}: send it from a page at \
                 {public_origin}"
            ),
            (Refusal::CrossSite(_), Seen::Unknown) => format!(
                "the request comes from another site (Sec-Fetch-Site: cross-site), and {rule}: \
                 send it from a page at {public_origin}"
            ),
        }
    }

    /// The contract's `csrf_failed` error for this refusal.
    pub fn api_error(&self, public_origin: &str) -> ApiError {
        ApiError::csrf_failed(self.description(public_origin))
    }
}

/// `scheme://host[:port]` of a header value that is an origin or a URL
/// (`Referer`), or `None` when it is not a readable http(s) one. This is
/// all a refusal ever repeats from a request: the host is as the URL parser
/// normalised it (lowercase, punycode), so it holds no markup, spaces or
/// control characters, and the whole is at most 100 characters.
pub fn shown_origin(value: &str) -> Option<String> {
    if value.len() > 4 * MAX_SHOWN_ORIGIN {
        return None;
    }
    let url = url::Url::parse(value.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    (origin != "null" && origin.len() <= MAX_SHOWN_ORIGIN).then_some(origin)
}

/// What a foreign `Origin` value says of where the request came from.
fn seen_in_origin(value: Option<&str>) -> Seen {
    match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("null") => Seen::Null,
        Some(v) => shown_origin(v).map_or(Seen::Unknown, Seen::Origin),
        None => Seen::Unknown,
    }
}

/// Falls back to `Referer`'s origin when `seen` is not a readable origin
/// (unless that is the public URL's: a page of ours posting with an opaque
/// origin says nothing useful about where it was opened).
fn or_referer(seen: Seen, headers: &HeaderMap, public_origin: &str) -> Seen {
    if matches!(seen, Seen::Origin(_)) {
        return seen;
    }
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(shown_origin)
        .filter(|o| !o.eq_ignore_ascii_case(public_origin))
        .map_or(seen, Seen::Origin)
}

/// The origin rule, without side effects: any `Origin` must be the public
/// URL's (the first foreign one, when several are sent, is reported).
fn origin_rule(headers: &HeaderMap, public_origin: &str) -> Result<(), Refusal> {
    let foreign = headers
        .get_all(header::ORIGIN)
        .iter()
        .map(|o| o.to_str().ok())
        .find(|o| !o.is_some_and(|o| o.eq_ignore_ascii_case(public_origin)));
    match foreign {
        Some(value) => Err(Refusal::ForeignOrigin(or_referer(
            seen_in_origin(value),
            headers,
            public_origin,
        ))),
        None => Ok(()),
    }
}

/// The provenance rule, without side effects: the origin rule, and no
/// `Sec-Fetch-Site: cross-site`.
/// The provenance rule alone, without the log line: for a caller that only
/// decides whether to do something before the page checks (and logs) it.
pub fn request_provenance(headers: &HeaderMap, public_origin: &str) -> Result<(), Refusal> {
    provenance(headers, public_origin)
}

fn provenance(headers: &HeaderMap, public_origin: &str) -> Result<(), Refusal> {
    origin_rule(headers, public_origin)?;
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    if cross_site {
        return Err(Refusal::CrossSite(or_referer(
            Seen::Unknown,
            headers,
            public_origin,
        )));
    }
    Ok(())
}

/// The provenance rule of every CSRF check (see the module docs); a refusal
/// is logged ([`warn_refused`]).
pub fn check_provenance(headers: &HeaderMap, public_origin: &str) -> Result<(), Refusal> {
    provenance(headers, public_origin).inspect_err(|refusal| warn_refused(refusal, public_origin))
}

/// For login and register: no session exists yet, so only the request's
/// provenance can be checked.
pub fn check_fresh_request(headers: &HeaderMap, public_origin: &str) -> Result<(), ApiError> {
    check_provenance(headers, public_origin).map_err(|r| r.api_error(public_origin))
}

/// Extractor form of [`check_fresh_request`], placed before the body
/// extractor so a cross-site request is refused before its body is read.
pub struct FreshRequest;

impl FromRequestParts<AppState> for FreshRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        check_fresh_request(&parts.headers, &state.settings.public_url.origin)?;
        Ok(FreshRequest)
    }
}

/// For unsafe requests authenticated by the session cookie.
pub fn check_session_request(
    headers: &HeaderMap,
    public_origin: &str,
    expected_token: &str,
) -> Result<(), ApiError> {
    origin_rule(headers, public_origin).map_err(|refusal| {
        warn_refused(&refusal, public_origin);
        refusal.api_error(public_origin)
    })?;
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match presented {
        Some(token) if secrets_equal(token, expected_token) => Ok(()),
        Some(_) => Err(ApiError::csrf_failed("the X-CSRF-Token header is wrong")),
        None => Err(ApiError::csrf_failed("the X-CSRF-Token header is missing")),
    }
}

// ---------------------------------------------------------------------------
// The log

/// How often a WARN line may be written for one origin.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How many origins a minute get their own WARN line; refusals from more
/// are only counted (so invented origins cannot flood the log).
const WARN_ORIGINS: usize = 32;

/// Rate limit of the refusal WARN lines: at most one a minute per (public
/// URL, origin), for at most [`WARN_ORIGINS`] origins a minute; what is not
/// logged is counted and reported with the next line.
#[derive(Default)]
struct WarnLimiter {
    origins: HashMap<String, Logged>,
    /// Refusals not logged because too many origins were being tracked.
    untracked: u64,
}

struct Logged {
    at: Instant,
    /// Refusals from this origin since its last line, not logged.
    suppressed: u64,
}

/// What a WARN line reports besides the refusal itself.
#[derive(Debug, PartialEq, Eq)]
struct Admitted {
    /// Refusals from this origin not logged since its last line.
    suppressed: u64,
    /// Refusals from other origins not logged (too many origins).
    untracked: u64,
}

impl WarnLimiter {
    fn admit(&mut self, key: &str, now: Instant) -> Option<Admitted> {
        if let Some(logged) = self.origins.get_mut(key) {
            if now.saturating_duration_since(logged.at) < WARN_EVERY {
                logged.suppressed += 1;
                return None;
            }
            let suppressed = std::mem::take(&mut logged.suppressed);
            logged.at = now;
            return Some(Admitted {
                suppressed,
                untracked: std::mem::take(&mut self.untracked),
            });
        }
        if self.origins.len() >= WARN_ORIGINS {
            // Forget the quiet ones; their unlogged refusals are still told.
            let mut forgotten = 0;
            self.origins.retain(|_, logged| {
                let keep = now.saturating_duration_since(logged.at) < WARN_EVERY;
                if !keep {
                    forgotten += logged.suppressed;
                }
                keep
            });
            self.untracked += forgotten;
        }
        if self.origins.len() >= WARN_ORIGINS {
            self.untracked += 1;
            return None;
        }
        self.origins.insert(
            key.to_owned(),
            Logged {
                at: now,
                suppressed: 0,
            },
        );
        Some(Admitted {
            suppressed: 0,
            untracked: std::mem::take(&mut self.untracked),
        })
    }
}

static WARNINGS: LazyLock<Mutex<WarnLimiter>> = LazyLock::new(Mutex::default);

/// One WARN line for a refusal on provenance, rate-limited: where the
/// request came from, the public URL and the fix.
fn warn_refused(refusal: &Refusal, public_origin: &str) {
    let seen = refusal.seen();
    let kind = match refusal {
        Refusal::ForeignOrigin(_) => "origin",
        Refusal::CrossSite(_) => "cross-site",
    };
    let key = format!("{public_origin} {kind} {seen}");
    let admitted = match WARNINGS.lock() {
        Ok(mut limiter) => limiter.admit(&key, Instant::now()),
        Err(poisoned) => poisoned.into_inner().admit(&key, Instant::now()),
    };
    let Some(Admitted {
        suppressed,
        untracked,
    }) = admitted
    else {
        return;
    };
    let from = match (refusal, seen) {
        (_, Seen::Origin(o)) => o.clone(),
        (_, Seen::Null) => "an opaque origin (Origin: null)".to_owned(),
        (Refusal::ForeignOrigin(_), Seen::Unknown) => "an unreadable origin".to_owned(),
        (Refusal::CrossSite(_), Seen::Unknown) => {
            "another site (Sec-Fetch-Site: cross-site)".to_owned()
        }
    };
    let fix = match seen {
        Seen::Origin(o) => format!(
            "browsers must open {public_origin}, not {o}; if {o} is the right address, set \
             TESSERA_PUBLIC_URL={o}"
        ),
        _ => format!("requests must come from pages at {public_origin}"),
    };
    let unlogged = match (suppressed, untracked) {
        (0, 0) => String::new(),
        (s, 0) => format!(" ({s} more from it since the last such line)"),
        (s, u) => format!(
            " ({s} more from it since the last such line, {u} from other origins not logged)"
        ),
    };
    tracing::warn!(
        origin = %seen,
        public_url = public_origin,
        suppressed,
        untracked,
        "refused a request from {from}: Tessera's public URL is {public_origin} and it accepts \
         sign-ins and cookie-authenticated changes only from its own pages there; {fix} \
         (csrf_failed; at most one such line a minute per origin){unlogged}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ORIGIN: &str = "https://auth.example.com";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fresh_requests_refuse_foreign_origins_and_cross_site_fetches() {
        assert!(check_fresh_request(&headers(&[]), ORIGIN).is_ok());
        assert!(check_fresh_request(&headers(&[("origin", ORIGIN)]), ORIGIN).is_ok());
        assert!(
            check_fresh_request(&headers(&[("sec-fetch-site", "same-origin")]), ORIGIN).is_ok()
        );
        for bad in [
            headers(&[("origin", "https://evil.example")]),
            headers(&[("origin", "null")]),
            headers(&[("origin", "https://auth.example.com:8443")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("origin", ORIGIN), ("origin", "https://evil.example")]),
        ] {
            let e = check_fresh_request(&bad, ORIGIN).unwrap_err();
            assert_eq!(e.code, "csrf_failed");
        }
    }

    #[test]
    fn session_requests_need_the_token_and_a_matching_origin() {
        let ok = headers(&[("x-csrf-token", "tok"), ("origin", ORIGIN)]);
        assert!(check_session_request(&ok, ORIGIN, "tok").is_ok());
        assert!(check_session_request(&headers(&[("x-csrf-token", "tok")]), ORIGIN, "tok").is_ok());
        for bad in [
            headers(&[]),
            headers(&[("x-csrf-token", "wrong")]),
            headers(&[("x-csrf-token", "tok"), ("origin", "null")]),
            headers(&[("x-csrf-token", "tok"), ("origin", "https://evil.example")]),
        ] {
            assert!(check_session_request(&bad, ORIGIN, "tok").is_err());
        }
    }

    #[test]
    fn only_an_alias_of_this_server_is_suggested_as_the_public_url() {
        for (origin, suggested) in [
            ("http://127.0.0.1:8080", true),
            ("http://localhost:3000", true),
            ("http://[::1]:8080", true),
            ("http://auth.example.com", true),
            ("https://auth.example.com:8443", true),
            ("https://evil.example", false),
            ("https://auth.example.com.evil.example", false),
        ] {
            let e = check_fresh_request(&headers(&[("origin", origin)]), ORIGIN).unwrap_err();
            assert_eq!(
                e.description.contains("TESSERA_PUBLIC_URL"),
                suggested,
                "{origin}: {}",
                e.description
            );
        }
        // Cross-site is never this server.
        let cross = Refusal::CrossSite(Seen::Origin("http://127.0.0.1:8080".into()));
        assert_eq!(cross.alias_origin(ORIGIN), None);
    }

    #[test]
    fn refusals_name_the_origin_the_public_url_and_the_fix() {
        let e = check_fresh_request(&headers(&[("origin", "http://127.0.0.1:8080")]), ORIGIN)
            .unwrap_err();
        assert_eq!(e.code, "csrf_failed");
        let d = e.description;
        assert!(d.contains("comes from http://127.0.0.1:8080"), "{d}");
        assert!(d.contains(&format!("public URL {ORIGIN}")), "{d}");
        assert!(d.contains(&format!("open {ORIGIN} in the browser")), "{d}");
        assert!(
            d.contains("TESSERA_PUBLIC_URL=http://127.0.0.1:8080"),
            "{d}"
        );
        // The same for cookie-authenticated requests.
        let h = headers(&[("x-csrf-token", "tok"), ("origin", "http://127.0.0.1:8080")]);
        let d = check_session_request(&h, ORIGIN, "tok")
            .unwrap_err()
            .description;
        assert!(d.contains("comes from http://127.0.0.1:8080"), "{d}");
        // `null`, and what `Referer` says when `Origin` says nothing.
        let d = check_fresh_request(&headers(&[("origin", "null")]), ORIGIN)
            .unwrap_err()
            .description;
        assert!(d.contains("Origin: null"), "{d}");
        let h = headers(&[
            ("origin", "null"),
            ("referer", "http://127.0.0.1:8080/login?secret=1#x"),
        ]);
        let d = check_fresh_request(&h, ORIGIN).unwrap_err().description;
        assert!(d.contains("comes from http://127.0.0.1:8080,"), "{d}");
        assert!(!d.contains("secret") && !d.contains("/login"), "{d}");
        let h = headers(&[
            ("sec-fetch-site", "cross-site"),
            ("referer", "https://other.example/page"),
        ]);
        let d = check_fresh_request(&h, ORIGIN).unwrap_err().description;
        assert!(
            d.contains("comes from https://other.example (another site)"),
            "{d}"
        );
        let d = check_fresh_request(&headers(&[("sec-fetch-site", "cross-site")]), ORIGIN)
            .unwrap_err()
            .description;
        assert!(
            d.contains("another site (Sec-Fetch-Site: cross-site)"),
            "{d}"
        );
        // Session requests keep their one rule: no Sec-Fetch-Site check.
        let h = headers(&[("x-csrf-token", "tok"), ("sec-fetch-site", "cross-site")]);
        assert!(check_session_request(&h, ORIGIN, "tok").is_ok());
    }

    #[test]
    fn only_a_bounded_scheme_host_and_port_is_ever_repeated() {
        for (value, shown) in [
            ("http://127.0.0.1:8080", Some("http://127.0.0.1:8080")),
            ("HTTP://LocalHost:80", Some("http://localhost")),
            (
                "https://b\u{fc}cher.example",
                Some("https://xn--bcher-kva.example"),
            ),
            ("http://[::1]:9000/path?q=1#f", Some("http://[::1]:9000")),
            ("http://user:pw@host.example/", Some("http://host.example")),
            ("http://a.example/<script>", Some("http://a.example")),
            ("null", None),
            ("file:///etc/passwd", None),
            ("javascript:alert(1)", None),
            ("data:text/html,<b>x</b>", None),
            ("http://<b>x</b>/", None),
            ("not a url", None),
            ("", None),
        ] {
            assert_eq!(shown_origin(value).as_deref(), shown, "{value}");
        }
        let long = format!("https://{}.example", "a".repeat(120));
        assert_eq!(shown_origin(&long), None);
        let d = check_fresh_request(&headers(&[]), ORIGIN);
        assert!(d.is_ok());
        let mut h = HeaderMap::new();
        h.insert("origin", HeaderValue::from_str(&long).unwrap());
        let d = check_fresh_request(&h, ORIGIN).unwrap_err().description;
        assert!(!d.contains("aaaa"), "{d}");
        assert!(d.contains("another origin"), "{d}");
    }

    #[test]
    fn warn_lines_are_one_a_minute_per_origin_and_bounded_overall() {
        let mut limiter = WarnLimiter::default();
        let t0 = Instant::now();
        let first = Admitted {
            suppressed: 0,
            untracked: 0,
        };
        assert_eq!(limiter.admit("a", t0), Some(first));
        assert_eq!(limiter.admit("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit("a", t0 + Duration::from_secs(59)), None);
        // Another origin has its own minute.
        assert!(limiter.admit("b", t0 + Duration::from_secs(2)).is_some());
        // A minute later, one line again, telling what was not logged.
        assert_eq!(
            limiter.admit("a", t0 + Duration::from_secs(61)),
            Some(Admitted {
                suppressed: 2,
                untracked: 0
            })
        );
        // A flood of invented origins: at most WARN_ORIGINS lines a minute.
        let t1 = t0 + Duration::from_secs(200);
        let mut lines = 0;
        for i in 0..1000 {
            if limiter.admit(&format!("flood{i}"), t1).is_some() {
                lines += 1;
            }
        }
        assert_eq!(lines, WARN_ORIGINS);
        // Once the minute is over, the next line reports the rest.
        let next = limiter
            .admit("later", t1 + Duration::from_secs(61))
            .unwrap();
        assert_eq!(next.untracked, 1000 - WARN_ORIGINS as u64);
    }

    #[test]
    fn unsafe_methods() {
        assert!(!is_unsafe(&Method::GET));
        assert!(!is_unsafe(&Method::HEAD));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_unsafe(&m));
        }
    }
}
