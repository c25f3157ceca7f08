//! Connecting to the database and keeping its schema current.

use std::time::{Duration, Instant};

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    SqlxSqliteConnector,
};

/// How long a SQLite statement waits for a lock held by another process before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements each PostgreSQL connection keeps, unless the URL sets `statement-cache-capacity`.
/// The intake writer's statements take a batch's rows or ids, so there is one statement text per batch
/// size (up to `MAX_BATCH`) for each of about eight statements, and for its merged entity writes
/// (`store::script`) one per combination of their row counts (media, streams, targets, playback id
/// owners): batches of one kind of event make few, a mix of kinds under load many more, which push
/// older texts out (a text not kept costs a parse and one more round trip, as the merge saves one;
/// the mixed case is not measured). With sqlx's default of 100, a connection
/// forgot and prepared them again all the time: in a logged ingest benchmark, about a fifth of the
/// writer's statements cost a parse and one more round trip. A kept statement costs memory in its
/// connection's PostgreSQL backend: in that benchmark, with 1,024, each busy backend held about 22 MiB of
/// private memory instead of 15 MiB.
pub const POSTGRES_STATEMENT_CACHE: usize = 1024;

/// Each new PostgreSQL connection plans every execution of a prepared statement for its parameters
/// (`plan_cache_mode=force_custom_plan`), unless `plan_cache_mode` was chosen for it elsewhere: in the
/// server's configuration, by `ALTER DATABASE`/`ALTER ROLE … SET`, in `PGOPTIONS` or in the URL's
/// `options` (PostgreSQL reports where a setting came from; only the built-in default is replaced, by a
/// `SET` after connecting, so a connection pooler that refuses startup options still connects). With the
/// default (`auto`), a statement executed a few times gets a generic plan, kept until something
/// invalidates it (an `ANALYZE`, which autovacuum runs when it is on; a schema change); a statement
/// prepared while its tables were small keeps a plan that reads them whole. Measured in an ingest
/// benchmark on a PostgreSQL without autovacuum: intake's load of a batch's media scanned both tables and
/// took 26–55 ms instead of 0.1 ms, later in the run the longer, and acks waited about 40 ms at the 99th
/// percentile instead of about 10. Planning each time costs PostgreSQL some CPU per statement (their parse
/// is still saved by the statement cache).
pub const POSTGRES_PLAN_CACHE_MODE: &str = "force_custom_plan";

/// The most connections an instance opens to PostgreSQL.
pub const POSTGRES_POOL_SIZE: u32 = 16;

/// A pooled PostgreSQL connection idle for this long is tested (a round trip) before it is handed out; one
/// used more recently is handed out as it is. sqlx tests every connection as the pool takes it back, so
/// a connection in the pool worked when last used; testing it again on each hand-out cost a round trip
/// per transaction (about 0.26 ms of an intake batch's 3.9 ms in an ingest benchmark). What that leaves
/// untested: a connection used in the last few seconds whose server went away meanwhile (PostgreSQL
/// restarted): the first statement on it fails, and sqlx drops the connection as it comes back to the
/// pool. The intake writer then stores the delivery again on another connection
/// (`webhook::writer`), a GraphQL query, over HTTP or a websocket, runs again on another
/// (`http::graphql::retrying`), and so does each read a subscription's stream makes
/// (`graphql::watch::reading`, through [`again_if_lost`]): an entity's current state, a feed's start,
/// the log it catches up from. A nested field of a subscription's message (`playbackIds`, say) that
/// meets a lost connection answers that message's error.
pub const POSTGRES_TEST_AFTER_IDLE: Duration = Duration::from_secs(10);

/// Sets `plan_cache_mode` to `$1` for the session, when it has its built-in default (no row before
/// PostgreSQL 12, which has no such setting).
const PLAN_CACHE_MODE_UNLESS_CHOSEN: &str = "SELECT set_config('plan_cache_mode', $1, false) \
     FROM pg_settings WHERE name = 'plan_cache_mode' AND source = 'default'";

/// Connects to `url`. SQLite runs in WAL mode with `synchronous=FULL`, so an acknowledged event survives a
/// power loss. Statement logging is off: statements carry payloads and secrets.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with(url, POSTGRES_TEST_AFTER_IDLE).await
}

