//! The schema migrations: each can be undone and applied again.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::helpers::{TestDb, spawn_app_on};

/// The owner indexes migration 4 makes partial.
const OWNER_INDEXES: [&str; 3] = [
    "idx_media_live_stream",
    "idx_playback_id_media",
    "idx_playback_id_live_stream",
];

/// The definition of index `name`, as the database prints it.
async fn index_definition(db: &DatabaseConnection, name: &str) -> String {
    let sql = match db.get_database_backend() {
        DbBackend::Postgres => "SELECT indexdef AS def FROM pg_indexes WHERE indexname = $1",
        _ => "SELECT sql AS def FROM sqlite_master WHERE type = 'index' AND name = $1",
    };
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            [name.into()],
        ))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("index {name} exists"));
    row.try_get("", "def").unwrap()
}

async fn partial(db: &DatabaseConnection) -> Vec<bool> {
    let mut partial = Vec::new();
    for name in OWNER_INDEXES {
        partial.push(index_definition(db, name).await.contains("IS NOT NULL"));
    }
    partial
}

/// A fresh test database with every migration applied, and a connection to it.
async fn migrated() -> (TestDb, DatabaseConnection) {
    let test_db = TestDb::new().await;
    let db = fastpix_sync::db::connect_and_migrate(&test_db.url)
        .await
        .unwrap();
    (test_db, db)
}

#[tokio::test]
async fn the_partial_owner_indexes_can_be_undone_and_made_again() {
    let (test_db, db) = migrated().await;
    assert_eq!(partial(&db).await, [true; 3]);

    Migrator::down(&db, Some(1)).await.unwrap();
    assert_eq!(
        partial(&db).await,
        [false; 3],
        "down makes them whole again"
    );
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(partial(&db).await, [true; 3]);
    drop(db);

    // The server still stores and finds through them.
    let app = spawn_app_on(test_db).await;
    assert_eq!(app.deliver_fixture("video.media.ready").await, "applied");
    let data = app
        .query(
            r#"{ mediaByPlaybackId(playbackId: "a1b2c3d4-e5f6-4789-9abc-def012345678") { id } }"#,
            serde_json::json!({}),
        )
        .await;
    assert!(data["mediaByPlaybackId"]["id"].is_string(), "{data}");
}

/// The tables the migrations made (their own bookkeeping table aside).
async fn tables(db: &DatabaseConnection) -> Vec<String> {
    let sql = match db.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name <> 'seaql_migrations' ORDER BY 1"
        }
        _ => {
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> 'seaql_migrations' ORDER BY 1"
        }
    };
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("", "name").unwrap())
        .collect()
}

#[tokio::test]
async fn every_migration_can_be_undone_and_applied_again() {
    let (test_db, db) = migrated().await;
    let made = tables(&db).await;
    assert_eq!(
        made,
        [
            "live_stream",
            "log_position",
            "media",
            "playback_id",
            "simulcast_target",
            "webhook_event"
        ]
    );

    Migrator::reset(&db).await.unwrap();
    assert_eq!(
        tables(&db).await,
        Vec::<String>::new(),
        "down undoes them all"
    );
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(tables(&db).await, made);
    assert_eq!(partial(&db).await, [true; 3]);
    drop(db);

    // The server stores into the schema made again, from the first position.
    let app = spawn_app_on(test_db).await;
    assert_eq!(app.deliver_fixture("video.media.created").await, "applied");
    assert_eq!(app.positions().await, [Some(1)]);
}
