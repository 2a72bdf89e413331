//! `tessera token inspect`: decode a JWT without trusting it, and lint it.
//!
//! Nothing here verifies a signature; the output says so. The lints are the
//! mistakes that make tokens dangerous or heavy: weak or missing algorithms,
//! long lifetimes, size, and claims that look like personal data (tokens are
//! readable by anyone who holds them).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// One finding about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Danger,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Danger => "danger",
        }
    }
}

/// A decoded (unverified) token and what is wrong with it.
#[derive(Debug)]
pub struct Inspection {
    pub header: Value,
    pub claims: Value,
    pub size: usize,
    pub lints: Vec<Lint>,
}

const PII_CLAIM_NAMES: &[&str] = &[
    "email",
    "email_verified",
    "phone",
    "phone_number",
    "name",
    "given_name",
    "family_name",
    "address",
    "birthdate",
    "ssn",
];

fn looks_like_email(s: &str) -> bool {
    s.split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
}

fn looks_like_phone(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let allowed = s
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    allowed && (7..=15).contains(&digits) && (s.starts_with('+') || s.contains(['-', ' ', '(']))
}

fn walk_strings<'a>(path: String, v: &'a Value, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_strings(format!("{path}[{i}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk_strings(p, item, out);
            }
        }
        _ => {}
    }
}

fn decode_json(segment: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|e| format!("not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

/// Decodes and lints `token`. Errors only when it is not a JWS at all.
pub fn inspect(token: &str) -> Result<Inspection, String> {
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(format!(
            "a signed JWT has 3 dot-separated parts; this has {}",
            parts.len()
        ));
    }
    let header = decode_json(parts[0]).map_err(|e| format!("header {e}"))?;
    let claims = decode_json(parts[1]).map_err(|e| format!("payload {e}"))?;
    let mut lints = Vec::new();
    let mut lint = |severity, message: String| lints.push(Lint { severity, message });

    match header["alg"].as_str() {
        None => lint(Severity::Danger, "no alg header".into()),
        Some(a) if a.eq_ignore_ascii_case("none") => lint(
            Severity::Danger,
            "alg is none: the token is unsigned and must never be accepted".into(),
        ),
        Some("HS256" | "HS384" | "HS512") => lint(
            Severity::Warning,
            "HMAC algorithm: every verifier holds the signing secret; prefer EdDSA or ES256".into(),
        ),
        Some("RS256" | "RS384" | "RS512" | "PS256") => lint(
            Severity::Info,
            "RSA signatures are large (342 characters for 2048-bit keys); EdDSA is 86".into(),
        ),
        Some(a) => lint(Severity::Info, format!("algorithm {a}")),
    }
    for dangerous in ["jku", "x5u", "jwk", "x5c", "crit"] {
        if header.get(dangerous).is_some() {
            lint(
                Severity::Danger,
                format!("header {dangerous:?} lets the token choose its own key or rules"),
            );
        }
    }
    if header.get("kid").is_none() {
        lint(Severity::Warning, "no kid: key rotation is harder".into());
    }
    if header["typ"]
        .as_str()
        .is_none_or(|t| !t.eq_ignore_ascii_case("at+jwt"))
    {
        lint(
            Severity::Info,
            "typ is not at+jwt (RFC 9068): the token could be confused with other JWT kinds".into(),
        );
    }

    let exp = claims["exp"].as_i64();
    let iat = claims["iat"].as_i64();
    match (exp, iat) {
        (None, _) => lint(Severity::Danger, "no exp: the token never expires".into()),
        (Some(exp), Some(iat)) => {
            let life = exp.saturating_sub(iat);
            let severity = if life > 3600 {
                Severity::Danger
            } else if life > 900 {
                Severity::Warning
            } else {
                Severity::Info
            };
            lint(
                severity,
                format!(
                    "lifetime {} (exp - iat){}",
                    humantime::format_duration(std::time::Duration::from_secs(
                        u64::try_from(life.max(0)).unwrap_or(0)
                    )),
                    if severity > Severity::Info {
                        "; access tokens should live 15 minutes or less"
                    } else {
                        ""
                    }
                ),
            );
        }
        (Some(_), None) => lint(Severity::Info, "no iat: the lifetime is unknown".into()),
    }
    if claims.get("jti").is_none() {
        lint(
            Severity::Warning,
            "no jti: this token cannot be revoked individually".into(),
        );
    }
    if claims.get("nbf").is_some() && claims.get("iat") == claims.get("nbf") {
        lint(Severity::Info, "nbf equals iat: redundant bytes".into());
    }

    if let Some(map) = claims.as_object() {
        for name in map.keys() {
            if PII_CLAIM_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
                lint(
                    Severity::Warning,
                    format!(
                        "claim {name:?} carries personal data; anyone holding the token can read it"
                    ),
                );
            }
        }
    }
    let mut strings = Vec::new();
    walk_strings(String::new(), &claims, &mut strings);
    for (path, value) in strings {
        if looks_like_email(value) {
            lint(
                Severity::Warning,
                format!("claim {path} looks like an email address (personal data)"),
            );
        } else if looks_like_phone(value) {
            lint(
                Severity::Warning,
                format!("claim {path} looks like a phone number (personal data)"),
            );
        }
    }

    let size = token.len();
    lint(
        if size > 1024 {
            Severity::Warning
        } else {
            Severity::Info
        },
        format!("{size} bytes, sent with every request (an opaque session id is 43)"),
    );
    Ok(Inspection {
        header,
        claims,
        size,
        lints,
    })
}

