//! JSON request bodies (`tessera_wire::json::parse_object`).
//!
//! Invariants, with serde_json's own `Value` parse as the reference:
//! - accepted ⇒ it is an object, and serde_json parses the same value;
//! - refused as a duplicate ⇒ serde_json alone would have accepted it (last
//!   key wins), so syntax errors are never reported as duplicates;
//! - refused as syntax ⇔ serde_json refuses it too;
//! - refused as not an object ⇒ serde_json parses a non-object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tessera_wire::json::{BodyError, parse_object};

fuzz_target!(|data: &[u8]| {
    let ours = parse_object(data);
    let reference = serde_json::from_slice::<Value>(data);
    match (&ours, &reference) {
        (Ok(v), Ok(r)) => {
            assert!(v.is_object());
            assert_eq!(v, r);
        }
        (Err(BodyError::DuplicateKey(_)), Ok(r)) => assert!(r.is_object() || r.is_array()),
        (Err(BodyError::NotAnObject), Ok(r)) => assert!(!r.is_object()),
        (Err(BodyError::Syntax), Err(_)) => {}
        _ => panic!("parse_object: {ours:?}, serde_json: {reference:?}"),
    }
});
