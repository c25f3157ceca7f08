//! The event cursor: a position assigned at the end of each intake transaction from a one-row counter.
//!
//! A PostgreSQL sequence hands out numbers when rows are inserted, not when they commit, and skips numbers
//! on rollbacks and on `ON CONFLICT DO NOTHING`; a reader that resumes "after N" could then miss an event
//! that commits later with a smaller number. The counter row is locked from its increment to the commit,
//! so positions are gapless and in commit order: every event after a cursor is visible once a later one is.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LogPosition {
    Table,
    Id,
    Last,
}

#[derive(DeriveIden)]
enum WebhookEvent {
    Table,
    Position,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LogPosition::Table)
                    .if_not_exists()
                    .col(integer(LogPosition::Id).primary_key())
                    .col(big_integer(LogPosition::Last))
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvent::Table)
                    .add_column(big_integer_null(WebhookEvent::Position))
                    .take(),
            )
            .await?;
        // Events stored before this migration get positions in arrival order.
        let db = manager.get_connection();
        db.execute_unprepared("UPDATE webhook_event SET position = seq")
            .await?;
        db.execute_unprepared(
            "INSERT INTO log_position (id, last) SELECT 1, COALESCE(MAX(seq), 0) FROM webhook_event",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_event_position")
                    .table(WebhookEvent::Table)
                    .col(WebhookEvent::Position)
                    .unique()
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_webhook_event_position")
                    .table(WebhookEvent::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvent::Table)
                    .drop_column(WebhookEvent::Position)
                    .take(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(LogPosition::Table).take())
            .await
    }
}
