//! Loading and saving entity state: a row plus, for media and live streams, its playback ids.

use entity::{live_stream, media, playback_id, simulcast_target};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder,
};

use crate::webhook::fields::Playback;
use crate::webhook::live::LiveState;
use crate::webhook::media::MediaState;
use crate::webhook::simulcast::TargetState;

/// Which owner column a playback id points through.
#[derive(Clone, Copy)]
enum Owner<'a> {
    Media(&'a str),
    LiveStream(&'a str),
}

impl Owner<'_> {
    fn column(self) -> (playback_id::Column, String) {
        match self {
            Owner::Media(id) => (playback_id::Column::MediaId, id.to_owned()),
            Owner::LiveStream(id) => (playback_id::Column::LiveStreamId, id.to_owned()),
        }
    }
}

async fn load_playback_ids(
    db: &impl ConnectionTrait,
    owner: Owner<'_>,
) -> Result<Vec<Playback>, DbErr> {
    let (column, id) = owner.column();
    let rows = playback_id::Entity::find()
        .filter(column.eq(id))
        .order_by_asc(playback_id::Column::Position)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| Playback {
            id: row.id,
            access_policy: row.access_policy,
        })
        .collect())
}

/// Replaces an owner's playback ids. A playback id is unique: if another owner had it, it moves.
/// A new owner (`is_new`: its row did not exist) has no playback ids to delete, since they are only
/// saved with their owner's row.
async fn save_playback_ids(
    db: &impl ConnectionTrait,
    owner: Owner<'_>,
    list: &[Playback],
    is_new: bool,
) -> Result<(), DbErr> {
    let (column, id) = owner.column();
    if !is_new {
        playback_id::Entity::delete_many()
            .filter(column.eq(id))
            .exec(db)
            .await?;
    }
    for (position, playback) in list.iter().enumerate() {
        let row = playback_id::Model {
            id: playback.id.clone(),
            media_id: matches!(owner, Owner::Media(_)).then(|| id_of(owner)),
            live_stream_id: matches!(owner, Owner::LiveStream(_)).then(|| id_of(owner)),
            access_policy: playback.access_policy.clone(),
            position: i32::try_from(position).unwrap_or(i32::MAX),
        };
        playback_id::Entity::insert(row.into_active_model().reset_all())
            .on_conflict(
                OnConflict::column(playback_id::Column::Id)
                    .update_columns([
                        playback_id::Column::MediaId,
                        playback_id::Column::LiveStreamId,
                        playback_id::Column::AccessPolicy,
                        playback_id::Column::Position,
                    ])
                    .to_owned(),
            )
            .exec(db)
            .await?;
    }
    Ok(())
}

fn id_of(owner: Owner<'_>) -> String {
    match owner {
        Owner::Media(id) | Owner::LiveStream(id) => id.to_owned(),
    }
}

/// Writes a whole row: insert when it is new, else update every column.
async fn save_row<A>(db: &impl ConnectionTrait, model: A, is_new: bool) -> Result<(), DbErr>
where
    A: ActiveModelTrait + sea_orm::ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
{
    let active = model.reset_all();
    if is_new {
        A::Entity::insert(active).exec_without_returning(db).await?;
    } else {
        active.update(db).await?;
    }
    Ok(())
}

/// The stored row of a playback id: which media or stream plays it, if it is known.
pub async fn find_playback(
    db: &impl ConnectionTrait,
    playback: &str,
) -> Result<Option<playback_id::Model>, DbErr> {
    playback_id::Entity::find_by_id(playback).one(db).await
}

pub async fn load_media(db: &impl ConnectionTrait, id: &str) -> Result<Option<MediaState>, DbErr> {
    let Some(row) = media::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    let playback_ids = load_playback_ids(db, Owner::Media(id)).await?;
    Ok(Some(MediaState { row, playback_ids }))
}

pub async fn save_media(
    db: &impl ConnectionTrait,
    old: Option<&MediaState>,
    new: &MediaState,
) -> Result<(), DbErr> {
    if old.map(|o| &o.row) != Some(&new.row) {
        save_row(db, new.row.clone().into_active_model(), old.is_none()).await?;
    }
    if old.map(|o| &o.playback_ids) != Some(&new.playback_ids) {
        save_playback_ids(
            db,
            Owner::Media(&new.row.id),
            &new.playback_ids,
            old.is_none(),
        )
        .await?;
    }
    Ok(())
}

pub async fn load_live(db: &impl ConnectionTrait, id: &str) -> Result<Option<LiveState>, DbErr> {
    let Some(row) = live_stream::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    let playback_ids = load_playback_ids(db, Owner::LiveStream(id)).await?;
    Ok(Some(LiveState { row, playback_ids }))
}

pub async fn save_live(
    db: &impl ConnectionTrait,
    old: Option<&LiveState>,
    new: &LiveState,
) -> Result<(), DbErr> {
    if old.map(|o| &o.row) != Some(&new.row) {
        save_row(db, new.row.clone().into_active_model(), old.is_none()).await?;
    }
    if old.map(|o| &o.playback_ids) != Some(&new.playback_ids) {
        save_playback_ids(
            db,
            Owner::LiveStream(&new.row.id),
            &new.playback_ids,
            old.is_none(),
        )
        .await?;
    }
    Ok(())
}

pub async fn load_target(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<TargetState>, DbErr> {
    simulcast_target::Entity::find_by_id(id).one(db).await
}

pub async fn save_target(
    db: &impl ConnectionTrait,
    old: Option<&TargetState>,
    new: &TargetState,
) -> Result<(), DbErr> {
    save_row(db, new.clone().into_active_model(), old.is_none()).await
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
