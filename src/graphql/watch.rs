//! The streams behind the subscriptions: following one entity, or every change of one kind.

use std::future::Future;
use std::sync::Arc;

use async_graphql::Result;
use entity::{live_stream, log_position, media, playback_id, webhook_event};
use futures_util::Stream;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tokio::sync::broadcast::error::RecvError;

use super::errors::internal;
use super::subscription::{Handles, Target};
use crate::events::{Moved, Snapshot};
use crate::store::entities;
use crate::webhook::fields::Playback;

/// Events read from the log per query while catching up.
pub const CATCH_UP_PAGE: u64 = 500;

/// Stored events after `position`, oldest first, one page.
pub async fn events_after(
    db: &DatabaseConnection,
    position: i64,
) -> Result<Vec<webhook_event::Model>> {
    webhook_event::Entity::find()
        .filter(webhook_event::Column::Position.gt(position))
        .order_by_asc(webhook_event::Column::Position)
        .limit(CATCH_UP_PAGE)
        .all(db)
        .await
        .map_err(internal)
}

/// An entity kind a subscription can follow.
pub trait Watched: Clone + PartialEq + Send + Sync + 'static {
    /// `entity_kind` of its events in the log.
    const KIND: &'static str;
    fn from_moved(moved: &Moved) -> Option<&Self>;
    /// The order key of the event that last changed it.
    fn key(&self) -> (i64, &str);
    fn id(&self) -> &str;
    fn playback_ids(&self) -> &[Playback];
    fn is_deleted(&self) -> bool;
    fn load(
        db: &DatabaseConnection,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self>, DbErr>> + Send;
    /// The id of the entity of this kind a playback id plays, if known.
    fn owner_of(
        db: &DatabaseConnection,
        playback_id: &str,
    ) -> impl Future<Output = Result<Option<String>, DbErr>> + Send;
}

impl Watched for Snapshot<media::Model> {
    const KIND: &'static str = "media";
    fn from_moved(moved: &Moved) -> Option<&Self> {
        match moved {
            Moved::Media(snapshot) => Some(snapshot),
            _ => None,
        }
    }
    fn key(&self) -> (i64, &str) {
        (self.row.last_event_ns, &self.row.last_event_id)
    }
    fn id(&self) -> &str {
        &self.row.id
    }
    fn playback_ids(&self) -> &[Playback] {
        &self.playback_ids
    }
    fn is_deleted(&self) -> bool {
        self.row.status == "DELETED"
    }
    async fn load(db: &DatabaseConnection, id: &str) -> Result<Option<Self>, DbErr> {
        Ok(entities::load_media(db, id).await?.map(|state| Snapshot {
            row: Arc::new(state.row),
            playback_ids: Arc::new(state.playback_ids),
        }))
    }
    async fn owner_of(db: &DatabaseConnection, playback: &str) -> Result<Option<String>, DbErr> {
        Ok(playback_id::Entity::find_by_id(playback)
            .one(db)
            .await?
            .and_then(|r| r.media_id))
    }
}

impl Watched for Snapshot<live_stream::Model> {
    const KIND: &'static str = "live_stream";
    fn from_moved(moved: &Moved) -> Option<&Self> {
        match moved {
            Moved::LiveStream(snapshot) => Some(snapshot),
            _ => None,
        }
    }
    fn key(&self) -> (i64, &str) {
        (self.row.last_event_ns, &self.row.last_event_id)
    }
    fn id(&self) -> &str {
        &self.row.id
    }
    fn playback_ids(&self) -> &[Playback] {
        &self.playback_ids
    }
    fn is_deleted(&self) -> bool {
        self.row.status == "DELETED"
    }
    async fn load(db: &DatabaseConnection, id: &str) -> Result<Option<Self>, DbErr> {
        Ok(entities::load_live(db, id).await?.map(|state| Snapshot {
            row: Arc::new(state.row),
            playback_ids: Arc::new(state.playback_ids),
        }))
    }
    async fn owner_of(db: &DatabaseConnection, playback: &str) -> Result<Option<String>, DbErr> {
        Ok(playback_id::Entity::find_by_id(playback)
            .one(db)
            .await?
            .and_then(|r| r.live_stream_id))
    }
}

