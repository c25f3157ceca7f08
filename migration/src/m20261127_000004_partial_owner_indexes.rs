//! Makes the indexes over nullable owner columns partial: `media.live_stream_id` (set only on a stream's
//! recordings), and `playback_id.media_id` and `playback_id.live_stream_id` (each row has one of the two).
//! They now hold only the rows that have a value (`WHERE … IS NOT NULL`), so storing a media, or a
//! playback id, writes one index entry less. Every query on these columns compares them with `=` or `IN`
//! (with values, or in a join with the owner's id), which implies `IS NOT NULL`: PostgreSQL and SQLite
//! both still use the indexes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `(index, table, column)`.
const INDEXES: [(&str, &str, &str); 3] = [
    ("idx_media_live_stream", "media", "live_stream_id"),
    ("idx_playback_id_media", "playback_id", "media_id"),
    (
        "idx_playback_id_live_stream",
        "playback_id",
        "live_stream_id",
    ),
];

/// The index `name` on `table(column)`, over every row or, when `partial`, the rows where `column` is set.
fn create(name: &str, table: &str, column: &str, partial: bool) -> IndexCreateStatement {
    let mut index = Index::create();
    index
        .name(name)
        .table(Alias::new(table))
        .col(Alias::new(column));
    if partial {
        index.and_where(Expr::col(Alias::new(column)).is_not_null());
    }
    index.take()
}

async fn rebuild(manager: &SchemaManager<'_>, partial: bool) -> Result<(), DbErr> {
    for (name, table, column) in INDEXES {
        manager
            .drop_index(
                Index::drop()
                    .name(name)
                    .table(Alias::new(table))
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(create(name, table, column, partial))
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// In a transaction on SQLite too: each index is dropped and created again, on one connection, and
    /// the schema never lacks one.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, false).await
    }
}
