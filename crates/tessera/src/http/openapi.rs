//! `GET /openapi.json`: the OpenAPI 3.1 document of the JSON API, generated
//! from the code. Each handler in `api/` carries a `#[utoipa::path]`
//! annotation (method, path, parameters, bodies, every status it can return,
//! the auth it takes); the types it returns derive `utoipa::ToSchema`. This
//! module gathers them into one document and adds what no single handler
//! owns: the security schemes and the responses every route can give because
//! of the router's layers. The bodies are the handlers' own typed structs;
//! the error responses many operations share are `api::responses`.
//!
//! The HTML pages (`/login`, `/account`, …) are not part of the JSON API and
//! are not described here.
//!
//! `tests/openapi.rs` keeps this honest: it validates the document with
//! `openapi-spec-validator`, checks it against the router's routes, and runs
//! schemathesis against a live server with it.

use std::sync::LazyLock;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response as ResponseObject, ResponseBuilder};
use utoipa::openapi::schema::{Array, ArrayBuilder, Ref, Schema, SchemaType};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes,
    SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Object, ObjectBuilder, RefOr, Server, Type};
use utoipa::{Modify, OpenApi, ToSchema};

use super::AppState;
use super::api;
use crate::config::BrowserMode;

/// The contract's error body, the same for every error of every endpoint.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "error": "invalid_request",
    "error_description": "the body is not valid JSON"
}))]
pub struct Error {
    /// A machine-readable code: `invalid_request`, `invalid_credentials`,
    /// `unauthenticated`, `forbidden`, `csrf_failed`, `account_suspended`,
    /// `registration_closed`, `email_not_verified`, `invalid_token`,
    /// `not_found`, `conflict`, `last_admin`, `payload_too_large`,
    /// `unsupported_media_type`, `validation_failed`, `rate_limited`,
    /// `internal`, `unavailable`; at the token endpoints also the RFC 6749
    /// codes `invalid_grant`, `unsupported_grant_type`, `invalid_client`,
    /// `invalid_scope`.
    pub error: String,
    /// One human-readable sentence; never internals.
    pub error_description: String,
}

/// One of two shapes: for an answer whose shape depends on the
/// configuration (e.g. the browser mode).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum OneOf<A, B> {
    A(A),
    B(B),
}

/// `UserPatch.roles`: the role rules of `core::accounts::validate_roles`.
pub fn roles_schema() -> Array {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[a-z0-9_:.-]{1,64}$")),
        )
        .max_items(Some(32))
        .description(Some(
            "The new roles (replacing the old): up to 32, each 1 to 64 of `a-z 0-9 _ - : .`",
        ))
        .build()
}

/// Unicode `White_Space`: what `str::trim` strips around an email and what
/// may not appear inside one.
const WHITE_SPACE: &str =
    r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Control characters (`char::is_control`).
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
/// The invisible characters `tessera_wire::email` refuses, as far as a
/// pattern without the `u` flag can name them: Unicode's
/// `Default_Ignorable_Code_Point` below U+FFFF, U+2800 and U+FFF9..U+FFFB.
/// Those above (U+1BCA0..U+1BCA3, U+1D173..U+1D17A, U+E0000..U+E0FFF) are
/// refused too and named in the description.
const INVISIBLE: &str = r"\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb";
/// Characters RFC 5322 only allows quoted, and `@`.
const SPECIAL: &str = r#"<>()\[\]\\,;:"`@"#;

/// `RegisterBody.email`: the rules of `core::accounts::parse_email` as an
/// ECMA-262 pattern. JSON Schema cannot count bytes, so the byte limits
/// (local part 64, labels 63, whole address 254) are only in the text; the
/// pattern admits everything Tessera accepts.
pub fn email_schema() -> Object {
    let forbidden = format!("{WHITE_SPACE}{CONTROL}{INVISIBLE}{SPECIAL}");
    let atom = format!("[^{forbidden}.]+");
    let label = format!("[^{forbidden}.-](?:[^{forbidden}.]{{0,61}}[^{forbidden}.-])?");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!(
            "^[{WHITE_SPACE}]*{atom}(?:\\.{atom})*@{label}(?:\\.{label})+[{WHITE_SPACE}]*$"
        )))
        .description(Some(
            "Unique case-insensitively and whatever its Unicode spelling: addresses are compared \
             by their NFKC form with full Unicode case folding, so NFC and NFD spellings, \
             `straße` and `STRASSE`, fullwidth `ａ` and `a`, the ligature `ﬁ` and `fi` are one \
             address (the account shows it as typed, in NFC). Surrounding whitespace is trimmed; \
             then one `@`, a local part of at most 64 bytes without leading, trailing or doubled \
             dots, a host name of at least two dot-separated labels (each 1 to 63 bytes, not \
             starting or ending with `-`), at most 254 bytes in all, and no whitespace, control \
             characters, any of ``<>()[]\\,;:\"` ``, or invisible characters: Unicode's \
             default-ignorable code points (zero-width spaces and joiners, bidi controls, the soft \
             hyphen, variation selectors, tags U+E0000..U+E0FFF, fillers) and U+2800. A character \
             whose compatibility form is one of these counts as it (a fullwidth `＠` is an `@`). \
             Unicode letters are fine (RFC 6531).",
        ))
        .examples(["alice@example.com"])
        .build()
}

