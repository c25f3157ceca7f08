//! `fastpix-sync replay`: rebuild the entity tables from the event log, in event order.

use entity::webhook_event;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, PaginatorTrait, QueryOrder,
    TransactionTrait,
};

use crate::store::{entities, events};
use crate::webhook::apply::{Locking, apply};
use crate::webhook::event::{Resolution, resolve};
use crate::webhook::working::Working;

/// Counts of what a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub events: u64,
    pub applied: u64,
}

/// Empties the media, live stream, simulcast target and playback id tables, then applies every stored event
/// in order-key order, re-parsing each payload with the current code, in one transaction. The event log
/// itself is not changed. Run it with the servers stopped.
pub async fn replay(db: &DatabaseConnection) -> Result<Replayed, DbErr> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        // Intake waits until the replay commits: its first read of the event log (which event ids are
        // stored) waits for this lock, before it loads any entity. Queries go on reading the old entity
        // rows meanwhile; reads of the event log wait too.
        txn.execute_unprepared(
            "LOCK TABLE webhook_event IN ACCESS EXCLUSIVE MODE; \
             LOCK TABLE media, live_stream, simulcast_target, playback_id IN EXCLUSIVE MODE",
        )
        .await?;
    }
    entities::clear(&txn).await?;
    let mut replayed = Replayed::default();
    let mut pages = webhook_event::Entity::find()
        .order_by_asc(webhook_event::Column::OrderNs)
        .order_by_asc(webhook_event::Column::EventId)
        .paginate(&txn, 500);
    while let Some(rows) = pages.fetch_and_next().await? {
        // Each page's changes are written together.
        let mut working = Working::new(&txn, Locking::Held);
        for row in &rows {
            replayed.events += 1;
            let Some(event) = events::to_event(row) else {
                continue;
            };
            if let Resolution::Entity(entity) = resolve(&event.envelope)
                && apply(&mut working, &entity, &event).await?.primary_changed
            {
                replayed.applied += 1;
            }
        }
        working.flush().await?;
    }
    txn.commit().await?;
    Ok(replayed)
}
