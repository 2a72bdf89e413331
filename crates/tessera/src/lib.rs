//! Tessera: an authentication server doing sessions, JWTs and cookies right.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library, so the
//! integration tests build the very same application in-process.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod bulk;
pub mod cli;
pub mod config;
pub mod core;
pub mod doctor;
pub mod fd_limit;
pub mod http;
pub mod inspect;
pub mod listener;
pub mod mail;
pub mod store;
