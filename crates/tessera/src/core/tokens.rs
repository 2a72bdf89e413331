//! Access tokens: issuing and strict verification (RFC 9068, RFC 8725).
//!
//! Verification happens in exactly one place, [`Tessera::verify_access_token`],
//! used by every path that accepts a token. It refuses, before any signature
//! work: oversized tokens; anything but three base64url segments; headers with
//! fields other than `alg`, `typ`, `kid` (so `jku`, `x5u`, `jwk`, `x5c`, `crit`
//! are refused); an `alg` other than the one configured (so `none` and HMAC
//! keyed with a public key are refused); a `typ` other than `at+jwt`; a `kid`
//! that is not one of ours or is retired. Then the signature (EdDSA: batched
//! with other requests' checks, see [`super::ed25519_batch`]; ES256, RS256 and
//! HS256: jsonwebtoken's check on aws-lc-rs, which also rejects the ECDSA
//! "psychic signature" class: r or s zero or out of range), then the claims
//! (all of `iss`, `sub`, `aud`, `exp`, `iat`, `jti`, `client_id`, `roles`,
//! `sid` present and typed, `iss` and `aud` ours), `exp`/`nbf`/`iat` against
//! our clock with leeway, then revocation. Nothing touches the database.
//!
//! A token whose signature was already checked is remembered in a bounded
//! cache keyed by the SHA-256 of the whole token, so a client reusing its
//! token does not pay for the signature again; expiry, key retirement and
//! revocation are still checked on every request.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use time::OffsetDateTime;

use super::Tessera;
use super::accounts::{User, UserStatus};
use super::error::{CoreError, CoreResult};
use super::keys::{SigningKey, VerifyingKey};
use super::secret::{SecretHash, random_id};
use tessera_wire::jwt;

/// Longest token accepted (ours are under 1 KiB even with RS256).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The `typ` header of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Room for the longest signature we make (RSA-2048: 256 bytes), base64url.
const MAX_SIGNATURE_B64: usize = 342;
/// `client_id` of tokens issued to Tessera's own browser flows.
pub const FIRST_PARTY_CLIENT: &str = "tessera";

pub use tessera_wire::jwt::AccessClaims;

/// Token settings, validated by the configuration.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: time::Duration,
    pub refresh_ttl: time::Duration,
    pub leeway: time::Duration,
    pub allowed_scopes: Vec<String>,
    /// `client_id` values the password grant accepts (none is Tessera's own).
    pub public_clients: Vec<String>,
    pub rotation_interval: Option<time::Duration>,
}

/// Why a token was refused. Clients only ever see `invalid_token`; the reason
/// is for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("token too large")]
    Oversized,
    #[error("token malformed")]
    Malformed,
    #[error("header has fields other than alg, typ and kid")]
    ForbiddenHeader,
    #[error("algorithm not accepted")]
    WrongAlgorithm,
    #[error("typ is not at+jwt")]
    WrongType,
    #[error("kid unknown or retired")]
    UnknownKey,
    #[error("signature or claims invalid")]
    BadSignature,
    #[error("issuer or audience mismatch")]
    WrongIssuerOrAudience,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("revoked")]
    Revoked,
    #[error("the user is suspended or gone")]
    InactiveUser,
    /// The node cannot decide now (its view of the revocation log is not
    /// fresh, or the user could not be read): the check fails closed
    /// (503); it is not the token's fault.
    #[error("a store is unavailable")]
    Unavailable,
}

impl From<TokenRejection> for CoreError {
    fn from(rejection: TokenRejection) -> Self {
        match rejection {
            TokenRejection::Unavailable => CoreError::Unavailable,
            _ => CoreError::Unauthenticated,
        }
    }
}

/// A signature-checked token remembered by the verification cache.
struct Verified {
    kid: String,
    claims: Arc<AccessClaims>,
}

pub(crate) type VerifiedCache = quick_cache::sync::Cache<SecretHash, Arc<VerifiedEntry>>;

pub struct VerifiedEntry(Verified);

/// A freshly issued access token.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: String,
    pub claims: AccessClaims,
    pub expires_in: i64,
}

