//! The HTTP layer: parsing, limits, CSRF, error mapping. Handlers are thin and
//! call the core; nothing here knows about SQL.

pub mod api;
pub mod caller;
pub mod cookies;
pub mod cors;
pub mod csrf;
pub mod endpoint;
pub mod error;
pub mod extract;
pub mod jwt_cookie;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post};

use crate::config::Settings;
use crate::core::Tessera;
pub use endpoint::Endpoint;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Tessera>,
    pub settings: Arc<Settings>,
}

/// `/metrics` on the main listener, unless `TESSERA_METRICS_ADDR` gives it
/// its own.
fn metrics_on_main_listener(state: &AppState) -> Router<AppState> {
    match state.settings.metrics_addr {
        None => Router::new().route("/metrics", get(metrics::metrics)),
        Some(_) => Router::new(),
    }
}

/// The router of the separate metrics listener.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}

/// The routes pages on the origins in `TESSERA_CORS_ORIGINS` may call
/// from a browser (the JWKS, the metadata document, `/v1/token`, `/v1/me`),
/// with the CORS layer (`cors`) when that list is set; no other route ever
/// answers with CORS headers.
fn cross_origin_routes(state: &AppState) -> Router<AppState> {
    let routes = Router::new()
        .route("/.well-known/jwks.json", get(api::wellknown::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(api::wellknown::metadata),
        )
        .route("/v1/token", post(api::tokens::token))
        .route("/v1/me", get(api::identity::me));
    if state.settings.cors_origins.is_empty() {
        routes
    } else {
        routes.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::cors,
        ))
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(api::health::healthz))
        .route("/readyz", get(api::health::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/accounts", post(api::accounts::register))
        .route(
            "/v1/sessions",
            post(api::sessions::login).get(api::sessions::list),
        )
        .route(
            "/v1/session",
            get(api::sessions::current).delete(api::sessions::logout),
        )
        .route("/v1/sessions/{id}", delete(api::sessions::revoke))
        .route("/v1/logout-all", post(api::sessions::logout_all))
        .route("/v1/session/token", post(api::tokens::session_token))
        .route("/v1/account/password", post(api::account::change_password))
        .route("/v1/password-reset", post(api::password_reset::request))
        .route(
            "/v1/password-reset/confirm",
            post(api::password_reset::confirm),
        )
        .route(
            "/v1/email-verification",
            post(api::email_verification::request),
        )
        .route(
            "/v1/email-verification/confirm",
            post(api::email_verification::confirm),
        )
        .route("/v1/token/revoke", post(api::tokens::revoke))
        .route("/v1/token/introspect", post(api::tokens::introspect))
        .route("/v1/revocations", get(api::revocations::feed))
        .route(
            "/v1/admin/users",
            get(api::admin::users).post(api::admin_users::create_user),
        )
        .route(
            "/v1/admin/users/{id}",
            patch(api::admin::update_user).delete(api::admin_users::delete_user),
        )
        .route("/v1/admin/users/{id}/revoke", post(api::admin::revoke_user))
        .route(
            "/v1/admin/invitations",
            post(api::admin_invitations::create_invitation),
        )
        .route(
            "/v1/admin/users/{id}/password",
            post(api::admin_users::set_password),
        )
        .route("/v1/admin/audit", get(api::admin::audit))
        .route("/v1/admin/keys", get(api::admin::keys))
        .route("/v1/admin/keys/rotate", post(api::admin::rotate_keys))
        .route("/v1/admin/clients", get(api::admin_clients::clients))
        .route(
            "/v1/admin/clients/{client_id}",
            patch(api::admin_clients::update_client).delete(api::admin_clients::delete_client),
        )
        .route(
            "/v1/admin/clients/{client_id}/secret",
            post(api::admin_clients::rotate_client_secret),
        )
        .route("/v1/verify", get(api::identity::verify))
        .merge(cross_origin_routes(&state))
        .merge(pages::router(&state))
        .merge(metrics_on_main_listener(&state))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        // Inside `edge`, so a panic's 500 is counted and gets the API's
        // response headers like any other error.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            middleware::panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::edge,
        ))
        .with_state(state)
}
