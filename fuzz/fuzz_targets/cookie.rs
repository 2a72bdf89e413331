//! The `Cookie` request header. Input: the first line is the cookie name
//! looked up, every further line one `Cookie` header.
//!
//! Invariants: `cookie::find` never panics; a value it returns is a slice of
//! one of the headers, holds no `;`, and does not start or end with `"`; a
//! name holding `=` or `;` is never found; when found, that header holds a
//! pair whose trimmed text starts with `name=`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_wire::cookie;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let name = lines.next().unwrap_or_default();
    let headers: Vec<&str> = lines.collect();
    let Some(value) = cookie::find(headers.iter().copied(), name) else {
        return;
    };
    assert!(!name.contains(['=', ';']), "found a name no pair can have");
    assert!(!value.contains(';'));
    assert!(!value.starts_with('"') && !value.ends_with('"'));
    let start = value.as_ptr() as usize;
    let header = headers
        .iter()
        .find(|h| {
            let from = h.as_ptr() as usize;
            from <= start && start + value.len() <= from + h.len()
        })
        .expect("the value is a slice of a header");
    assert!(
        header
            .split(';')
            .any(|pair| pair.trim().starts_with(&format!("{name}="))),
        "no {name}= pair in {header:?}"
    );
});
