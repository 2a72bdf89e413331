//! `tessera doctor`: the configuration checked against known pitfalls, each
//! finding with its fix. Pure over the settings (and the signing keys' ages),
//! so every rule is unit-tested.
//!
//! `tessera doctor --url` also examines a running server from outside, the
//! way a browser or a resource server sees it: [`remote`] holds the rules
//! (headers and JSON in, findings out; no network), [`probe`] makes the
//! requests. A misconfigured proxy or a broken deployment shows there even
//! when the configuration file is right.
//!
//! With `TESSERA_REDIS_URL` set, [`redis`] asks the Redis that holds the
//! sessions (reachable, version, eviction policy, persistence, round trip,
//! replicas or failover) and judges what it said.

pub mod accounts;
pub mod database;
pub mod probe;
pub mod redis;
pub mod remote;

use std::time::Duration;

use crate::config::{BrowserMode, SameSite, Settings};
use crate::core::keys::TokenAlg;
use crate::inspect::Severity;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub problem: String,
    pub fix: String,
}

impl Finding {
    pub fn new(severity: Severity, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            severity,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

fn finding(severity: Severity, problem: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding::new(severity, problem, fix)
}

/// Clock skew above this is worth a warning: `iat`/`exp` decisions start to
/// differ between machines, and the HTTP `Date` header has 1 s resolution.
pub const SKEW_WARNING: Duration = Duration::from_secs(2);

/// How far `clock`'s time is from this machine's (`skew_secs`, positive when
/// it is ahead): a warning above [`SKEW_WARNING`], dangerous above the
/// configured leeway (tokens then look expired or not yet valid elsewhere).
pub fn clock_skew(clock: &str, skew_secs: f64, leeway: Duration) -> Finding {
    use Severity::{Danger, Info, Warning};
    let size = skew_secs.abs();
    let direction = if skew_secs >= 0.0 {
        "ahead of"
    } else {
        "behind"
    };
    let fix = "keep every machine's clock synchronised (NTP: chrony or systemd-timesyncd)";
    if size > leeway.as_secs_f64() {
        finding(
            Danger,
            format!(
                "{clock} is {size:.1} s {direction} this machine's, more than TESSERA_CLOCK_LEEWAY ({}): tokens look expired or not yet valid on one side",
                humantime::format_duration(leeway)
            ),
            fix,
        )
    } else if size > SKEW_WARNING.as_secs_f64() {
        finding(
            Warning,
            format!("{clock} is {size:.1} s {direction} this machine's"),
            fix,
        )
    } else {
        finding(
            Info,
            if size < 0.05 {
                format!("{clock} agrees with this machine's")
            } else {
                format!("{clock} agrees with this machine's (skew {size:.1} s)")
            },
            "none needed",
        )
    }
}

/// Distinct characters in a secret: a crude check for `aaaa…` or `1234…`.
fn looks_weak(secret: &str) -> bool {
    let mut chars: Vec<char> = secret.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    chars.len() < 10
}

/// Checks the settings; `active_key_age` is the age of the signing key in use
/// (when the store could be read).
pub fn check(s: &Settings, active_key_age: Option<Duration>) -> Vec<Finding> {
    use Severity::{Danger, Info, Warning};
    let mut out = Vec::new();
    let url = &s.public_url;
    if !url.is_https && !url.is_loopback {
        out.push(finding(
            Danger,
            format!("public URL {} is plain HTTP on a non-local host", url.url),
            "serve Tessera behind TLS and set TESSERA_PUBLIC_URL=https://…",
        ));
    }
    if !s.cookie_secure && !url.is_loopback {
        out.push(finding(
            Danger,
            "TESSERA_COOKIE_SECURE=false on a non-local URL: session cookies travel in clear text",
            "remove TESSERA_COOKIE_SECURE (it defaults to true); it is for plain-HTTP development on localhost only",
        ));
    }
    if s.cookie_samesite == SameSite::None {
        out.push(finding(
            Warning,
            "SameSite=None: browsers send the session cookie on cross-site requests",
            "use TESSERA_COOKIE_SAMESITE=Lax (default) or Strict unless a cross-site embed truly needs the cookie",
        ));
    }
    let access = s.access_token_ttl;
    if access > Duration::from_secs(3600) {
        out.push(finding(
            Danger,
            format!(
                "access tokens live {}: a leaked token stays useful that long",
                humantime::format_duration(access)
            ),
            "set TESSERA_ACCESS_TOKEN_TTL to 15m or less; refresh tokens keep clients signed in",
        ));
    } else if access > Duration::from_secs(900) {
        out.push(finding(
            Warning,
            format!(
                "access tokens live {} (more than 15 minutes)",
                humantime::format_duration(access)
            ),
            "set TESSERA_ACCESS_TOKEN_TTL to 15m or less",
        ));
    }
    if s.token_alg == TokenAlg::HS256 {
        let weak = s.hs256_secret.as_ref().is_some_and(|x| looks_weak(&x.0));
        out.push(finding(
            if weak { Danger } else { Warning },
            if weak {
                "HS256 with a low-entropy secret: it can be guessed offline from any token"
            } else {
                "HS256: every service that verifies tokens holds the secret and can mint tokens"
            },
            "prefer TESSERA_TOKEN_ALG=EdDSA (services verify with the public JWKS); if HS256 stays, use 32+ random bytes and share it with as few services as possible",
        ));
    }
    if s.session_idle_timeout >= s.session_absolute_timeout {
        out.push(finding(
            Warning,
            "no idle timeout: the idle timeout is as long as the absolute lifetime",
            "set TESSERA_SESSION_IDLE_TIMEOUT well below TESSERA_SESSION_ABSOLUTE_TIMEOUT (default 2h vs 30d)",
        ));
    }
    if s.refresh_token_ttl > s.session_absolute_timeout {
        out.push(finding(
            Warning,
            format!(
                "refresh tokens ({}) outlive browser sessions ({})",
                humantime::format_duration(s.refresh_token_ttl),
                humantime::format_duration(s.session_absolute_timeout)
            ),
            "make TESSERA_REFRESH_TOKEN_TTL no longer than TESSERA_SESSION_ABSOLUTE_TIMEOUT",
        ));
    }
    if s.token_alg != TokenAlg::HS256 {
        match (s.key_rotation_interval, active_key_age) {
            (None, Some(age)) if age > Duration::from_secs(90 * 86_400) => out.push(finding(
                Warning,
                format!(
                    "the signing key is {} old and never rotates",
                    humantime::format_duration(Duration::from_secs(
                        age.as_secs() / 86_400 * 86_400
                    ))
                ),
                "run `tessera keys rotate` now and set TESSERA_KEY_ROTATION_INTERVAL (e.g. 30d)",
            )),
            (None, _) => out.push(finding(
                Info,
                "signing keys rotate only by hand",
                "set TESSERA_KEY_ROTATION_INTERVAL (e.g. 30d) to rotate automatically",
            )),
            _ => {}
        }
    }
    out.extend(lifetimes(s));
    if s.ip_rate_limit == 0 {
        out.push(finding(
            Warning,
            "the per-address rate limit on login and token endpoints is off",
            "set TESSERA_IP_RATE_LIMIT (default 30 a minute)",
        ));
    }
    if s.trusted_proxies.iter().any(|n| n.prefix_len() == 0) {
        out.push(finding(
            Danger,
            "TESSERA_TRUSTED_PROXIES trusts every address: any client can forge X-Forwarded-For and dodge rate limits",
            "list only your proxies' addresses",
        ));
    }
    if s.argon2_memory_kib < 19_456 || s.argon2_iterations < 2 {
        out.push(finding(
            Warning,
            "argon2id costs are below OWASP's first recommendation (19 MiB, t=2)",
            "raise TESSERA_ARGON2_MEMORY_KIB / TESSERA_ARGON2_ITERATIONS",
        ));
    }
    if s.browser_mode == BrowserMode::JwtCookie && s.access_token_ttl > Duration::from_secs(900) {
        out.push(finding(
            Warning,
            "jwt-cookie mode with long access tokens: logout cannot take effect before they expire on other nodes' caches",
            "keep TESSERA_ACCESS_TOKEN_TTL short in jwt-cookie mode",
        ));
    }
    out
}

/// How often the housekeeping sweep looks at key rotation (see
/// `core::events`): a shorter interval rotates only that often.
const ROTATION_CHECKED_EVERY: Duration = Duration::from_secs(60);

/// Lifetimes the configuration accepts (any positive duration) but that
/// probably do not do what was meant.
fn lifetimes(s: &Settings) -> Vec<Finding> {
    use Severity::Warning;
    let show = |d: Duration| humantime::format_duration(d).to_string();
    let mut out = Vec::new();
    let minute = Duration::from_secs(60);
    if s.session_absolute_timeout < minute {
        out.push(finding(
            Warning,
            format!(
                "sessions end {} after sign-in, used or not: users must sign in again that often",
                show(s.session_absolute_timeout)
            ),
            "set TESSERA_SESSION_ABSOLUTE_TIMEOUT in hours or days (default 30d); seconds suit test suites, not people",
        ));
    } else if s.session_idle_timeout < minute {
        out.push(finding(
            Warning,
            format!(
                "sessions end after {} without a request: a user reading a page is signed out",
                show(s.session_idle_timeout)
            ),
            "set TESSERA_SESSION_IDLE_TIMEOUT in minutes or hours (default 2h); seconds suit test suites, not people",
        ));
    }
    // Activity is written only when the last write is `touch` old, so a
    // session in use can idle out `idle - touch` after its last request.
    if s.session_touch_interval > s.session_idle_timeout / 2 {
        out.push(finding(
            Warning,
            format!(
                "session activity is recorded at most every {}, over half the idle timeout ({}): a session in use can idle out {} after its last request",
                show(s.session_touch_interval),
                show(s.session_idle_timeout),
                show(s.session_idle_timeout - s.session_touch_interval)
            ),
            "unset TESSERA_SESSION_TOUCH_INTERVAL (it defaults to a tenth of the idle timeout, at most 60s)",
        ));
    }
    // `exp` gets the leeway, so a token is accepted for TTL + leeway.
    if s.clock_leeway >= s.access_token_ttl {
        out.push(finding(
            Warning,
            format!(
                "TESSERA_CLOCK_LEEWAY ({}) is not shorter than the access token lifetime ({}): tokens are accepted until {} after issue, mostly on the leeway",
                show(s.clock_leeway),
                show(s.access_token_ttl),
                show(s.access_token_ttl + s.clock_leeway)
            ),
            "lower TESSERA_CLOCK_LEEWAY to what clocks really disagree by (seconds, with NTP), or lengthen TESSERA_ACCESS_TOKEN_TTL",
        ));
    }
    if s.refresh_token_ttl < s.access_token_ttl {
        out.push(finding(
            Warning,
            format!(
                "refresh tokens ({}) expire before the access tokens issued with them ({}): when a client needs to refresh it cannot, and must sign in again",
                show(s.refresh_token_ttl),
                show(s.access_token_ttl)
            ),
            "make TESSERA_REFRESH_TOKEN_TTL longer than TESSERA_ACCESS_TOKEN_TTL (defaults 30d and 10m)",
        ));
    }
    // A rotated-out key stays published and accepted until its tokens
    // expired; rotating faster than that keeps several keys live at once.
    let grace = s.access_token_ttl + s.clock_leeway;
    if let Some(interval) = s.key_rotation_interval
        && s.token_alg != TokenAlg::HS256
        && interval < grace
    {
        let every = interval.max(ROTATION_CHECKED_EVERY);
        let live = grace.as_secs().div_ceil(every.as_secs().max(1)) + 1;
        let checked = if interval < ROTATION_CHECKED_EVERY {
            " (rotation is checked once a minute, so it happens at most that often)"
        } else {
            ""
        };
        out.push(finding(
            Warning,
            format!(
                "signing keys rotate every {}{checked}, sooner than a rotated-out key retires ({}: access token lifetime plus leeway): about {live} keys are published and accepted at once",
                show(interval),
                show(grace)
            ),
            "rotate no more often than TESSERA_ACCESS_TOKEN_TTL + TESSERA_CLOCK_LEEWAY (e.g. TESSERA_KEY_ROTATION_INTERVAL=30d); to get rid of a key at once use `tessera keys rotate --retire-previous`",
        ));
    }
    if s.audit_retention < Duration::from_secs(7 * 86_400) {
        out.push(finding(
            Warning,
            format!(
                "audit events are kept only {}: an incident noticed later has no trail",
                show(s.audit_retention)
            ),
            "keep them for weeks or months (TESSERA_AUDIT_RETENTION, default 90d)",
        ));
    }
    if crate::store::Kind::of(&s.database_url).is_ok_and(|k| k == crate::store::Kind::Postgres)
        && s.database_statement_timeout < Duration::from_millis(100)
    {
        out.push(finding(
            Warning,
            format!(
                "PostgreSQL statements are cancelled after {}: a commit that waits on a busy disk or another node's lock takes longer, and its request fails with 503",
                show(s.database_statement_timeout)
            ),
            "set TESSERA_DATABASE_STATEMENT_TIMEOUT to a second or more (default 5s)",
        ));
    }
    out
}

/// The open-file limit `tessera serve` would run with here (`limit`: the
/// hard limit, to which it raises the soft one) against the connection
/// caps. A service manager may set other limits than this shell's; the
/// start banner shows the one in force.
pub fn connections(s: &Settings, limit: Option<u64>) -> Vec<Finding> {
    use Severity::{Info, Warning};
    let mut out = Vec::new();
    match limit {
        None => out.push(finding(
            Info,
            format!(
                "connections: at most {}, {} per client address (no open-file limit on this platform)",
                s.max_connections, s.max_connections_per_ip
            ),
            "none needed",
        )),
        Some(limit) => match crate::fd_limit::shortfall(
            limit,
            s.max_connections,
            s.database_pool_size,
        ) {
            Some(problem) => out.push(finding(
                Warning,
                format!("{problem} (the limit of this shell; the start banner shows the server's)"),
                format!(
                    "raise the hard limit (systemd: LimitNOFILE=; a shell: ulimit -Hn) or lower TESSERA_MAX_CONNECTIONS to {} or less",
                    limit.saturating_sub(crate::fd_limit::reserve(s.database_pool_size))
                ),
            )),
            None => out.push(finding(
                Info,
                format!(
                    "open-file limit {limit} (serve raises its soft limit to it): room for the {} connections allowed, {} per client address",
                    s.max_connections, s.max_connections_per_ip
                ),
                "none needed",
            )),
        },
    }
    if s.max_connections_per_ip >= s.max_connections {
        out.push(finding(
            Warning,
            format!(
                "one client address may hold every connection (TESSERA_MAX_CONNECTIONS_PER_IP {} ≥ TESSERA_MAX_CONNECTIONS {}): a flood from one address shuts everyone else out",
                s.max_connections_per_ip, s.max_connections
            ),
            "keep TESSERA_MAX_CONNECTIONS_PER_IP well below TESSERA_MAX_CONNECTIONS (default: a quarter, at most 256); list proxies in TESSERA_TRUSTED_PROXIES, which are exempt",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_are_checked_against_the_open_file_limit() {
        let s = Settings::from_pairs(&[("max_connections", "5000")]).unwrap();
        let f = connections(&s, Some(1_048_576));
        assert!(has(&f, Severity::Info, "open-file limit 1048576"), "{f:?}");
        let f = connections(&s, Some(1024));
        assert!(
            has(&f, Severity::Warning, "open-file limit (1024)"),
            "{f:?}"
        );
        assert!(f.iter().any(|x| x.fix.contains("752")), "{f:?}");
        let s = Settings::from_pairs(&[
            ("max_connections", "100"),
            ("max_connections_per_ip", "100"),
        ])
        .unwrap();
        let f = connections(&s, Some(1_048_576));
        assert!(has(&f, Severity::Warning, "every connection"), "{f:?}");
    }

    fn has(f: &[Finding], severity: Severity, needle: &str) -> bool {
        f.iter()
            .any(|x| x.severity == severity && x.problem.contains(needle))
    }

    #[test]
    fn defaults_on_localhost_have_no_danger_or_warning() {
        let s = Settings::from_pairs(&[]).unwrap();
        let f = check(&s, Some(Duration::from_secs(86_400)));
        assert!(f.iter().all(|x| x.severity == Severity::Info), "{f:?}");
    }

    #[test]
    fn each_pitfall_is_reported_with_a_fix() {
        let s = Settings::from_pairs(&[
            ("public_url", "http://auth.example.com"),
            ("cookie_secure", "false"),
            ("access_token_ttl", "2h"),
            ("session_idle_timeout", "30d"),
            ("refresh_token_ttl", "60d"),
            ("ip_rate_limit", "0"),
            ("trusted_proxies", "0.0.0.0/0"),
        ])
        .unwrap();
        let f = check(&s, Some(Duration::from_secs(200 * 86_400)));
        assert!(has(&f, Severity::Danger, "plain HTTP"));
        assert!(has(&f, Severity::Danger, "COOKIE_SECURE=false"));
        assert!(has(&f, Severity::Danger, "access tokens live 2h"));
        assert!(has(&f, Severity::Warning, "no idle timeout"));
        assert!(has(&f, Severity::Warning, "outlive browser sessions"));
        assert!(has(&f, Severity::Warning, "never rotates"));
        assert!(has(&f, Severity::Warning, "rate limit"));
        assert!(has(&f, Severity::Danger, "trusts every address"));
        assert!(f.iter().all(|x| !x.fix.is_empty()));

        let s = Settings::from_pairs(&[("cookie_samesite", "None"), ("access_token_ttl", "20m")])
            .unwrap();
        let f = check(&s, None);
        assert!(has(&f, Severity::Warning, "SameSite=None"));
        assert!(has(&f, Severity::Warning, "more than 15 minutes"));

        let s = Settings::from_pairs(&[
            ("token_alg", "HS256"),
            ("hs256_secret", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ])
        .unwrap();
        assert!(has(&check(&s, None), Severity::Danger, "low-entropy"));
        let s = Settings::from_pairs(&[
            ("token_alg", "HS256"),
            ("hs256_secret", "q8Zr1vN4xK2pL7sT9wB3mC6yH5jD0fGa"),
        ])
        .unwrap();
        assert!(has(&check(&s, None), Severity::Warning, "HS256"));
    }

    /// Short and lopsided lifetimes start (the configuration accepts any
    /// positive duration); the doctor says what each one does.
    #[test]
    fn unusual_lifetimes_are_explained() {
        let s = Settings::from_pairs(&[
            ("session_idle_timeout", "20s"),
            ("session_touch_interval", "15s"),
            ("access_token_ttl", "30s"),
            ("refresh_token_ttl", "20s"),
            ("key_rotation_interval", "30s"),
            ("audit_retention", "1d"),
            ("database_url", "postgres://tessera@127.0.0.1/tessera"),
            ("database_statement_timeout", "20ms"),
        ])
        .unwrap();
        let f = check(&s, None);
        for needle in [
            "sessions end after 20s without a request",
            "at most every 15s",
            "TESSERA_CLOCK_LEEWAY (1m) is not shorter than the access token lifetime (30s)",
            "refresh tokens (20s) expire before the access tokens issued with them (30s)",
            "signing keys rotate every 30s",
            "once a minute",
            "audit events are kept only 1day",
            "statements are cancelled after 20ms",
        ] {
            assert!(has(&f, Severity::Warning, needle), "{needle}: {f:#?}");
        }
        assert!(f.iter().all(|x| !x.fix.is_empty()));

        let s = Settings::from_pairs(&[("session_absolute_timeout", "30s")]).unwrap();
        let f = check(&s, None);
        assert!(
            has(&f, Severity::Warning, "sessions end 30s after sign-in"),
            "{f:#?}"
        );
        assert!(!has(&f, Severity::Warning, "without a request"), "{f:#?}");
        // Statement timeouts are PostgreSQL's; SQLite has none to warn about.
        let s = Settings::from_pairs(&[("database_statement_timeout", "20ms")]).unwrap();
        assert!(!has(&check(&s, None), Severity::Warning, "statements"));
        let s = Settings::from_pairs(&[("key_rotation_interval", "1h")]).unwrap();
        assert!(!has(&check(&s, None), Severity::Warning, "rotate every"));
    }

    #[test]
    fn clock_skew_warns_past_two_seconds_and_is_dangerous_past_the_leeway() {
        let leeway = Duration::from_secs(60);
        assert_eq!(clock_skew("x", 0.4, leeway).severity, Severity::Info);
        assert_eq!(clock_skew("x", -2.0, leeway).severity, Severity::Info);
        let f = clock_skew("the server's clock", 5.0, leeway);
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.problem.contains("5.0 s ahead of"), "{f:?}");
        let f = clock_skew("the database's clock", -61.0, leeway);
        assert_eq!(f.severity, Severity::Danger);
        assert!(f.problem.contains("61.0 s behind"), "{f:?}");
        assert!(f.problem.contains("TESSERA_CLOCK_LEEWAY (1m)"), "{f:?}");
    }
}
