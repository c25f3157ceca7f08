//! Connecting to the database and keeping its schema current.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    SqlxSqliteConnector,
};

/// How long a SQLite statement waits for a lock held by another process before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `url`. SQLite runs in WAL mode with `synchronous=FULL`, so an acknowledged event survives a
/// power loss. Statement logging is off: statements carry payloads and secrets.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
        });
    if url.starts_with("sqlite:") {
        // A SQLite connection lives in this process and cannot be dropped by a server: no round trip to
        // test it each time the pool hands it out.
        options.max_connections(8).test_before_acquire(false);
    } else {
        options.max_connections(16);
    }
    Database::connect(options).await
}

/// The connection the intake writer stores deliveries through. On SQLite, a connection of its own to the
/// same database as `db`, kept open for the life of the writer: SQLite has one writer at a time anyway,
/// and a transaction on the connection the one before it used finds its pages in that connection's cache
/// and its statements prepared (a pool hands its connections out in turn: each time another one, whose
/// cache a write elsewhere has made stale, reads the pages again). On PostgreSQL, `db` itself.
pub async fn writer_connection(db: &DatabaseConnection) -> Result<DatabaseConnection, DbErr> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return Ok(db.clone());
    }
    // The same options as the pool's, so also the same in-memory database for `sqlite::memory:`.
    let options = db.get_sqlite_connection_pool().connect_options();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .connect_with((*options).clone())
        .await
        .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
    Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// Connects and applies pending migrations.
pub async fn connect_and_migrate(url: &str) -> Result<DatabaseConnection, DbErr> {
    let db = connect(url).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// `Ok` when the database answers and every migration is applied; else a reason a person can act on.
pub async fn check_ready(db: &DatabaseConnection) -> Result<(), String> {
    db.execute_unprepared("SELECT 1")
        .await
        .map_err(|e| format!("the database does not answer: {e}"))?;
    let pending = Migrator::get_pending_migrations(db)
        .await
        .map_err(|e| format!("cannot read the migration table: {e}"))?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} migration(s) pending: run `fastpix-sync migrate`",
            pending.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

    use super::{connect_and_migrate, writer_connection};

    async fn count(db: &impl ConnectionTrait, sql: &str) -> i64 {
        db.query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap()
    }

    #[tokio::test]
    async fn the_writer_connection_writes_the_database_the_pool_reads_even_in_memory() {
        let db = connect_and_migrate("sqlite::memory:").await.unwrap();
        let writer = writer_connection(&db).await.unwrap();
        writer
            .execute_unprepared("INSERT INTO log_position (id, last) VALUES (2, 7)")
            .await
            .unwrap();
        assert_eq!(
            count(&db, "SELECT last FROM log_position WHERE id = 2").await,
            7
        );
    }

    #[tokio::test]
    async fn the_writer_keeps_one_connection_across_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let db = connect_and_migrate(&url).await.unwrap();
        let writer = writer_connection(&db).await.unwrap();
        // A temporary table exists only on the connection that made it.
        writer
            .execute_unprepared("CREATE TEMP TABLE mine (n INTEGER)")
            .await
            .unwrap();
        for n in 0..20 {
            // The pool is busy meanwhile: it would hand out other connections if it could.
            let _reader = db.begin().await.unwrap();
            let txn = writer.begin().await.unwrap();
            txn.execute_unprepared(&format!("INSERT INTO mine VALUES ({n})"))
                .await
                .unwrap();
            txn.commit().await.unwrap();
        }
        assert_eq!(count(&writer, "SELECT count(*) FROM mine").await, 20);
    }
}
