//! The GraphQL API (SPEC §4): schema, per-request context (role, loaders), and error codes.

pub mod auth;
pub mod documents;
pub mod errors;
pub mod fanout;
pub mod loaders;
pub mod pagination;
pub mod query;
pub mod subscription;
pub mod types;
mod watch;

use async_graphql::{EmptyMutation, Request, Response, Schema};
use sea_orm::DatabaseConnection;

use crate::events::Bus;
use crate::events::cache::PlaybackCache;
use crate::metrics::Metrics;

pub use auth::{AdminToken, Role};
pub use query::Query;

pub use subscription::Subscription;

pub type AppSchema = Schema<Query, EmptyMutation, Subscription>;

/// Deepest selection accepted (a stream's targets' stream's recordings… is 6 or so).
pub const MAX_DEPTH: usize = 12;
/// Largest query complexity accepted: each field costs 1, a connection `first × its selection`.
pub const MAX_COMPLEXITY: usize = 20_000;

/// What the schema's resolvers share: the pool, the bus, the metrics, and on a single instance the
/// playback cache. Role and loaders are per request.
pub struct Shared {
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub metrics: Metrics,
    pub cache: Option<PlaybackCache>,
}

/// Builds the schema; without `shared` it can only print its SDL.
pub fn schema(shared: Option<Shared>) -> AppSchema {
    let mut builder = Schema::build(Query, EmptyMutation, Subscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY);
    if let Some(Shared {
        db,
        bus,
        metrics,
        cache,
    }) = shared
    {
        builder = builder.data(db).data(bus).data(metrics);
        if let Some(cache) = cache {
            builder = builder.data(cache);
        }
    }
    builder.finish()
}

/// The SDL of the schema, as `fastpix-sync schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    schema(None).sdl()
}

/// Adds the per-request data: the caller's role and a fresh set of batch loaders.
pub fn prepare(request: Request, db: &DatabaseConnection, role: Role) -> Request {
    request.data(role).data(loaders::loaders(db.clone()))
}

/// Gives every error of `response` an `extensions.code`: resolvers set theirs; what the engine reports
/// before any resolver runs (syntax, validation, depth and complexity limits) is `BAD_USER_INPUT`. Every
/// response goes through it (`http::graphql`, and each frame of `graphql::fanout` and `http::ws`): a
/// schema extension would do the same, but async-graphql then routes every field's resolution through
/// the extension chain, which cost `mediaByPlaybackId` about 7% more CPU per request.
pub fn with_error_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            let code = if error.path.is_empty() {
                "BAD_USER_INPUT"
            } else {
                "INTERNAL"
            };
            extensions.set("code", code);
        }
    }
    response
}
