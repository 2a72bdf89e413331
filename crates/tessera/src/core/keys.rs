//! Signing keys: generation, the in-memory key ring, rotation and retirement.
//!
//! The ring holds one active key (signs every new token) and every earlier key
//! that may still have live tokens. A key rotated out at `t` stays published in
//! the JWKS and accepted until `t + access TTL + leeway`, when the last token it
//! signed has expired; then it is retired (no longer accepted). Accepting needs
//! only the public half, so the private half is wiped from the store when the
//! key is rotated out, not when it retires (`signing.rs`). Verification reads
//! only this ring: no database.
//! With HS256 there is one symmetric key from the configuration, never
//! published.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Value, json};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::error::{CoreError, CoreResult};
use super::secret::{SecretHash, random_id};
use super::tokens::ACCESS_TOKEN_TYP;

/// The algorithms Tessera signs with. Exactly one is configured, and only it
/// is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum TokenAlg {
    EdDSA,
    ES256,
    RS256,
    HS256,
}

impl TokenAlg {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "EDDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            "HS256" => Some(Self::HS256),
            _ => None,
        }
    }

    /// The JOSE `alg` name, exactly.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::ES256 => Algorithm::ES256,
            Self::RS256 => Algorithm::RS256,
            Self::HS256 => Algorithm::HS256,
        }
    }
}

/// A signing key as stored. `private_pkcs8` is `None` once it was rotated
/// out (and wiped).
#[derive(Clone)]
pub struct StoredKey {
    pub kid: String,
    pub alg: TokenAlg,
    pub private_pkcs8: Option<Zeroizing<Vec<u8>>>,
    pub public_jwk: Value,
    pub created_at: OffsetDateTime,
    /// When it stopped signing; `None` while active.
    pub rotated_out_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("rotated_out_at", &self.rotated_out_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Retiring,
    Retired,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retiring => "retiring",
            Self::Retired => "retired",
        }
    }
}

/// How long a rotated-out key stays accepted: until its last token expired.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    pub alg: TokenAlg,
    pub grace: time::Duration,
}

impl KeyPolicy {
    pub fn retire_at(&self, key: &StoredKey) -> Option<OffsetDateTime> {
        key.rotated_out_at.map(|t| t + self.grace)
    }

    pub fn status(&self, key: &StoredKey, now: OffsetDateTime) -> KeyStatus {
        match self.retire_at(key) {
            None => KeyStatus::Active,
            Some(at) if now < at => KeyStatus::Retiring,
            Some(_) => KeyStatus::Retired,
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn crypto_failure(what: &str) -> CoreError {
    tracing::error!("key operation failed: {what}");
    CoreError::Unavailable
}

/// A short key id: `key_` and 64 random bits (every byte rides in every
/// token header).
fn new_kid() -> String {
    format!("key_{}", &random_id()[..11])
}

/// Generates a fresh asymmetric key for `alg`.
pub fn generate(alg: TokenAlg, now: OffsetDateTime) -> CoreResult<StoredKey> {
    let rng = SystemRandom::new();
    let kid = new_kid();
    let (pkcs8, jwk) = match alg {
        TokenAlg::EdDSA => {
            let doc =
                Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| crypto_failure("ed25519"))?;
            let pair =
                Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| crypto_failure("ed25519"))?;
            let x = b64(pair.public_key().as_ref());
            (
                doc.as_ref().to_vec(),
                json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
            )
        }
        TokenAlg::ES256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| crypto_failure("p256"))?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                .map_err(|_| crypto_failure("p256"))?;
            let point = pair.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                return Err(crypto_failure("p256 public key shape"));
            }
            (
                doc.as_ref().to_vec(),
                json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])}),
            )
        }
        TokenAlg::RS256 => {
            use aws_lc_rs::encoding::AsDer;
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| crypto_failure("rsa"))?;
            let der = pair.as_der().map_err(|_| crypto_failure("rsa export"))?;
            let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            (
                der.as_ref().to_vec(),
                json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)}),
            )
        }
        TokenAlg::HS256 => {
            return Err(CoreError::Validation(
                "HS256 keys come from TESSERA_HS256_SECRET; change the secret to rotate".into(),
            ));
        }
    };
    Ok(StoredKey {
        kid,
        alg,
        private_pkcs8: Some(Zeroizing::new(pkcs8)),
        public_jwk: jwk,
        created_at: now,
        rotated_out_at: None,
    })
}

/// A private key parsed once, when the ring is built: parsing a PKCS#8
/// document per token (what `jsonwebtoken::encode` does) costs as much as the
/// signature itself for Ed25519 (the public half is recomputed) and far more
/// for RSA.
pub enum Signer {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
    Hs256(Box<hmac::Key>),
}

