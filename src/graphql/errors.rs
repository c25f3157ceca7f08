//! GraphQL errors with a stable `extensions.code`: `NOT_FOUND`, `FORBIDDEN`, `BAD_USER_INPUT`, `INTERNAL`.

use std::sync::Arc;

use async_graphql::{Error, ErrorExtensions};

pub fn coded(code: &str, message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, e| e.set("code", code.to_owned()))
}

pub fn not_found(what: &str, key: &str) -> Error {
    coded("NOT_FOUND", format!("no {what} {key}"))
}

pub fn forbidden(field: &str) -> Error {
    coded(
        "FORBIDDEN",
        format!(
            "{field} is admin-only: send `Authorization: Bearer <admin token>` (FASTPIX_SYNC_ADMIN_TOKEN)"
        ),
    )
}

pub fn bad_input(message: impl Into<String>) -> Error {
    coded("BAD_USER_INPUT", message)
}

/// An internal failure: logged with its cause, answered without it. The cause stays with the error, for
/// the server only (`http::graphql` runs a query again when it is a lost database connection).
pub fn internal(cause: impl std::fmt::Display + Send + Sync + 'static) -> Error {
    tracing::error!(error = %cause, "GraphQL request failed");
    let mut error = coded("INTERNAL", "internal error; the server log has the details");
    error.source = Some(Arc::new(cause));
    error
}
