//! Several statements sent in as few round trips as the database allows.
//!
//! On SQLite, each statement sqlx runs is a round trip to the connection's worker thread: a message
//! there and one back, each waking a sleeping thread. sqlx runs a string of several statements, with
//! their parameters in order, in one such trip.
//!
//! On PostgreSQL, whose extended protocol takes one statement per call, consecutive writes to distinct
//! tables ([`Script::push_write`]) go in one statement, each but the last as a data-modifying `WITH`
//! query (`WITH w0 AS (INSERT …), w1 AS (UPDATE …) INSERT …`). PostgreSQL runs every part of such a
//! statement to completion, whether or not its output is read, all on one snapshot: no part sees
//! another's changes. So a write to a table an earlier write of the group touched starts the next
//! statement, and so does any other statement ([`Script::push`]; a `SELECT` would not see the group's
//! writes). The parts run in no order PostgreSQL promises (PostgreSQL 15 runs the main query first,
//! then the `WITH` queries nobody reads, last to first), and so take their row locks: a write whose
//! lock must come after the others' (the event log's counter) runs after the script, on its own. A
//! merged statement carries its parts' parameters together, so more than PostgreSQL's 65,535 fail it
//! (the intake writer then stores its deliveries one by one, each in a smaller script).

use sea_orm::sea_query::{
    Alias, CommonTableExpression, DeleteStatement, InsertStatement, SubQueryStatement,
    UpdateStatement, WithClause, WithQuery,
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, StatementBuilder};

/// Statements to run in order, in one transaction the caller holds.
pub struct Script {
    backend: DbBackend,
    statements: Vec<Step>,
}

enum Step {
    /// Built as pushed, and sent on its own (on PostgreSQL).
    Built(Statement),
    /// A write to `table`, built when the script runs (on PostgreSQL, with the writes next to it).
    Write {
        table: String,
        query: Box<SubQueryStatement>,
    },
}

/// An `INSERT`, `UPDATE` or `DELETE`: what [`Script::push_write`] takes.
pub trait Write: StatementBuilder + Into<SubQueryStatement> {}

impl Write for InsertStatement {}
impl Write for UpdateStatement {}
impl Write for DeleteStatement {}

impl Script {
    pub fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            statements: Vec::new(),
        }
    }

    /// Adds a statement, sent on its own on PostgreSQL. Only the last statement of a script may return
    /// rows (on SQLite, the rows of every statement come back together; on PostgreSQL, those of the
    /// others are dropped). On SQLite, its parameters must be plain `?` ones, as sea-query writes them:
    /// a numbered `?1` would take the script's first value.
    pub fn push(&mut self, statement: &impl StatementBuilder) {
        self.statements
            .push(Step::Built(self.backend.build(statement)));
    }

    /// Adds a write to `table`, which on PostgreSQL may run in one statement with the writes to other
    /// tables next to it: it must not read a table another write of the script writes (it might not
    /// see that write).
    pub fn push_write(&mut self, table: &str, statement: impl Write) {
        self.statements.push(Step::Write {
            table: table.to_owned(),
            query: Box::new(statement.into()),
        });
    }

    /// Runs the statements in order, stopping at the first that fails, and returns the rows of the last
    /// one. After an error, the caller rolls its transaction back: the statements before the failing
    /// one may have run.
    pub async fn run(self, db: &impl ConnectionTrait) -> Result<Vec<QueryResult>, DbErr> {
        let mut statements = self.into_statements();
        let Some(last) = statements.pop() else {
            return Ok(Vec::new());
        };
        for statement in statements {
            db.execute_raw(statement).await?;
        }
        db.query_all_raw(last).await
    }

    /// The statements sent to the database, in order: one on SQLite; on PostgreSQL, one per group of
    /// consecutive writes to distinct tables, and one for each other statement. Each is built once.
    fn into_statements(self) -> Vec<Statement> {
        let backend = self.backend;
        if backend == DbBackend::Sqlite {
            return join_for_sqlite(self.statements);
        }
        // Consecutive writes to distinct tables, waiting to be merged.
        let mut statements = Vec::new();
        let mut group: Vec<(String, SubQueryStatement)> = Vec::new();
        for step in self.statements {
            match step {
                Step::Write { table, query } => {
                    if group.iter().any(|(other, _)| *other == table) {
                        statements.push(merge(backend, std::mem::take(&mut group)));
                    }
                    group.push((table, *query));
                }
                Step::Built(statement) => {
                    if !group.is_empty() {
                        statements.push(merge(backend, std::mem::take(&mut group)));
                    }
                    statements.push(statement);
                }
            }
        }
        if !group.is_empty() {
            statements.push(merge(backend, group));
        }
        statements
    }
}

