//! The GraphQL schema (SPEC §4).

use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

pub type AppSchema = Schema<Query, EmptyMutation, EmptySubscription>;

pub struct Query;

#[Object]
impl Query {
    /// The version of fastpix-sync serving this API.
    async fn api_version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
}

/// Builds the schema.
pub fn schema() -> AppSchema {
    Schema::build(Query, EmptyMutation, EmptySubscription).finish()
}

/// The SDL of the schema, as `fastpix-sync schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    schema().sdl()
}
