//! `POST /webhooks/fastpix`.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{Value, json};

use super::body_error;
use crate::app::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/fastpix", post(receive))
}

async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(body_error)?;
    let signature = headers
        .get("fastpix-signature")
        .and_then(|value| value.to_str().ok());
    let started = Instant::now();
    let result = state.intake.ingest(&body, signature).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(ingested) => {
            let status = ingested.reply.status();
            state.metrics.webhook(&ingested.event_type, status, seconds);
            Ok(Json(json!({ "status": status })))
        }
        Err(error) => {
            let error = ApiError::from(error);
            state.metrics.webhook("", error.code(), seconds);
            Err(error)
        }
    }
}