/// An email that may be left out or `null` (the same rules otherwise).
pub fn optional_email_schema() -> Object {
    let mut schema = email_schema();
    schema.schema_type = SchemaType::from_iter([Type::String, Type::Null]);
    schema
}

/// `UserPatch.email_verified`: only `true` (or `null`, no change) is
/// accepted; an email starts unverified only when it changes.
pub fn vouch_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Boolean, Type::Null]))
        .enum_values(Some([
            serde_json::Value::Bool(true),
            serde_json::Value::Null,
        ]))
        .description(Some(
            "`true`: the administrator vouches for the address (audited `email_verified`, \
             `via: admin`). `false` is refused: a changed email starts unverified by itself.",
        ))
        .build()
}

/// `AuthInfo.method` of `GET /v1/me`.
pub fn auth_method_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["session", "jwt"]))
        .build()
}

/// The cookies' names (with `TESSERA_COOKIE_SECURE=false`, without `__Host-`).
const SESSION_COOKIE: &str = "__Host-tessera_session";
const ACCESS_COOKIE: &str = "__Host-tessera_access";
const REFRESH_COOKIE: &str = "__Host-tessera_refresh";

/// A response header whose description starts with this is sent with every
/// response of that status; the document marks it `required`.
const ALWAYS: &str = "Always sent";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "Tessera's JSON API: browser sessions, JWT access tokens with rotating refresh tokens, \
            token revocation and introspection, forward auth, administration. Every error is \
            `{\"error\", \"error_description\"}` (schema `Error`). Browser requests authenticated by the \
            session cookie must send `X-CSRF-Token` on unsafe methods. With `TESSERA_COOKIE_SECURE=false` \
            the cookies lose their `__Host-` prefix.",
    ),
    paths(
        api::health::healthz,
        api::health::readyz,
        metrics_endpoint,
        openapi_json,
        api::accounts::register,
        api::sessions::login,
        api::sessions::list,
        api::sessions::current,
        api::sessions::logout,
        api::sessions::revoke,
        api::sessions::logout_all,
        api::tokens::session_token,
        api::account::change_password,
        api::password_reset::request,
        api::password_reset::confirm,
        api::email_verification::request,
        api::email_verification::confirm,
        api::tokens::token,
        api::tokens::revoke,
        api::tokens::introspect,
        api::revocations::feed,
        api::wellknown::jwks,
        api::wellknown::metadata,
        api::admin::users,
        api::admin_users::create_user,
        api::admin::update_user,
        api::admin_users::delete_user,
        api::admin::revoke_user,
        api::admin_users::set_password,
        api::admin_invitations::create_invitation,
        api::admin::audit,
        api::admin::keys,
        api::admin::rotate_keys,
        api::admin_clients::clients,
        api::admin_clients::update_client,
        api::admin_clients::delete_client,
        api::admin_clients::rotate_client_secret,
        api::identity::me,
        api::identity::verify,
    ),
    components(schemas(Error)),
    modifiers(&SecuritySchemes, &RouterWideResponses, &RequiredHeaders),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "accounts", description = "Registration and the caller's identity and password"),
        (name = "sessions", description = "Browser sessions (an opaque id in an HttpOnly cookie)"),
        (name = "tokens", description = "OAuth 2.0 token, revocation and introspection endpoints"),
        (name = "discovery", description = "JWKS and RFC 8414 metadata"),
        (name = "admin", description = "Administration (role `admin`)"),
    ),
)]
pub struct ApiDoc;

