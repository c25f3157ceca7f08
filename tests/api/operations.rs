//! Acceptance of the operations issue: metrics, graceful shutdown of the real process, `simulate`.

use std::process::Stdio;
use std::time::Duration;

use fastpix_sync::webhook::verify::sign;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;
use crate::ws_client::*;

#[tokio::test]
async fn metrics_count_what_happened() {
    let app = spawn_app().await;
    app.deliver_fixture("video.media.created").await;
    app.deliver_fixture("video.media.ready").await;
    app.deliver_fixture("video.media.ready").await;
    app.deliver(
        br#"{"id":"x1","type":"video.media.track.ready","object":{"type":"media","id":"m"}}"#,
    )
    .await;
    let unsigned = app.post_webhook(fixture("video.media.failed"), None).await;
    assert_eq!(unsigned.status(), 401);
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client.init(json!({})).await;
    client
        .subscribe("s", "subscription { mediaUpdates { id } }", json!({}))
        .await;
    app.query("{ mediaList { nodes { id } } }", json!({})).await;
    app.graphql("{ nope }", json!({}), false).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let metric = |name: &'static str, labels: &'static [&'static str]| app.metric(name, labels);
    assert_eq!(
        metric(
            "fastpix_sync_webhooks_total",
            &["type=\"video.media.created\"", "outcome=\"applied\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            "fastpix_sync_webhooks_total",
            &["type=\"video.media.ready\"", "outcome=\"applied\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            "fastpix_sync_webhooks_total",
            &["type=\"video.media.ready\"", "outcome=\"duplicate\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric("fastpix_sync_webhooks_total", &["outcome=\"ignored\""]).await,
        1.0
    );
    assert_eq!(
        metric("fastpix_sync_webhooks_total", &["outcome=\"UNAUTHORIZED\""]).await,
        1.0
    );
    assert_eq!(metric("fastpix_sync_ingest_seconds_count", &[]).await, 5.0);
    assert_eq!(metric("fastpix_sync_websocket_connections", &[]).await, 1.0);
    assert_eq!(metric("fastpix_sync_subscriptions", &[]).await, 1.0);
    assert_eq!(
        metric(
            "fastpix_sync_graphql_requests_total",
            &["operation=\"query\"", "outcome=\"ok\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            "fastpix_sync_graphql_requests_total",
            &["operation=\"query\"", "outcome=\"error\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric("fastpix_sync_broadcast_lag_events_total", &[]).await,
        0.0
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric("fastpix_sync_websocket_connections", &[]).await, 0.0);
    assert_eq!(metric("fastpix_sync_subscriptions", &[]).await, 0.0);
}

/// The operation type in the metrics is the one the document runs, whatever comes first in its text:
/// a subscription after a fragment (which is then shared, as any entity subscription), a query named
/// by `operationName` after a subscription.
#[tokio::test]
async fn metrics_count_an_operation_as_what_its_document_runs() {
    let app = spawn_app().await;
    app.deliver_fixture("video.media.created").await;
    let fragment = "fragment M on Media { id status }";
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client.init(json!({})).await;
    client
        .subscribe(
            "s",
            &format!("{fragment}\nsubscription($id: ID) {{ media(id: $id) {{ ...M }} }}"),
            json!({ "id": MEDIA_ID }),
        )
        .await;
    let media = json!({ "id": MEDIA_ID, "status": "CREATED" });
    assert_eq!(client.next_data("s").await, json!({ "media": media }));
    assert_eq!(
        app.metric("fastpix_sync_shared_subscription_executions", &[])
            .await,
        1.0
    );
    let answer = app
        .post_graphql(
            json!({
                "query": format!("subscription S {{ media(id: \"x\") {{ id }} }}\n\
                                  query Q($p: String!) {{ mediaByPlaybackId(playbackId: $p) {{ ...M }} }}\n\
                                  {fragment}"),
                "operationName": "Q",
                "variables": { "p": MEDIA_PLAYBACK_ID },
            }),
            false,
        )
        .await;
    assert_eq!(answer, json!({ "data": { "mediaByPlaybackId": media } }));
    let count = async |operation: &str| {
        app.metric(
            "fastpix_sync_graphql_requests_total",
            &[&format!("operation=\"{operation}\""), "outcome=\"ok\""],
        )
        .await
    };
    assert_eq!(
        (count("subscription").await, count("query").await),
        (1.0, 1.0)
    );
}

/// The real binary serving on `test_db` with JSON logs at `info`: the process, its log lines after the
/// one that says where it listens, and its `http://` address.
async fn spawn_process(
    test_db: &TestDb,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    String,
) {
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_fastpix-sync"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("DATABASE_URL", &test_db.url)
        .env("FASTPIX_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(server.stderr.take().unwrap()).lines();
    let address = loop {
        let line = log
            .next_line()
            .await
            .unwrap()
            .expect("the server logs where it listens");
        let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if entry["fields"]["message"] == "listening" {
            break format!("http://{}", entry["fields"]["address"].as_str().unwrap());
        }
    };
    (server, log, address)
}

#[tokio::test]
async fn a_webhooks_response_line_has_its_event_id_type_outcome_status_and_latency() {
    let test_db = TestDb::new().await;
    let (_server, mut log, address) = spawn_process(&test_db).await;
    let body = fixture("video.media.created");
    let sent: Value = serde_json::from_slice(&body).unwrap();
    let response = reqwest::Client::new()
        .post(format!("{address}/webhooks/fastpix"))
        .header("FastPix-Signature", sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut lines = Vec::new();
    let line = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), log.next_line())
            .await
            .expect("the request is logged")
            .unwrap()
            .expect("the server is running");
        let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        lines.push(line);
        if entry["target"] == "tower_http::trace::on_response" {
            break entry;
        }
    };
    let span = &line["span"];
    assert_eq!(span["route"], "/webhooks/fastpix", "{line}");
    assert_eq!(span["event_id"], sent["id"], "{line}");
    assert_eq!(span["event_type"], "video.media.created", "{line}");
    assert_eq!(span["outcome"], "applied", "{line}");
    assert_eq!(line["fields"]["status"], 200, "{line}");
    assert!(line["fields"]["latency"].is_string(), "{line}");
    let logged = lines.concat();
    assert!(
        !logged.contains(SECRET) && !logged.contains(sent["data"]["id"].as_str().unwrap()),
        "neither the secret nor the payload is logged: {logged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_webhooks_closes_websockets_with_1001_and_exits_0() {
    let test_db = TestDb::new().await;
    let (mut server, mut log, address) = spawn_process(&test_db).await;
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });

    let url = format!("{}/graphql", address.replacen("http", "ws", 1));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", TRANSPORT_WS.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            r#"{"type":"connection_init"}"#,
        ))
        .await
        .unwrap();

    // Eight senders post unique webhooks until the server stops answering.
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (client, address) = (client.clone(), address.clone());
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for k in 0..400 {
                let n = sender * 1000 + k;
                let body = unique_media(n);
                let response = client
                    .post(format!("{address}/webhooks/fastpix"))
                    .header("FastPix-Signature", sign(SECRET, &body))
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => acknowledged.push(unique_event_id(n)),
                    _ => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = server.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    let status = tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("the server exits within 20 s")
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let mut close = None;
    while let Some(Ok(frame)) = socket.next().await {
        if let tokio_tungstenite::tungstenite::Message::Close(frame) = frame {
            close = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close, Some(1001), "websocket clients see 1001");

    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert!(
        acknowledged.len() > 8,
        "webhooks were in flight when SIGTERM arrived"
    );
    let db = sea_orm::Database::connect(&test_db.url).await.unwrap();
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let stored = entity::webhook_event::Entity::find()
        .filter(entity::webhook_event::Column::EventId.is_in(acknowledged.clone()))
        .all(&db)
        .await
        .unwrap();
    println!(
        "{} deliveries acknowledged before the exit, all stored",
        acknowledged.len()
    );
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "every acknowledged delivery is in the database"
    );
}

#[tokio::test]
async fn simulate_all_creates_every_entity_of_its_sequences() {
    let app = spawn_app().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fastpix-sync"))
        .args([
            "simulate",
            "all",
            "--url",
            &app.address,
            "--secret",
            SECRET,
            "--pace",
            "0",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with('[')).count(),
        17,
        "{stdout}"
    );
    assert!(
        stdout.contains("[17/17] video.live_stream.idle -> applied"),
        "{stdout}"
    );

    let data = app
        .query(
            "{ mediaList { nodes { status title liveStream { id } } } liveStreams { nodes { id status encoderConnected recording simulcastTargets { status } recordings { status } } } }",
            json!({}),
        )
        .await;
    let mut statuses: Vec<String> = data["mediaList"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        ["CREATED", "READY", "READY"],
        "URL media, upload, recording: {data}"
    );
    let stream = &data["liveStreams"]["nodes"][0];
    assert_eq!(
        (
            stream["status"].as_str(),
            stream["encoderConnected"].as_bool()
        ),
        (Some("IDLE"), Some(false))
    );
    assert_eq!(stream["simulcastTargets"][0]["status"], "IDLE");
    assert_eq!(stream["recordings"][0]["status"], "CREATED");
    let stream_id = stream["id"].as_str().unwrap();
    assert_ne!(stream_id, STREAM_ID, "fresh ids, not the fixtures'");
    assert!(stdout.contains(stream_id), "the ids to try are printed");
}
