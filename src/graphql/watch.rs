//! The streams behind the subscriptions: following one entity, or every change of one kind.

use std::future::Future;

use async_graphql::Result;
use entity::{live_stream, log_position, media, webhook_event};
use futures_util::Stream;
use sea_orm::{
    AccessMode, ColumnTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, IsolationLevel, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tokio::sync::broadcast::error::RecvError;

use super::errors::internal;
use super::subscription::{Handles, Target};
use crate::db::again_if_lost;
use crate::events::relay::load_change;
use crate::events::{Moved, Snapshot};
use crate::metrics::Metrics;
use crate::store::entities;
use crate::webhook::fields::Playback;

/// Events read from the log per query while catching up.
pub const CATCH_UP_PAGE: u64 = 500;

/// Stored events after `position`, oldest first, one page.
pub async fn events_after(
    db: &DatabaseConnection,
    position: i64,
) -> Result<Vec<webhook_event::Model>, DbErr> {
    webhook_event::Entity::find()
        .filter(webhook_event::Column::Position.gt(position))
        .order_by_asc(webhook_event::Column::Position)
        .limit(CATCH_UP_PAGE)
        .all(db)
        .await
}

/// A subscription's read of the database: run again on another connection where PostgreSQL ended this
/// one (as it does when it restarts), as far as `db::Attempts` allow, each new attempt counted in
/// `fastpix_sync_graphql_query_retries_total`; any other failure is the subscription's error.
pub async fn reading<T, F, Fut>(metrics: &Metrics, read: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
{
    again_if_lost(read, || metrics.graphql_retry())
        .await
        .map_err(internal)
}

/// An entity kind a subscription can follow.
pub trait Watched: Clone + PartialEq + Send + Sync + 'static {
    fn from_moved(moved: &Moved) -> Option<&Self>;
    fn id(&self) -> &str;
    fn playback_ids(&self) -> &[Playback];
    fn is_deleted(&self) -> bool;
    /// Whether `moved` is an entity this one's nested fields show (a stream's simulcast targets and
    /// recordings, a recording's stream): its subscribers then get its state again, so those fields show
    /// the change.
    fn touched_by(&self, moved: &Moved) -> bool;
    fn load(
        db: &DatabaseTransaction,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self>, DbErr>> + Send;
    /// The id of the entity of this kind a playback id plays, if known.
    fn owner_of(
        db: &DatabaseConnection,
        playback_id: &str,
    ) -> impl Future<Output = Result<Option<String>, DbErr>> + Send;
}

/// The two watchable kinds differ only in their types, their loader and their playback id column.
macro_rules! watched {
    ($model:ty, $variant:ident, $load:path, $owner:ident, $touched_by:expr) => {
        impl Watched for Snapshot<$model> {
            fn from_moved(moved: &Moved) -> Option<&Self> {
                match moved {
                    Moved::$variant(snapshot) => Some(snapshot),
                    _ => None,
                }
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
            fn touched_by(&self, moved: &Moved) -> bool {
                $touched_by(self, moved)
            }
            async fn load(db: &DatabaseTransaction, id: &str) -> Result<Option<Self>, DbErr> {
                let state = $load(db, id).await?;
                Ok(state.map(|state| Snapshot::new(state.row, state.playback_ids)))
            }
            async fn owner_of(
                db: &DatabaseConnection,
                playback: &str,
            ) -> Result<Option<String>, DbErr> {
                let row = entities::find_playback(db, playback).await?;
                Ok(row.and_then(|r| r.$owner))
            }
        }
    };
}

/// A media shows its stream (when it is a recording).
fn touched_media(media: &Snapshot<media::Model>, moved: &Moved) -> bool {
    matches!(moved, Moved::LiveStream(stream)
        if media.row.live_stream_id.as_deref() == Some(stream.row.id.as_str()))
}

/// A stream shows its simulcast targets and its recordings.
fn touched_stream(stream: &Snapshot<live_stream::Model>, moved: &Moved) -> bool {
    match moved {
        Moved::SimulcastTarget(target) => target.live_stream_id == stream.row.id,
        Moved::Media(media) => media.row.live_stream_id.as_deref() == Some(stream.row.id.as_str()),
        Moved::LiveStream(_) => false,
    }
}

watched!(
    media::Model,
    Media,
    entities::load_media,
    media_id,
    touched_media
);
watched!(
    live_stream::Model,
    LiveStream,
    entities::load_live,
    live_stream_id,
    touched_stream
);

/// The last position and, as of exactly that position, the entity `id`: both read in one snapshot, so
/// changes after the position are exactly those the state does not reflect yet.
async fn load_at<W: Watched>(db: &DatabaseConnection, id: &str) -> Result<(i64, Option<W>), DbErr> {
    let txn = if db.get_database_backend() == DbBackend::Postgres {
        db.begin_with_config(
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        )
        .await?
    } else {
        db.begin().await?
    };
    let position = log_position::Entity::find_by_id(1)
        .one(&txn)
        .await?
        .map_or(0, |row| row.last);
    let state = W::load(&txn, id).await?;
    txn.commit().await?;
    Ok((position, state))
}

/// The last position handed out.
pub async fn current_position(db: &DatabaseConnection) -> Result<i64, DbErr> {
    Ok(log_position::Entity::find_by_id(1)
        .one(db)
        .await?
        .map_or(0, |row| row.last))
}

/// One entity: its current state (once it exists), then every change, until its deletion.
///
/// The bus delivers changes in position order. `seen` is the position the last sent state reflects:
/// older changes (already in a state read from the database) are skipped, so a client never goes back.
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
        let mut seen = 0;
        // Read the current state at the start and after falling behind the channel.
        let mut reload = true;
        loop {
            if reload {
                reload = false;
                if let (None, Target::PlaybackId(playback)) = (&id, &target) {
                    id = reading(&metrics, || W::owner_of(&db, playback)).await?;
                }
                if let Some(current_id) = &id {
                    let (position, current) = reading(&metrics, || load_at::<W>(&db, current_id)).await?;
                    seen = seen.max(position);
                    if let Some(current) = current.filter(|c| last.as_ref() != Some(c)) {
                        last = Some(current.clone());
                        yield current;
                    }
                }
            }
            if last.as_ref().is_some_and(W::is_deleted) {
                break;
            }
            match changes.recv().await {
                Ok(change) if change.position <= seen => {}
                Ok(change) => {
                    seen = change.position;
                    let mut sent = false;
                    for snapshot in change.moved.iter().filter_map(W::from_moved) {
                        let ours = match (&id, &target) {
                            (Some(id), _) => snapshot.id() == id,
                            (None, Target::PlaybackId(p)) => snapshot.playback_ids().iter().any(|x| &x.id == p),
                            (None, Target::Id(_)) => false,
                        };
                        if ours && last.as_ref() != Some(snapshot) {
                            id = Some(snapshot.id().to_owned());
                            last = Some(snapshot.clone());
                            sent = true;
                            yield snapshot.clone();
                        }
                    }
                    // An entity its nested fields show changed: send it again, those fields differ.
                    if let Some(current) = last.as_ref().filter(|l| !sent && change.moved.iter().any(|m| l.touched_by(m))).cloned() {
                        yield current;
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

/// Every change to entities of one kind that passes `filter`, from now on: after the log's position read
/// once the feed listens to the bus. A change published before it listens was committed before that
/// read, so it is not sent; one committed after it comes from the bus, or from the log when the bus
/// skipped it.
pub async fn updates_stream<W: Watched>(
    handles: Handles,
    filter: impl Fn(&W) -> bool + Send + 'static,
) -> Result<impl Stream<Item = Result<W>>> {
    let Handles { db, bus, metrics } = handles;
    let mut changes = bus.subscribe();
    let mut seen = reading(&metrics, || current_position(&db)).await?;
    Ok(async_stream::try_stream! {
        loop {
            let change = match changes.recv().await {
                Ok(change) if change.position <= seen => continue,
                Ok(change) => change,
                Err(RecvError::Lagged(_)) => {
                    metrics.lagged();
                    // Missed changes are rebuilt from the log, each as of its own position, in order.
                    match reading(&metrics, || current_position(&db)).await? {
                        latest if latest > seen => reading(&metrics, || load_change(&db, latest)).await?,
                        _ => continue,
                    }
                    .ok_or_else(|| internal("a committed change vanished from the log"))?
                }
                Err(RecvError::Closed) => break,
            };
            let mut missed = Vec::new();
            for position in seen + 1..change.position {
                if let Some(change) = reading(&metrics, || load_change(&db, position)).await? {
                    missed.push(change);
                }
            }
            missed.push(change);
            for change in missed {
                seen = change.position;
                for snapshot in change.moved.iter().filter_map(W::from_moved) {
                    if filter(snapshot) {
                        yield snapshot.clone();
                    }
                }
            }
        }
    })
}