/// [`connect`], testing a pooled PostgreSQL connection once it was idle for `test_after_idle`.
async fn connect_with(url: &str, test_after_idle: Duration) -> Result<DatabaseConnection, DbErr> {
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
        options
            .max_connections(POSTGRES_POOL_SIZE)
            .test_before_acquire_if_idle_for(test_after_idle)
            .map_sqlx_postgres_pool_opts(|pool| {
                pool.after_connect(|connection, _| {
                    Box::pin(async move {
                        // Run once per connection: not worth a place in its statement cache.
                        sqlx::query(PLAN_CACHE_MODE_UNLESS_CHOSEN)
                            .bind(POSTGRES_PLAN_CACHE_MODE)
                            .persistent(false)
                            .execute(connection)
                            .await
                            .map(drop)
                    })
                })
            });
        if !sets_statement_cache(url) {
            options
                .map_sqlx_postgres_opts(|o| o.statement_cache_capacity(POSTGRES_STATEMENT_CACHE));
        }
    }
    Database::connect(options).await
}

/// Whether a PostgreSQL `url` sets sqlx's `statement-cache-capacity` parameter in its query string (not
/// merely contains the words, in a password say).
fn sets_statement_cache(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|url| {
        url.query_pairs()
            .any(|(key, _)| key == "statement-cache-capacity")
    })
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

/// How many times work is tried when its connection turns out to be lost (the PostgreSQL server
/// restarted, say): each lost connection fails one attempt and is dropped, and the pool holds at most
/// this many less one.
pub const LOST_CONNECTION_ATTEMPTS: u32 = POSTGRES_POOL_SIZE + 1;

/// No attempt after a lost connection starts this long after the first: a connection lost without the
/// server's word (a half-open socket) fails only once the operating system gives up on it.
pub const LOST_CONNECTION_RETRIES_FOR: Duration = Duration::from_secs(15);

/// The sqlx error under a statement's or connection's error.
fn sqlx_error(error: &DbErr) -> Option<&sqlx::Error> {
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(error))
        | DbErr::Query(RuntimeErr::SqlxError(error))
        | DbErr::Conn(RuntimeErr::SqlxError(error)) => Some(error),
        _ => None,
    }
}

/// The SQLSTATE of a database's error.
pub(crate) fn sqlstate(error: &DbErr) -> Option<String> {
    let code = sqlx_error(error)?.as_database_error()?.code()?;
    Some(code.into_owned())
}

/// Whether a statement failed because its connection was lost (closed by the server, as when PostgreSQL
/// restarts, or broken), so that trying it again on another connection may succeed. sqlx drops such a
/// connection as it comes back to the pool. (A transaction whose connection was lost during its commit
/// may have committed.) Failing to get a connection at all (`DbErr::Conn`: the pool could not open
/// one) is not such a failure: sqlx's pool has already tried again, with a backoff, where that can help.
pub fn is_lost_connection(error: &DbErr) -> bool {
    use sqlx::Error;
    if !matches!(error, DbErr::Exec(_) | DbErr::Query(_)) {
        return false;
    }
    if matches!(sqlx_error(error), Some(Error::Io(_) | Error::WorkerCrashed)) {
        return true;
    }
    // Class 08 (connection exception), 57P01–57P03 (the server shut down or cannot connect now) and
    // 57P05 (the server's `idle_session_timeout` ended the connection). Not 08P01 (protocol violation):
    // the server rejected what this statement sent, and would reject it again on any connection.
    sqlstate(error).is_some_and(|code| {
        (code.starts_with("08") && code != "08P01")
            || matches!(&*code, "57P01" | "57P02" | "57P03" | "57P05")
    })
}

/// The attempts of work that meets lost connections: at most [`LOST_CONNECTION_ATTEMPTS`], none started
/// [`LOST_CONNECTION_RETRIES_FOR`] after the first. Made as the first attempt starts. Each attempt gets
/// a connection from the pool anew, and sqlx drops a lost one.
pub struct Attempts {
    started: Instant,
    made: u32,
}

impl Attempts {
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            made: 1,
        }
    }

    /// Whether another attempt may start, after one that met a lost connection; counts it if so.
    pub fn another(&mut self) -> bool {
        let may = self.made < LOST_CONNECTION_ATTEMPTS
            && self.started.elapsed() < LOST_CONNECTION_RETRIES_FOR;
        self.made += u32::from(may);
        may
    }

    /// Attempts made so far.
    pub fn made(&self) -> u32 {
        self.made
    }
}

