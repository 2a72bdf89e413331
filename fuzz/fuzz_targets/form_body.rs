//! `application/x-www-form-urlencoded` bodies, read as the token endpoint
//! reads them (serde_urlencoded into its request's shape).
//!
//! Invariants: never panics; an accepted form written back with
//! serde_urlencoded reads back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

/// The shape of `POST /v1/token`'s body
/// (crates/tessera/src/http/api/tokens.rs, `TokenRequest`).
#[derive(Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
struct TokenRequest {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    username: Option<String>,
    password: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_urlencoded::from_bytes::<TokenRequest>(data) else {
        return;
    };
    let written = serde_urlencoded::to_string(&request).expect("strings always serialise");
    let again: TokenRequest =
        serde_urlencoded::from_str(&written).expect("a written form reads back");
    assert_eq!(again, request, "round trip through {written:?}");
});
