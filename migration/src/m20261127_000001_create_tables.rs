//! The five tables: the event log and the three entities it moves, plus playback ids.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvent {
    Table,
    Seq,
    EventId,
    EventType,
    ObjectType,
    ObjectId,
    EntityKind,
    EntityId,
    ParentId,
    OccurredAtNs,
    OrderNs,
    ReceivedAtNs,
    Outcome,
    Reason,
    Payload,
}

#[derive(DeriveIden)]
enum Media {
    Table,
    Id,
    Status,
    Title,
    DurationSeconds,
    AspectRatio,
    MaxResolution,
    SourceResolution,
    IsAudioOnly,
    Tracks,
    Metadata,
    ThumbnailUrl,
    LiveStreamId,
    CreatedAtNs,
    UpdatedAtNs,
    DeletedAtNs,
}

#[derive(DeriveIden)]
enum LiveStream {
    Table,
    Id,
    Status,
    EncoderConnected,
    Recording,
    MaxResolution,
    ReconnectWindowSeconds,
    MaxDurationSeconds,
    EnableRecording,
    LowLatency,
    MediaPolicy,
    Metadata,
    Trial,
    StreamKey,
    SrtSecret,
    CreatedAtNs,
    DeletedAtNs,
}

#[derive(DeriveIden)]
enum SimulcastTarget {
    Table,
    Id,
    LiveStreamId,
    Status,
    IsEnabled,
    Metadata,
    Url,
    StreamKey,
}

#[derive(DeriveIden)]
enum PlaybackId {
    Table,
    Id,
    MediaId,
    LiveStreamId,
    AccessPolicy,
    Position,
}

/// Columns every entity table carries: list order and the order key of its last applied event.
#[derive(DeriveIden)]
enum Common {
    SortNs,
    LastEventType,
    LastEventNs,
    LastEventId,
}

fn with_order_key(table: &mut TableCreateStatement) -> TableCreateStatement {
    table
        .col(big_integer(Common::SortNs))
        .col(string(Common::LastEventType))
        .col(big_integer(Common::LastEventNs))
        .col(string(Common::LastEventId))
        .take()
}

fn index(name: &str, table: impl IntoIden, cols: &[&'static str]) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for col in cols {
        index.col(Alias::new(*col));
    }
    index.take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvent::Table)
                    .if_not_exists()
                    .col(big_pk_auto(WebhookEvent::Seq))
                    .col(string_uniq(WebhookEvent::EventId))
                    .col(string(WebhookEvent::EventType))
                    .col(string_null(WebhookEvent::ObjectType))
                    .col(string_null(WebhookEvent::ObjectId))
                    .col(string_null(WebhookEvent::EntityKind))
                    .col(string_null(WebhookEvent::EntityId))
                    .col(string_null(WebhookEvent::ParentId))
                    .col(big_integer_null(WebhookEvent::OccurredAtNs))
                    .col(big_integer(WebhookEvent::OrderNs))
                    .col(big_integer(WebhookEvent::ReceivedAtNs))
                    .col(string(WebhookEvent::Outcome))
                    .col(text_null(WebhookEvent::Reason))
                    .col(text(WebhookEvent::Payload))
                    .take(),
            )
            .await?;
        manager
            .create_table(with_order_key(
                Table::create()
                    .table(Media::Table)
                    .if_not_exists()
                    .col(string(Media::Id).primary_key())
                    .col(string(Media::Status))
                    .col(string_null(Media::Title))
                    .col(double_null(Media::DurationSeconds))
                    .col(string_null(Media::AspectRatio))
                    .col(string_null(Media::MaxResolution))
                    .col(string_null(Media::SourceResolution))
                    .col(boolean_null(Media::IsAudioOnly))
                    .col(json(Media::Tracks))
                    .col(json_null(Media::Metadata))
                    .col(string_null(Media::ThumbnailUrl))
                    .col(string_null(Media::LiveStreamId))
                    .col(big_integer_null(Media::CreatedAtNs))
                    .col(big_integer_null(Media::UpdatedAtNs))
                    .col(big_integer_null(Media::DeletedAtNs)),
            ))
            .await?;
        manager
            .create_table(with_order_key(
                Table::create()
                    .table(LiveStream::Table)
                    .if_not_exists()
                    .col(string(LiveStream::Id).primary_key())
                    .col(string(LiveStream::Status))
                    .col(boolean(LiveStream::EncoderConnected))
                    .col(boolean(LiveStream::Recording))
                    .col(string_null(LiveStream::MaxResolution))
                    .col(integer_null(LiveStream::ReconnectWindowSeconds))
                    .col(integer_null(LiveStream::MaxDurationSeconds))
                    .col(boolean_null(LiveStream::EnableRecording))
                    .col(boolean_null(LiveStream::LowLatency))
                    .col(string_null(LiveStream::MediaPolicy))
                    .col(json_null(LiveStream::Metadata))
                    .col(boolean_null(LiveStream::Trial))
                    .col(text_null(LiveStream::StreamKey))
                    .col(text_null(LiveStream::SrtSecret))
                    .col(big_integer_null(LiveStream::CreatedAtNs))
                    .col(big_integer_null(LiveStream::DeletedAtNs)),
            ))
            .await?;
        manager
            .create_table(with_order_key(
                Table::create()
                    .table(SimulcastTarget::Table)
                    .if_not_exists()
                    .col(string(SimulcastTarget::Id).primary_key())
                    .col(string(SimulcastTarget::LiveStreamId))
                    .col(string(SimulcastTarget::Status))
                    .col(boolean_null(SimulcastTarget::IsEnabled))
                    .col(json_null(SimulcastTarget::Metadata))
                    .col(text_null(SimulcastTarget::Url))
                    .col(text_null(SimulcastTarget::StreamKey)),
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PlaybackId::Table)
                    .if_not_exists()
                    .col(string(PlaybackId::Id).primary_key())
                    .col(string_null(PlaybackId::MediaId))
                    .col(string_null(PlaybackId::LiveStreamId))
                    .col(string(PlaybackId::AccessPolicy))
                    .col(integer(PlaybackId::Position))
                    .take(),
            )
            .await?;

        for statement in [
            index(
                "idx_webhook_event_entity",
                WebhookEvent::Table,
                &["entity_kind", "entity_id"],
            ),
            index(
                "idx_webhook_event_parent",
                WebhookEvent::Table,
                &["parent_id"],
            ),
            index(
                "idx_webhook_event_object",
                WebhookEvent::Table,
                &["object_id"],
            ),
            index(
                "idx_webhook_event_order",
                WebhookEvent::Table,
                &["order_ns", "event_id"],
            ),
            index("idx_media_list", Media::Table, &["sort_ns", "id"]),
            index("idx_media_live_stream", Media::Table, &["live_stream_id"]),
            index(
                "idx_live_stream_list",
                LiveStream::Table,
                &["sort_ns", "id"],
            ),
            index(
                "idx_simulcast_target_parent",
                SimulcastTarget::Table,
                &["live_stream_id"],
            ),
            index("idx_playback_id_media", PlaybackId::Table, &["media_id"]),
            index(
                "idx_playback_id_live_stream",
                PlaybackId::Table,
                &["live_stream_id"],
            ),
        ] {
            manager.create_index(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            PlaybackId::Table.into_iden(),
            SimulcastTarget::Table.into_iden(),
            LiveStream::Table.into_iden(),
            Media::Table.into_iden(),
            WebhookEvent::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().take())
                .await?;
        }
        Ok(())
    }
}
