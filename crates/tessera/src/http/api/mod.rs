//! Handlers, one module per group of contract rows.

pub mod account;
pub mod accounts;
pub mod admin;
pub mod admin_clients;
pub mod admin_invitations;
pub mod admin_users;
pub mod email_verification;
pub mod health;
pub mod identity;
pub mod password_reset;
pub mod responses;
pub mod revocations;
pub mod sessions;
pub mod tokens;
pub mod views;
pub mod wellknown;

use super::error::ApiError;

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}