/// Runs `read`, and again while it fails on a lost connection ([`is_lost_connection`]), as far as
/// [`Attempts`] allow. Only for work that is safe to run again, such as reads. `again` is called before
/// each new attempt (to count it).
pub async fn again_if_lost<T, F, Fut>(mut read: F, mut again: impl FnMut()) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
{
    let mut attempts = Attempts::start();
    loop {
        match read().await {
            Err(error) if is_lost_connection(&error) && attempts.another() => {
                again();
                tracing::warn!(%error, attempts = attempts.made(), "a read lost its database connection; trying again on another");
            }
            result => return result,
        }
    }
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

/// For tests on PostgreSQL: its server, and a database of a test's own.
#[cfg(test)]
pub(crate) mod scratch {
    use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

    /// The PostgreSQL server of `TEST_DATABASE_URL`, when the tests run on it.
    pub fn postgres_url() -> Option<String> {
        std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
    }

    /// A database made for one test on the server of `admin_url`; [`ScratchDb::remove`] drops it. Its name
    /// is the test's, not the run's: a run that fails before removing it leaves it to the next run, which
    /// drops it first.
    pub struct ScratchDb {
        /// A connection to the server's own database, for what a test does from outside.
        pub admin: DatabaseConnection,
        pub name: String,
        pub url: String,
    }

    impl ScratchDb {
        pub async fn create(admin_url: &str, name: &str) -> Self {
            let admin = Database::connect(admin_url).await.unwrap();
            for sql in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                admin.execute_unprepared(&sql).await.unwrap();
            }
            let mut url = url::Url::parse(admin_url).unwrap();
            url.set_path(&format!("/{name}"));
            Self {
                admin,
                name: name.to_owned(),
                url: url.into(),
            }
        }

        pub async fn remove(self) {
            let sql = format!("DROP DATABASE {} WITH (FORCE)", self.name);
            self.admin.execute_unprepared(&sql).await.unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait, TryGetable, sqlx};

    use super::scratch::{ScratchDb, postgres_url};
    use super::{
        connect, connect_and_migrate, connect_with, is_lost_connection, sets_statement_cache,
        writer_connection,
    };

    /// A database's error with SQLSTATE `.0`, as sqlx reports one.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "error"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    #[test]
    fn work_that_meets_lost_connections_is_tried_at_most_lost_connection_attempts_times() {
        let mut attempts = super::Attempts::start();
        let mut more = 0;
        while attempts.another() {
            more += 1;
        }
        assert_eq!(more + 1, super::LOST_CONNECTION_ATTEMPTS);
        assert_eq!(attempts.made(), super::LOST_CONNECTION_ATTEMPTS);
        assert!(!attempts.another(), "no attempt after the last");
    }

    #[test]
    fn a_statement_failed_by_a_connection_exception_or_a_shutdown_lost_its_connection() {
        use sea_orm::{DbErr, RuntimeErr};
        let failed = |code| {
            let error = sqlx::Error::Database(Box::new(Coded(code)));
            DbErr::Query(RuntimeErr::SqlxError(error.into()))
        };
        for code in [
            "08000", "08003", "08006", "57P01", "57P02", "57P03", "57P05",
        ] {
            assert!(is_lost_connection(&failed(code)), "{code}");
        }
        // A protocol violation is about the statement sent; the others are no connection's fault.
        for code in ["08P01", "23505", "40P01", "57014", "42P01"] {
            assert!(!is_lost_connection(&failed(code)), "{code}");
        }
    }

    /// The first column of the one row `sql` returns on `db`.
    async fn scalar<T: TryGetable>(db: &impl ConnectionTrait, sql: &str) -> T {
        db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap()
    }

    /// `url` with one more query parameter.
    fn with_param(url: &str, param: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}{param}")
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
            scalar::<i64>(&db, "SELECT last FROM log_position WHERE id = 2").await,
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
        assert_eq!(
            scalar::<i64>(&writer, "SELECT count(*) FROM mine").await,
            20
        );
    }

    /// How many prepared statements one connection of `url`'s pool keeps after running `distinct`
    /// different ones (in one transaction, so on one connection).
    async fn statements_kept(url: &str, distinct: usize) -> i64 {
        let db = connect(url).await.unwrap();
        let txn = db.begin().await.unwrap();
        for n in 0..distinct {
            txn.query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("SELECT $1::int + {n}"),
                [1.into()],
            ))
            .await
            .unwrap();
        }
        let kept: i64 = scalar(&txn, "SELECT count(*) FROM pg_prepared_statements").await;
        txn.rollback().await.unwrap();
        kept
    }

    #[tokio::test]
    async fn a_postgres_connection_keeps_more_prepared_statements_than_sqlx_by_default() {
        let Some(url) = postgres_url() else { return };
        // sqlx's default would keep 100 (it closes the oldest beyond that).
        let kept = statements_kept(&url, 300).await;
        assert!(kept >= 300, "{kept} statements kept");
    }

    #[test]
    fn only_the_query_parameter_sets_the_statement_cache() {
        for (url, sets) in [
            ("postgres://u@h/db?statement-cache-capacity=10", true),
            (
                "postgres://u@h/db?sslmode=disable&statement-cache-capacity=0",
                true,
            ),
            ("postgres://u@h/db", false),
            ("postgres://u:statement-cache-capacity=1@h/db", false),
            ("postgres://u@h/statement-cache-capacity=1", false),
        ] {
            assert_eq!(sets_statement_cache(url), sets, "{url}");
        }
    }

    /// How a statement run `times` on one connection of `url`'s pool was planned: (custom, generic).
    async fn plans_of_a_repeated_statement(url: &str, times: usize) -> (i64, i64) {
        let db = connect(url).await.unwrap();
        let txn = db.begin().await.unwrap();
        let sql = "SELECT count(*) FROM pg_class WHERE oid = $1::oid";
        for n in 0..times {
            txn.query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                [(n as i64).into()],
            ))
            .await
            .unwrap();
        }
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT custom_plans, generic_plans FROM pg_prepared_statements WHERE statement = $1",
                [sql.into()],
            ))
            .await
            .unwrap()
            .expect("the statement is prepared");
        txn.rollback().await.unwrap();
        (
            row.try_get_by_index(0).unwrap(),
            row.try_get_by_index(1).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_postgres_statement_is_planned_for_its_parameters_every_time() {
        let Some(url) = postgres_url() else { return };
        // PostgreSQL's default switches to a generic plan after five executions.
        assert_eq!(plans_of_a_repeated_statement(&url, 12).await, (12, 0));
    }

    #[tokio::test]
    async fn a_postgres_url_may_set_its_own_plan_cache_mode() {
        let Some(url) = postgres_url() else { return };
        // Both of sqlx's ways to pass a setting in the URL.
        for option in [
            "options=-c%20plan_cache_mode%3Dauto",
            "options[plan_cache_mode]=auto",
        ] {
            let url = with_param(&url, option);
            let (custom, generic) = plans_of_a_repeated_statement(&url, 12).await;
            assert!(
                generic > 0,
                "{option}: {custom} custom plans, {generic} generic"
            );
        }
    }

    #[tokio::test]
    async fn a_plan_cache_mode_set_for_the_database_is_kept() {
        let Some(url) = postgres_url() else { return };
        let scratch = ScratchDb::create(&url, "fastpix_sync_test_plan_mode").await;
        let set = "SET plan_cache_mode = force_generic_plan";
        let sql = format!("ALTER DATABASE {} {set}", scratch.name);
        scratch.admin.execute_unprepared(&sql).await.unwrap();
        let db = connect(&scratch.url).await.unwrap();
        let mode: String = scalar(&db, "SELECT current_setting('plan_cache_mode')").await;
        db.close().await.unwrap();
        scratch.remove().await;
        assert_eq!(mode, "force_generic_plan");
    }

    #[tokio::test]
    async fn an_idle_postgres_connection_whose_backend_ended_is_replaced_before_use() {
        let Some(url) = postgres_url() else { return };
        let db = connect_with(&url, Duration::from_millis(100))
            .await
            .unwrap();
        let admin = connect(&url).await.unwrap();
        // Once the pool has taken back the connection it opened (it tests it first), it holds one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let pid: i32 = scalar(&db, "SELECT pg_backend_pid()").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(db.get_postgres_connection_pool().size(), 1);
        let ended: bool = scalar(&admin, &format!("SELECT pg_terminate_backend({pid})")).await;
        assert!(ended);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The test before the hand-out finds the connection dead: the statement runs on a new one.
        let other: i32 = scalar(&db, "SELECT pg_backend_pid()").await;
        assert_ne!(other, pid);
    }

    #[tokio::test]
    async fn a_postgres_url_may_set_its_own_statement_cache() {
        let Some(url) = postgres_url() else { return };
        let url = with_param(&url, "statement-cache-capacity=10");
        assert!(statements_kept(&url, 30).await <= 10);
    }
}
