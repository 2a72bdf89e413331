//! The parts of a compact JWS access token, read before and after its
//! signature is checked. Signature checking itself is the server's (it needs
//! the keys); everything here is a pure function of the token's bytes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The claims of an access token: exactly the contract's, no PII.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// Never issued (redundant with `iat`), but honoured when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    pub client_id: String,
    pub roles: Vec<String>,
    pub sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The latest instant a token's times may name: 9999-12-31T23:59:59Z, the
/// end of what RFC 3339 timestamps (and `OffsetDateTime`) represent.
pub const LATEST_UNIX: i64 = 253_402_300_799;

impl AccessClaims {
    /// Whether `exp`, `iat` and `nbf` all lie between 1970 and the end of
    /// year 9999: a token naming any other time is malformed, whoever signed
    /// it, so every later step (leeway arithmetic, `expires_at` in `/v1/me`,
    /// introspection) works on times it can represent.
    pub fn times_in_range(&self) -> bool {
        let ok = |t: i64| (0..=LATEST_UNIX).contains(&t);
        ok(self.exp) && ok(self.iat) && self.nbf.is_none_or(ok)
    }
}

/// The JOSE header of an access token: `alg`, `typ` and `kid`, nothing else
/// (RFC 8725 §3.1: a `jku`, `x5u` or `crit` is never followed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoseHeader {
    pub alg: String,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
}

/// A token split at its dots. `signed` is the signing input (header and
/// payload, dot included), a slice of the token.
#[derive(Debug, Clone, Copy)]
pub struct Compact<'a> {
    pub header_b64: &'a str,
    pub payload_b64: &'a str,
    pub signature_b64: &'a str,
    pub signed: &'a [u8],
}

/// Splits a compact JWS: exactly three parts, the signature not empty.
pub fn split(token: &str) -> Option<Compact<'_>> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if signature_b64.is_empty() {
        return None;
    }
    let signed = token
        .as_bytes()
        .get(..header_b64.len() + 1 + payload_b64.len())?;
    Some(Compact {
        header_b64,
        payload_b64,
        signature_b64,
        signed,
    })
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Not base64url.
    Malformed,
    /// Not JSON, or fields other than `alg`, `typ` and `kid`.
    Forbidden,
}

impl Compact<'_> {
    pub fn header(&self) -> Result<JoseHeader, HeaderError> {
        let json = URL_SAFE_NO_PAD
            .decode(self.header_b64)
            .map_err(|_| HeaderError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| HeaderError::Forbidden)
    }

    /// The signature as an Ed25519 signature's 64 bytes, if it is one.
    pub fn ed25519_signature(&self) -> Option<[u8; 64]> {
        let raw = URL_SAFE_NO_PAD.decode(self.signature_b64).ok()?;
        <[u8; 64]>::try_from(raw).ok()
    }

    /// The claims, once the signature was checked: `None` when missing or
    /// mistyped (the token cannot be ours), `Some(Err)` when a time is out
    /// of range.
    pub fn claims(&self) -> Result<AccessClaims, ClaimsError> {
        let claims: AccessClaims = URL_SAFE_NO_PAD
            .decode(self.payload_b64)
            .ok()
            .and_then(|payload| serde_json::from_slice(&payload).ok())
            .ok_or(ClaimsError::Unreadable)?;
        if !claims.times_in_range() {
            return Err(ClaimsError::TimesOutOfRange);
        }
        Ok(claims)
    }
}

/// Why claims were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimsError {
    /// Not base64url JSON with the contract's claims and types.
    Unreadable,
    /// `exp`, `iat` or `nbf` outside 1970..=9999.
    TimesOutOfRange,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn split_wants_three_parts_and_a_signature() {
        assert!(split("a.b.c").is_some());
        assert!(split("a.b.").is_none());
        assert!(split("a.b").is_none());
        assert!(split("a.b.c.d").is_none());
        let c = split("hh.pp.ss").unwrap();
        assert_eq!(c.signed, b"hh.pp");
    }

    #[test]
    fn header_allows_only_alg_typ_kid() {
        let ok = format!("{}.x.y", b64(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k"}"#));
        assert_eq!(split(&ok).unwrap().header().unwrap().alg, "EdDSA");
        let jku = format!("{}.x.y", b64(r#"{"alg":"EdDSA","jku":"http://x"}"#));
        assert_eq!(
            split(&jku).unwrap().header().unwrap_err(),
            HeaderError::Forbidden
        );
        assert_eq!(
            split("!!.x.y").unwrap().header().unwrap_err(),
            HeaderError::Malformed
        );
    }

    #[test]
    fn claims_times_are_bounded() {
        let claims = |exp: i64| {
            let json = format!(
                r#"{{"iss":"i","sub":"s","aud":"a","exp":{exp},"iat":1,"jti":"j","client_id":"c","roles":[],"sid":"x"}}"#
            );
            split(&format!("h.{}.s", b64(&json))).unwrap().claims()
        };
        assert!(claims(2_000_000_000).is_ok());
        assert_eq!(claims(LATEST_UNIX + 1), Err(ClaimsError::TimesOutOfRange));
        assert_eq!(claims(-1), Err(ClaimsError::TimesOutOfRange));
        assert_eq!(
            split("h.e30.s").unwrap().claims(),
            Err(ClaimsError::Unreadable)
        );
    }
}
