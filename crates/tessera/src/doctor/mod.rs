//! `tessera doctor`: the configuration checked against known pitfalls, each
//! finding with its fix. Pure over the settings (and the signing keys' ages),
//! so every rule is unit-tested.
//!
//! `tessera doctor --url` also examines a running server from outside, the
//! way a browser or a resource server sees it: [`remote`] holds the rules
//! (headers and JSON in, findings out; no network), [`probe`] makes the
//! requests. A misconfigured proxy or a broken deployment shows there even
//! when the configuration file is right.

pub mod database;
pub mod probe;
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

#[cfg(test)]
mod tests {
    use super::*;

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
