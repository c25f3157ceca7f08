//! SeaORM queries. Every function takes `&impl ConnectionTrait`, so it runs inside a transaction or not.

pub mod entities;
pub mod events;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

/// Serialises writers of one entity across connections and instances (PostgreSQL). Taken inside the
/// intake transaction and released at its end: two instances applying events for the same entity at once
/// run one after the other, so the second sees the first's row and its event, and no update is lost.
/// An advisory lock rather than `SELECT … FOR UPDATE` because the row may not exist yet.
/// SQLite has a single writer; intake runs its transactions one at a time instead (see `webhook::writer`).
/// On PostgreSQL an instance's own writers split entities between them, so this lock is what orders
/// instances.
pub async fn lock_entity(db: &impl ConnectionTrait, kind: &str, id: &str) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        [format!("{kind}:{id}").into()],
    ))
    .await
    .map(drop)
}
