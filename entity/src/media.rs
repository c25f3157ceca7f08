//! A FastPix media (video on demand, or the recording of a live stream).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "media")]
pub struct Model {
    /// FastPix media id (a UUID; equal to the upload id for direct uploads).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `MediaStatus` in SCREAMING_CASE (`READY`, `IN_QUEUE`, …).
    pub status: String,
    pub title: Option<String>,
    pub duration_seconds: Option<f64>,
    pub aspect_ratio: Option<String>,
    pub max_resolution: Option<String>,
    pub source_resolution: Option<String>,
    pub is_audio_only: Option<bool>,
    /// Array of track objects as FastPix sent them.
    pub tracks: Json,
    pub metadata: Option<Json>,
    pub thumbnail_url: Option<String>,
    /// Set for the recording of a live stream.
    /// Indexed where set (a partial index: migration 4); the migrations, not this attribute, make the schema.
    #[sea_orm(indexed)]
    pub live_stream_id: Option<String>,
    pub created_at_ns: Option<i64>,
    pub updated_at_ns: Option<i64>,
    pub deleted_at_ns: Option<i64>,
    /// List order: `created_at_ns`, else the order time of the oldest event seen.
    pub sort_ns: i64,
    pub last_event_type: String,
    /// Order key of the event that last changed this row: `(last_event_ns, last_event_id)`.
    pub last_event_ns: i64,
    pub last_event_id: String,
}

/// Its playback ids (for joins only: the migrations declare no foreign keys).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::playback_id::Entity")]
    PlaybackId,
}

impl Related<super::playback_id::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PlaybackId.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
