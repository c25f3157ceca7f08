//! Drops `idx_webhook_event_parent`: no query filters the event log by `parent_id` (a target's history
//! is found by its own entity and its stream's, through `idx_webhook_event_entity`), and every index of
//! the log is one more entry to write for each event stored.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvent {
    Table,
    ParentId,
}

const NAME: &str = "idx_webhook_event_parent";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(NAME)
                    .table(WebhookEvent::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(WebhookEvent::Table)
                    .col(WebhookEvent::ParentId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}
