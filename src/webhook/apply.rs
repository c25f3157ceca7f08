//! Applying one event to its entity inside the intake transaction.
//!
//! Invariant: every entity row equals the fold, in order-key order, of every stored event about it. An event
//! newer than the row's key is one more step of that fold; an older one (a late or out-of-order delivery)
//! makes the entity fold again from its stored history. So any permutation of a set of events, with any
//! duplicates, ends in the same rows, and `replay` (one fold over the whole log) rebuilds them exactly.

use sea_orm::{ConnectionTrait, DbErr};

use super::event::{EntityRef, Event, OrderKey};
use super::fields;
use super::live::{self, LiveState};
use super::media::{self, MediaState};
use super::simulcast::{self, TargetState, listed_targets};
use crate::store::{entities, events, lock_entity};

/// An entity's new state after an event changed it.
#[derive(Clone, Debug, PartialEq)]
pub enum Changed {
    Media(MediaState),
    LiveStream(LiveState),
    SimulcastTarget(TargetState),
}

/// What applying an event did: whether its own entity changed, and every entity that did.
#[derive(Debug, Default)]
pub struct Applied {
    pub primary_changed: bool,
    pub changes: Vec<Changed>,
}

/// Whether `apply` takes the per-entity locks: intake does; `replay` locks whole tables instead (one
/// transaction holding a lock per entity would exhaust PostgreSQL's lock table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locking {
    PerEntity,
    Held,
}

async fn lock(
    db: &impl ConnectionTrait,
    locking: Locking,
    kind: &str,
    id: &str,
) -> Result<(), DbErr> {
    match locking {
        Locking::PerEntity => lock_entity(db, kind, id).await,
        Locking::Held => Ok(()),
    }
}

/// Applies `event` to `entity` and to the entities it drags along (a stream's simulcast targets).
pub async fn apply(
    db: &impl ConnectionTrait,
    entity: &EntityRef,
    event: &Event,
    locking: Locking,
) -> Result<Applied, DbErr> {
    let mut applied = Applied::default();
    match entity {
        EntityRef::Media(id) => {
            if let Some(state) = apply_media(db, id, event, locking).await? {
                applied.primary_changed = true;
                applied.changes.push(Changed::Media(state));
            }
        }
        EntityRef::LiveStream(id) => {
            if let Some(state) = apply_live(db, id, event, locking).await? {
                applied.primary_changed = true;
                applied.changes.push(Changed::LiveStream(state));
            }
            for target in targets_touched(db, id, event).await? {
                if let Some(state) = apply_target(db, &target, id, event, locking).await? {
                    applied.changes.push(Changed::SimulcastTarget(state));
                }
            }
        }
        EntityRef::SimulcastTarget { id, parent } => {
            // Locks in the same order as a stream event (stream, then its targets), so that a target
            // created now and its parent's concurrent `idle` see each other.
            lock(db, locking, "live_stream", parent).await?;
            if let Some(state) = apply_target(db, id, parent, event, locking).await? {
                applied.primary_changed = true;
                applied.changes.push(Changed::SimulcastTarget(state));
            }
        }
    }
    Ok(applied)
}

fn is_late(row_key: OrderKey, event: &Event) -> bool {
    row_key > event.key
}

async fn apply_media(
    db: &impl ConnectionTrait,
    id: &str,
    event: &Event,
    locking: Locking,
) -> Result<Option<MediaState>, DbErr> {
    lock(db, locking, "media", id).await?;
    let old = entities::load_media(db, id).await?;
    let new = match &old {
        Some(o) if is_late(key(&o.row.last_event_ns, &o.row.last_event_id), event) => {
            let history = events::history(db, "media", id, None).await?;
            media::fold(id, &history).unwrap_or_else(|| o.clone())
        }
        _ => media::step(old.as_ref(), id, event),
    };
    if old.as_ref() == Some(&new) {
        return Ok(None);
    }
    entities::save_media(db, old.as_ref(), &new).await?;
    Ok(Some(new))
}

async fn apply_live(
    db: &impl ConnectionTrait,
    id: &str,
    event: &Event,
    locking: Locking,
) -> Result<Option<LiveState>, DbErr> {
    lock(db, locking, "live_stream", id).await?;
    let old = entities::load_live(db, id).await?;
    let new = match &old {
        Some(o) if is_late(key(&o.row.last_event_ns, &o.row.last_event_id), event) => {
            let history = events::history(db, "live_stream", id, None).await?;
            live::fold(id, &history).unwrap_or_else(|| o.clone())
        }
        _ => live::step(old.as_ref(), id, event),
    };
    if old.as_ref() == Some(&new) {
        return Ok(None);
    }
    entities::save_live(db, old.as_ref(), &new).await?;
    Ok(Some(new))
}

/// The targets a stream event concerns: those it lists, and on `idle` every target of the stream.
async fn targets_touched(
    db: &impl ConnectionTrait,
    stream: &str,
    event: &Event,
) -> Result<Vec<String>, DbErr> {
    let mut ids: Vec<String> = listed_targets(&event.envelope.data)
        .filter_map(|entry| fields::text(entry, &["simulcastId"]))
        .collect();
    if event.verb() == "idle" {
        ids.extend(entities::target_ids_of(db, stream).await?);
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

async fn apply_target(
    db: &impl ConnectionTrait,
    id: &str,
    parent: &str,
    event: &Event,
    locking: Locking,
) -> Result<Option<TargetState>, DbErr> {
    lock(db, locking, "simulcast_target", id).await?;
    let old = entities::load_target(db, id).await?;
    // A target's state also depends on its parent's events (`idle`, `simulcastResponses`): a new target,
    // or a late event, folds the whole history, so parent events stored before the target was known count.
    let new = match &old {
        Some(o) if !is_late(key(&o.last_event_ns, &o.last_event_id), event) => {
            simulcast::step(old.as_ref(), id, parent, event)
        }
        _ => {
            let parent = old
                .as_ref()
                .map_or(parent, |o| o.live_stream_id.as_str())
                .to_owned();
            let history = events::history(db, "simulcast_target", id, Some(&parent)).await?;
            simulcast::fold(id, &parent, &history)
        }
    };
    match new {
        Some(new) if old.as_ref() != Some(&new) => {
            entities::save_target(db, old.as_ref(), &new).await?;
            Ok(Some(new))
        }
        _ => Ok(None),
    }
}

fn key(ns: &i64, id: &str) -> OrderKey {
    OrderKey {
        ns: *ns,
        id: id.to_owned(),
    }
}
