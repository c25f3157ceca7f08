//! `Query` (SPEC §4): lookups, and Relay connections newest first.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, Object, Result};
use entity::{live_stream, media, playback_id, simulcast_target, webhook_event};
use sea_orm::sea_query::ExprTrait;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::cache::PlaybackCache;
use super::errors::{internal, not_found};
use super::loaders::playback_ids;
use super::pagination::{Position, decode, decode_event_cursor, encode, event_cursor, page_size};
use super::types::{
    LiveStream, LiveStreamStatus, Media, MediaStatus, SimulcastTarget, WebhookEvent,
};
use super::{auth::Role, errors::forbidden};
use crate::events::Snapshot;

pub struct Query;

fn db<'a>(ctx: &'a Context<'_>) -> Result<&'a DatabaseConnection> {
    ctx.data::<DatabaseConnection>()
}

/// Rows after `position` in `(sort desc, id desc)` order.
fn after<C: ColumnTrait>(sort: C, id: C, position: &Position) -> Condition {
    Condition::any()
        .add(sort.lt(position.sort))
        .add(sort.eq(position.sort).and(id.lt(position.id.clone())))
}

/// Media with their playback ids attached (one query for all of them).
async fn media_with_playback(
    db: &DatabaseConnection,
    rows: Vec<media::Model>,
) -> Result<Vec<Media>> {
    let ids = rows.iter().map(|r| r.id.clone()).collect();
    let mut playback = playback_ids(db, playback_id::Column::MediaId, ids)
        .await
        .map_err(internal)?;
    Ok(rows
        .into_iter()
        .map(|row| Media {
            playback_ids: playback.remove(&row.id),
            ..Media::from(row)
        })
        .collect())
}

/// Live streams with their playback ids attached (one query for all of them).
async fn streams_with_playback(
    db: &DatabaseConnection,
    rows: Vec<live_stream::Model>,
) -> Result<Vec<LiveStream>> {
    let ids = rows.iter().map(|r| r.id.clone()).collect();
    let mut playback = playback_ids(db, playback_id::Column::LiveStreamId, ids)
        .await
        .map_err(internal)?;
    Ok(rows
        .into_iter()
        .map(|row| LiveStream {
            playback_ids: playback.remove(&row.id),
            ..LiveStream::from(row)
        })
        .collect())
}

/// Builds a connection from `limit + 1` fetched rows.
/// The arguments of a `mediaList` / `liveStreams` page.
struct ListFilter<'a> {
    first: i32,
    after: Option<&'a str>,
    statuses: Option<Vec<&'static str>>,
    include_deleted: bool,
}

/// One page of an entity table, newest first by `(sort, id)`, and whether more follow. `columns` are the
/// table's status, sort and id columns; `list` names the list in its cursors.
async fn page<E: EntityTrait>(
    db: &DatabaseConnection,
    list: &str,
    [status, sort, id]: [E::Column; 3],
    filter: ListFilter<'_>,
) -> Result<(Vec<E::Model>, bool)> {
    let limit = page_size(filter.first)?;
    let mut query = E::find();
    if !filter.include_deleted {
        query = query.filter(status.ne("DELETED"));
    }
    if let Some(statuses) = filter.statuses {
        query = query.filter(status.is_in(statuses));
    }
    if let Some(cursor) = filter.after {
        query = query.filter(after(sort, id, &decode(list, cursor)?));
    }
    let rows = query
        .order_by_desc(sort)
        .order_by_desc(id)
        .limit(limit + 1)
        .all(db)
        .await
        .map_err(internal)?;
    Ok(trim(rows, limit))
}

/// Keeps the first `limit` of `limit + 1` fetched rows; tells whether there was one more.
fn trim<R>(mut rows: Vec<R>, limit: u64) -> (Vec<R>, bool) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_next = rows.len() > limit;
    rows.truncate(limit);
    (rows, has_next)
}

fn connection<N: async_graphql::OutputType>(
    cursors: Vec<String>,
    nodes: Vec<N>,
    has_previous: bool,
    has_next: bool,
) -> Connection<String, N> {
    let mut page = Connection::new(has_previous, has_next);
    page.edges.extend(
        cursors
            .into_iter()
            .zip(nodes)
            .map(|(cursor, node)| Edge::new(cursor, node)),
    );
    page
}

fn list_cursor(list: &str, sort: i64, id: &str) -> String {
    encode(
        list,
        &Position {
            sort,
            id: id.to_owned(),
        },
    )
}

/// The stored row of a playback id (which media or stream it plays), if known.
async fn playback_row(
    db: &DatabaseConnection,
    playback: &str,
) -> Result<Option<playback_id::Model>> {
    playback_id::Entity::find_by_id(playback)
        .one(db)
        .await
        .map_err(internal)
}

