//! Email addresses as typed at registration and login
//! (`tessera_wire::email::canonical` and `key`). Input, as text: one
//! address, or two separated by the first newline.
//!
//! Invariants, for an accepted address:
//! - within the byte limits; display and key are NFC, hold one `@`, no
//!   whitespace, control or default-ignorable character;
//! - the key is the key of the display form, and a key's key is itself;
//! - the display form is accepted again, giving the same display and key.
//!
//! And for two accepted addresses: same key exactly when caseless's
//! compatibility caseless match (Unicode D146) says they match, as
//! `email::key` documents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_wire::email::{self, Canonical};
use unicode_normalization::is_nfc;

fn check(raw: &str) -> Option<Canonical> {
    let c = email::canonical(raw).ok()?;
    assert!(c.display.len() <= email::MAX_LEN);
    assert!(c.key.len() <= email::KEY_MAX_LEN);
    for s in [&c.display, &c.key] {
        assert!(is_nfc(s), "{s:?} is not NFC");
        assert_eq!(s.matches('@').count(), 1, "{s:?}");
        assert!(
            !s.chars()
                .any(|ch| ch.is_whitespace() || ch.is_control() || email::is_default_ignorable(ch)),
            "{s:?}"
        );
    }
    assert_eq!(email::key(&c.display), c.key);
    assert_eq!(email::key(&c.key), c.key, "the key is not stable");
    assert_eq!(email::canonical(&c.display).as_ref(), Ok(&c));
    Some(c)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match text.split_once('\n') {
        None => {
            check(&text);
        }
        Some((a, b)) => {
            if let (Some(x), Some(y)) = (check(a), check(b)) {
                assert_eq!(
                    x.key == y.key,
                    caseless::compatibility_caseless_match_str(&x.display, &y.display),
                    "{x:?} vs {y:?}"
                );
            }
        }
    }
});