impl Signer {
    fn from_stored(key: &StoredKey) -> CoreResult<Self> {
        let der = key
            .private_pkcs8
            .as_ref()
            .ok_or_else(|| crypto_failure("active key has no private half"))?;
        Ok(match key.alg {
            TokenAlg::EdDSA => Self::Ed25519(
                Ed25519KeyPair::from_pkcs8(der).map_err(|_| crypto_failure("ed25519 pkcs8"))?,
            ),
            TokenAlg::ES256 => Self::Es256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| crypto_failure("p256 pkcs8"))?,
            ),
            TokenAlg::RS256 => {
                Self::Rs256(RsaKeyPair::from_pkcs8(der).map_err(|_| crypto_failure("rsa pkcs8"))?)
            }
            TokenAlg::HS256 => return Err(crypto_failure("HS256 key in the store")),
        })
    }

    /// The `alg` its signatures are for.
    fn alg(&self) -> TokenAlg {
        match self {
            Self::Ed25519(_) => TokenAlg::EdDSA,
            Self::Es256(_) => TokenAlg::ES256,
            Self::Rs256(_) => TokenAlg::RS256,
            Self::Hs256(_) => TokenAlg::HS256,
        }
    }

    /// The JWS signature of `message` (the `header.claims` signing input), in
    /// the form RFC 7518 puts in a token: raw for EdDSA and HMAC, `r || s` for
    /// ES256, PKCS#1 v1.5 for RS256.
    pub fn sign(&self, message: &[u8]) -> CoreResult<Vec<u8>> {
        Ok(match self {
            Self::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Self::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map_err(|_| crypto_failure("p256 sign"))?
                .as_ref()
                .to_vec(),
            Self::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| crypto_failure("rsa sign"))?;
                signature
            }
            Self::Hs256(key) => hmac::sign(key, message).as_ref().to_vec(),
        })
    }
}

fn decoding_key(key: &StoredKey) -> CoreResult<DecodingKey> {
    let field = |name: &str| {
        key.public_jwk[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| crypto_failure("stored JWK lacks a field"))
    };
    match key.alg {
        TokenAlg::EdDSA => {
            DecodingKey::from_ed_components(&field("x")?).map_err(|_| crypto_failure("ed jwk"))
        }
        TokenAlg::ES256 => DecodingKey::from_ec_components(&field("x")?, &field("y")?)
            .map_err(|_| crypto_failure("ec jwk")),
        TokenAlg::RS256 => DecodingKey::from_rsa_components(&field("n")?, &field("e")?)
            .map_err(|_| crypto_failure("rsa jwk")),
        TokenAlg::HS256 => Err(crypto_failure("HS256 key in the store")),
    }
}

/// An EdDSA key's public half as ed25519-dalek wants it; `None` for others.
fn ed25519_key(key: &StoredKey) -> CoreResult<Option<ed25519_dalek::VerifyingKey>> {
    if key.alg != TokenAlg::EdDSA {
        return Ok(None);
    }
    let bytes: [u8; 32] = key.public_jwk["x"]
        .as_str()
        .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
        .and_then(|raw| raw.try_into().ok())
        .ok_or_else(|| crypto_failure("ed jwk"))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map(Some)
        .map_err(|_| crypto_failure("ed jwk"))
}

/// The key that signs new tokens.
pub struct SigningKey {
    pub kid: String,
    pub signer: Signer,
    /// The base64url JOSE header of every token it signs (`alg`, `typ`,
    /// `kid`), built once.
    pub header: String,
}

impl SigningKey {
    fn new(kid: String, signer: Signer) -> Self {
        let alg = signer.alg().as_str();
        let header = json!({"typ": ACCESS_TOKEN_TYP, "alg": alg, "kid": kid});
        Self {
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            kid,
            signer,
        }
    }
}

/// A key tokens may be verified with, until `retire_at`.
pub struct VerifyingKey {
    pub decoding: DecodingKey,
    /// The same key parsed for the batched Ed25519 check (EdDSA only).
    pub ed25519: Option<ed25519_dalek::VerifyingKey>,
    pub retire_at: Option<OffsetDateTime>,
    /// The public JWK (with `kid`, `alg`, `use`), `None` for HS256.
    pub jwk: Option<Value>,
}

/// Everything token signing and verification needs, swapped atomically.
pub struct KeyRing {
    pub alg: TokenAlg,
    pub signing: Option<SigningKey>,
    pub verifying: HashMap<String, Arc<VerifyingKey>>,
}

impl KeyRing {
    pub fn empty(alg: TokenAlg) -> Self {
        Self {
            alg,
            signing: None,
            verifying: HashMap::new(),
        }
    }

