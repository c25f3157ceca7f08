//! Acceptance 4 of the intake issue: a database failure during intake answers 503 with `Retry-After`,
//! leaves nothing half-written, and the same delivery retried after recovery is applied exactly once.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend};
use serde_json::json;

use crate::helpers::*;
use crate::ws_client::*;

/// Makes every write to `media` fail inside the intake transaction, after the event row was inserted.
async fn break_media_writes(app: &TestApp) {
    let statements: &[&str] = match app.test_db.backend() {
        DbBackend::Postgres => &[
            "CREATE FUNCTION refuse_media() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'simulated disk failure'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_media BEFORE INSERT OR UPDATE ON media FOR EACH ROW EXECUTE FUNCTION refuse_media()",
        ],
        _ => &[
            "CREATE TRIGGER refuse_media BEFORE INSERT ON media BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END",
        ],
    };
    for statement in statements {
        app.db.execute_unprepared(statement).await.expect(statement);
    }
}

async fn repair_media_writes(app: &TestApp) {
    app.drop_media_trigger("refuse_media").await;
}

#[tokio::test]
async fn a_failed_transaction_answers_503_and_the_retry_applies_once() {
    let app = spawn_app().await;
    break_media_writes(&app).await;
    let body = fixture("video.media.created");
    let response = app
        .post_webhook(
            body.clone(),
            Some(fastpix_sync::webhook::verify::sign(SECRET, &body)),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "UNAVAILABLE");
    assert_eq!(
        app.count("webhook_event").await,
        0,
        "the event row was rolled back with the entity"
    );
    assert_eq!(app.count("media").await, 0);

    repair_media_writes(&app).await;
    assert_eq!(app.deliver(&body).await, (200, "applied".to_owned()));
    assert_eq!(app.deliver(&body).await, (200, "duplicate".to_owned()));
    assert_eq!(app.count("webhook_event").await, 1);
    assert_eq!(app.count("media").await, 1);
    assert_eq!(app.count("playback_id").await, 1);
}

/// The positions come from the counter row (on SQLite the insert reads it; on PostgreSQL the increment
/// returns it): without that row (a database whose migrations were tampered with), the delivery fails
/// whole instead of storing an event without a position.
#[tokio::test]
async fn without_the_position_counter_a_delivery_answers_503_and_stores_nothing() {
    let app = spawn_app().await;
    app.db
        .execute_unprepared("DELETE FROM log_position")
        .await
        .unwrap();
    let body = fixture("video.media.created");
    let (status, _) = app.deliver(&body).await;
    assert_eq!(status, 503);
    assert_eq!(app.count("webhook_event").await, 0);
    assert_eq!(app.count("media").await, 0);

    app.db
        .execute_unprepared("INSERT INTO log_position (id, last) VALUES (1, 0)")
        .await
        .unwrap();
    assert_eq!(app.deliver(&body).await, (200, "applied".to_owned()));
    assert_eq!(app.positions().await, [Some(1)]);
    assert_eq!(app.count("media").await, 1);
}

#[tokio::test]
async fn terminated_postgres_connections_answer_503_and_the_retry_applies_once() {
    // The SQLite run covers failure through the trigger test above.
    let Some(test_db) = TestDb::postgres_only("ending the database's connections").await else {
        return;
    };
    let app = spawn_app_on(test_db).await;
    assert_eq!(
        app.deliver_fixture("video.live_stream.created").await,
        "applied"
    );
    let admin = app.test_db.admin().await;
    let name = app.test_db.pg_name().to_owned();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();

    let body = fixture("video.live_stream.preparing");
    let (code, _) = app.deliver(&body).await;
    assert_eq!(code, 503);

    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let mut answer = app.deliver(&body).await;
    for _ in 0..20 {
        if answer.0 != 503 {
            break;
        }
        // The pool may still hand out a connection that died with its backend; FastPix would retry too.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        answer = app.deliver(&body).await;
    }
    assert_eq!(answer, (200, "applied".to_owned()));
    assert_eq!(app.deliver(&body).await, (200, "duplicate".to_owned()));
    let fresh = sea_orm::Database::connect(&app.test_db.url).await.unwrap();
    let rows = entity_rows(&fresh).await;
    assert_eq!(rows["live_stream"][0]["status"], "PREPARING");
    assert_eq!(app.count("webhook_event").await, 2);
}

/// After PostgreSQL ends every connection (as when it restarts), a query answers from a new connection:
/// the pool hands out a recently used connection without checking it, and the query that meets one
/// that died runs again on another instead of answering an error.
#[tokio::test]
async fn a_query_after_postgres_ended_its_connections_answers_from_a_new_one() {
    let Some(app) = postgres_app_with_a_media().await else {
        return;
    };
    end_every_connection(&app).await;

    for _ in 0..4 {
        assert_eq!(
            app.query(BY_PLAYBACK, by_playback()).await,
            by_playback_answer()
        );
    }
    // At least the first of them met a connection that had ended.
    assert!(app.metric(RETRIES, &[]).await >= 1.0);
}

/// The media query the lost-connection tests ask.
const BY_PLAYBACK: &str = "query($p: String!) { mediaByPlaybackId(playbackId: $p) { id status } }";

/// Counts the queries and reads run again after a lost connection.
const RETRIES: &str = "fastpix_sync_graphql_query_retries_total";

/// [`BY_PLAYBACK`]'s variables: the fixtures' media.
fn by_playback() -> serde_json::Value {
    json!({ "p": MEDIA_PLAYBACK_ID })
}

