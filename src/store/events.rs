//! The event log (`webhook_event`).

use entity::webhook_event;
use sea_orm::sea_query::ExprTrait;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};

use crate::webhook::envelope::Envelope;
use crate::webhook::event::{Event, OrderKey};

/// A new log entry, before it has a sequence number.
pub struct NewEvent<'a> {
    pub envelope: &'a Envelope,
    pub raw: &'a str,
    pub entity_kind: Option<&'a str>,
    pub entity_id: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    pub order_ns: i64,
    pub received_at_ns: i64,
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
}

/// Claims the event id. `None` when it was already stored (a duplicate delivery).
pub async fn insert(db: &impl ConnectionTrait, new: NewEvent<'_>) -> Result<Option<i64>, DbErr> {
    let envelope = new.envelope;
    let row = webhook_event::ActiveModel {
        seq: NotSet,
        event_id: Set(envelope.id.clone()),
        event_type: Set(envelope.event_type.clone()),
        object_type: Set(envelope.object_type.clone()),
        object_id: Set(envelope.object_id.clone()),
        entity_kind: Set(new.entity_kind.map(str::to_owned)),
        entity_id: Set(new.entity_id.map(str::to_owned)),
        parent_id: Set(new.parent_id.map(str::to_owned)),
        occurred_at_ns: Set(envelope.occurred_at_ns),
        order_ns: Set(new.order_ns),
        received_at_ns: Set(new.received_at_ns),
        outcome: Set(new.outcome.to_owned()),
        reason: Set(new.reason.map(str::to_owned)),
        payload: Set(new.raw.to_owned()),
    };
    let result = webhook_event::Entity::insert(row)
        .on_conflict(
            OnConflict::column(webhook_event::Column::EventId)
                .do_nothing()
                .to_owned(),
        )
        .exec(db)
        .await;
    match result {
        Ok(inserted) => Ok(Some(inserted.last_insert_id)),
        Err(DbErr::RecordNotInserted) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records the outcome decided after applying.
pub async fn set_outcome(
    db: &impl ConnectionTrait,
    seq: i64,
    outcome: &str,
    reason: Option<&str>,
) -> Result<(), DbErr> {
    webhook_event::Entity::update_many()
        .col_expr(webhook_event::Column::Outcome, outcome.into())
        .col_expr(
            webhook_event::Column::Reason,
            reason.map(str::to_owned).into(),
        )
        .filter(webhook_event::Column::Seq.eq(seq))
        .exec(db)
        .await
        .map(drop)
}

/// Every stored event of an entity, and of its parent stream when given, in order-key order.
pub async fn history(
    db: &impl ConnectionTrait,
    kind: &str,
    id: &str,
    parent: Option<&str>,
) -> Result<Vec<Event>, DbErr> {
    use webhook_event::Column as C;
    let mut condition = C::EntityKind.eq(kind).and(C::EntityId.eq(id));
    if let Some(parent) = parent {
        condition = condition.or(C::EntityKind.eq("live_stream").and(C::EntityId.eq(parent)));
    }
    let rows = webhook_event::Entity::find()
        .filter(condition)
        .order_by_asc(C::OrderNs)
        .order_by_asc(C::EventId)
        .all(db)
        .await?;
    Ok(rows.iter().filter_map(to_event).collect())
}

/// Rebuilds an [`Event`] from a stored row (payloads are re-parsed with the current code).
pub fn to_event(row: &webhook_event::Model) -> Option<Event> {
    let envelope = Envelope::parse(row.payload.as_bytes()).ok()?;
    Some(Event {
        envelope,
        key: OrderKey {
            ns: row.order_ns,
            id: row.event_id.clone(),
        },
    })
}
