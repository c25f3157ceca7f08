//! SeaORM queries. Every function takes `&impl ConnectionTrait`, so it runs inside a transaction or not.

pub mod entities;
pub mod events;
pub mod script;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

/// Serialises writers of one entity across connections and instances (PostgreSQL). Taken inside the
/// intake transaction and released at its end: two instances applying events for the same entity at once
/// run one after the other, so the second sees the first's row and its event, and no update is lost.
/// An advisory lock rather than `SELECT … FOR UPDATE` because the row may not exist yet.
/// SQLite has a single writer; intake runs its transactions one at a time instead (see `webhook::writer`).
/// On PostgreSQL an instance's own writers split entities between them, so this lock is what orders
/// instances.
pub async fn lock_entity(db: &impl ConnectionTrait, kind: &str, id: &str) -> Result<(), DbErr> {
    lock_entities(db, [lock_key(kind, id)]).await
}

/// The name of an entity's lock: `kind:id`. Sorting these names orders streams before their targets.
pub fn lock_key(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

/// Takes the locks named `keys` (see [`lock_key`]), in the order given, in one statement.
pub async fn lock_entities(
    db: &impl ConnectionTrait,
    keys: impl IntoIterator<Item = String>,
) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let keys: Vec<String> = keys.into_iter().collect();
    if keys.is_empty() {
        return Ok(());
    }
    // `unnest` yields the array in order, so the locks are taken in the order given. One array parameter
    // keeps the statement's text the same for any number of locks: PostgreSQL prepares it once.
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
        [sea_orm::Value::Array(
            sea_orm::sea_query::ArrayType::String,
            Some(Box::new(keys.into_iter().map(Into::into).collect())),
        )],
    ))
    .await
    .map(drop)
}
