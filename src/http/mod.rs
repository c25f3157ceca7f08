//! The only axum code: routes, and the handlers that call into the service.

mod graphql;
mod health;
mod playground;
mod webhook;
pub mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::error::ApiError;

/// Largest webhook body accepted (SPEC §3 step 1).
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(webhook::router())
        .merge(health::router())
        .merge(graphql::router())
        .merge(playground::router())
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}
