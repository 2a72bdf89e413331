//! Every parser that reads bytes a client (or an operator's environment)
//! controls: proxy headers, cookies, JSON bodies, JWT parts, durations,
//! email addresses.
//!
//! They live in their own crate, free of I/O and of the server's heavy
//! dependencies, so that `fuzz/` can build them with coverage
//! instrumentation in about a minute and run them millions of times. Each
//! function is total: any input gives an answer or a refusal, never a panic.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod cookie;
pub mod duration;
pub mod email;
pub mod forwarded;
pub mod json;
pub mod jwt;
