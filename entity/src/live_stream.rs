//! A FastPix live stream.

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "live_stream")]
pub struct Model {
    /// FastPix stream id (32 hex characters).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `LiveStreamStatus` in SCREAMING_CASE.
    pub status: String,
    pub encoder_connected: bool,
    pub recording: bool,
    pub max_resolution: Option<String>,
    pub reconnect_window_seconds: Option<i32>,
    pub max_duration_seconds: Option<i32>,
    pub enable_recording: Option<bool>,
    pub low_latency: Option<bool>,
    pub media_policy: Option<String>,
    pub metadata: Option<Json>,
    pub trial: Option<bool>,
    /// Secret: served to admins only, never logged.
    pub stream_key: Option<String>,
    /// Secret: served to admins only, never logged.
    pub srt_secret: Option<String>,
    pub created_at_ns: Option<i64>,
    pub deleted_at_ns: Option<i64>,
    pub sort_ns: i64,
    pub last_event_type: String,
    pub last_event_ns: i64,
    pub last_event_id: String,
}

impl std::fmt::Debug for Model {
    /// Redacts the stream's secrets so that a logged model never leaks them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("live_stream::Model")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("encoder_connected", &self.encoder_connected)
            .field("recording", &self.recording)
            .field("last_event_type", &self.last_event_type)
            .field("last_event_ns", &self.last_event_ns)
            .finish_non_exhaustive()
    }
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
