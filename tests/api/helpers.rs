//! `spawn_app()` and the tools the tests share.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use fastpix_sync::app::Application;
use fastpix_sync::config::Settings;
use fastpix_sync::http::ws::WsConfig;
use fastpix_sync::webhook::verify::sign;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait, QueryOrder, Statement,
};
use serde_json::Value;
use tokio::sync::oneshot;

/// The signing secret of `fastpix-webhooks.md` §3.
pub const SECRET: &str = "ZmFzdHBpeC1kZW1vLXNpZ25pbmctc2VjcmV0LTMyYiE=";

/// The admin token of test servers.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The fixture sequences in the order of their `createdAt`.
pub const MEDIA_SEQUENCE: [&str; 7] = [
    "video.media.created",
    "video.media.ready",
    "video.media.upload",
    "video.upload.media_created",
    "video.media.failed",
    "video.media.updated",
    "video.media.deleted",
];
pub const LIVE_SEQUENCE: [&str; 16] = [
    "video.live_stream.created",
    "video.live_stream.simulcast_target.created",
    "video.live_stream.preparing",
    "video.live_stream.connected",
    "video.live_stream.recording",
    "video.live_stream.active",
    "video.live_stream.simulcast_target.starting",
    "video.media.live_stream.created",
    "video.live_stream.simulcast_target.broadcasting",
    "video.live_stream.simulcast_target.updated",
    "video.live_stream.disconnected",
    "video.live_stream.idle",
    "video.live_stream.updated",
    "video.live_stream.simulcast_target.deleted",
    "video.live_stream.disabled",
    "video.live_stream.deleted",
];

pub const MEDIA_ID: &str = "7d3c2b1a-4e5f-4a6b-8c9d-0e1f2a3b4c5d";
/// The playback id of [`MEDIA_ID`] in the fixtures.
pub const MEDIA_PLAYBACK_ID: &str = "a1b2c3d4-e5f6-4789-9abc-def012345678";
pub const UPLOAD_ID: &str = "3f9a8b7c-6d5e-4f3a-9b2c-1d0e9f8a7b6c";
pub const FAILED_ID: &str = "9c8b7a6f-5e4d-4c3b-a2a1-0f9e8d7c6b5a";
pub const RECORDING_ID: &str = "c4d5e6f7-a8b9-4c0d-9e1f-2a3b4c5d6e7f";
pub const STREAM_ID: &str = "4b1f9e2c7d3a8e5f6a0b1c2d3e4f5a6b";
pub const TARGET_ID: &str = "8e2f4a6c1b3d5e7f9a0b2c4d6e8f0a1b";

/// The exact bytes of a fixture in `tests/fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The event id of [`unique_media`]`(n)`.
pub fn unique_event_id(n: usize) -> String {
    format!("unique-{n:06}")
}

/// A `video.media.created` of its own media (id and playback id), event id [`unique_event_id`]`(n)`.
pub fn unique_media(n: usize) -> Vec<u8> {
    String::from_utf8(fixture("video.media.created"))
        .unwrap()
        .replace(MEDIA_ID, &format!("00000000-0000-4000-8000-{n:012}"))
        .replace(
            MEDIA_PLAYBACK_ID,
            &format!("00000000-0000-4000-9000-{n:012}"),
        )
        .replace("0a1b2c3d-1111-4a00-8000-000000000001", &unique_event_id(n))
        .into_bytes()
}

