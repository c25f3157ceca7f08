//! HTTP error responses: one enum, mapped to a status and a JSON body in one place.
//! Every error body is `{"error": {"code": "…", "message": "…"}}` (SPEC §2).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::webhook::IngestError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "missing or invalid FastPix-Signature header: check FASTPIX_WEBHOOK_SECRET against the endpoint's signing secret in the FastPix dashboard"
    )]
    Unauthorized,
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("the database is unavailable; the delivery was not stored, retry later")]
    Unavailable,
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{path} does not take {method}: see the Allow header")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    UpgradeRequired(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            Self::UpgradeRequired(_) => (StatusCode::UPGRADE_REQUIRED, "UPGRADE_REQUIRED"),
        }
    }
}

impl ApiError {
    /// The stable code of the error (`extensions`-style, also the `code` of the JSON body).
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Unauthorized => Self::Unauthorized,
            IngestError::BadRequest(message) => Self::BadRequest(message),
            IngestError::Database(cause) => {
                tracing::error!(error = %cause, "webhook not stored: database error");
                Self::Unavailable
            }
        }
    }
}

/// Seconds a sender should wait before retrying after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}
