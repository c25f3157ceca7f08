//! Several statements sent in as few round trips as the database allows.
//!
//! On SQLite, each statement sqlx runs is a round trip to the connection's worker thread: a message
//! there and one back, each waking a sleeping thread. sqlx runs a string of several statements, with
//! their parameters in order, in one such trip.
//!
//! On PostgreSQL, whose extended protocol takes one statement per call, consecutive writes to distinct
//! tables go in one statement, each but the last as a data-modifying `WITH` query
//! (`WITH w0 AS (INSERT …), w1 AS (UPDATE …) INSERT …`). PostgreSQL runs every part of such a statement
//! to completion, whether or not its output is read, all on one snapshot: no part sees another's
//! changes. So a write to a table an earlier write of the group touched starts the next statement,
//! and so does anything that is not an `INSERT`, `UPDATE` or `DELETE` (a `SELECT` would not see the
//! group's writes). The parts run in no order PostgreSQL promises (PostgreSQL 15 runs the main query
//! first, then the `WITH` queries nobody reads, last to first), and so take their row locks: a write whose lock must come after the others' (the
//! event log's counter) runs after the script, on its own.

use sea_orm::sea_query::{Alias, CommonTableExpression, SubQueryStatement, WithClause};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, StatementBuilder};

/// The most parameters one PostgreSQL statement may carry (its protocol counts them in 16 bits).
const POSTGRES_MAX_PARAMETERS: usize = u16::MAX as usize;

/// Statements to run in order, in one transaction the caller holds.
pub struct Script {
    backend: DbBackend,
    statements: Vec<Step>,
}

/// A statement, and on PostgreSQL what merging it takes: the table it writes, and the statement to
/// nest in a `WITH` query.
struct Step {
    built: Statement,
    writes: Option<(String, SubQueryStatement)>,
}

impl Script {
    pub fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            statements: Vec::new(),
        }
    }

    /// Adds a statement. Only the last statement of a script may return rows (on SQLite, the rows of
    /// every statement come back together; on PostgreSQL, those of the others are dropped). A statement
    /// must not read a table an earlier statement of the script writes, other than the one it writes
    /// itself: on PostgreSQL it may run in the same statement as that write, and not see it. On SQLite,
    /// its parameters must be plain `?` ones, as sea-query writes them: a numbered `?1` would take the
    /// script's first value.
    pub fn push<S>(&mut self, statement: &S)
    where
        S: StatementBuilder + Clone + Into<SubQueryStatement>,
    {
        let built = self.backend.build(statement);
        let writes = (self.backend == DbBackend::Postgres)
            .then(|| written_table(&built.sql))
            .flatten()
            .map(|table| (table.to_owned(), statement.clone().into()));
        self.statements.push(Step { built, writes });
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
    /// consecutive writes to distinct tables, and one for each other statement.
    fn into_statements(self) -> Vec<Statement> {
        if self.backend == DbBackend::Sqlite {
            return join_for_sqlite(self.statements);
        }
        let backend = self.backend;
        let mut statements = Vec::new();
        let mut group: Vec<Step> = Vec::new();
        let mut parameters = 0;
        for step in self.statements {
            let count = step.built.values.as_ref().map_or(0, |v| v.0.len());
            let joins = step.writes.as_ref().is_some_and(|(table, _)| {
                parameters + count <= POSTGRES_MAX_PARAMETERS
                    && group.iter().all(|other| {
                        other
                            .writes
                            .as_ref()
                            .is_some_and(|(other, _)| other != table)
                    })
            });
            if !joins && !group.is_empty() {
                statements.push(merge(backend, std::mem::take(&mut group)));
                parameters = 0;
            }
            if step.writes.is_some() {
                parameters += count;
                group.push(step);
            } else {
                statements.push(step.built);
            }
        }
        if !group.is_empty() {
            statements.push(merge(backend, group));
        }
        statements
    }
}

/// The table an `INSERT`, `UPDATE` or `DELETE` that sea-query built writes (quoted as written), or
/// `None` for any other statement.
fn written_table(sql: &str) -> Option<&str> {
    let rest = ["INSERT INTO ", "UPDATE ", "DELETE FROM "]
        .iter()
        .find_map(|verb| sql.strip_prefix(verb))?;
    rest.split_whitespace().next()
}

/// One statement doing what the writes of `group` do: the last one, with the others as `WITH` queries.
fn merge(backend: DbBackend, mut group: Vec<Step>) -> Statement {
    let last = group.pop().expect("a group has a statement");
    if group.is_empty() {
        return last.built;
    }
    let mut with = WithClause::new();
    for (n, step) in group.into_iter().enumerate() {
        let (_, query) = step.writes.expect("a group holds writes");
        with.cte(
            CommonTableExpression::new()
                .query(query)
                .table_name(Alias::new(format!("w{n}")))
                .to_owned(),
        );
    }
    let (_, last) = last.writes.expect("a group holds writes");
    backend.build(&with.query(last))
}

