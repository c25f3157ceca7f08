//! Applying one event to its entity inside the intake transaction.
//!
//! Invariant: every entity row equals the fold, in order-key order, of every stored event about it. An event
//! newer than the row's key is one more step of that fold; an older one (a late or out-of-order delivery)
//! makes the entity fold again from its stored history (the log's events, with those of the intake
//! transaction applied so far: see `webhook::working`). So any permutation of a set of events, with any
//! duplicates, ends in the same rows, and `replay` (one fold over the whole log) rebuilds them exactly.

use sea_orm::{ConnectionTrait, DbErr};

use super::event::{EntityRef, Event, OrderKey};
use super::fields;
use super::live::{self, LiveState};
use super::media::{self, MediaState};
use super::simulcast::{self, TargetState, listed_targets};
use super::working::Working;

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

/// Applies `event` to `entity` and to the entities it drags along (a stream's simulcast targets), in the
/// transaction's working set (written by [`Working::write`], or [`Working::flush`] in `replay`).
pub async fn apply<C: ConnectionTrait>(
    w: &mut Working<'_, C>,
    entity: &EntityRef,
    event: &Event,
) -> Result<Applied, DbErr> {
    let mut applied = Applied::default();
    match entity {
        EntityRef::Media(id) => {
            if let Some(state) = apply_media(w, id, event).await? {
                applied.primary_changed = true;
                applied.changes.push(Changed::Media(state));
            }
        }
        EntityRef::LiveStream(id) => {
            if let Some(state) = apply_live(w, id, event).await? {
                applied.primary_changed = true;
                applied.changes.push(Changed::LiveStream(state));
            }
            for target in targets_touched(w, id, event).await? {
                if let Some(state) = apply_target(w, &target, id, event).await? {
                    applied.changes.push(Changed::SimulcastTarget(state));
                }
            }
        }
        EntityRef::SimulcastTarget { id, parent } => {
            // Locks in the same order as a stream event (stream, then its targets), so that a target
            // created now and its parent's concurrent `idle` see each other.
            w.lock("live_stream", parent).await?;
            if let Some(state) = apply_target(w, id, parent, event).await? {
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

async fn apply_media<C: ConnectionTrait>(
    w: &mut Working<'_, C>,
    id: &str,
    event: &Event,
) -> Result<Option<MediaState>, DbErr> {
    w.lock("media", id).await?;
    let old = w.media(id).await?;
    let new = match &old {
        Some(o) if is_late(key(&o.row.last_event_ns, &o.row.last_event_id), event) => {
            let history = w.history("media", id, None).await?;
            media::fold(id, &history).unwrap_or_else(|| o.clone())
        }
        _ => media::step(old.as_ref(), id, event),
    };
    if old.as_ref() == Some(&new) {
        return Ok(None);
    }
    w.set_owner(new.clone());
    Ok(Some(new))
}

async fn apply_live<C: ConnectionTrait>(
    w: &mut Working<'_, C>,
    id: &str,
    event: &Event,
) -> Result<Option<LiveState>, DbErr> {
    w.lock("live_stream", id).await?;
    let old = w.live(id).await?;
    let new = match &old {
        Some(o) if is_late(key(&o.row.last_event_ns, &o.row.last_event_id), event) => {
            let history = w.history("live_stream", id, None).await?;
            live::fold(id, &history).unwrap_or_else(|| o.clone())
        }
        _ => live::step(old.as_ref(), id, event),
    };
    if old.as_ref() == Some(&new) {
        return Ok(None);
    }
    w.set_owner(new.clone());
    Ok(Some(new))
}

/// The entities [`apply`] reads to apply `event` to `entity`, as far as the event tells without a query:
/// the entity, and the simulcast targets a stream event lists. (On `idle`, a stream's other targets are
/// found when applying.)
pub fn entities_read(entity: &EntityRef, event: &Event) -> Vec<EntityRef> {
    let mut read = vec![entity.clone()];
    if let EntityRef::LiveStream(stream) = entity {
        read.extend(
            listed_target_ids(event).map(|id| EntityRef::SimulcastTarget {
                id,
                parent: stream.clone(),
            }),
        );
    }
    read
}

/// The ids of the simulcast targets a stream event lists in `simulcastResponses`.
pub fn listed_target_ids(event: &Event) -> impl Iterator<Item = String> {
    listed_targets(&event.envelope.data).filter_map(|entry| fields::text(entry, &["simulcastId"]))
}

/// The targets a stream event concerns: those it lists, and on `idle` every target of the stream.
async fn targets_touched<C: ConnectionTrait>(
    w: &mut Working<'_, C>,
    stream: &str,
    event: &Event,
) -> Result<Vec<String>, DbErr> {
    let mut ids: Vec<String> = listed_target_ids(event).collect();
    if event.verb() == "idle" {
        ids.extend(w.target_ids_of(stream).await?);
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

async fn apply_target<C: ConnectionTrait>(
    w: &mut Working<'_, C>,
    id: &str,
    parent: &str,
    event: &Event,
) -> Result<Option<TargetState>, DbErr> {
    w.lock("simulcast_target", id).await?;
    let old = w.target(id).await?;
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
            let history = w.history("simulcast_target", id, Some(&parent)).await?;
            simulcast::fold(id, &parent, &history)
        }
    };
    match new {
        Some(new) if old.as_ref() != Some(&new) => {
            w.set_target(new.clone());
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
