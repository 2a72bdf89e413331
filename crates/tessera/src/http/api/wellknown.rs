//! `GET /.well-known/jwks.json` and the RFC 8414 metadata document.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::AppState;
use crate::http::openapi as doc;

/// Resource servers may cache the key set briefly; they should refetch when
/// they meet an unknown `kid` (a rotation happened).
const JWKS_MAX_AGE: &str = "public, max-age=300";

/// The public keys of the active and still-accepted signing keys (empty with
/// HS256).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "discovery",
    responses(
        (status = 200, description = "The JSON Web Key Set", body = doc::Jwks,
            headers(("Cache-Control" = String, description = "Always sent: `public, max-age=300` (refetch on an unknown `kid`)"))),
    ),
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.core.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(JWKS_MAX_AGE),
    );
    response
}

/// RFC 8414 authorization server metadata.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "discovery",
    responses(
        (status = 200, description = "The metadata document", body = doc::AuthorizationServerMetadata,
            headers(("Cache-Control" = String, description = "Always sent: `public, max-age=300` (refetch on an unknown `kid`)"))),
    ),
)]
pub async fn metadata(State(state): State<AppState>) -> Response {
    let base = &state.settings.public_url.url;
    let mut response = axum::Json(json!({
        "issuer": state.settings.issuer(),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/v1/token"),
        "revocation_endpoint": format!("{base}/v1/token/revoke"),
        "introspection_endpoint": format!("{base}/v1/token/introspect"),
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "scopes_supported": state.settings.allowed_scopes,
    }))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(JWKS_MAX_AGE),
    );
    response
}
