//! A simulcast target: a third-party destination a live stream is restreamed to.

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "simulcast_target")]
pub struct Model {
    /// FastPix simulcast id (32 hex characters).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The parent live stream.
    #[sea_orm(indexed)]
    pub live_stream_id: String,
    /// `SimulcastTargetStatus` in SCREAMING_CASE.
    pub status: String,
    pub is_enabled: Option<bool>,
    pub metadata: Option<Json>,
    /// Secret: the full destination URL, which embeds the third-party stream key.
    pub url: Option<String>,
    /// Secret: the third-party stream key.
    pub stream_key: Option<String>,
    pub sort_ns: i64,
    pub last_event_type: String,
    pub last_event_ns: i64,
    pub last_event_id: String,
}

impl std::fmt::Debug for Model {
    /// Redacts the URL and key so that a logged model never leaks them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("simulcast_target::Model")
            .field("id", &self.id)
            .field("live_stream_id", &self.live_stream_id)
            .field("status", &self.status)
            .field("is_enabled", &self.is_enabled)
            .field("last_event_type", &self.last_event_type)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