/// One string of every statement, with their parameters in order: sqlx numbers the plain `?` parameters
/// of each statement on from those of the ones before it.
fn join_for_sqlite(steps: Vec<Step>) -> Vec<Statement> {
    if steps.is_empty() {
        return Vec::new();
    }
    let sql = steps
        .iter()
        .map(|step| step.built.sql.as_str())
        .collect::<Vec<_>>()
        .join(";\n");
    let values = steps
        .into_iter()
        .flat_map(|step| step.built.values.map(|v| v.0).unwrap_or_default());
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

    use super::{POSTGRES_MAX_PARAMETERS, Script};

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
        script.push(
            Query::insert()
                .into_table(t.clone())
                .columns([k.clone(), n.clone()])
                .values_panic(["a".into(), 1.into()])
                .values_panic(["b".into(), 2.into()]),
        );
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
        let rows: Vec<(String, i64)> = script
            .run(&txn)
            .await
            .unwrap()
            .iter()
            .map(|row| (row.try_get("", "k").unwrap(), row.try_get("", "n").unwrap()))
            .collect();
        assert_eq!(rows, [("a".to_owned(), 1), ("b".to_owned(), 12)]);
    }

    #[tokio::test]
    async fn on_sqlite_a_script_stops_at_its_first_failing_statement() {
        let (_db, txn) = with_table("CREATE TABLE t (k TEXT PRIMARY KEY)").await;
        let (t, k) = (Alias::new("t"), Alias::new("k"));
        let insert = |key: &str| {
            Query::insert()
                .into_table(t.clone())
                .columns([k.clone()])
                .values_panic([key.into()])
                .to_owned()
        };
        let mut script = Script::new(DbBackend::Sqlite);
        script.push(&insert("a"));
        script.push(&insert("a"));
        script.push(&insert("b"));
        assert!(script.run(&txn).await.is_err(), "the second insert fails");
        let keys: Vec<String> = txn
            .query_all_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "SELECT k FROM t ORDER BY k",
            ))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get("", "k").unwrap())
            .collect();
        assert_eq!(
            keys,
            ["a"],
            "the statement after the failing one did not run"
        );
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
        script.push(&insert("t", &[("a", 1), ("b", 2)]));
        script.push(&insert("u", &[("x", 10)]));
        script.push(
            Query::delete()
                .from_table(t.clone())
                .and_where(Expr::col(k.clone()).eq("a")),
        );
        script.push(&insert("t", &[("a", 5)]));
        script.push(
            Query::update()
                .table(u)
                .value(n.clone(), Expr::col(n.clone()).add(1))
                .and_where(Expr::col(k.clone()).eq("x")),
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

    #[test]
    fn on_postgres_a_statement_stays_within_the_parameter_limit() {
        // 65,534 parameters, then one and one more: the first makes 65,535, the limit; the second would
        // pass it.
        let rows: Vec<(String, i64)> = (0..POSTGRES_MAX_PARAMETERS as i64 / 2)
            .map(|n| (format!("k{n}"), n))
            .collect();
        let rows: Vec<(&str, i64)> = rows.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        let delete = |table: &str| {
            Query::delete()
                .from_table(Alias::new(table))
                .and_where(Expr::col(Alias::new("k")).eq("a"))
                .to_owned()
        };
        let mut script = Script::new(DbBackend::Postgres);
        script.push(&insert("t", &rows));
        script.push(&delete("u"));
        script.push(&delete("v"));
        let counts: Vec<usize> = script
            .into_statements()
            .iter()
            .map(|s| s.values.as_ref().map_or(0, |v| v.0.len()))
            .collect();
        assert_eq!(counts, [POSTGRES_MAX_PARAMETERS, 1]);
    }

    #[tokio::test]
    async fn on_postgres_a_merged_script_does_what_its_statements_do_one_by_one() {
        let Some(url) = crate::db::scratch::postgres_url() else {
            return;
        };
        let db = Database::connect(url.as_str()).await.unwrap();
        let txn = db.begin().await.unwrap();
        for table in ["t", "u"] {
            txn.execute_unprepared(&format!(
                "CREATE TEMPORARY TABLE {table} (k TEXT PRIMARY KEY, n BIGINT NOT NULL) ON COMMIT DROP"
            ))
            .await
            .unwrap();
        }
        let read = |row: &sea_orm::QueryResult| -> (String, i64) {
            (row.try_get("", "k").unwrap(), row.try_get("", "n").unwrap())
        };
        let t: Vec<_> = mixed(DbBackend::Postgres)
            .run(&txn)
            .await
            .unwrap()
            .iter()
            .map(read)
            .collect();
        // The delete saw the insert before it, and the insert after it saw the delete.
        assert_eq!(t, [("a".to_owned(), 5), ("b".to_owned(), 2)]);
        let u: Vec<_> = txn
            .query_all_raw(sea_orm::Statement::from_string(
                DbBackend::Postgres,
                "SELECT k, n FROM u",
            ))
            .await
            .unwrap()
            .iter()
            .map(read)
            .collect();
        assert_eq!(u, [("x".to_owned(), 11)]);
        txn.rollback().await.unwrap();
    }
}
