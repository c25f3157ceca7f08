//! SeaORM models of fastpix-sync's tables, one file per table.
//!
//! Times are stored as `i64` nanoseconds since the Unix epoch: FastPix stamps events at nanosecond precision,
//! PostgreSQL's `timestamptz` keeps only microseconds, and the event order key must compare exactly on both
//! databases. JSON columns hold free-form provider data (`metadata`, `tracks`).

pub mod live_stream;
pub mod log_position;
pub mod media;
pub mod playback_id;
pub mod simulcast_target;
pub mod webhook_event;