/// The statement of a write.
fn build(backend: DbBackend, query: SubQueryStatement) -> Statement {
    match query {
        SubQueryStatement::InsertStatement(s) => backend.build(&s),
        SubQueryStatement::UpdateStatement(s) => backend.build(&s),
        SubQueryStatement::DeleteStatement(s) => backend.build(&s),
        SubQueryStatement::SelectStatement(s) => backend.build(&s),
        SubQueryStatement::WithStatement(s) => backend.build(&s),
    }
}

/// One statement doing what the writes of `group` do: the last one, with the others as `WITH` queries.
fn merge(backend: DbBackend, mut group: Vec<(String, SubQueryStatement)>) -> Statement {
    let (_, last) = group.pop().expect("a group has a write");
    if group.is_empty() {
        return build(backend, last);
    }
    // Built in place: sea-query's builder methods return `&mut Self`, and their `to_owned()` (or
    // `WithClause::query`, which calls it) would copy every row's values of every write again.
    let mut with = WithClause::new();
    for (n, (_, query)) in group.into_iter().enumerate() {
        let mut cte = CommonTableExpression::new();
        cte.query(query).table_name(Alias::new(format!("w{n}")));
        with.cte(cte);
    }
    let mut statement = WithQuery::new();
    statement.with_clause(with).query(last);
    backend.build(&statement)
}