/// RFC 6749 scope-token characters.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// `header.claims.signature`, each base64url (RFC 7515 compact form).
fn signed_token(signing: &SigningKey, claims: &AccessClaims) -> CoreResult<String> {
    let claims = serde_json::to_vec(claims).map_err(|e| {
        tracing::error!(error = %e, "serialising access token claims failed");
        CoreError::Unavailable
    })?;
    let mut token = String::with_capacity(
        signing.header.len() + 4 * claims.len().div_ceil(3) + 2 + MAX_SIGNATURE_B64,
    );
    token.push_str(&signing.header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
    let signature = signing.signer.sign(token.as_bytes()).map_err(|e| {
        tracing::error!(error = %e, "signing an access token failed");
        CoreError::Unavailable
    })?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    Ok(token)
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl Tessera {
    /// Signs an access token for `user`, tied to `sid` (a session or refresh
    /// family). `not_after` caps its expiry (a session's own expiry).
    pub(crate) async fn issue_access_token(
        &self,
        user: &User,
        sid: &str,
        client_id: &str,
        scope: Option<String>,
        not_after: Option<OffsetDateTime>,
    ) -> CoreResult<IssuedToken> {
        let (now, waited) = self.past_user_cut_off(&user.id).await?;
        // The cut-off waited for may have changed the user (roles, status):
        // the token says what holds now, not what held before it.
        let fresher;
        let user = if waited {
            fresher = self.active_user(&user.id).await?;
            &*fresher
        } else {
            user
        };
        let now = unix(now);
        let ring = self.keys.load();
        let signing = ring.signing.as_ref().ok_or_else(|| {
            tracing::error!("no active signing key");
            CoreError::Unavailable
        })?;
        let iat = now;
        let mut exp = now + self.tokens.access_ttl.whole_seconds();
        if let Some(cap) = not_after {
            exp = exp.min(unix(cap));
        }
        if exp <= now {
            return Err(CoreError::Unauthenticated);
        }
        let claims = AccessClaims {
            iss: self.tokens.issuer.clone(),
            sub: user.id.clone(),
            aud: self.tokens.audience.clone(),
            exp,
            iat,
            nbf: None,
            jti: random_id(),
            client_id: client_id.to_owned(),
            roles: user.roles.clone(),
            sid: sid.to_owned(),
            scope,
        };
        let token = signed_token(signing, &claims)?;
        Ok(IssuedToken {
            token,
            expires_in: exp - now,
            claims,
        })
    }

    /// The one strict verification of access tokens. See the module docs.
    pub async fn verify_access_token(
        &self,
        token: &str,
    ) -> Result<Arc<AccessClaims>, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::Oversized);
        }
        // A revocation this node has not read may exist: refuse to decide.
        if !self.freshness.is_fresh() {
            return Err(TokenRejection::Unavailable);
        }
        let now = self.now();
        let hash = SecretHash::of(token.as_bytes());
        let claims = if let Some(hit) = self.verified.get(&hash) {
            let Verified { kid, claims } = &hit.0;
            if self.live_key(kid, now).is_none() {
                return Err(TokenRejection::UnknownKey);
            }
            Arc::clone(claims)
        } else {
            let verified = self.check_signed_token(token, now).await?;
            let claims = Arc::clone(&verified.claims);
            self.verified
                .insert(hash, Arc::new(VerifiedEntry(verified)));
            claims
        };

        let now_s = unix(now);
        let leeway = self.tokens.leeway.whole_seconds();
        if now_s >= claims.exp + leeway {
            return Err(TokenRejection::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now_s + leeway < nbf) || claims.iat > now_s + leeway {
            return Err(TokenRejection::NotYetValid);
        }
        if self.revocations.is_revoked(&claims) {
            return Err(TokenRejection::Revoked);
        }
        // The user's status too (through the user cache, so usually no
        // store read): a suspended user's token is refused even where its
        // cut-off has not arrived yet.
        match self.stores.users.user_by_id(&claims.sub).await {
            Ok(Some(user)) if user.status == UserStatus::Active => Ok(claims),
            Ok(_) => Err(TokenRejection::InactiveUser),
            Err(e) => {
                let _ = CoreError::from(e); // counted and logged there
                Err(TokenRejection::Unavailable)
            }
        }
    }

    /// The time to issue a token of `user_id` at: now, or, in the second
    /// just before the user's latest cut-off, the start of the next second
    /// (and then `true`: the caller's view of the user may predate it).
    ///
    /// A cut-off kills every token with `iat` below it, and `iat` counts
    /// whole seconds, so a cut-off made at 12.3 s names 13 s. A token issued
    /// at 12.6 s would die at once with `iat` 12, and with `iat` raised to 13
    /// it would claim a time yet to come and outlive a second cut-off made
    /// at 12.8 s (also naming 13). So issuing waits for the second to turn
    /// (at most one second, and only right after a cut-off): cut-offs and
    /// tokens are then strictly ordered, and `iat` is never in the future.
    async fn past_user_cut_off(&self, user_id: &str) -> CoreResult<(OffsetDateTime, bool)> {
        let now = self.now();
        let Some(not_before) = self.revocations.user_not_before(user_id) else {
            return Ok((now, false));
        };
        let wait_ms = not_before.saturating_mul(1000) - super::time::to_millis(now);
        if wait_ms <= 0 {
            return Ok((now, false));
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            wait_ms.clamp(0, 1000) as u64
        ))
        .await;
        let now = self.now();
        if now.unix_timestamp() < not_before {
            // Only a clock that stood still while we slept (a test's manual
            // clock) gets here: refuse rather than issue a doomed token.
            return Err(CoreError::Busy);
        }
        Ok((now, true))
    }

    /// The key `kid` if it still verifies at `now`.
    fn live_key(&self, kid: &str, now: OffsetDateTime) -> Option<Arc<VerifyingKey>> {
        self.keys
            .load()
            .verifying
            .get(kid)
            .filter(|k| k.retire_at.is_none_or(|at| now < at))
            .cloned()
    }

    /// Header, signature, `iss` and `aud` of a token not seen before.
    async fn check_signed_token(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Verified, TokenRejection> {
        let compact = jwt::split(token).ok_or(TokenRejection::Malformed)?;
        let header = compact.header().map_err(|e| match e {
            jwt::HeaderError::Malformed => TokenRejection::Malformed,
            jwt::HeaderError::Forbidden => TokenRejection::ForbiddenHeader,
        })?;
        let alg = self.keys.load().alg;
        if header.alg != alg.as_str() {
            return Err(TokenRejection::WrongAlgorithm);
        }
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenRejection::WrongType);
        }
        let kid = header.kid.ok_or(TokenRejection::UnknownKey)?;
        let key = self.live_key(&kid, now).ok_or(TokenRejection::UnknownKey)?;

        let signed = compact.signed;
        let signature_valid = match &key.ed25519 {
            Some(ed25519) => {
                let signature = compact
                    .ed25519_signature()
                    .ok_or(TokenRejection::BadSignature)?;
                let signature = ed25519_dalek::Signature::from_bytes(&signature);
                self.signatures.verify(signed, &signature, ed25519).await
            }
            None => jsonwebtoken::crypto::verify(
                compact.signature_b64,
                signed,
                &key.decoding,
                alg.jwt(),
            )
            .unwrap_or(false),
        };
        if !signature_valid {
            return Err(TokenRejection::BadSignature);
        }

        // Claims that are missing or of the wrong type fail here too.
        let claims = compact.claims().map_err(|e| match e {
            jwt::ClaimsError::Unreadable => TokenRejection::BadSignature,
            jwt::ClaimsError::TimesOutOfRange => TokenRejection::Malformed,
        })?;
        if claims.iss != self.tokens.issuer || claims.aud != self.tokens.audience {
            return Err(TokenRejection::WrongIssuerOrAudience);
        }
        Ok(Verified {
            kid,
            claims: Arc::new(claims),
        })
    }

    /// The JWKS document of the keys that verify tokens now.
    pub fn jwks(&self) -> serde_json::Value {
        self.keys.load().jwks(self.now())
    }

    /// Checks requested scopes against the allowed list; `None` or empty
    /// means no scope.
    pub fn grant_scope(&self, requested: Option<&str>) -> CoreResult<Option<String>> {
        let Some(requested) = requested.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let mut granted: Vec<&str> = Vec::new();
        for scope in requested.split(' ').filter(|s| !s.is_empty()) {
            if !self.tokens.allowed_scopes.iter().any(|a| a == scope) {
                return Err(CoreError::InvalidScope);
            }
            if !granted.contains(&scope) {
                granted.push(scope);
            }
        }
        Ok(Some(granted.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_tokens_follow_rfc_6749() {
        assert!(is_scope_token("read:users"));
        assert!(!is_scope_token("has space"));
        assert!(!is_scope_token("quote\"d"));
        assert!(!is_scope_token("back\\slash"));
        assert!(!is_scope_token(""));
    }
}
