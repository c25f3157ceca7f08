//! Building the application from settings: database, state, router, listener; and running it.

use std::future::Future;
use std::net::SocketAddr;

use sea_orm::{DatabaseConnection, DbBackend, DbErr};
use tokio::net::TcpListener;

use crate::config::{Settings, redact_url};
use crate::events::cache::PlaybackCache;
use crate::events::relay::{Inbox, Relay};
use crate::events::{Bus, Publisher};
use crate::graphql::documents::Documents;
use crate::graphql::fanout::Fanout;
use crate::graphql::{AdminToken, AppSchema};
use crate::http::ws::WsConfig;
use crate::metrics::Metrics;
use crate::webhook::verify::BadSecret;
use crate::webhook::{Intake, Secrets};
use tokio::sync::watch;

/// How often the event log is pruned.
pub const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared state of every handler. Cheap to clone: each field is a handle.
#[derive(Clone)]
pub struct AppState {
    /// Connection pool.
    pub db: DatabaseConnection,
    /// Webhook intake (verification keys, the group-commit writer, the bus).
    pub intake: Intake,
    /// Committed changes, for subscriptions.
    pub bus: Bus,
    /// The GraphQL schema (holds the pool as schema data).
    pub schema: AppSchema,
    /// Shared executions of identical entity subscriptions.
    pub fanout: Fanout,
    /// Parsed GraphQL documents, kept by their text.
    pub documents: Documents,
    /// Unlocks admin-only fields.
    pub admin: AdminToken,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Websocket timeouts.
    pub ws: WsConfig,
    /// Becomes `true` when the server starts shutting down: websockets then close with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// This instance's name (the `application_name` of its PostgreSQL listener connection).
    pub instance: String,
}

/// A name unique to this process and application, e.g. `fastpix-sync-1234-5`.
fn instance_name() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("fastpix-sync-{}-{n}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {0} without a webhook secret: set FASTPIX_WEBHOOK_SECRET (or --webhook-secret) to the endpoint's signing secret from the FastPix dashboard, or listen on a loopback address for local development"
    )]
    InsecureListen(SocketAddr),
    #[error(transparent)]
    BadSecret(#[from] BadSecret),
    #[error("cannot open the database at {url}: {source}")]
    Database { url: String, source: DbErr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A built application: migrated database, state, and a bound listener.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Tells websockets (and the relay) that the server is shutting down.
    stopping: watch::Sender<bool>,
    /// The PostgreSQL change relay, started by `run_until`.
    relay: Option<Relay>,
    /// Days of event log to keep (0: all).
    retention_days: u32,
}

impl Application {
    /// Validates settings, connects and migrates the database, and binds the listener.
    pub async fn build(settings: &Settings) -> Result<Self, StartError> {
        let secrets = Secrets::parse(settings.webhook_secret.as_deref())?;
        if secrets.is_empty() {
            if !settings.listen.ip().is_loopback() {
                return Err(StartError::InsecureListen(settings.listen));
            }
            tracing::warn!(
                "FASTPIX_WEBHOOK_SECRET is not set: accepting unsigned webhooks (fine for local development only)"
            );
        }
        let database_error = |source| StartError::Database {
            url: redact_url(&settings.database_url),
            source,
        };
        let mut db = crate::db::connect_and_migrate(&settings.database_url)
            .await
            .map_err(database_error)?;
        // The intake writer's own connection on SQLite; on PostgreSQL, a clone of `db`.
        let mut writer_db = crate::db::writer_connection(&db)
            .await
            .map_err(database_error)?;
        let metrics = Metrics::new();
        for connection in [&mut db, &mut writer_db] {
            let counter = metrics.clone();
            connection.set_metric_callback(move |_| counter.sql_statement());
        }
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let bus = Bus::new(settings.bus_capacity.max(1));
        let (stopping, shutdown) = watch::channel(false);
        let instance = instance_name();
        // Several instances may share PostgreSQL: changes then travel through the relay (LISTEN/NOTIFY).
        // A single instance (SQLite) sees every write, so it may keep query answers in memory.
        let cache = (db.get_database_backend() != DbBackend::Postgres).then(PlaybackCache::default);
        let (publisher, relay) = match &cache {
            Some(cache) => (
                Publisher::Direct {
                    bus: bus.clone(),
                    cache: cache.clone(),
                },
                None,
            ),
            None => {
                let inbox = Inbox::default();
                let relay = Relay {
                    db: db.clone(),
                    url: settings.database_url.clone(),
                    bus: bus.clone(),
                    inbox: inbox.clone(),
                    metrics: metrics.clone(),
                    name: instance.clone(),
                    stopping: shutdown.clone(),
                };
                (Publisher::Relayed(inbox), Some(relay))
            }
        };
        let intake = Intake::new(writer_db, secrets, publisher, metrics.clone());
        let schema = crate::graphql::schema(Some(crate::graphql::Shared {
            db: db.clone(),
            bus: bus.clone(),
            metrics: metrics.clone(),
            cache,
        }));
        let admin = AdminToken::new(settings.admin_token.as_deref());
        let documents = Documents::new(&metrics);
        let fanout = Fanout::new(schema.clone(), db.clone(), metrics.clone());
        Ok(Self {
            listener,
            stopping,
            relay,
            retention_days: settings.event_retention_days,
            state: AppState {
                db,
                intake,
                bus,
                schema,
                fanout,
                documents,
                admin,
                metrics,
                ws: WsConfig::default(),
                shutdown,
                instance,
            },
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    /// Replaces the websocket timeouts (tests use short ones).
    pub fn with_ws_config(mut self, config: WsConfig) -> Self {
        self.state.ws = config;
        self
    }

    /// Serves until `shutdown` completes; then stops accepting, closes websockets with 1001, and waits for
    /// in-flight requests (a webhook's transaction included) to finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Some(relay) = self.relay {
            tokio::spawn(relay.run());
        }
        tokio::spawn(crate::retention::run_in_background(
            self.state.db.clone(),
            self.retention_days,
            RETENTION_INTERVAL,
            self.stopping.subscribe(),
        ));
        let router = crate::http::router(self.state);
        tracing::info!(address = %self.listener.local_addr()?, "listening");
        let stopping = self.stopping;
        let mut stopped = stopping.subscribe();
        let signal = async move {
            shutdown.await;
            let _ = stopping.send(true);
        };
        let serve = axum::serve(self.listener, router).with_graceful_shutdown(signal);
        // Draining is bounded: a request still running `SHUTDOWN_GRACE` after the signal is abandoned
        // (its transaction, if any, rolls back, and FastPix retries the delivery).
        let deadline = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            served = serve => served,
            () = deadline => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still running after the shutdown grace period; exiting anyway");
                Ok(())
            }
        }
    }
}
