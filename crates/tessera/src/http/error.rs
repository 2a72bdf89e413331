//! The one error type of the HTTP layer and its single mapping to the
//! contract's `{"error", "error_description"}` bodies.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::core::error::CoreError;

/// `WWW-Authenticate` for 401s answering a Bearer token (RFC 6750).
pub const BEARER_CHALLENGE: &str = r#"Bearer realm="tessera", error="invalid_token""#;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: Cow<'static, str>,
    /// Adds the RFC 6750 challenge (the request presented a Bearer token).
    pub bearer_challenge: bool,
    /// Adds `WWW-Authenticate: Basic` (a service client failed to
    /// authenticate, RFC 6749 §5.2).
    pub basic_challenge: bool,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            bearer_challenge: false,
            basic_challenge: false,
            retry_after_secs: None,
        }
    }

    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn validation(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            description,
        )
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid session or token is required",
        )
    }

    pub fn csrf_failed(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "csrf_failed", description)
    }

    pub fn forbidden(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", description)
    }

    pub fn not_found(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", description)
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than 64 KiB",
        )
    }

    pub fn unsupported_media_type(description: &'static str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            description,
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side",
        )
    }

    pub fn with_bearer_challenge(mut self) -> Self {
        self.bearer_challenge = true;
        self
    }

    /// The contract's error for a bare status code (404, 405, 413, …) produced
    /// by routing or by a layer rather than by a handler.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found("no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                status,
                "invalid_request",
                "this method is not allowed on this resource",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::unsupported_media_type("the request body has an unsupported content type")
            }
            StatusCode::UNAUTHORIZED => Self::unauthenticated(),
            StatusCode::TOO_MANY_REQUESTS => {
                Self::new(status, "rate_limited", "too many requests; try again later")
            }
            StatusCode::FORBIDDEN => Self::forbidden("not allowed"),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                Self::new(status, "invalid_request", "request headers are too large")
            }
            StatusCode::SERVICE_UNAVAILABLE => Self::new(
                status,
                "unavailable",
                "the service is temporarily unavailable",
            ),
            s if s.is_client_error() => {
                Self::new(s, "invalid_request", "the request cannot be processed")
            }
            _ => Self::internal(),
        }
    }
}

/// The one mapping from a core error to the contract's status and code.
/// The API's error bodies, the pages' statuses and the codes their error
/// page shows all come from here; only the token endpoints speak RFC 6749
/// on top of it (`api::tokens::token_error`), and a page answers
/// `Unauthenticated` by sending the browser to sign in.
pub fn status_and_code(e: &CoreError) -> (StatusCode, &'static str) {
    match e {
        CoreError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
        CoreError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        CoreError::AccountSuspended => (StatusCode::FORBIDDEN, "account_suspended"),
        CoreError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        CoreError::RegistrationClosed(_) => (StatusCode::FORBIDDEN, "registration_closed"),
        CoreError::EmailNotVerified => (StatusCode::FORBIDDEN, "email_not_verified"),
        CoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        CoreError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        CoreError::LastAdmin => (StatusCode::CONFLICT, "last_admin"),
        CoreError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        CoreError::Busy | CoreError::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        CoreError::InvalidGrant(_) => (StatusCode::BAD_REQUEST, "invalid_grant"),
        CoreError::InvalidScope => (StatusCode::BAD_REQUEST, "invalid_scope"),
        CoreError::InvalidToken => (StatusCode::BAD_REQUEST, "invalid_token"),
        CoreError::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client"),
        CoreError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
    }
}

/// The `Retry-After` seconds a core error asks for (API and pages).
pub fn retry_after(e: &CoreError) -> Option<u64> {
    match e {
        CoreError::Busy => Some(1),
        CoreError::RateLimited(secs) => Some(*secs),
        _ => None,
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        if matches!(e, CoreError::Unauthenticated) {
            return Self::unauthenticated();
        }
        let (status, code) = status_and_code(&e);
        let mut error = Self::new(status, code, e.to_string());
        error.retry_after_secs = retry_after(&e);
        // RFC 6749 §5.2: a client that failed to authenticate is told how.
        error.basic_challenge = matches!(e, CoreError::InvalidClient);
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            error_description: &self.description,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.bearer_challenge && self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(BEARER_CHALLENGE),
            );
        }
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="tessera""#),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
