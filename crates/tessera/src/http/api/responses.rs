//! The error responses many operations share, written once for their
//! `#[utoipa::path]` attributes: list a set in `responses(...)` next to the
//! operation's own lines (`responses((status = 200, …), Unauthenticated,
//! FailClosed)`). Each set is one status with the contract's `Error` body
//! (two for [`JsonBodyErrors`] and [`FormBodyErrors`]). An operation whose
//! answer for a status says more than the shared line keeps its own line
//! instead.
//!
//! Errors any route can give because of the router's layers (an oversized
//! header, a declared body over 64 KiB, a bug) are added to every operation
//! by `openapi::RouterWideResponses`, not here.

use utoipa::IntoResponses;

use crate::http::openapi::Error;

/// 400: the body is not valid JSON.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "`invalid_request`: the body is not valid JSON"
)]
pub struct BadJson(pub Error);

/// 400: the path's id cannot be decoded.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "`invalid_request`: the id is not valid UTF-8 once percent-decoded"
)]
pub struct BadId(pub Error);

/// 400: a `PATCH`/`POST` on `…/{id}` with a JSON body.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "`invalid_request`: the body is not valid JSON, or the id is not valid UTF-8 once percent-decoded"
)]
pub struct BadJsonOrId(pub Error);

/// 401 of an operation taking a session cookie, an access token (Bearer)
/// or the jwt-cookie access cookie.
#[derive(IntoResponses)]
#[response(
    status = 401,
    description = "`unauthenticated`: no valid session cookie or access token (a refused Bearer token gets the RFC 6750 challenge)",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tessera\", error=\"invalid_token\"` when the request presented a Bearer token"))
)]
pub struct Unauthenticated(pub Error);

/// 401 of an operation taking only the session cookie.
#[derive(IntoResponses)]
#[response(
    status = 401,
    description = "`unauthenticated`: no session cookie, or it is unknown, expired or revoked"
)]
pub struct NoSession(pub Error);

/// 403 of an admin operation with a safe method (no CSRF check).
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "`forbidden`: the caller lacks the `admin` role"
)]
pub struct NotAdmin(pub Error);

/// 403 of an admin operation with an unsafe method.
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "`forbidden`: the caller lacks the `admin` role; `csrf_failed`: a cookie-authenticated request without the right `X-CSRF-Token`, or with a foreign `Origin`"
)]
pub struct NotAdminOrCsrfFailed(pub Error);

/// 403 of an unsafe operation any signed-in caller may make.
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "`csrf_failed`: a cookie-authenticated request without the right `X-CSRF-Token`, or with a foreign `Origin`"
)]
pub struct CsrfFailed(pub Error);

/// 404 of the admin operations on `/v1/admin/users/{id}`.
#[derive(IntoResponses)]
#[response(status = 404, description = "`not_found`: no such user")]
pub struct NoSuchUser(pub Error);

/// 404 of the admin operations on `/v1/admin/clients/{client_id}`.
#[derive(IntoResponses)]
#[response(status = 404, description = "`not_found`: no such client")]
pub struct NoSuchClient(pub Error);

/// 409 of the operations creating an account.
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "`conflict`: an account with this email already exists"
)]
pub struct EmailTaken(pub Error);

const PAYLOAD_TOO_LARGE: &str = "`payload_too_large`: the body is larger than 64 KiB";

/// 413 of an operation reading a body.
#[derive(IntoResponses)]
#[response(status = 413, description = PAYLOAD_TOO_LARGE)]
pub struct BodyTooLarge(pub Error);

/// 413 and 415 of an operation reading a JSON body.
#[derive(IntoResponses)]
pub enum JsonBodyErrors {
    #[response(status = 413, description = PAYLOAD_TOO_LARGE)]
    TooLarge(Error),
    #[response(
        status = 415,
        description = "`unsupported_media_type`: the body is not `application/json`"
    )]
    NotJson(Error),
}

/// 413 and 415 of an operation reading a JSON or form body (the OAuth
/// endpoints and login).
#[derive(IntoResponses)]
pub enum FormBodyErrors {
    #[response(status = 413, description = PAYLOAD_TOO_LARGE)]
    TooLarge(Error),
    #[response(
        status = 415,
        description = "`unsupported_media_type`: the body is neither `application/json` nor `application/x-www-form-urlencoded`"
    )]
    NotJsonOrForm(Error),
}

/// 429 of a credential endpoint (the per-address budget).
#[derive(IntoResponses)]
#[response(
    status = 429,
    description = "`rate_limited`: this address has spent its budget on the credential endpoints",
    headers(("Retry-After" = u64, description = "Always sent: seconds to wait"))
)]
pub struct RateLimited(pub Error);

/// 429 of an operation that mails a link (the per-address budget and the
/// per-recipient one).
#[derive(IntoResponses)]
#[response(
    status = 429,
    description = "`rate_limited`: this address has spent its budget on the credential endpoints, or this email was sent enough mail for now (whether or not it has an account)",
    headers(("Retry-After" = u64, description = "Always sent: seconds to wait"))
)]
pub struct MailRateLimited(pub Error);

/// 429 of the operations checking a password against an account (login and
/// the password grant).
#[derive(IntoResponses)]
#[response(
    status = 429,
    description = "`rate_limited`: too many attempts from this address, or too many failed logins for this account",
    headers(("Retry-After" = u64, description = "Always sent: seconds to wait"))
)]
pub struct LoginRateLimited(pub Error);

/// 503 of an operation that authenticates its caller or needs a store.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "`unavailable`: a store is down (requests fail closed)"
)]
pub struct FailClosed(pub Error);

/// 503 when a store is down, in the words of the operations that do not
/// mention failing closed.
#[derive(IntoResponses)]
#[response(status = 503, description = "`unavailable`: a store is down")]
pub struct StoreDown(pub Error);

/// 503 of an operation that hashes a password.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "`unavailable`: password hashing is saturated (with `Retry-After`) or a store is down",
    headers(("Retry-After" = u64, description = "Seconds to wait, when hashing is saturated"))
)]
pub struct HashingSaturated(pub Error);
