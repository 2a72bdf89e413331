//! Handlers, one module per group of contract rows.

pub mod accounts;
pub mod health;
pub mod identity;
pub mod sessions;
pub mod views;

use super::error::ApiError;

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}