#[Object]
impl Query {
    /// A media by its FastPix id (deleted media are returned as tombstones).
    async fn media(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Media>> {
        let db = db(ctx)?;
        let row = media::Entity::find_by_id(id.as_str())
            .one(db)
            .await
            .map_err(internal)?;
        let row = row.ok_or_else(|| not_found("media", &id))?;
        Ok(media_with_playback(db, vec![row]).await?.pop())
    }

    /// The media a playback id plays: what a player page asks first.
    async fn media_by_playback_id(
        &self,
        ctx: &Context<'_>,
        playback_id: String,
    ) -> Result<Option<Media>> {
        let cache = ctx.data_opt::<PlaybackCache>();
        if let Some(kept) = cache.and_then(|cache| cache.get(&playback_id)) {
            return Ok(Some(Media::from(kept)));
        }
        let generation = cache.map(PlaybackCache::generation);
        let db = db(ctx)?;
        let owner = playback_row(db, &playback_id).await?;
        let Some(media_id) = owner.and_then(|row| row.media_id) else {
            return Err(not_found("media with playback id", &playback_id));
        };
        let row = media::Entity::find_by_id(media_id)
            .one(db)
            .await
            .map_err(internal)?;
        let row = row.ok_or_else(|| not_found("media with playback id", &playback_id))?;
        let found = media_with_playback(db, vec![row]).await?.pop();
        if let (Some(cache), Some(generation), Some(media)) = (cache, generation, &found) {
            let snapshot = Snapshot {
                row: media.row.clone(),
                playback_ids: media.playback_ids.clone().unwrap_or_default(),
            };
            cache.put(generation, &playback_id, snapshot);
        }
        Ok(found)
    }

    /// Media, newest first. `first` is capped at 100. Deleted media only with `includeDeleted`.
    #[graphql(complexity = "usize::try_from(first.clamp(1, 100)).unwrap_or(1) * child_complexity")]
    async fn media_list(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        status: Option<Vec<MediaStatus>>,
        #[graphql(default = false)] include_deleted: bool,
    ) -> Result<Connection<String, Media>> {
        use media::Column as C;
        let statuses = status.map(|s| s.iter().map(|s| s.as_str()).collect());
        let filter = ListFilter {
            first,
            after: after.as_deref(),
            statuses,
            include_deleted,
        };
        let (rows, has_next) =
            page::<media::Entity>(db(ctx)?, "media", [C::Status, C::SortNs, C::Id], filter).await?;
        let cursors = rows
            .iter()
            .map(|r| list_cursor("media", r.sort_ns, &r.id))
            .collect();
        let nodes = media_with_playback(db(ctx)?, rows).await?;
        Ok(connection(cursors, nodes, after.is_some(), has_next))
    }

    async fn live_stream(&self, ctx: &Context<'_>, id: ID) -> Result<Option<LiveStream>> {
        let db = db(ctx)?;
        let row = live_stream::Entity::find_by_id(id.as_str())
            .one(db)
            .await
            .map_err(internal)?;
        let row = row.ok_or_else(|| not_found("live stream", &id))?;
        Ok(streams_with_playback(db, vec![row]).await?.pop())
    }

    async fn live_stream_by_playback_id(
        &self,
        ctx: &Context<'_>,
        playback_id: String,
    ) -> Result<Option<LiveStream>> {
        let db = db(ctx)?;
        let owner = playback_row(db, &playback_id)
            .await?
            .and_then(|row| row.live_stream_id);
        let row = match owner {
            Some(id) => live_stream::Entity::find_by_id(id)
                .one(db)
                .await
                .map_err(internal)?,
            None => None,
        };
        let row = row.ok_or_else(|| not_found("live stream with playback id", &playback_id))?;
        Ok(streams_with_playback(db, vec![row]).await?.pop())
    }

    /// Live streams, newest first. `first` is capped at 100. Deleted streams only with `includeDeleted`.
    #[graphql(complexity = "usize::try_from(first.clamp(1, 100)).unwrap_or(1) * child_complexity")]
    async fn live_streams(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        status: Option<Vec<LiveStreamStatus>>,
        #[graphql(default = false)] include_deleted: bool,
    ) -> Result<Connection<String, LiveStream>> {
        use live_stream::Column as C;
        let statuses = status.map(|s| s.iter().map(|s| s.as_str()).collect());
        let filter = ListFilter {
            first,
            after: after.as_deref(),
            statuses,
            include_deleted,
        };
        let columns = [C::Status, C::SortNs, C::Id];
        let (rows, has_next) =
            page::<live_stream::Entity>(db(ctx)?, "liveStream", columns, filter).await?;
        let cursors = rows
            .iter()
            .map(|r| list_cursor("liveStream", r.sort_ns, &r.id))
            .collect();
        let nodes = streams_with_playback(db(ctx)?, rows).await?;
        Ok(connection(cursors, nodes, after.is_some(), has_next))
    }

    async fn simulcast_target(&self, ctx: &Context<'_>, id: ID) -> Result<Option<SimulcastTarget>> {
        let row = simulcast_target::Entity::find_by_id(id.as_str())
            .one(db(ctx)?)
            .await
            .map_err(internal)?;
        row.map(SimulcastTarget::from)
            .map(Some)
            .ok_or_else(|| not_found("simulcast target", &id))
    }

    /// Admin only: the event log, newest first. `first` is capped at 100.
    #[graphql(complexity = "usize::try_from(first.clamp(1, 100)).unwrap_or(1) * child_complexity")]
    async fn webhook_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        types: Option<Vec<String>>,
        object_id: Option<String>,
    ) -> Result<Connection<String, WebhookEvent>> {
        use webhook_event::Column as C;
        if ctx.data_opt::<Role>() != Some(&Role::Admin) {
            return Err(forbidden("webhookEvents"));
        }
        let limit = page_size(first)?;
        let mut query = webhook_event::Entity::find();
        if let Some(types) = types {
            query = query.filter(C::EventType.is_in(types));
        }
        if let Some(object_id) = object_id {
            query = query.filter(C::ObjectId.eq(object_id));
        }
        if let Some(cursor) = &after {
            query = query.filter(C::Position.lt(decode_event_cursor(cursor)?));
        }
        let rows = query
            .order_by_desc(C::Position)
            .limit(limit + 1)
            .all(db(ctx)?)
            .await
            .map_err(internal)?;
        let (rows, has_next) = trim(rows, limit);
        let cursors = rows
            .iter()
            .map(|r| event_cursor(r.position.unwrap_or_default()))
            .collect();
        let nodes = rows.into_iter().map(WebhookEvent::from).collect();
        Ok(connection(cursors, nodes, after.is_some(), has_next))
    }
}
