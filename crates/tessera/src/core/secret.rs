//! Secrets and identifiers.
//!
//! Session ids (and later refresh tokens) are bearer secrets: 256 bits from the
//! operating system's CSPRNG, base64url without padding. Stores keep only their
//! SHA-256 ([`SecretHash`]), so reading the database opens no live session.
//! Secret newtypes never print their value (`Debug`/`Display` say
//! `[redacted]`), are wiped on drop, and compare in constant time.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of entropy in a bearer secret (256 bits).
pub const SECRET_BYTES: usize = 32;
/// Length of a bearer secret once encoded (43 base64url characters).
pub const SECRET_ENCODED_LEN: usize = 43;

/// The bytes of the base64url alphabet (no padding), which secrets and ids
/// are written in: a table, because every presented secret is checked byte by
/// byte before any lookup.
const BASE64URL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// Bytes of entropy in a public identifier (128 bits, 22 characters).
const ID_BYTES: usize = 16;

/// Fills `buf` from the OS CSPRNG. Failure means the OS cannot give
/// randomness, which no request can work around, so it aborts the request
/// loudly rather than continuing with weak values.
fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random number generator failed");
}

/// A bearer secret as the client holds it (cookie value, later refresh token).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct BearerSecret(String);

impl BearerSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        fill_random(&mut bytes);
        let encoded = URL_SAFE_NO_PAD.encode(bytes);
        bytes.zeroize();
        Self(encoded)
    }

    /// A fresh secret whose hash begins with the byte `tag`: the shape a
    /// store that keeps a user's sessions together asks for (see
    /// [`session_tag`]). Draws whole fresh secrets until one fits (256 tries
    /// on average, well under a millisecond), so the secret is uniform among
    /// those that fit: 248 bits an attacker must guess, where a plain
    /// [`BearerSecret::generate`] has 256.
    pub fn generate_tagged(tag: u8) -> Self {
        loop {
            let secret = Self::generate();
            if secret.hash().0[0] == tag {
                return secret;
            }
        }
    }

    /// Accepts a presented value only if it has the exact shape Tessera issues,
    /// so junk never reaches a store lookup.
    pub fn parse(presented: &str) -> Option<Self> {
        let well_formed = presented.len() == SECRET_ENCODED_LEN
            && presented.bytes().all(|b| BASE64URL[usize::from(b)]);
        well_formed.then(|| Self(presented.to_owned()))
    }

    /// The value to hand to the client, and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(self.0.as_bytes())
    }

    /// A second secret derived from this one with domain separation. Used for
    /// the session's CSRF token: it can be recomputed from the cookie, while the
    /// stored hash of the cookie does not reveal it.
    pub fn derive(&self, purpose: &str) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"tessera/");
        ctx.update(purpose.as_bytes());
        ctx.update(b"\0");
        ctx.update(self.0.as_bytes());
        URL_SAFE_NO_PAD.encode(ctx.finish().as_ref())
    }
}

impl fmt::Debug for BearerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for BearerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// SHA-256 of a bearer secret: what stores and caches are keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn of(bytes: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash([redacted])")
    }
}

/// The byte a session hash of `user_id` begins with when its store keeps
/// each user's sessions together ([`crate::store::SessionStore::tags_sessions`]):
/// the first byte of the SHA-256 of the user id. A lookup knows only the
/// hash, and finds the user's group from its first byte (Redis: the hash
/// tag that puts a user's sessions and their index in one cluster slot).
pub fn session_tag(user_id: &str) -> u8 {
    SecretHash::of(user_id.as_bytes()).0[0]
}

/// Constant-time equality for secrets presented by clients.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A fresh public identifier such as `usr_…` or `ses_…`: a prefix and 128
/// random bits in base64url. Not secret, but unguessable and short.
pub fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 1 + 22);
    id.push_str(prefix);
    id.push('_');
    id.push_str(&random_id());
    id
}

/// 128 random bits in base64url (22 characters), e.g. a token's `jti`.
pub fn random_id() -> String {
    let mut bytes = [0u8; ID_BYTES];
    fill_random(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` looks like an id made by [`new_id`] with this prefix.
pub fn is_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| rest.len() == 22 && rest.bytes().all(|b| BASE64URL[usize::from(b)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_256_bits_and_never_print() {
        let s = BearerSecret::generate();
        assert_eq!(s.expose().len(), SECRET_ENCODED_LEN);
        assert_eq!(URL_SAFE_NO_PAD.decode(s.expose()).unwrap().len(), 32);
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_ne!(s.expose(), BearerSecret::generate().expose());
    }

    #[test]
    fn parse_accepts_only_the_issued_shape() {
        let s = BearerSecret::generate();
        assert!(BearerSecret::parse(s.expose()).is_some());
        assert!(BearerSecret::parse("short").is_none());
        assert!(BearerSecret::parse(&"a".repeat(44)).is_none());
        assert!(BearerSecret::parse(&format!("{}=", &s.expose()[..42])).is_none());
    }

    #[test]
    fn a_tagged_secret_hashes_to_its_tag_and_is_still_well_formed() {
        for user in ["usr_a", "usr_b", "usr_c"] {
            let tag = session_tag(user);
            let s = BearerSecret::generate_tagged(tag);
            assert_eq!(s.hash().0[0], tag);
            assert!(BearerSecret::parse(s.expose()).is_some());
            assert_ne!(s.expose(), BearerSecret::generate_tagged(tag).expose());
        }
    }

    #[test]
    fn derived_secret_differs_from_hash_and_is_stable() {
        let s = BearerSecret::generate();
        let csrf = s.derive("csrf");
        assert_eq!(csrf, s.derive("csrf"));
        assert_ne!(csrf, s.derive("other"));
        assert_ne!(csrf, URL_SAFE_NO_PAD.encode(s.hash().0));
    }

    #[test]
    fn ids_are_prefixed_and_checked() {
        let id = new_id("usr");
        assert!(id.starts_with("usr_"));
        assert!(is_id("usr", &id));
        assert!(!is_id("ses", &id));
        assert!(!is_id("usr", "usr_' OR 1=1 --"));
    }

    #[test]
    fn constant_time_compare_matches_equality() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }
}