/// The security schemes the operations name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "sessionCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The browser session cookie set by `POST /v1/sessions` (an opaque id; HttpOnly, \
                 Secure, SameSite). Unsafe methods also need `X-CSRF-Token`.",
            ))),
        );
        components.add_security_scheme(
            "accessCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                ACCESS_COOKIE,
                "jwt-cookie browser mode: the access token in an HttpOnly cookie. Unsafe methods \
                 also need `X-CSRF-Token` (the refresh family's).",
            ))),
        );
        components.add_security_scheme(
            "refreshCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                REFRESH_COOKIE,
                "jwt-cookie browser mode: the refresh token in an HttpOnly cookie.",
            ))),
        );
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /v1/token` or `POST /v1/session/token` \
                         (RFC 9068 JWT). Not subject to CSRF checks.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basicAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "A service client's `client_id` and `client_secret` \
                         (`tessera client create`).",
                    ))
                    .build(),
            ),
        );
    }
}

/// Responses any route can give because of the router's layers rather than
/// its handler (see `middleware::edge` and the panic layer in
/// `http::router`): an oversized `Cookie` (400) or
/// `Authorization` (401) header, a declared body over 64 KiB (413), and the
/// `internal` error of a bug. Operations that already list one of these
/// statuses keep their own description.
struct RouterWideResponses;

fn error_response(description: &str) -> ResponseObject {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Error::name())))
                .build(),
        )
        .build()
}

fn header(description: &str) -> Header {
    let mut header = Header::new(Object::with_type(Type::String));
    header.description = Some(description.to_owned());
    header
}

impl Modify for RouterWideResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        const COOKIE_TOO_LARGE: &str = "`invalid_request`: the Cookie header is larger than 8 KiB";
        const AUTHORIZATION_TOO_LARGE: &str =
            "`unauthenticated`: the Authorization header is larger than 8 KiB";
        const BEARER: &str = r#"`Bearer realm="tessera", error="invalid_token"`"#;
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let responses = &mut operation.responses.responses;
                add_or_mention(responses, "400", COOKIE_TOO_LARGE);
                add_or_mention(responses, "401", AUTHORIZATION_TOO_LARGE);
                if let Some(RefOr::T(r)) = responses.get_mut("401") {
                    r.headers
                        .entry("WWW-Authenticate".into())
                        .or_insert_with(|| {
                            header(&format!("{BEARER} (an oversized Authorization header)")).into()
                        });
                }
                responses.entry("413".into()).or_insert_with(|| {
                    error_response("`payload_too_large`: the request body is larger than 64 KiB")
                        .into()
                });
                responses.entry("500".into()).or_insert_with(|| {
                    error_response("`internal`: a bug on the server's side (no details given)")
                        .into()
                });
            }
        }
    }
}

/// Adds the response for `status`, or mentions `description` in the one the
/// operation documents.
fn add_or_mention(
    responses: &mut std::collections::BTreeMap<String, RefOr<ResponseObject>>,
    status: &str,
    description: &str,
) {
    match responses.get_mut(status) {
        None => {
            responses.insert(status.into(), error_response(description).into());
        }
        Some(RefOr::T(r)) => {
            r.description = format!("{}; {description}", r.description);
        }
        Some(RefOr::Ref(_)) => {}
    }
}

/// Marks response headers documented as "Always sent…" `required`.
struct RequiredHeaders;

impl Modify for RequiredHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    for header in response.headers.values_mut() {
                        let RefOr::T(header) = header else {
                            continue;
                        };
                        if header
                            .description
                            .as_deref()
                            .is_some_and(|d| d.starts_with(ALWAYS))
                        {
                            // The OpenAPI Header Object has `required`; utoipa's
                            // type has no field for it, so it rides in the
                            // flattened extension map.
                            header
                                .extensions
                                .get_or_insert_with(Default::default)
                                .insert("required".into(), serde_json::Value::Bool(true));
                        }
                    }
                }
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The generated document, built once.
static BASE: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// The document as this server serves it: with its public URL as the server,
/// and without `/metrics` when that has a listener of its own.
pub fn document(state: &AppState) -> utoipa::openapi::OpenApi {
    let settings = &state.settings;
    let base = &settings.public_url.url;
    let mut doc = BASE.clone();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.servers = Some(vec![Server::new(base.clone())]);
    if settings.metrics_addr.is_some() {
        doc.paths.paths.remove("/metrics");
    }
    let components = doc.components.get_or_insert_with(Default::default);
    // How a client obtains the Bearer token: the password grant at this
    // server's token endpoint, with the scopes it allows.
    let token_url = format!("{base}/v1/token");
    let scopes: Scopes = settings
        .allowed_scopes
        .iter()
        .map(|s| (s.as_str(), s.as_str()))
        .collect();
    components.add_security_scheme(
        "oauth2",
        SecurityScheme::OAuth2(OAuth2::with_description(
            [Flow::Password(Password::with_refresh_url(
                token_url.clone(),
                scopes,
                token_url,
            ))],
            "The OAuth 2.0 password grant of `POST /v1/token`; its access token is \
             the `bearerAuth` JWT.",
        )),
    );
    // In jwt-cookie mode the refresh grant may leave the token (missing or
    // empty) to its cookie.
    if settings.browser_mode == BrowserMode::JwtCookie
        && let Some(RefOr::T(Schema::Object(grant))) = components
            .schemas
            .get_mut(api::tokens::RefreshTokenGrant::name().as_ref())
    {
        grant.required.retain(|field| field != "refresh_token");
        if let Some(RefOr::T(Schema::Object(token))) = grant.properties.get_mut("refresh_token") {
            token.min_length = None;
        }
    }
    doc
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API",
            content_type = "application/json", body = Object),
    ),
)]
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    axum::Json(document(&state)).into_response()
}

/// Prometheus metrics (text exposition format 0.0.4). Served on the main
/// listener unless `TESSERA_METRICS_ADDR` gives it its own. The handler is
/// `http::metrics::metrics`; this function only carries its description.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
    ),
)]
pub async fn metrics_endpoint() {}