/// One string of every statement, with their parameters in order: sqlx numbers the plain `?` parameters
/// of each statement on from those of the ones before it.
fn join_for_sqlite(steps: Vec<Step>) -> Vec<Statement> {
    let statements: Vec<Statement> = steps
        .into_iter()
        .map(|step| match step {
            Step::Built(statement) => statement,
            Step::Write { query, .. } => build(DbBackend::Sqlite, *query),
        })
        .collect();
    if statements.is_empty() {
        return Vec::new();
    }
    let sql = statements
        .iter()
        .map(|statement| statement.sql.as_str())
        .collect::<Vec<_>>()
        .join(";\n");
    let values = statements
        .into_iter()
        .flat_map(|statement| statement.values.map(|v| v.0).unwrap_or_default());
    vec![Statement::from_sql_and_values(
        DbBackend::Sqlite,
        sql,
        values,
    )]
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
    use sea_orm::{
        ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
        TransactionTrait,
    };

    use super::Script;

    /// An in-memory database (kept open by the returned connection) and a transaction in which `table`
    /// is made.
    async fn with_table(table: &str) -> (DatabaseConnection, DatabaseTransaction) {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared(table).await.unwrap();
        (db, txn)
    }

    #[tokio::test]
    async fn on_sqlite_the_statements_run_in_order_each_with_its_own_parameters() {
        let (_db, txn) =
            with_table("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)").await;
        let (t, k, n) = (Alias::new("t"), Alias::new("k"), Alias::new("n"));
        let mut script = Script::new(DbBackend::Sqlite);
        script.push(&insert("t", &[("a", 1), ("b", 2)]));
        script.push(
            Query::update()
                .table(t.clone())
                .value(n.clone(), Expr::col(n.clone()).add(10))
                .and_where(Expr::col(k.clone()).eq("b")),
        );
        script.push(
            Query::select()
                .columns([k.clone(), n.clone()])
                .from(t)
                .and_where(Expr::col(n.clone()).gt(0))
                .order_by(k, Order::Asc),
        );
        let rows = key_values(script.run(&txn).await.unwrap());
        assert_eq!(rows, [("a".to_owned(), 1), ("b".to_owned(), 12)]);
    }

    #[tokio::test]
    async fn on_sqlite_a_script_stops_at_its_first_failing_statement() {
        let (_db, txn) =
            with_table("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)").await;
        let mut script = Script::new(DbBackend::Sqlite);
        script.push(&insert("t", &[("a", 0)]));
        script.push(&insert("t", &[("a", 0)]));
        script.push(&insert("t", &[("b", 0)]));
        assert!(script.run(&txn).await.is_err(), "the second insert fails");
        assert_eq!(
            select(&txn, "SELECT k, n FROM t ORDER BY k").await,
            [("a".to_owned(), 0)],
            "the statement after the failing one did not run"
        );
    }

    /// The (k, n) of each row.
    fn key_values(rows: Vec<sea_orm::QueryResult>) -> Vec<(String, i64)> {
        rows.iter()
            .map(|row| (row.try_get("", "k").unwrap(), row.try_get("", "n").unwrap()))
            .collect()
    }

    /// The (k, n) of the rows `sql` returns.
    async fn select(db: &impl ConnectionTrait, sql: &str) -> Vec<(String, i64)> {
        let statement = sea_orm::Statement::from_string(db.get_database_backend(), sql);
        key_values(db.query_all_raw(statement).await.unwrap())
    }

    /// Inserts `rows` of (k, n) into `table`.
    fn insert(table: &str, rows: &[(&str, i64)]) -> sea_orm::sea_query::InsertStatement {
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new(table))
            .columns([Alias::new("k"), Alias::new("n")]);
        for (k, n) in rows {
            insert.values_panic([(*k).into(), (*n).into()]);
        }
        insert
    }

    /// The statements of a script that inserts into t and u, deletes from t, inserts into t, updates u,
    /// then reads t: on PostgreSQL, the writes up to a table's second write share a statement.
    fn mixed(backend: DbBackend) -> Script {
        let (t, u, k, n) = (
            Alias::new("t"),
            Alias::new("u"),
            Alias::new("k"),
            Alias::new("n"),
        );
        let mut script = Script::new(backend);
        script.push_write("t", insert("t", &[("a", 1), ("b", 2)]));
        script.push_write("u", insert("u", &[("x", 10)]));
        script.push_write(
            "t",
            Query::delete()
                .from_table(t.clone())
                .and_where(Expr::col(k.clone()).eq("a"))
                .to_owned(),
        );
        script.push_write("t", insert("t", &[("a", 5)]));
        script.push_write(
            "u",
            Query::update()
                .table(u)
                .value(n.clone(), Expr::col(n.clone()).add(1))
                .and_where(Expr::col(k.clone()).eq("x"))
                .to_owned(),
        );
        script.push(
            Query::select()
                .columns([k.clone(), n])
                .from(t)
                .order_by(k, Order::Asc),
        );
        script
    }

    #[test]
    fn on_postgres_writes_to_distinct_tables_share_a_statement() {
        let statements = mixed(DbBackend::Postgres).into_statements();
        let sql: Vec<&str> = statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(sql.len(), 4, "{sql:#?}");
        assert!(
            sql[0].starts_with(r#"WITH "w0" AS (INSERT INTO "t""#)
                && sql[0].contains(r#") INSERT INTO "u""#),
            "{}",
            sql[0]
        );
        assert!(sql[1].starts_with(r#"DELETE FROM "t""#), "{}", sql[1]);
        assert!(
            sql[2].starts_with(r#"WITH "w0" AS (INSERT INTO "t""#)
                && sql[2].contains(r#") UPDATE "u""#),
            "{}",
            sql[2]
        );
        assert!(sql[3].starts_with("SELECT"), "{}", sql[3]);
        // Each statement numbers its own parameters, in order.
        let values = |n: usize| statements[n].values.as_ref().map_or(0, |v| v.0.len());
        assert_eq!((values(0), values(1), values(2), values(3)), (6, 1, 4, 0));
        assert!(
            sql[0].contains("$6") && !sql[0].contains("$7"),
            "{}",
            sql[0]
        );
        // On SQLite, one string.
        assert_eq!(mixed(DbBackend::Sqlite).into_statements().len(), 1);
    }

    /// On the PostgreSQL of `TEST_DATABASE_URL`, if any, a transaction in which the temporary tables t
    /// and u of (k, n) are made.
    async fn postgres_tables() -> Option<(DatabaseConnection, DatabaseTransaction)> {
        let db = Database::connect(crate::db::scratch::postgres_url()?.as_str())
            .await
            .unwrap();
        let txn = db.begin().await.unwrap();
        for table in ["t", "u"] {
            txn.execute_unprepared(&format!(
                "CREATE TEMPORARY TABLE {table} (k TEXT PRIMARY KEY, n BIGINT NOT NULL) ON COMMIT DROP"
            ))
            .await
            .unwrap();
        }
        Some((db, txn))
    }

    #[tokio::test]
    async fn on_postgres_a_merged_script_does_what_its_statements_do_one_by_one() {
        let Some((_db, txn)) = postgres_tables().await else {
            return;
        };
        let t = key_values(mixed(DbBackend::Postgres).run(&txn).await.unwrap());
        // The delete saw the insert before it, and the insert after it saw the delete.
        assert_eq!(t, [("a".to_owned(), 5), ("b".to_owned(), 2)]);
        let u = select(&txn, "SELECT k, n FROM u").await;
        assert_eq!(u, [("x".to_owned(), 11)]);
        txn.rollback().await.unwrap();
    }

    #[tokio::test]
    async fn on_postgres_a_merged_statement_over_the_parameter_limit_fails() {
        let Some((_db, txn)) = postgres_tables().await else {
            return;
        };
        // 65,534 parameters, then 2 in a write to another table: one statement of 65,536.
        let rows: Vec<(String, i64)> = (0..i64::from(u16::MAX) / 2)
            .map(|n| (format!("k{n}"), n))
            .collect();
        let rows: Vec<(&str, i64)> = rows.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        let script = || {
            let mut script = Script::new(DbBackend::Postgres);
            script.push_write("t", insert("t", &rows));
            script.push_write("u", insert("u", &[("x", 1)]));
            script
        };
        assert_eq!(script().into_statements().len(), 1);
        assert!(script().run(&txn).await.is_err());
        txn.rollback().await.unwrap();
    }
}