/// True when `snapshot` is worth sending after `last`: a newer event, or the same event refolded into a
/// different state (a late event can change an entity without changing its newest key).
fn is_news<W: Watched>(last: Option<&W>, snapshot: &W) -> bool {
    last.is_none_or(|last| {
        snapshot.key() > last.key() || (snapshot.key() == last.key() && snapshot != last)
    })
}

/// One entity: its current state (once it exists), then every change, until its deletion.
pub fn entity_stream<W: Watched>(
    handles: Handles,
    target: Target,
) -> impl Stream<Item = Result<W>> {
    let Handles { db, bus, metrics } = handles;
    let mut changes = bus.subscribe();
    async_stream::try_stream! {
        let mut id = match &target {
            Target::Id(id) => Some(id.clone()),
            Target::PlaybackId(_) => None,
        };
        let mut last: Option<W> = None;
        // Read the current state at the start and after falling behind the channel.
        let mut reload = true;
        loop {
            if reload {
                reload = false;
                if let (None, Target::PlaybackId(playback)) = (&id, &target) {
                    id = W::owner_of(&db, playback).await.map_err(internal)?;
                }
                let current = match &id {
                    Some(id) => W::load(&db, id).await.map_err(internal)?,
                    None => None,
                };
                if let Some(current) = current.filter(|c| is_news(last.as_ref(), c)) {
                    last = Some(current.clone());
                    yield current;
                }
            }
            if last.as_ref().is_some_and(W::is_deleted) {
                break;
            }
            match changes.recv().await {
                Ok(change) => {
                    for snapshot in change.moved.iter().filter_map(W::from_moved) {
                        let ours = match (&id, &target) {
                            (Some(id), _) => snapshot.id() == id,
                            (None, Target::PlaybackId(p)) => snapshot.playback_ids().iter().any(|x| &x.id == p),
                            (None, Target::Id(_)) => false,
                        };
                        if ours && is_news(last.as_ref(), snapshot) {
                            id = Some(snapshot.id().to_owned());
                            last = Some(snapshot.clone());
                            yield snapshot.clone();
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    metrics.lagged();
                    reload = true;
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
}

/// Every change to entities of one kind that passes `filter`, from the moment of subscribing.
pub fn updates_stream<W: Watched>(
    handles: Handles,
    filter: impl Fn(&W) -> bool + Send + 'static,
) -> impl Stream<Item = Result<W>> {
    let Handles { db, bus, metrics } = handles;
    let mut changes = bus.subscribe();
    async_stream::try_stream! {
        // Changes up to `seen` were sent, or happened before the subscription.
        let mut seen = log_position::Entity::find_by_id(1)
            .one(&db)
            .await
            .map_err(internal)?
            .map_or(0, |row| row.last);
        loop {
            match changes.recv().await {
                Ok(change) if change.position <= seen => {}
                Ok(change) => {
                    seen = change.position;
                    for snapshot in change.moved.iter().filter_map(W::from_moved) {
                        if filter(snapshot) {
                            yield snapshot.clone();
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Send the current state of every entity of this kind changed since `seen`.
                    metrics.lagged();
                    let mut ids = Vec::new();
                    loop {
                        let page = events_after(&db, seen).await?;
                        let full = page.len() as u64 == CATCH_UP_PAGE;
                        for row in page {
                            seen = row.position.unwrap_or(seen);
                            let id = row.entity_id.filter(|_| row.entity_kind.as_deref() == Some(W::KIND));
                            if let Some(id) = id.filter(|id| !ids.contains(id)) {
                                ids.push(id);
                            }
                        }
                        if !full {
                            break;
                        }
                    }
                    for id in ids {
                        let current = W::load(&db, &id).await.map_err(internal)?;
                        if let Some(current) = current.filter(|c| filter(c)) {
                            yield current;
                        }
                    }
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
}