/// The time claims (`iat`, `nbf`, `exp`) as UTC times, each with how far
/// it is from `now` ("expires in 9m 58s", "expired 2h ago"); one line each,
/// in that order, for the claims present as whole seconds.
pub fn time_claims(claims: &Value, now: i64) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, future, past) in [
        ("iat", "issued in", "issued"),
        ("nbf", "valid in", "valid since"),
        ("exp", "expires in", "expired"),
    ] {
        let Some(at) = claims.get(name).and_then(Value::as_i64) else {
            continue;
        };
        let when = time::OffsetDateTime::from_unix_timestamp(at)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("{at} (out of range)"));
        let span = |secs: i64| {
            humantime::format_duration(std::time::Duration::from_secs(secs.unsigned_abs()))
        };
        let relative = match at.cmp(&now) {
            std::cmp::Ordering::Greater => format!("{future} {}", span(at - now)),
            std::cmp::Ordering::Less => format!("{past} {} ago", span(now - at)),
            std::cmp::Ordering::Equal => format!("{past} now"),
        };
        lines.push(format!("{name}: {when} ({relative})"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn time_claims_read_as_times_and_distances() {
        let claims = json!({"iat": 1_700_000_000, "exp": 1_700_000_600, "sub": "x"});
        assert_eq!(
            time_claims(&claims, 1_700_000_002),
            [
                "iat: 2023-11-14T22:13:20Z (issued 2s ago)",
                "exp: 2023-11-14T22:23:20Z (expires in 9m 58s)",
            ]
        );
        assert_eq!(
            time_claims(&claims, 1_700_007_800)[1],
            "exp: 2023-11-14T22:23:20Z (expired 2h ago)"
        );
        assert!(time_claims(&json!({"exp": "soon"}), 0).is_empty());
    }

    fn token(header: Value, claims: Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn has(i: &Inspection, severity: Severity, needle: &str) -> bool {
        i.lints
            .iter()
            .any(|l| l.severity == severity && l.message.contains(needle))
    }

    #[test]
    fn a_good_token_has_only_information() {
        let t = token(
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "key_1"}),
            json!({"sub": "usr_1", "iat": 1000, "exp": 1600, "jti": "j", "roles": ["admin"]}),
        );
        let i = inspect(&t).unwrap();
        assert!(
            i.lints.iter().all(|l| l.severity == Severity::Info),
            "{:?}",
            i.lints
        );
        assert!(has(&i, Severity::Info, "10m"));
        assert_eq!(i.size, t.len());
    }

    #[test]
    fn dangers_and_personal_data_are_flagged() {
        let t = token(
            json!({"alg": "none", "jku": "https://x"}),
            json!({"sub": "bob@example.com", "email": "bob@example.com", "phone": "+1 555-123-4567",
                   "iat": 0, "exp": 86_400}),
        );
        let i = inspect(&t).unwrap();
        assert!(has(&i, Severity::Danger, "alg is none"));
        assert!(has(&i, Severity::Danger, "\"jku\""));
        assert!(has(&i, Severity::Danger, "lifetime 1day"));
        assert!(has(&i, Severity::Warning, "claim sub looks like an email"));
        assert!(has(
            &i,
            Severity::Warning,
            "\"email\" carries personal data"
        ));
        assert!(has(
            &i,
            Severity::Warning,
            "claim phone looks like a phone number"
        ));
        assert!(has(&i, Severity::Warning, "no jti"));
        assert!(has(&i, Severity::Warning, "no kid"));
        let i = inspect(&token(json!({"alg": "HS256"}), json!({"sub": "x"}))).unwrap();
        assert!(has(&i, Severity::Danger, "never expires"));
        assert!(has(&i, Severity::Warning, "HMAC"));
    }

    #[test]
    fn non_tokens_are_errors() {
        assert!(inspect("abc").is_err());
        assert!(inspect("a.b.c").is_err());
        assert!(inspect("e30.!!!.c2ln").is_err());
    }
}
