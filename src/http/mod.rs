//! The only axum code: routes, and the handlers that call into the service.

mod graphql;
mod health;
mod playground;
mod webhook;
pub mod ws;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::MatchedPath;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, Request, StatusCode, Uri};
use tower_http::LatencyUnit;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, Span};

use crate::app::AppState;
use crate::error::ApiError;

/// Largest request body accepted: a webhook's (SPEC §3 step 1), and a GraphQL request's.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(webhook::router())
        .merge(health::router())
        .merge(graphql::router())
        .merge(playground::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Millis),
                ),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// One span per request: method and route (the matched pattern, never the query string, which may carry a
/// GraphQL document); the response line adds status and latency. Intake records the delivery's event id,
/// type and outcome on it (`webhook::Intake::ingest`), so they are on the same line.
fn request_span(request: &Request<Body>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        event_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

/// A route asked with a method it does not serve. axum adds the `Allow` header to the 405.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// The error for a body that could not be read: too large (413), or cut off.
fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        }
    } else {
        ApiError::BadRequest(rejection.body_text())
    }
}
