//! Server-rendered HTML pages (`/login`, `/register`, `/account`, `/admin`).

use axum::Router;

use super::AppState;

/// The pages' routes, merged into the main router.
pub fn router() -> Router<AppState> {
    Router::new()
}