/// The fixtures' media as `video.media.created` made it, as the lost-connection tests select it.
fn created_media() -> serde_json::Value {
    json!({ "id": MEDIA_ID, "status": "CREATED" })
}

/// [`BY_PLAYBACK`]'s answer for [`by_playback`].
fn by_playback_answer() -> serde_json::Value {
    json!({ "mediaByPlaybackId": created_media() })
}

/// On PostgreSQL only (a SQLite connection lives in this process: nothing ends it), an app holding the
/// fixtures' media. It has just answered [`BY_PLAYBACK`] 8 times at once, so its pool holds several
/// connections used just now, and nothing ran again yet.
async fn postgres_app_with_a_media() -> Option<TestApp> {
    let test_db = TestDb::postgres_only("ending the database's connections").await?;
    let app = spawn_app_on(test_db).await;
    assert_eq!(app.deliver_fixture("video.media.created").await, "applied");
    let first =
        futures_util::future::join_all((0..8).map(|_| app.query(BY_PLAYBACK, by_playback()))).await;
    assert!(
        first.iter().all(|data| *data == by_playback_answer()),
        "{first:?}"
    );
    assert_eq!(app.metric(RETRIES, &[]).await, 0.0);
    Some(app)
}

/// Ends every PostgreSQL connection of the app's database, each backend gone before this returns.
async fn end_every_connection(app: &TestApp) {
    let admin = app.test_db.admin().await;
    let ended = admin
        .query_one_raw(sea_orm::Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) AS n FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                app.test_db.pg_name()
            ),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert!(ended >= 2, "ended {ended} connections");
}

/// A websocket client, initialised with `init`, that subscribed to `query` as operation `id` after
/// PostgreSQL ended every connection of an app holding one media ([`postgres_app_with_a_media`]).
async fn subscribed_after_every_connection_ended(
    id: &str,
    query: &str,
    variables: serde_json::Value,
    init: serde_json::Value,
) -> Option<(TestApp, WsClient)> {
    let app = postgres_app_with_a_media().await?;
    end_every_connection(&app).await;
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client.init(init).await;
    client.subscribe(id, query, variables).await;
    Some((app, client))
}

#[tokio::test]
async fn a_websocket_query_after_postgres_ended_its_connections_answers_from_a_new_one() {
    let Some(app) = postgres_app_with_a_media().await else {
        return;
    };
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client.init(json!({})).await;
    let expected = by_playback_answer();
    let ask = async |client: &mut WsClient, id: &str| {
        client.subscribe(id, BY_PLAYBACK, by_playback()).await;
        let data = client.next_data(id).await;
        let end = client.message().await;
        assert_eq!((&end["type"], &end["id"]), (&json!("complete"), &json!(id)));
        data
    };
    assert_eq!(ask(&mut client, "before").await, expected);
    assert_eq!(app.metric(RETRIES, &[]).await, 0.0);

    end_every_connection(&app).await;

    for n in 0..4 {
        assert_eq!(ask(&mut client, &format!("after-{n}")).await, expected);
    }
    // At least the first of them met a connection that had ended, and ran again on another.
    assert!(app.metric(RETRIES, &[]).await >= 1.0);
}

#[tokio::test]
async fn a_subscription_after_postgres_ended_its_connections_reads_its_first_state_from_a_new_one()
{
    let Some((app, mut client)) = subscribed_after_every_connection_ended(
        "media",
        "subscription($p: String) { media(playbackId: $p) { id status } }",
        by_playback(),
        json!({}),
    )
    .await
    else {
        return;
    };
    assert_eq!(
        client.next_data("media").await,
        json!({ "media": created_media() })
    );
    assert!(app.metric(RETRIES, &[]).await >= 1.0);
}

/// An update feed reads the log's position as it starts: on PostgreSQL, that read, when it met a
/// connection PostgreSQL ended, runs again on another.
#[tokio::test]
async fn an_update_feed_after_postgres_ended_its_connections_starts_on_a_new_one() {
    let Some((app, mut client)) = subscribed_after_every_connection_ended(
        "updates",
        "subscription { mediaUpdates { id status } }",
        json!({}),
        json!({}),
    )
    .await
    else {
        return;
    };
    // A change committed before the feed's first read ends is not the feed's to send: deliver new
    // media until one reaches it.
    for n in 0.. {
        assert!(n < 20, "no change reached the feed");
        assert_eq!(app.deliver(&unique_media(n)).await, (200, "applied".into()));
        let Some(frame) = client.recv_within(Duration::from_millis(500)).await else {
            continue;
        };
        let Frame::Message(message) = frame else {
            panic!("{frame:?}");
        };
        let change = &message["payload"]["data"]["mediaUpdates"];
        assert_eq!(change["status"], "CREATED", "{message}");
        assert!(
            change["id"].as_str().unwrap().starts_with("00000000-"),
            "{message}"
        );
        break;
    }
    assert!(app.metric(RETRIES, &[]).await >= 1.0);
}

/// The event feed reads the log from its cursor: on PostgreSQL, a read that met a connection
/// PostgreSQL ended runs again on another.
#[tokio::test]
async fn an_event_feed_after_postgres_ended_its_connections_reads_the_log_from_a_new_one() {
    let Some((app, mut client)) = subscribed_after_every_connection_ended(
        "events",
        "subscription { webhookEvents { id } }",
        json!({}),
        json!({ "authorization": format!("Bearer {ADMIN_TOKEN}") }),
    )
    .await
    else {
        return;
    };
    assert_eq!(
        client.next_data("events").await,
        json!({ "webhookEvents": { "id": event_id("video.media.created") } })
    );
    assert!(app.metric(RETRIES, &[]).await >= 1.0);
}
