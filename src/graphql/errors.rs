//! GraphQL errors with a stable `extensions.code`: `NOT_FOUND`, `FORBIDDEN`, `BAD_USER_INPUT`, `INTERNAL`.

use std::any::Any;
use std::sync::Arc;

use async_graphql::{Error, ErrorExtensions, Response};
use sea_orm::DbErr;

use crate::db::is_lost_connection;

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
/// the server only: `http::graphql` runs a query again when it is a lost database connection
/// ([`met_lost_connection`]), so that one is logged as a warning.
pub fn internal<C: std::fmt::Display + Send + Sync + 'static>(cause: C) -> Error {
    if database_error(&cause).is_some_and(is_lost_connection) {
        tracing::warn!(error = %cause, "a GraphQL resolver lost its database connection");
    } else {
        tracing::error!(error = %cause, "GraphQL request failed");
    }
    let mut error = coded("INTERNAL", "internal error; the server log has the details");
    error.source = Some(Arc::new(cause));
    error
}

/// The database error a cause is: the database's own, or one a data loader shares.
fn database_error(cause: &(dyn Any + Send + Sync)) -> Option<&DbErr> {
    cause
        .downcast_ref::<DbErr>()
        .or_else(|| cause.downcast_ref::<Arc<DbErr>>().map(|shared| &**shared))
}

/// Whether a resolver of `response` failed on a lost database connection.
pub fn met_lost_connection(response: &Response) -> bool {
    response.errors.iter().any(|error| {
        error
            .source
            .as_deref()
            .and_then(database_error)
            .is_some_and(is_lost_connection)
    })
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use async_graphql::{Pos, Response};
    use sea_orm::{DbErr, RuntimeErr, sqlx};

    use super::{internal, met_lost_connection};

    fn reset() -> Arc<sqlx::Error> {
        Arc::new(sqlx::Error::Io(io::ErrorKind::ConnectionReset.into()))
    }

    /// A response whose one resolver failed with `cause`, as `internal` makes it.
    fn failed_with<C: std::fmt::Display + Send + Sync + 'static>(cause: C) -> Response {
        Response::from_errors(vec![internal(cause).into_server_error(Pos::default())])
    }

    #[test]
    fn a_statement_on_a_lost_connection_is_found_whether_the_error_is_shared_or_not() {
        let lost = || DbErr::Query(RuntimeErr::SqlxError(reset()));
        assert!(met_lost_connection(&failed_with(lost())));
        assert!(met_lost_connection(&failed_with(Arc::new(lost()))));
        assert!(met_lost_connection(&failed_with(DbErr::Exec(
            RuntimeErr::SqlxError(reset())
        ))));
    }

    #[test]
    fn other_failures_are_not_a_lost_connection() {
        // Failing to get a connection at all: the pool tried that already.
        assert!(!met_lost_connection(&failed_with(DbErr::Conn(
            RuntimeErr::SqlxError(reset())
        ))));
        assert!(!met_lost_connection(&failed_with(DbErr::Query(
            RuntimeErr::SqlxError(Arc::new(sqlx::Error::RowNotFound))
        ))));
        assert!(!met_lost_connection(&failed_with(
            "a committed change vanished from the log"
        )));
        assert!(!met_lost_connection(&Response::default()));
    }
}
