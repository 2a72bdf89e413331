//! Durations in settings and flags (`tessera_wire::duration::parse`).
//!
//! Invariants: never panics (no overflow on huge numbers or long inputs);
//! an accepted duration is not zero.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(d) = tessera_wire::duration::parse(text) {
        assert!(!d.is_zero(), "{text:?} parsed as zero");
    }
});
