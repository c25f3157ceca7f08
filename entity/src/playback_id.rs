//! A playback id: a row of its own so that `mediaByPlaybackId` is one indexed lookup.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "playback_id")]
pub struct Model {
    /// The playback id itself (unique across media and live streams).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Owner when it plays a media.
    /// Indexed where set (a partial index: migration 4); the migrations, not this attribute, make the schema.
    #[sea_orm(indexed)]
    pub media_id: Option<String>,
    /// Owner when it plays a live stream.
    /// Indexed where set (a partial index: migration 4); the migrations, not this attribute, make the schema.
    #[sea_orm(indexed)]
    pub live_stream_id: Option<String>,
    pub access_policy: String,
    /// Position in the owner's list, as FastPix sent it.
    pub position: i32,
}

/// The owners (for joins only: the migrations declare no foreign keys).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::media::Entity",
        from = "Column::MediaId",
        to = "super::media::Column::Id"
    )]
    Media,
    #[sea_orm(
        belongs_to = "super::live_stream::Entity",
        from = "Column::LiveStreamId",
        to = "super::live_stream::Column::Id"
    )]
    LiveStream,
}

impl Related<super::media::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Media.def()
    }
}

impl Related<super::live_stream::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::LiveStream.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
