//! Databases of a run's own: a SQLite file in a temporary folder, or a PostgreSQL database created for the
//! run (`fastpix_bench_<pid>_<n>`) and dropped at the end.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::Result;

/// Which kind of database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// A PostgreSQL server, by an URL whose user may create databases.
    Postgres {
        admin_url: String,
    },
}

impl Backend {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres { .. } => "PostgreSQL",
        }
    }
}

// The database names interpolated into SQL are `fastpix_bench_<digits>_<digits>`, made here.

/// One database, removed by [`BenchDb::remove`] (or, for a SQLite file, when dropped).
pub struct BenchDb {
    pub url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `url` with its database name replaced by `name` (a query string is kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[host_start..].find('/') {
        Some(slash) => &base[..host_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

impl BenchDb {
    pub async fn create(backend: &Backend) -> Result<Self> {
        match backend {
            Backend::Sqlite => {
                // Not in a tmpfs: the temporary folder must be on a disk for fsync to cost what it costs.
                let dir = tempfile::Builder::new()
                    .prefix("fastpix-bench-")
                    .tempdir()?;
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("bench.db").display()
                );
                Ok(Self {
                    url,
                    postgres: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres { admin_url } => {
                let name = format!(
                    "fastpix_bench_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                let mut admin = PgConnection::connect(admin_url)
                    .await
                    .map_err(|e| format!("PostgreSQL does not answer at {admin_url}: {e}"))?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await?;
                admin.close().await.ok();
                Ok(Self {
                    url: with_database(admin_url, &name),
                    postgres: Some((admin_url.clone(), name)),
                    _dir: None,
                })
            }
        }
    }

    /// Drops the PostgreSQL database (the SQLite folder goes when `self` is dropped).
    pub async fn remove(mut self) {
        if let Some((admin_url, name)) = self.postgres.take()
            && let Ok(mut admin) = PgConnection::connect(&admin_url).await
        {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
            admin.close().await.ok();
        }
    }
}

/// `SHOW synchronous_commit` on a PostgreSQL database (to report the durability actually in force).
pub async fn pg_synchronous_commit(url: &str) -> Result<String> {
    let mut conn = PgConnection::connect(url).await?;
    let value: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(format!("synchronous_commit={value}, fsync={fsync}"))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