/// The event id of fixture `name`.
pub fn event_id(name: &str) -> String {
    serde_json::from_slice::<Value>(&fixture(name)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A database of a test's own: a SQLite file in a temporary folder, or a new PostgreSQL database when
/// `TEST_DATABASE_URL` is set. The PostgreSQL database is dropped when this is dropped.
pub struct TestDb {
    pub url: String,
    postgres: Option<(String, String)>,
    /// Whether dropping this drops the PostgreSQL database (false for a second handle on it).
    owner: bool,
    _dir: Option<tempfile::TempDir>,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn new() -> Self {
        match std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            Some(admin_url) => Self::postgres(admin_url).await,
            None => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                Self {
                    url,
                    postgres: None,
                    owner: true,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// A database on PostgreSQL, for a test about PostgreSQL only (`what` it needs it for); `None`, said
    /// on standard error, when the tests run on SQLite (`.ci/run` runs them on both).
    pub async fn postgres_only(what: &str) -> Option<Self> {
        let db = Self::new().await;
        if !db.is_postgres() {
            eprintln!("{what} needs PostgreSQL (TEST_DATABASE_URL); nothing to run on SQLite");
            return None;
        }
        Some(db)
    }

    async fn postgres(admin_url: String) -> Self {
        let name = format!(
            "fastpix_test_{}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_micros()
        );
        let admin = Database::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("TEST_DATABASE_URL is set but PostgreSQL does not answer at {admin_url}: {e}")
        });
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating the test database");
        admin.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        Self {
            url: format!("{base}/{name}"),
            postgres: Some((admin_url.clone(), name)),
            owner: true,
            _dir: None,
        }
    }

    /// Another handle on the same PostgreSQL database (for a second instance); it drops nothing.
    pub fn another_handle(&self) -> Self {
        assert!(
            self.is_postgres(),
            "only PostgreSQL databases are shared between instances"
        );
        Self {
            url: self.url.clone(),
            postgres: self.postgres.clone(),
            owner: false,
            _dir: None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    pub fn backend(&self) -> DbBackend {
        if self.is_postgres() {
            DbBackend::Postgres
        } else {
            DbBackend::Sqlite
        }
    }

    /// The PostgreSQL database name (panics on SQLite).
    pub fn pg_name(&self) -> &str {
        &self
            .postgres
            .as_ref()
            .expect("a PostgreSQL test database")
            .1
    }

    /// A connection with administrative rights on the server (PostgreSQL only).
    pub async fn admin(&self) -> DatabaseConnection {
        let (admin_url, _) = self.postgres.as_ref().expect("a PostgreSQL test database");
        Database::connect(admin_url)
            .await
            .expect("admin connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take().filter(|_| self.owner) else {
            return;
        };
        // Async work cannot run in `drop`: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// A connection of the test's own to the server's database, for looking at rows.
    pub db: DatabaseConnection,
    pub test_db: TestDb,
    /// The instance name (its PostgreSQL relay connection's `application_name`).
    pub instance: String,
    stop: Option<oneshot::Sender<()>>,
    /// The server task: it ends after `shutdown()`.
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts the real server on 127.0.0.1:0 with a fresh database and the test signing secret.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(TestDb::new().await).await
}

pub async fn spawn_app_on(test_db: TestDb) -> TestApp {
    spawn_configured(test_db, |_| {}, WsConfig::default()).await
}

/// Starts the real server with settings and websocket timeouts adjusted by the test.
pub async fn spawn_configured(
    test_db: TestDb,
    configure: impl FnOnce(&mut Settings),
    ws: WsConfig,
) -> TestApp {
    // Server warnings and errors go to the test's captured output (shown when a test fails).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .with_env_filter("fastpix_sync=warn")
        .try_init();
    let mut settings = Settings::for_tests(test_db.url.clone());
    settings.webhook_secret = Some(SECRET.to_owned());
    settings.admin_token = Some(ADMIN_TOKEN.to_owned());
    configure(&mut settings);
    let app = Application::build(&settings)
        .await
        .expect("the app starts")
        .with_ws_config(ws);
    let address = format!("http://{}", app.local_addr());
    let instance = app.state().instance.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let db = Database::connect(&test_db.url)
        .await
        .expect("test connection");
    TestApp {
        address,
        client: reqwest::Client::new(),
        db,
        test_db,
        instance,
        stop: Some(stop),
        server,
    }
}

impl TestApp {
    /// Starts the server's graceful shutdown (as SIGTERM does).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Posts a body with the given `FastPix-Signature` (none when `None`).
    pub async fn post_webhook(
        &self,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/webhooks/fastpix", self.address))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("FastPix-Signature", signature);
        }
        request.send().await.expect("request sent")
    }

    /// Signs and posts a body; returns the HTTP status and the `status` field of the answer.
    pub async fn deliver(&self, body: &[u8]) -> (u16, String) {
        let response = self
            .post_webhook(body.to_vec(), Some(sign(SECRET, body)))
            .await;
        answer_of(response).await
    }

    /// Signs and posts a fixture; asserts a 200.
    pub async fn deliver_fixture(&self, name: &str) -> String {
        let (code, status) = self.deliver(&fixture(name)).await;
        assert_eq!(code, 200, "{name}");
        status
    }

    /// Drops a trigger on `media` that a test made to fail writes.
    pub async fn drop_media_trigger(&self, name: &str) {
        let statement = match self.test_db.backend() {
            sea_orm::DbBackend::Postgres => format!("DROP TRIGGER {name} ON media"),
            _ => format!("DROP TRIGGER {name}"),
        };
        self.db
            .execute_unprepared(&statement)
            .await
            .expect("dropping the trigger");
    }

    /// The stored events, in position order.
    pub async fn events_by_position(&self) -> Vec<entity::webhook_event::Model> {
        entity::webhook_event::Entity::find()
            .order_by_asc(entity::webhook_event::Column::Position)
            .all(&self.db)
            .await
            .expect("event rows")
    }

    /// The stored events' positions, in order.
    pub async fn positions(&self) -> Vec<Option<i64>> {
        let events = self.events_by_position().await;
        events.into_iter().map(|row| row.position).collect()
    }

    pub async fn count(&self, table: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .expect("count query")
            .expect("a row");
        row.try_get::<i64>("", "n").expect("a count")
    }

    /// Runs a GraphQL query over `POST /graphql`, as an admin when `admin`; returns the whole answer.
    pub async fn graphql(&self, query: &str, variables: Value, admin: bool) -> Value {
        self.post_graphql(
            serde_json::json!({ "query": query, "variables": variables }),
            admin,
        )
        .await
    }

    /// Posts a GraphQL request (`query`, `variables`, `operationName`) to `/graphql`, as an admin when
    /// `admin`; returns the whole answer.
    pub async fn post_graphql(&self, body: Value, admin: bool) -> Value {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&body);
        if admin {
            request = request.bearer_auth(ADMIN_TOKEN);
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), 200);
        response.json().await.expect("a JSON answer")
    }

    /// Runs a query that must succeed; returns its `data`.
    pub async fn query(&self, query: &str, variables: Value) -> Value {
        let answer = self.graphql(query, variables, true).await;
        assert!(answer.get("errors").is_none(), "{answer}");
        answer["data"].clone()
    }

    /// The value of a counter or gauge in `GET /metrics` (summed over label sets matching `labels`).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| line.split([' ', '{']).next() == Some(name))
            .filter(|line| labels.iter().all(|label| line.contains(label)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Every entity row (media, live streams, targets, playback ids) as JSON, in id order.
    pub async fn entity_rows(&self) -> Value {
        entity_rows(&self.db).await
    }
}

/// A fixed pseudo-random permutation of `items` (xorshift from `seed`).
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ seed;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// The HTTP status and the `status` field of a webhook's answer.
pub async fn answer_of(response: reqwest::Response) -> (u16, String) {
    let code = response.status().as_u16();
    let json: Value = response.json().await.unwrap_or(Value::Null);
    (code, json["status"].as_str().unwrap_or_default().to_owned())
}

pub async fn entity_rows(db: &DatabaseConnection) -> Value {
    use entity::{live_stream, media, playback_id, simulcast_target};
    let media = media::Entity::find()
        .order_by_asc(media::Column::Id)
        .into_json()
        .all(db)
        .await;
    let live = live_stream::Entity::find()
        .order_by_asc(live_stream::Column::Id)
        .into_json()
        .all(db)
        .await;
    let targets = simulcast_target::Entity::find()
        .order_by_asc(simulcast_target::Column::Id)
        .into_json()
        .all(db)
        .await;
    let playback = playback_id::Entity::find()
        .order_by_asc(playback_id::Column::Id)
        .into_json()
        .all(db)
        .await;
    serde_json::json!({
        "media": media.expect("media rows"),
        "live_stream": live.expect("live stream rows"),
        "simulcast_target": targets.expect("target rows"),
        "playback_id": playback.expect("playback rows"),
    })
}
