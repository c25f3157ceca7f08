//! fastpix-sync keeps a live, queryable mirror of a FastPix workspace: it takes FastPix webhooks in,
//! verifies and stores every event, updates media, live stream and simulcast target rows, and serves that
//! state over GraphQL.
//!
//! # Layout
//! A webhook travels `http` → `webhook` (verify → parse → apply) → `store` (persist) → `events` (fan out)
//! → `graphql` (out). Dependencies point one way along that path.
//!
//! - [`config`]: command line and environment settings.
//! - [`app`]: builds state and router from settings, binds, runs until a shutdown future completes.
//! - [`http`]: the axum routes (webhook intake, GraphQL, playground, health, metrics).
//! - [`webhook`]: signature check, tolerant envelope parsing, and the per-entity fold that applies events.
//! - [`store`]: SeaORM queries, each runnable inside a transaction.
//! - [`events`]: committed changes and the broadcast bus.
//! - [`graphql`]: the schema: queries, types, batch loaders, admin guard.
//! - [`metrics`]: Prometheus metrics.
//! - [`replay`]: rebuilding the entity tables from the event log.
//! - [`retention`]: pruning old events without losing what the entity tables need.
//! - [`simulate`]: sending realistic signed event sequences to a running server.

pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod replay;
pub mod retention;
pub mod simulate;
pub mod store;
pub mod webhook;
