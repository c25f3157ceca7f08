//! Event-log retention: events older than the retention period are deleted, except what the entity
//! tables still need.
//!
//! Kept for every entity: its newest applied event (each carries a full snapshot) and every event inside
//! the retention period. An entity's older events are deleted only when those kept events alone fold into
//! exactly its current row (for a stream: its row and every simulcast target's, since a target also
//! follows its stream's events); otherwise they stay. So `replay` after a prune rebuilds every entity as
//! before. Of the events that moved no entity, `ignored` ones are simply deleted when old, and `rejected`
//! ones are kept whatever their age: SPEC §3 keeps them so that `replay` can reprocess them after a fix,
//! and they are rare (a known type with no usable entity id). Cursors stay valid: they are positions, and
//! resuming "after" a pruned position skips nothing that still exists.

use std::collections::BTreeSet;
use std::time::Duration;

use entity::webhook_event;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};

use crate::store::{entities, events, lock_entity};
use crate::webhook::event::Event;
use crate::webhook::{Outcome, live, media, simulcast};

/// What a prune did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events deleted.
    pub deleted: u64,
    /// Entities whose old events were all kept, because their newest events alone do not rebuild them.
    pub kept_entities: u64,
}

const DAY_NS: i64 = 24 * 60 * 60 * 1_000_000_000;

/// Deletes what is older than `days` days (received before `now - days`). `days == 0` keeps everything.
pub async fn prune(db: &DatabaseConnection, days: u32) -> Result<Pruned, DbErr> {
    if days == 0 {
        return Ok(Pruned::default());
    }
    let cutoff = crate::webhook::time::now_ns().saturating_sub(i64::from(days) * DAY_NS);
    prune_before(db, cutoff).await
}

/// Deletes what was received before `cutoff_ns`, keeping what the entity tables need.
pub async fn prune_before(db: &DatabaseConnection, cutoff_ns: i64) -> Result<Pruned, DbErr> {
    use webhook_event::Column as C;
    let mut pruned = Pruned::default();
    let orphans = webhook_event::Entity::delete_many()
        .filter(C::ReceivedAtNs.lt(cutoff_ns))
        .filter(C::EntityKind.is_null())
        .filter(C::Outcome.ne(Outcome::Rejected.as_str()))
        .exec(db)
        .await?;
    pruned.deleted += orphans.rows_affected;

    let old: Vec<(Option<String>, Option<String>, Option<String>)> = webhook_event::Entity::find()
        .select_only()
        .column(C::EntityKind)
        .column(C::EntityId)
        .column(C::ParentId)
        .filter(C::ReceivedAtNs.lt(cutoff_ns))
        .filter(C::EntityKind.is_not_null())
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    // Streams are pruned together with their targets; a target's own old events go with its stream.
    let mut units = BTreeSet::new();
    for (kind, id, parent) in old {
        match (kind.as_deref(), id, parent) {
            (Some("media"), Some(id), _) => units.insert(("media", id)),
            (Some("live_stream"), Some(id), _) | (Some("simulcast_target"), _, Some(id)) => {
                units.insert(("live_stream", id))
            }
            _ => false,
        };
    }
    for (kind, id) in units {
        let txn = db.begin().await?;
        lock_entity(&txn, kind, &id).await?;
        let deleted = match kind {
            "media" => prune_media(&txn, &id, cutoff_ns).await?,
            _ => prune_stream(&txn, &id, cutoff_ns).await?,
        };
        txn.commit().await?;
        match deleted {
            Some(count) => pruned.deleted += count,
            None => pruned.kept_entities += 1,
        }
    }
    Ok(pruned)
}

/// The history split into kept events and the sequence numbers of the prunable ones.
fn split(history: Vec<(Event, i64, i64, bool)>, cutoff_ns: i64) -> (Vec<Event>, Vec<i64>) {
    // The newest applied event is the last applied one in order-key order.
    let newest_applied = history.iter().rposition(|(_, _, _, applied)| *applied);
    let (mut kept, mut prunable) = (Vec::new(), Vec::new());
    for (index, (event, seq, received, _)) in history.into_iter().enumerate() {
        if received >= cutoff_ns || Some(index) == newest_applied {
            kept.push(event);
        } else {
            prunable.push(seq);
        }
    }
    (kept, prunable)
}

/// An entity's stored events with their `seq`, receipt time and whether they were applied.
async fn history(
    db: &impl ConnectionTrait,
    kind: &str,
    id: &str,
) -> Result<Vec<(Event, i64, i64, bool)>, DbErr> {
    use sea_orm::QueryOrder;
    use webhook_event::Column as C;
    let rows = webhook_event::Entity::find()
        .filter(C::EntityKind.eq(kind))
        .filter(C::EntityId.eq(id))
        .order_by_asc(C::OrderNs)
        .order_by_asc(C::EventId)
        .all(db)
        .await?;
    let mut history: Vec<_> = rows
        .iter()
        .filter_map(|row| {
            let event = events::to_event(row)?;
            Some((event, row.seq, row.received_at_ns, row.outcome == "applied"))
        })
        .collect();
    events::in_key_order(&mut history, |(event, ..)| &event.key);
    Ok(history)
}

async fn delete(db: &impl ConnectionTrait, seqs: Vec<i64>) -> Result<u64, DbErr> {
    if seqs.is_empty() {
        return Ok(0);
    }
    let result = webhook_event::Entity::delete_many()
        .filter(webhook_event::Column::Seq.is_in(seqs))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

async fn prune_media(
    db: &impl ConnectionTrait,
    id: &str,
    cutoff_ns: i64,
) -> Result<Option<u64>, DbErr> {
    let (kept, prunable) = split(history(db, "media", id).await?, cutoff_ns);
    if media::fold(id, &kept) != entities::load_media(db, id).await? {
        return Ok(None);
    }
    delete(db, prunable).await.map(Some)
}

async fn prune_stream(
    db: &impl ConnectionTrait,
    id: &str,
    cutoff_ns: i64,
) -> Result<Option<u64>, DbErr> {
    let (kept_stream, mut prunable) = split(history(db, "live_stream", id).await?, cutoff_ns);
    if live::fold(id, &kept_stream) != entities::load_live(db, id).await? {
        return Ok(None);
    }
    for target in entities::targets_of(db, id).await? {
        let (mut kept, target_prunable) = split(
            history(db, "simulcast_target", &target.id).await?,
            cutoff_ns,
        );
        kept.extend(kept_stream.iter().cloned());
        kept.sort_by(|a, b| a.key.cmp(&b.key));
        if simulcast::fold(&target.id, id, &kept).as_ref() != Some(&target) {
            return Ok(None);
        }
        prunable.extend(target_prunable);
    }
    delete(db, prunable).await.map(Some)
}

/// Prunes now and then every `every`, until the server shuts down.
pub async fn run_in_background(
    db: DatabaseConnection,
    days: u32,
    every: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    if days == 0 {
        return;
    }
    loop {
        match prune(&db, days).await {
            Ok(pruned) if pruned.deleted > 0 || pruned.kept_entities > 0 => {
                tracing::info!(
                    deleted = pruned.deleted,
                    kept_entities = pruned.kept_entities,
                    "event log pruned"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "event log pruning failed; retrying later"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}
