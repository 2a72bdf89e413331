//! `GET /.well-known/jwks.json` and the RFC 8414 metadata document.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::AppState;

/// Resource servers may cache the key set briefly; they should refetch when
/// they meet an unknown `kid` (a rotation happened).
const JWKS_MAX_AGE: &str = "public, max-age=300";

/// A public key in JWKS form (RFC 7517): `OKP`/`Ed25519` with `x`, `EC`/`P-256`
/// with `x` and `y`, or `RSA` with `n` and `e`.
// Only the document uses this type and `Jwks`: the key ring (`core::keys`)
// keeps each key's public JWK as the stored JSON and builds the set from it,
// and `jwks` below serves that as it is.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwk {
    #[schema(example = "OKP")]
    pub kty: String,
    #[schema(example = "Ed25519")]
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    #[schema(example = "key_4mR0fD2pXc8")]
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub key_use: String,
}

/// `GET /.well-known/jwks.json`: the active and still-accepted public keys
/// (empty with HS256).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// RFC 8414 authorization server metadata.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthorizationServerMetadata<'a> {
    #[schema(format = "uri")]
    pub issuer: &'a str,
    #[schema(format = "uri")]
    pub jwks_uri: String,
    #[schema(format = "uri")]
    pub token_endpoint: String,
    #[schema(format = "uri")]
    pub revocation_endpoint: String,
    #[schema(format = "uri")]
    pub introspection_endpoint: String,
    #[schema(example = json!(["password", "refresh_token"]))]
    pub grant_types_supported: &'static [&'static str],
    /// Empty: there is no authorization endpoint.
    pub response_types_supported: &'static [&'static str],
    #[schema(example = json!(["none"]))]
    pub token_endpoint_auth_methods_supported: &'static [&'static str],
    #[schema(example = json!(["none"]))]
    pub revocation_endpoint_auth_methods_supported: &'static [&'static str],
    #[schema(example = json!(["client_secret_basic"]))]
    pub introspection_endpoint_auth_methods_supported: &'static [&'static str],
    /// `TESSERA_ALLOWED_SCOPES`.
    pub scopes_supported: &'a [String],
}

/// The public keys of the active and still-accepted signing keys (empty with
/// HS256).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "discovery",
    responses(
        (status = 200, description = "The JSON Web Key Set", body = Jwks,
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
        (status = 200, description = "The metadata document", body = AuthorizationServerMetadata,
            headers(("Cache-Control" = String, description = "Always sent: `public, max-age=300` (refetch on an unknown `kid`)"))),
    ),
)]
pub async fn metadata(State(state): State<AppState>) -> Response {
    let base = &state.settings.public_url.url;
    let mut response = axum::Json(AuthorizationServerMetadata {
        issuer: state.settings.issuer(),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        token_endpoint: format!("{base}/v1/token"),
        revocation_endpoint: format!("{base}/v1/token/revoke"),
        introspection_endpoint: format!("{base}/v1/token/introspect"),
        grant_types_supported: &["password", "refresh_token"],
        response_types_supported: &[],
        token_endpoint_auth_methods_supported: &["none"],
        revocation_endpoint_auth_methods_supported: &["none"],
        introspection_endpoint_auth_methods_supported: &["client_secret_basic"],
        scopes_supported: &state.settings.allowed_scopes,
    })
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(JWKS_MAX_AGE),
    );
    response
}
