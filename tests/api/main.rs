//! Integration tests: each starts the real server on 127.0.0.1:0 and talks HTTP to it.
//! They run on SQLite by default, and on PostgreSQL when `TEST_DATABASE_URL` names a PostgreSQL
//! server (each test then creates, and finally drops, a database of its own).

mod helpers;
mod ws_client;

mod cli;
mod cluster;
mod failure;
mod fanout;
mod group_commit;
mod intake;
mod migrations;
mod operations;
mod ordering;
mod playground;
mod protocol;
mod queries;
mod replay;
mod retention;
mod subscriptions;
