//! The baselines: the least a server can do for the same job.
//!
//! - Ingest: a bare axum handler that inserts each request's body as one row, in its own (autocommit)
//!   transaction, with the durability fastpix-sync has: SQLite in WAL mode with `synchronous=FULL` (one
//!   writer connection, as SQLite allows one writer), PostgreSQL with `synchronous_commit=on` (a pool of 16
//!   connections, as fastpix-sync's). It answers `200 {"status":"applied"}` after the commit.
//! - Fan-out and idle connections: a tokio broadcast channel and plain websockets on `GET /ws` (with the
//!   socket buffer sizes fastpix-sync's `/graphql` websockets use); `POST /publish` sends its body, as one
//!   text frame, to every connected socket.
//! - Durable fan-out (for comparison only; the issue's fan-out target is against the one above): the same,
//!   but `POST /publish` first inserts its body as one row, with the ingest baseline's durability, and
//!   broadcasts it after the commit, as fastpix-sync publishes a change after its commit.

use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::Result;

/// The baseline ingest's store.
#[derive(Clone)]
enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Store {
    async fn open(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await?;
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                 payload TEXT NOT NULL, received_at_ns INTEGER NOT NULL)",
            )
            .execute(&pool)
            .await?;
            Ok(Self::Sqlite(pool))
        } else {
            let options = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "on")]);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await?;
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS deliveries (seq BIGSERIAL PRIMARY KEY, \
                 payload TEXT NOT NULL, received_at_ns BIGINT NOT NULL)",
            )
            .execute(&pool)
            .await?;
            Ok(Self::Postgres(pool))
        }
    }

    async fn insert(&self, payload: &str) -> Result<(), sqlx::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        match self {
            Self::Sqlite(pool) => {
                sqlx::query("INSERT INTO deliveries (payload, received_at_ns) VALUES (?, ?)")
                    .bind(payload)
                    .bind(now)
                    .execute(pool)
                    .await?;
            }
            Self::Postgres(pool) => {
                sqlx::query("INSERT INTO deliveries (payload, received_at_ns) VALUES ($1, $2)")
                    .bind(payload)
                    .bind(now)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn deliver(State(store): State<Store>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "not UTF-8").into_response();
    };
    match store.insert(text).await {
        Ok(()) => (
            [("content-type", "application/json")],
            r#"{"status":"applied"}"#,
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Serves the baseline ingest (`POST /webhooks/fastpix`) on `listener` until `shutdown` completes.
pub async fn serve_ingest(
    listener: TcpListener,
    database_url: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = Store::open(database_url).await?;
    let router = Router::new()
        .route("/webhooks/fastpix", post(deliver))
        .route("/healthz", get(healthz))
        .with_state(store.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    store.close().await;
    Ok(())
}

#[derive(Clone)]
struct Fanout {
    changes: broadcast::Sender<Utf8Bytes>,
    /// Where a durable fan-out commits each frame before sending it.
    store: Option<Store>,
}

async fn upgrade(State(fanout): State<Fanout>, upgrade: WebSocketUpgrade) -> Response {
    let changes = fanout.changes.subscribe();
    // The same socket buffers as fastpix-sync's websockets, so the difference is what GraphQL adds.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(1024 * 1024)
        .on_upgrade(move |socket| forward(socket, changes))
}

/// Sends every published frame to the socket until either side closes.
async fn forward(mut socket: WebSocket, mut changes: broadcast::Receiver<Utf8Bytes>) {
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(frame) => {
                    if socket.send(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn publish(State(fanout): State<Fanout>, body: Bytes) -> Response {
    let Ok(frame) = Utf8Bytes::try_from(body) else {
        return (StatusCode::BAD_REQUEST, "not UTF-8").into_response();
    };
    if let Some(store) = &fanout.store
        && let Err(e) = store.insert(frame.as_str()).await
    {
        return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    }
    let receivers = fanout.changes.send(frame).unwrap_or(0);
    format!("{{\"receivers\":{receivers}}}").into_response()
}

/// Serves the baseline fan-out (`GET /ws`, `POST /publish`) on `listener` until `shutdown` completes;
/// with `database_url`, the durable one, committing each frame there before sending it.
pub async fn serve_fanout(
    listener: TcpListener,
    database_url: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = match database_url {
        Some(url) => Some(Store::open(url).await?),
        None => None,
    };
    let (changes, _) = broadcast::channel(1024);
    let router = Router::new()
        .route("/ws", get(upgrade))
        .route("/publish", post(publish))
        .route("/healthz", get(healthz))
        .with_state(Fanout {
            changes,
            store: store.clone(),
        });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    if let Some(store) = store {
        store.close().await;
    }
    Ok(())
}
