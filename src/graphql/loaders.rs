//! Batch loading of nested fields (DataLoader): a page of 100 streams with every nested field costs one
//! query per kind of nested field, not one per stream.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use entity::{live_stream, media, playback_id, simulcast_target};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};

use crate::store::entities;
use crate::webhook::fields::Playback;

/// The loaders of one request. Made per request and caching within it: a key asked for twice in one
/// request (a stream's playback ids from two places in the query) is loaded once, and nothing outlives it.
pub type Loaders = DataLoader<Batch, HashMapCache>;

pub fn loaders(db: DatabaseConnection) -> Loaders {
    DataLoader::with_cache(Batch { db }, tokio::spawn, HashMapCache::default())
}

/// Loaders for a long-lived websocket connection: batching without caching, so every subscription
/// message sees current rows.
pub fn uncached(db: DatabaseConnection) -> Loaders {
    let loaders = loaders(db);
    loaders.enable_all_cache(false);
    loaders
}

pub struct Batch {
    db: DatabaseConnection,
}

/// Playback ids of a media.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlaybackOfMedia(pub String);
/// Playback ids of a live stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlaybackOfStream(pub String);
/// Simulcast targets of a live stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetsOfStream(pub String);
/// Recordings (media) of a live stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordingsOfStream(pub String);
/// A live stream by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamById(pub String);

type Loaded<K, V> = Result<HashMap<K, V>, Arc<DbErr>>;

/// Playback ids of many owners in one query, grouped by owner (every owner gets an entry).
async fn playback_ids(
    db: &DatabaseConnection,
    column: playback_id::Column,
    owners: Vec<String>,
) -> Result<HashMap<String, Arc<Vec<Playback>>>, Arc<DbErr>> {
    let lists = entities::load_playback_lists(db, column, owners).await?;
    Ok(lists.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
}

impl Loader<PlaybackOfMedia> for Batch {
    type Value = Arc<Vec<Playback>>;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[PlaybackOfMedia]) -> Loaded<PlaybackOfMedia, Self::Value> {
        let owners = keys.iter().map(|k| k.0.clone()).collect();
        let found = playback_ids(&self.db, playback_id::Column::MediaId, owners).await?;
        Ok(found
            .into_iter()
            .map(|(k, v)| (PlaybackOfMedia(k), v))
            .collect())
    }
}

impl Loader<PlaybackOfStream> for Batch {
    type Value = Arc<Vec<Playback>>;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[PlaybackOfStream]) -> Loaded<PlaybackOfStream, Self::Value> {
        let owners = keys.iter().map(|k| k.0.clone()).collect();
        let found = playback_ids(&self.db, playback_id::Column::LiveStreamId, owners).await?;
        Ok(found
            .into_iter()
            .map(|(k, v)| (PlaybackOfStream(k), v))
            .collect())
    }
}

impl Loader<TargetsOfStream> for Batch {
    type Value = Arc<Vec<simulcast_target::Model>>;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[TargetsOfStream]) -> Loaded<TargetsOfStream, Self::Value> {
        let rows = simulcast_target::Entity::find()
            .filter(simulcast_target::Column::LiveStreamId.is_in(keys.iter().map(|k| k.0.clone())))
            .order_by_asc(simulcast_target::Column::SortNs)
            .order_by_asc(simulcast_target::Column::Id)
            .all(&self.db)
            .await?;
        let mut grouped: HashMap<TargetsOfStream, Vec<_>> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for row in rows {
            if let Some(list) = grouped.get_mut(&TargetsOfStream(row.live_stream_id.clone())) {
                list.push(row);
            }
        }
        Ok(grouped.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}

/// A recording and its playback ids, loaded together so that a page of streams' recordings costs two
/// queries however their nested fields resolve.
pub type Recording = (media::Model, Arc<Vec<Playback>>);

impl Loader<RecordingsOfStream> for Batch {
    type Value = Arc<Vec<Recording>>;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[RecordingsOfStream]) -> Loaded<RecordingsOfStream, Self::Value> {
        let rows = media::Entity::find()
            .filter(media::Column::LiveStreamId.is_in(keys.iter().map(|k| k.0.clone())))
            .order_by_desc(media::Column::SortNs)
            .order_by_desc(media::Column::Id)
            .all(&self.db)
            .await?;
        let media_ids = rows.iter().map(|row| row.id.clone()).collect();
        let mut playback = playback_ids(&self.db, playback_id::Column::MediaId, media_ids).await?;
        let mut grouped: HashMap<RecordingsOfStream, Vec<_>> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for row in rows {
            let key = RecordingsOfStream(row.live_stream_id.clone().unwrap_or_default());
            let ids = playback.remove(&row.id).unwrap_or_default();
            if let Some(list) = grouped.get_mut(&key) {
                list.push((row, ids));
            }
        }
        Ok(grouped.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}

impl Loader<StreamById> for Batch {
    type Value = Arc<live_stream::Model>;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[StreamById]) -> Loaded<StreamById, Self::Value> {
        let rows = live_stream::Entity::find()
            .filter(live_stream::Column::Id.is_in(keys.iter().map(|k| k.0.clone())))
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (StreamById(row.id.clone()), Arc::new(row)))
            .collect())
    }
}
