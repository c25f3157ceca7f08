//! Several statements sent in as few round trips as the database allows.
//!
//! On SQLite, each statement sqlx runs is a round trip to the connection's worker thread: a message
//! there and one back, each waking a sleeping thread. sqlx runs a string of several statements, with
//! their parameters in order, in one such trip. On PostgreSQL, whose extended protocol takes one
//! statement per call, a script runs one statement after the other, as separate calls would.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, StatementBuilder};

/// Statements to run in order, in one transaction the caller holds.
pub struct Script {
    backend: DbBackend,
    statements: Vec<Statement>,
}

impl Script {
    pub fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            statements: Vec::new(),
        }
    }

    /// Adds a statement. On SQLite, only the last statement of a script may return rows (the rows of
    /// every statement come back together; on PostgreSQL, those of the others are dropped), and its
    /// parameters must be plain `?` ones, as sea-query writes them: a numbered `?1` would take the
    /// script's first value.
    pub fn push(&mut self, statement: &impl StatementBuilder) {
        self.statements.push(self.backend.build(statement));
    }

    /// Runs the statements in order, stopping at the first that fails, and returns the rows of the last
    /// one. After an error, the caller rolls its transaction back: the statements before the failing
    /// one may have run.
    pub async fn run(mut self, db: &impl ConnectionTrait) -> Result<Vec<QueryResult>, DbErr> {
        if self.backend != DbBackend::Sqlite {
            let Some(last) = self.statements.pop() else {
                return Ok(Vec::new());
            };
            for statement in self.statements {
                db.execute_raw(statement).await?;
            }
            return db.query_all_raw(last).await;
        }
        if self.statements.is_empty() {
            return Ok(Vec::new());
        }
        // sqlx numbers the plain `?` parameters of each statement on from those of the ones before it.
        let sql = self
            .statements
            .iter()
            .map(|statement| statement.sql.as_str())
            .collect::<Vec<_>>()
            .join(";\n");
        let values = self
            .statements
            .into_iter()
            .flat_map(|statement| statement.values.map(|v| v.0).unwrap_or_default());
        db.query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            values,
        ))
        .await
    }
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
}
