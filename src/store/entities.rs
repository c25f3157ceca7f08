//! Loading and saving entity state: a row plus, for media and live streams, its playback ids.

use entity::{live_stream, media, playback_id, simulcast_target};
use sea_orm::sea_query::OnConflict;
use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityName, EntityTrait, ExprTrait,
    IdenStatic, IntoActiveModel, Iterable, ModelTrait, PrimaryKeyToColumn, QueryFilter, QueryOrder,
    QueryTrait, Related,
};

use super::script::Script;
use crate::webhook::fields::{Playback, WithPlaybackIds};
use crate::webhook::live::LiveState;
use crate::webhook::media::MediaState;
use crate::webhook::simulcast::TargetState;

/// The owner of a list of playback ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner<'a> {
    Media(&'a str),
    LiveStream(&'a str),
}

impl<'a> Owner<'a> {
    pub fn id(self) -> String {
        match self {
            Owner::Media(id) | Owner::LiveStream(id) => id.to_owned(),
        }
    }

    /// The rows of `list` as this owner's playback ids, in list order.
    pub fn rows<'l>(
        self,
        list: &'l [Playback],
    ) -> impl Iterator<Item = playback_id::Model> + use<'l, 'a> {
        list.iter()
            .enumerate()
            .map(move |(position, playback)| playback_id::Model {
                id: playback.id.clone(),
                media_id: matches!(self, Owner::Media(_)).then(|| self.id()),
                live_stream_id: matches!(self, Owner::LiveStream(_)).then(|| self.id()),
                access_policy: playback.access_policy.clone(),
                position: i32::try_from(position).unwrap_or(i32::MAX),
            })
    }
}

/// The playback ids of the owners `ids` (all media, or all live streams, as `column` says), by owner id:
/// one query. Every owner has an entry, empty when it has no playback id.
pub async fn load_playback_lists(
    db: &impl ConnectionTrait,
    column: playback_id::Column,
    ids: Vec<String>,
) -> Result<HashMap<String, Vec<Playback>>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut lists: HashMap<String, Vec<Playback>> =
        ids.iter().map(|id| (id.clone(), Vec::new())).collect();
    let rows = playback_id::Entity::find()
        .filter(column.is_in(ids))
        .order_by_asc(playback_id::Column::Position)
        .all(db)
        .await?;
    for mut row in rows {
        let Some(owner) = row.media_id.take().or(row.live_stream_id.take()) else {
            continue;
        };
        lists.entry(owner).or_default().push(playback(row));
    }
    Ok(lists)
}

/// A playback id as an owner's list holds it.
fn playback(row: playback_id::Model) -> Playback {
    Playback {
        id: row.id,
        access_policy: row.access_policy,
    }
}

/// Adds to `script` one statement that inserts `models`, or updates every column of those whose primary
/// key is stored.
pub fn upsert<E>(script: &mut Script, models: Vec<E::Model>)
where
    E: EntityTrait,
    E::Model: IntoActiveModel<E::ActiveModel>,
{
    if models.is_empty() {
        return;
    }
    let keys: Vec<E::Column> = E::PrimaryKey::iter()
        .map(PrimaryKeyToColumn::into_column)
        .collect();
    let others: Vec<E::Column> = E::Column::iter()
        .filter(|c| keys.iter().all(|k| k.as_str() != c.as_str()))
        .collect();
    let insert = E::insert_many(
        models
            .into_iter()
            .map(|model| model.into_active_model().reset_all()),
    )
    .on_conflict(OnConflict::columns(keys).update_columns(others).to_owned())
    .into_query();
    script.push_write(E::default().table_name(), insert);
}

/// Adds to `script` one statement that deletes the playback ids of `owners`, to save their new lists
/// with [`upsert`]. (A playback id is unique: if another owner has one of them, the upsert moves it.)
pub fn delete_playback_ids(script: &mut Script, owners: &[Owner<'_>]) {
    let (mut media, mut live) = (Vec::new(), Vec::new());
    for owner in owners {
        match owner {
            Owner::Media(id) => media.push((*id).to_owned()),
            Owner::LiveStream(id) => live.push((*id).to_owned()),
        }
    }
    if media.is_empty() && live.is_empty() {
        return;
    }
    let delete = playback_id::Entity::delete_many()
        .filter(
            playback_id::Column::MediaId
                .is_in(media)
                .or(playback_id::Column::LiveStreamId.is_in(live)),
        )
        .into_query();
    script.push_write(playback_id::Entity.table_name(), delete);
}

/// The stored row of a playback id: which media or stream plays it, if it is known.
pub async fn find_playback(
    db: &impl ConnectionTrait,
    playback: &str,
) -> Result<Option<playback_id::Model>, DbErr> {
    playback_id::Entity::find_by_id(playback).one(db).await
}

/// A row that owns playback ids: a media or a live stream.
pub trait PlaybackOwner: ModelTrait<Entity: Related<playback_id::Entity>> {
    /// The `playback_id` column that points at this kind of owner.
    const COLUMN: playback_id::Column;

    fn owner(&self) -> Owner<'_>;
}

impl PlaybackOwner for media::Model {
    const COLUMN: playback_id::Column = playback_id::Column::MediaId;

    fn owner(&self) -> Owner<'_> {
        Owner::Media(&self.id)
    }
}

