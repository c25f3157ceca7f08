//! `Query` (SPEC §4): lookups, and Relay connections newest first.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, Object, Result};
use entity::{live_stream, media, playback_id, simulcast_target, webhook_event};
use sea_orm::sea_query::ExprTrait;

use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::errors::{internal, not_found};
use super::pagination::{
    DEFAULT_PAGE, Position, decode, decode_event_cursor, encode, event_cursor, page_complexity,
    page_size,
};
use super::types::{
    LiveStream, LiveStreamStatus, Media, MediaStatus, SimulcastTarget, WebhookEvent,
};
use super::{auth::Role, errors::forbidden};
use crate::events::Snapshot;
use crate::events::cache::PlaybackCache;
use crate::store::entities::{self, PlaybackOwner};

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

/// The two entity kinds with playback ids and paged lists: what differs between them for `Query`.
trait Listed: EntityTrait<Model: PlaybackOwner> {
    type Node: async_graphql::OutputType + From<Snapshot<Self::Model>>;
    /// The list's name in its cursors.
    const LIST: &'static str;
    /// The status, sort and id columns.
    const COLUMNS: [Self::Column; 3];
    fn sort_key(row: &Self::Model) -> (i64, &str);
}

/// Media and live streams list alike: by status, then newest first by `(sort_ns, id)`.
macro_rules! listed {
    ($entity:ident, $node:ty, $list:literal) => {
        impl Listed for $entity::Entity {
            type Node = $node;
            const LIST: &'static str = $list;
            const COLUMNS: [$entity::Column; 3] = [
                $entity::Column::Status,
                $entity::Column::SortNs,
                $entity::Column::Id,
            ];
            fn sort_key(row: &$entity::Model) -> (i64, &str) {
                (row.sort_ns, &row.id)
            }
        }
    };
}

listed!(media, Media, "media");
listed!(live_stream, LiveStream, "liveStream");

/// Rows with their playback ids attached (one query for all of them).
async fn with_playback<E: Listed>(
    db: &DatabaseConnection,
    rows: Vec<E::Model>,
) -> Result<Vec<E::Node>> {
    let states = entities::with_playback_ids(db, rows)
        .await
        .map_err(internal)?;
    Ok(states
        .into_iter()
        .map(|state| E::Node::from(Snapshot::new(state.row, state.playback_ids)))
        .collect())
}

/// The media or live stream `id` with its playback ids; `NOT_FOUND` (naming `what` and `key`) when it is
/// not stored.
async fn one<M>(
    db: &DatabaseConnection,
    id: Option<String>,
    what: &str,
    key: &str,
) -> Result<Snapshot<M>>
where
    M: PlaybackOwner,
    M::Entity: EntityTrait<Model = M>,
{
    let state = match id {
        Some(id) => entities::load_owners::<M>(db, vec![id])
            .await
            .map_err(internal)?
            .pop(),
        None => None,
    };
    let state = state.ok_or_else(|| not_found(what, key))?;
    Ok(Snapshot::new(state.row, state.playback_ids))
}

/// The arguments of a `mediaList` / `liveStreams` page.
struct ListFilter<'a> {
    first: Option<i32>,
    after: Option<&'a str>,
    statuses: Option<Vec<&'static str>>,
    include_deleted: bool,
}

