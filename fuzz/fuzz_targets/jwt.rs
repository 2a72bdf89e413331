//! Access tokens as a client sends them (`Authorization: Bearer …`).
//!
//! The first byte picks the mode:
//! - even: the rest is the token, as is: `split`, `header`,
//!   `ed25519_signature` and `claims` never panic, and what they return is
//!   consistent with the text;
//! - odd: the rest is a list of byte edits (4 bytes each: operation,
//!   position, byte) applied to a valid EdDSA token signed with a fixed key.
//!
//! In both modes a token whose signature verifies (ed25519-dalek
//! `verify_strict` over `Compact::signed`) must be, byte for byte, the
//! original token: a signed token has exactly one spelling, so no edit
//! (trailing base64 bits, padding, a changed header) can survive the check.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use tessera_wire::jwt::{self, AccessClaims};

struct Fixture {
    key: VerifyingKey,
    token: String,
    claims: AccessClaims,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let signing = SigningKey::from_bytes(&[0x42; 32]);
    let claims = AccessClaims {
        iss: "https://auth.example.com".into(),
        sub: "usr_01JD2F7QK3XWZ8M5".into(),
        aud: "https://auth.example.com".into(),
        exp: 1_764_000_600,
        iat: 1_764_000_000,
        nbf: None,
        jti: "tok_7hQ2vY9sLq".into(),
        client_id: "tessera".into(),
        roles: vec!["user".into()],
        sid: "fam_c1Pz0Wk4".into(),
        scope: Some("read:invoices".into()),
    };
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let signed = format!("{header}.{payload}");
    let signature = signing.sign(signed.as_bytes());
    let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    Fixture {
        key: signing.verifying_key(),
        token,
        claims,
    }
});

/// Applies the edits in `ops` (4 bytes each) to `token`.
fn edited(token: &str, ops: &[u8]) -> Vec<u8> {
    let mut bytes = token.as_bytes().to_vec();
    for op in ops.chunks_exact(4) {
        let pos = usize::from(u16::from_le_bytes([op[1], op[2]]));
        let byte = op[3];
        match op[0] % 4 {
            0 if !bytes.is_empty() => {
                let i = pos % bytes.len();
                bytes[i] = byte;
            }
            1 => {
                let i = pos % (bytes.len() + 1);
                bytes.insert(i, byte);
            }
            2 if !bytes.is_empty() => {
                let i = pos % bytes.len();
                bytes.remove(i);
            }
            3 if !bytes.is_empty() => {
                let i = pos % bytes.len();
                bytes[i] ^= 1 << (byte % 8);
            }
            _ => {}
        }
    }
    bytes
}

fn check(token: &str) {
    let fixture = &*FIXTURE;
    let Some(compact) = jwt::split(token) else {
        // Refused: not exactly three parts, or an empty signature.
        assert!(token.matches('.').count() != 2 || token.ends_with('.'));
        return;
    };
    // The parts are the token's text, in order, without dots.
    assert_eq!(
        format!(
            "{}.{}.{}",
            compact.header_b64, compact.payload_b64, compact.signature_b64
        ),
        token
    );
    assert!(!compact.signature_b64.is_empty());
    assert_eq!(
        compact.signed,
        &token.as_bytes()[..compact.header_b64.len() + 1 + compact.payload_b64.len()]
    );
    for part in [
        compact.header_b64,
        compact.payload_b64,
        compact.signature_b64,
    ] {
        assert!(!part.contains('.'));
    }

    let _ = compact.header();
    if let Ok(claims) = compact.claims() {
        assert!(claims.times_in_range());
    }
    let Some(signature) = compact.ed25519_signature() else {
        return;
    };
    // One spelling per signature: non-canonical base64 is refused.
    assert_eq!(URL_SAFE_NO_PAD.encode(signature), compact.signature_b64);
    let signature = Signature::from_bytes(&signature);
    if fixture
        .key
        .verify_strict(compact.signed, &signature)
        .is_ok()
    {
        assert_eq!(token, fixture.token, "an edited token verified");
        assert_eq!(compact.claims().as_ref(), Ok(&fixture.claims));
        assert_eq!(compact.header().map(|h| h.alg).as_deref(), Ok("EdDSA"));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check(&String::from_utf8_lossy(rest));
    } else {
        let bytes = edited(&FIXTURE.token, rest);
        // Header values reach the server as text (`HeaderValue::to_str`).
        if let Ok(token) = std::str::from_utf8(&bytes) {
            check(token);
        }
    }
});
