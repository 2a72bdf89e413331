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

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let description = e.to_string();
        match e {
            CoreError::InvalidCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_credentials", description)
            }
            CoreError::Unauthenticated => Self::unauthenticated(),
            CoreError::AccountSuspended => {
                Self::new(StatusCode::FORBIDDEN, "account_suspended", description)
            }
            CoreError::Forbidden(_) => Self::forbidden(description),
            CoreError::RegistrationClosed(_) => {
                Self::new(StatusCode::FORBIDDEN, "registration_closed", description)
            }
            CoreError::EmailNotVerified => {
                Self::new(StatusCode::FORBIDDEN, "email_not_verified", description)
            }
            CoreError::NotFound(_) => Self::not_found(description),
            CoreError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", description),
            CoreError::LastAdmin => Self::new(StatusCode::CONFLICT, "last_admin", description),
            CoreError::Validation(_) => Self::validation(description),
            CoreError::Busy => {
                let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", description);
                e.retry_after_secs = Some(1);
                e
            }
            CoreError::InvalidGrant(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
            }
            CoreError::InvalidScope => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
            }
            CoreError::InvalidToken => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_token", description)
            }
            CoreError::InvalidClient => {
                let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description);
                e.basic_challenge = true;
                e
            }
            CoreError::RateLimited(secs) => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", description);
                e.retry_after_secs = Some(secs);
                e
            }
            CoreError::Unavailable => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", description)
            }
        }
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
