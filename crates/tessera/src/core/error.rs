//! The core's one error type: what went wrong, in the contract's terms, with no
//! HTTP in it. The HTTP layer maps each variant to a status and code in one place.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Wrong email or password; deliberately does not say which.
    #[error("the email or password is incorrect")]
    InvalidCredentials,
    /// No valid session or token was presented.
    #[error("authentication is required")]
    Unauthenticated,
    #[error("this account is suspended")]
    AccountSuspended,
    #[error("{0}")]
    Forbidden(&'static str),
    /// Self-registration refused by `registration`, the domain list or an
    /// invitation that does not fit; says which.
    #[error("{0}")]
    RegistrationClosed(String),
    /// `email_verification = required` and this account's email is not
    /// verified (said only after its password matched).
    #[error(
        "this account's email address is not verified: open the link we mailed, or ask for a new one"
    )]
    EmailNotVerified,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    /// The change would leave no active user with the `admin` role: no one
    /// can remove it from, suspend or delete the last active admin.
    #[error("this is the last active admin: give another active user the admin role first")]
    LastAdmin,
    /// Input that is well-formed but not acceptable (bad email, short password).
    #[error("{0}")]
    Validation(String),
    /// The password hashing pool's queue is full: shed load instead of queueing
    /// without bound.
    #[error("the server is busy, try again shortly")]
    Busy,
    /// RFC 6749 `invalid_grant`: bad credentials or a dead refresh token at
    /// the token endpoint.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// RFC 6749 `invalid_scope`.
    #[error("the requested scope is not allowed")]
    InvalidScope,
    /// Service client authentication failed.
    #[error("client authentication failed")]
    InvalidClient,
    /// Too many attempts: try again after this many seconds.
    /// A link token (password reset, …) that is used, expired, unknown or
    /// made for something else: all the same to the caller.
    #[error("this link is invalid, used or expired; ask for a new one")]
    InvalidToken,
    #[error("too many attempts; try again later")]
    RateLimited(u64),
    /// A store failed; the request fails closed.
    #[error("a backing store is unavailable")]
    Unavailable,
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => CoreError::Conflict("the resource already exists"),
            StoreError::Backend(detail) => {
                super::telemetry::STORE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %detail, "store operation failed");
                CoreError::Unavailable
            }
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
