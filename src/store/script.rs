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

    /// Adds a statement. Only the last statement of a script may return rows: on SQLite the rows of
    /// every statement come back together.
    pub fn push(&mut self, statement: &impl StatementBuilder) {
        self.statements.push(self.backend.build(statement));
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Runs the statements in order and returns the rows of the last one.
    pub async fn run(mut self, db: &impl ConnectionTrait) -> Result<Vec<QueryResult>, DbErr> {
        let Some(last) = self.statements.pop() else {
            return Ok(Vec::new());
        };
        if self.backend != DbBackend::Sqlite {
            for statement in self.statements {
                db.execute_raw(statement).await?;
            }
            return db.query_all_raw(last).await;
        }
        // sqlx numbers the plain `?` parameters of each statement on from those of the ones before it.
        self.statements.push(last);
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