    /// The ring for an HS256 secret: one key, id derived from the secret's
    /// hash so it is stable across restarts and nodes but reveals nothing.
    pub fn hs256(secret: &[u8]) -> Self {
        let mut tagged = b"tessera/hs256-kid\0".to_vec();
        tagged.extend_from_slice(secret);
        let kid = format!("key_{}", &b64(SecretHash::of(&tagged).as_bytes())[..11]);
        let mut verifying = HashMap::new();
        verifying.insert(
            kid.clone(),
            Arc::new(VerifyingKey {
                decoding: DecodingKey::from_secret(secret),
                ed25519: None,
                retire_at: None,
                jwk: None,
            }),
        );
        Self {
            alg: TokenAlg::HS256,
            signing: Some(SigningKey::new(
                kid,
                Signer::Hs256(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret))),
            )),
            verifying,
        }
    }

    /// Builds the ring from stored keys: the active key of the configured
    /// algorithm signs; keys of that algorithm not yet retired verify.
    pub fn from_stored(
        keys: &[StoredKey],
        policy: &KeyPolicy,
        now: OffsetDateTime,
    ) -> CoreResult<Self> {
        let mut ring = Self::empty(policy.alg);
        for key in keys.iter().filter(|k| k.alg == policy.alg) {
            let status = policy.status(key, now);
            if status == KeyStatus::Retired {
                continue;
            }
            let mut jwk = key.public_jwk.clone();
            if let Value::Object(map) = &mut jwk {
                map.insert("kid".into(), Value::String(key.kid.clone()));
                map.insert("alg".into(), Value::String(key.alg.as_str().into()));
                map.insert("use".into(), Value::String("sig".into()));
            }
            ring.verifying.insert(
                key.kid.clone(),
                Arc::new(VerifyingKey {
                    decoding: decoding_key(key)?,
                    ed25519: ed25519_key(key)?,
                    retire_at: policy.retire_at(key),
                    jwk: Some(jwk),
                }),
            );
            if status == KeyStatus::Active {
                ring.signing = Some(SigningKey::new(key.kid.clone(), Signer::from_stored(key)?));
            }
        }
        Ok(ring)
    }

    /// The JWKS document: every published key not retired at `now`.
    pub fn jwks(&self, now: OffsetDateTime) -> Value {
        let mut keys: Vec<&Value> = self
            .verifying
            .values()
            .filter(|k| k.retire_at.is_none_or(|at| now < at))
            .filter_map(|k| k.jwk.as_ref())
            .collect();
        keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(alg: TokenAlg) -> KeyPolicy {
        KeyPolicy {
            alg,
            grace: time::Duration::minutes(11),
        }
    }

    #[test]
    fn every_asymmetric_algorithm_generates_a_usable_ring() {
        let now = OffsetDateTime::now_utc();
        for alg in [TokenAlg::EdDSA, TokenAlg::ES256, TokenAlg::RS256] {
            let key = generate(alg, now).unwrap();
            assert!(key.kid.starts_with("key_") && key.kid.len() == 15);
            assert!(!format!("{key:?}").contains("pkcs8"));
            let ring = KeyRing::from_stored(std::slice::from_ref(&key), &policy(alg), now).unwrap();
            assert_eq!(ring.signing.as_ref().unwrap().kid, key.kid);
            let jwks = ring.jwks(now);
            let jwk = &jwks["keys"][0];
            assert_eq!(jwk["kid"], key.kid.as_str());
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
            assert!(jwk.get("d").is_none(), "no private parts in the JWKS");
        }
        assert!(generate(TokenAlg::HS256, now).is_err());
    }

    #[test]
    fn rotated_keys_retire_after_the_grace_period() {
        let now = OffsetDateTime::now_utc();
        let p = policy(TokenAlg::EdDSA);
        let mut old = generate(TokenAlg::EdDSA, now).unwrap();
        old.rotated_out_at = Some(now);
        let new = generate(TokenAlg::EdDSA, now).unwrap();
        let keys = [old.clone(), new.clone()];
        assert_eq!(p.status(&old, now), KeyStatus::Retiring);
        let ring = KeyRing::from_stored(&keys, &p, now).unwrap();
        assert_eq!(ring.signing.as_ref().unwrap().kid, new.kid);
        assert_eq!(ring.jwks(now)["keys"].as_array().unwrap().len(), 2);
        let later = now + time::Duration::minutes(11);
        assert_eq!(p.status(&old, later), KeyStatus::Retired);
        assert_eq!(ring.jwks(later)["keys"].as_array().unwrap().len(), 1);
        let ring = KeyRing::from_stored(&keys, &p, later).unwrap();
        assert!(!ring.verifying.contains_key(&old.kid));
    }

    #[test]
    fn hs256_ring_publishes_nothing_and_has_a_stable_kid() {
        let a = KeyRing::hs256(b"0123456789abcdef0123456789abcdef");
        let b = KeyRing::hs256(b"0123456789abcdef0123456789abcdef");
        let c = KeyRing::hs256(b"fedcba9876543210fedcba9876543210");
        let kid = |r: &KeyRing| r.signing.as_ref().unwrap().kid.clone();
        assert_eq!(kid(&a), kid(&b));
        assert_ne!(kid(&a), kid(&c));
        assert_eq!(a.jwks(OffsetDateTime::now_utc()), json!({"keys": []}));
    }
}
