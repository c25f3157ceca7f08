//! The event log: every authentic FastPix delivery, stored before it is acknowledged.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_event")]
pub struct Model {
    /// Row id, in insertion order (not the cursor: see `position`).
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// The event cursor: gapless, in commit order (set in the transaction that stores the event).
    #[sea_orm(unique)]
    pub position: Option<i64>,
    /// FastPix event id, the idempotency key.
    #[sea_orm(unique)]
    pub event_id: String,
    pub event_type: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    /// Which table the event moves (`media`, `live_stream`, `simulcast_target`), when it moves one.
    pub entity_kind: Option<String>,
    pub entity_id: Option<String>,
    /// For simulcast events: the parent live stream.
    pub parent_id: Option<String>,
    /// The event's own `createdAt`, when it had a readable one.
    pub occurred_at_ns: Option<i64>,
    /// First half of the order key: `occurred_at_ns`, else the time of receipt.
    pub order_ns: i64,
    pub received_at_ns: i64,
    /// `applied`, `stale`, `ignored` or `rejected`.
    pub outcome: String,
    pub reason: Option<String>,
    /// The raw body exactly as received (JSON text).
    #[sea_orm(column_type = "Text")]
    pub payload: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
