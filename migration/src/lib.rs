//! Schema migrations of fastpix-sync, applied on start (`fastpix-sync serve`) or alone (`fastpix-sync migrate`).

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_create_tables;
mod m20261127_000002_add_log_position;
mod m20261127_000003_drop_unused_event_index;
mod m20261127_000004_partial_owner_indexes;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_tables::Migration),
            Box::new(m20261127_000002_add_log_position::Migration),
            Box::new(m20261127_000003_drop_unused_event_index::Migration),
            Box::new(m20261127_000004_partial_owner_indexes::Migration),
        ]
    }
}
