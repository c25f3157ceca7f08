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

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