impl PlaybackOwner for live_stream::Model {
    const COLUMN: playback_id::Column = playback_id::Column::LiveStreamId;

    fn owner(&self) -> Owner<'_> {
        Owner::LiveStream(&self.id)
    }
}

pub async fn load_media(db: &impl ConnectionTrait, id: &str) -> Result<Option<MediaState>, DbErr> {
    Ok(load_owners(db, vec![id.to_owned()]).await?.pop())
}

pub async fn load_live(db: &impl ConnectionTrait, id: &str) -> Result<Option<LiveState>, DbErr> {
    Ok(load_owners(db, vec![id.to_owned()]).await?.pop())
}

/// The media (or live streams) among `ids` that are stored, with their playback ids: one query (a join).
pub async fn load_owners<M>(
    db: &impl ConnectionTrait,
    ids: Vec<String>,
) -> Result<Vec<WithPlaybackIds<M>>, DbErr>
where
    M: PlaybackOwner,
    M::Entity: EntityTrait<Model = M>,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let id = <M::Entity as EntityTrait>::PrimaryKey::iter()
        .map(PrimaryKeyToColumn::into_column)
        .next()
        .expect("an entity has a primary key");
    let rows = M::Entity::find()
        .filter(id.is_in(ids))
        .find_with_related(playback_id::Entity)
        .order_by_asc(playback_id::Column::Position)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(row, playbacks)| WithPlaybackIds {
            row,
            playback_ids: playbacks.into_iter().map(playback).collect(),
        })
        .collect())
}

/// `rows` (media, or live streams) with their playback ids: one query.
pub async fn with_playback_ids<M: PlaybackOwner>(
    db: &impl ConnectionTrait,
    rows: Vec<M>,
) -> Result<Vec<WithPlaybackIds<M>>, DbErr> {
    let owners = rows.iter().map(|row| row.owner().id()).collect();
    let mut lists = load_playback_lists(db, M::COLUMN, owners).await?;
    Ok(rows
        .into_iter()
        .map(|row| WithPlaybackIds {
            playback_ids: lists.remove(&row.owner().id()).unwrap_or_default(),
            row,
        })
        .collect())
}

/// The simulcast targets among `ids` that are stored: one query.
pub async fn load_targets(
    db: &impl ConnectionTrait,
    ids: Vec<String>,
) -> Result<Vec<TargetState>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    simulcast_target::Entity::find()
        .filter(simulcast_target::Column::Id.is_in(ids))
        .all(db)
        .await
}

pub async fn load_target(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<TargetState>, DbErr> {
    simulcast_target::Entity::find_by_id(id).one(db).await
}

/// The simulcast targets of a stream, in id order.
pub async fn targets_of(
    db: &impl ConnectionTrait,
    stream: &str,
) -> Result<Vec<simulcast_target::Model>, DbErr> {
    simulcast_target::Entity::find()
        .filter(simulcast_target::Column::LiveStreamId.eq(stream))
        .order_by_asc(simulcast_target::Column::Id)
        .all(db)
        .await
}

/// Ids of the simulcast targets of a stream.
pub async fn target_ids_of(db: &impl ConnectionTrait, stream: &str) -> Result<Vec<String>, DbErr> {
    let rows = targets_of(db, stream).await?;
    Ok(rows.into_iter().map(|row| row.id).collect())
}

/// Empties the entity tables (for `replay`).
pub async fn clear(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    playback_id::Entity::delete_many().exec(db).await?;
    simulcast_target::Entity::delete_many().exec(db).await?;
    live_stream::Entity::delete_many().exec(db).await?;
    media::Entity::delete_many().exec(db).await?;
    Ok(())
}