/// One page of an entity list, newest first by `(sort, id)`, with playback ids attached.
async fn page<E: Listed>(
    db: &DatabaseConnection,
    filter: ListFilter<'_>,
) -> Result<Connection<String, E::Node>> {
    let [status, sort, id] = E::COLUMNS;
    let limit = page_size(filter.first)?;
    let mut query = E::find();
    // `DELETED` named in `status` asks for deleted rows, as `includeDeleted` does.
    let names_deleted = filter
        .statuses
        .as_ref()
        .is_some_and(|s| s.contains(&"DELETED"));
    if !filter.include_deleted && !names_deleted {
        query = query.filter(status.ne("DELETED"));
    }
    if let Some(statuses) = filter.statuses {
        query = query.filter(status.is_in(statuses));
    }
    if let Some(cursor) = filter.after {
        query = query.filter(after(sort, id, &decode(E::LIST, cursor)?));
    }
    let rows = query
        .order_by_desc(sort)
        .order_by_desc(id)
        .limit(limit + 1)
        .all(db)
        .await
        .map_err(internal)?;
    let (rows, has_next) = trim(rows, limit);
    let cursors = rows
        .iter()
        .map(|row| {
            let (sort, id) = E::sort_key(row);
            list_cursor(E::LIST, sort, id)
        })
        .collect();
    let nodes = with_playback::<E>(db, rows).await?;
    Ok(connection(cursors, nodes, filter.after.is_some(), has_next))
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
    entities::find_playback(db, playback)
        .await
        .map_err(internal)
}

#[Object]
impl Query {
    /// A media by its FastPix id (deleted media are returned as tombstones).
    async fn media(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Media>> {
        let media = one::<media::Model>(db(ctx)?, Some(id.0.clone()), "media", &id).await?;
        Ok(Some(media.into()))
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
        // Taken before the read: what the read finds is kept only if no media changed meanwhile.
        let keep = cache.map(|cache| (cache, cache.generation()));
        let db = db(ctx)?;
        let owner = playback_row(db, &playback_id).await?;
        let media_id = owner.and_then(|row| row.media_id);
        let found = one(db, media_id, "media with playback id", &playback_id).await?;
        if let Some((cache, generation)) = keep {
            cache.put(generation, &playback_id, found.clone());
        }
        Ok(Some(found.into()))
    }

    /// Media, newest first. `first` is capped at 100. Deleted media only with `includeDeleted`, or
    /// `DELETED` in `status`.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn media_list(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(DEFAULT_PAGE)")] first: Option<i32>,
        after: Option<String>,
        status: Option<Vec<MediaStatus>>,
        #[graphql(default_with = "Some(false)")] include_deleted: Option<bool>,
    ) -> Result<Connection<String, Media>> {
        let filter = ListFilter {
            first,
            after: after.as_deref(),
            statuses: status.map(|s| s.iter().map(|s| s.as_str()).collect()),
            include_deleted: include_deleted.unwrap_or(false),
        };
        page::<media::Entity>(db(ctx)?, filter).await
    }

    async fn live_stream(&self, ctx: &Context<'_>, id: ID) -> Result<Option<LiveStream>> {
        let stream =
            one::<live_stream::Model>(db(ctx)?, Some(id.0.clone()), "live stream", &id).await?;
        Ok(Some(stream.into()))
    }

    async fn live_stream_by_playback_id(
        &self,
        ctx: &Context<'_>,
        playback_id: String,
    ) -> Result<Option<LiveStream>> {
        let db = db(ctx)?;
        let owner = playback_row(db, &playback_id).await?;
        let stream_id = owner.and_then(|row| row.live_stream_id);
        let what = "live stream with playback id";
        let stream = one::<live_stream::Model>(db, stream_id, what, &playback_id).await?;
        Ok(Some(stream.into()))
    }

    /// Live streams, newest first. `first` is capped at 100. Deleted streams only with `includeDeleted`,
    /// or `DELETED` in `status`.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn live_streams(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(DEFAULT_PAGE)")] first: Option<i32>,
        after: Option<String>,
        status: Option<Vec<LiveStreamStatus>>,
        #[graphql(default_with = "Some(false)")] include_deleted: Option<bool>,
    ) -> Result<Connection<String, LiveStream>> {
        let filter = ListFilter {
            first,
            after: after.as_deref(),
            statuses: status.map(|s| s.iter().map(|s| s.as_str()).collect()),
            include_deleted: include_deleted.unwrap_or(false),
        };
        page::<live_stream::Entity>(db(ctx)?, filter).await
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
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn webhook_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(DEFAULT_PAGE)")] first: Option<i32>,
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
