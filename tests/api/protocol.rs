//! Acceptance 5 of the subscriptions issue: each protocol rule with its close code, server pings, the
//! legacy protocol, and the 1001 close on shutdown.

use std::time::Duration;

use fastpix_sync::http::ws::WsConfig;
use serde_json::json;

use crate::helpers::*;
use crate::ws_client::*;

async fn app_with(ws: WsConfig) -> TestApp {
    spawn_configured(TestDb::new().await, |_| {}, ws).await
}

#[test]
fn the_default_init_timeout_is_three_seconds() {
    assert_eq!(WsConfig::default().init_timeout, Duration::from_secs(3));
}

#[tokio::test]
async fn no_connection_init_in_time_closes_4408() {
    let app = app_with(WsConfig {
        init_timeout: Duration::from_millis(300),
        ..WsConfig::default()
    })
    .await;
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    let started = std::time::Instant::now();
    assert_eq!(client.closed().await, Some(4408));
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn subscribe_before_ack_closes_4401() {
    let app = spawn_app().await;
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client
        .subscribe("1", "subscription { mediaUpdates { id } }", json!({}))
        .await;
    assert_eq!(client.closed().await, Some(4401));
}

#[tokio::test]
async fn a_duplicate_operation_id_closes_4409() {
    let app = spawn_app().await;
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client.init(json!({})).await;
    client
        .subscribe("same", "subscription { mediaUpdates { id } }", json!({}))
        .await;
    client
        .subscribe("same", "subscription { mediaUpdates { id } }", json!({}))
        .await;
    assert_eq!(client.closed().await, Some(4409));
}

#[tokio::test]
async fn an_invalid_admin_token_in_connection_init_closes_4403() {
    let app = spawn_app().await;
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client
        .send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer wrong" } }))
        .await;
    assert_eq!(client.closed().await, Some(4403));
}

#[tokio::test]
async fn a_second_connection_init_closes_4429_and_garbage_closes_4400() {
    let app = spawn_app().await;
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client.init(json!({})).await;
    client.send(json!({ "type": "connection_init" })).await;
    assert_eq!(client.closed().await, Some(4429));

    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client.init(json!({})).await;
    client.send(json!({ "type": "no such message" })).await;
    assert_eq!(client.closed().await, Some(4400));
}

#[tokio::test]
async fn the_server_pings_and_drops_peers_that_do_not_answer() {
    let app = app_with(WsConfig {
        ping_interval: Duration::from_millis(150),
        ..WsConfig::default()
    })
    .await;
    let mut alive = WsClient::connect(&app, TRANSPORT_WS).await;
    alive.init(json!({})).await;
    let mut dead = WsClient::connect(&app, TRANSPORT_WS).await;
    dead.init(json!({})).await;
    dead.answer_pings = false;

    // Both read at once: the live one answers each ping while the dead one stays silent.
    let (dead_close, alive_frame) = tokio::join!(
        dead.closed(),
        alive.recv_within(Duration::from_millis(1200))
    );
    assert_eq!(
        dead_close,
        Some(1008),
        "a peer that never answers is dropped"
    );
    assert!(dead.pings >= 1);
    assert!(
        alive_frame.is_none(),
        "an answering peer stays: {alive_frame:?}"
    );
    assert!(alive.pings >= 5, "pinged {} times", alive.pings);
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_runs_a_subscription() {
    let app = spawn_app().await;
    app.deliver_fixture("video.live_stream.created").await;
    let mut client = WsClient::connect(&app, LEGACY_WS).await;
    client.init(json!({})).await;
    client
        .subscribe(
            "1",
            "subscription($id: ID) { liveStream(id: $id) { status } }",
            json!({ "id": STREAM_ID }),
        )
        .await;
    assert_eq!(client.next_data("1").await["liveStream"]["status"], "IDLE");
    app.deliver_fixture("video.live_stream.preparing").await;
    let message = client.message().await;
    assert_eq!(message["type"], "data");
    assert_eq!(
        message["payload"]["data"]["liveStream"]["status"],
        "PREPARING"
    );
    client.send(json!({ "type": "stop", "id": "1" })).await;
    assert_eq!(
        client.message().await,
        json!({ "type": "complete", "id": "1" })
    );
}

#[tokio::test]
async fn shutting_down_closes_websockets_with_1001() {
    let mut app = spawn_app().await;
    let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
    client.init(json!({})).await;
    client
        .subscribe("1", "subscription { mediaUpdates { id } }", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.shutdown();
    assert_eq!(client.closed().await, Some(1001));
    let stopped = tokio::time::timeout(Duration::from_secs(5), &mut app.server).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the server stops cleanly: {stopped:?}"
    );
}

/// A webhook body near the 1 MiB intake limit makes an event frame over 1 MiB, and a page of two such
/// events one over 2 MiB: each is sent whole, on the event feed and in a query's answer, and the
/// connection goes on.
#[tokio::test]
async fn frames_over_one_mebibyte_are_sent_whole() {
    let app = spawn_app().await;
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixture("video.media.created")).unwrap();
    event["data"]["pad"] = json!("");
    let unpadded = serde_json::to_vec(&event).unwrap().len();
    let pad = "a".repeat(1024 * 1024 - 16 - unpadded);
    event["data"]["pad"] = json!(pad);
    for id in ["big-1", "big-2"] {
        event["id"] = json!(id);
        let body = serde_json::to_vec(&event).unwrap();
        assert!(body.len() <= 1024 * 1024, "{} bytes", body.len());
        assert_eq!(app.deliver(&body).await.0, 200);
    }

    let mut client = WsClient::admin(&app).await;
    client
        .subscribe(
            "feed",
            "subscription { webhookEvents { payload } }",
            json!({}),
        )
        .await;
    client
        .subscribe(
            "query",
            "{ webhookEvents(first: 2) { nodes { payload } } }",
            json!({}),
        )
        .await;
    let pad_of = |payload: &serde_json::Value| payload["data"]["pad"].as_str().map(str::len);
    let (mut fed, mut answered, mut completed) = (Vec::new(), Vec::new(), false);
    while fed.len() < 2 || answered.is_empty() || !completed {
        let message = client.message().await;
        let data = &message["payload"]["data"];
        match (message["id"].as_str(), message["type"].as_str()) {
            (Some("feed"), Some("next")) => fed.push(pad_of(&data["webhookEvents"]["payload"])),
            (Some("query"), Some("next")) => {
                let nodes = data["webhookEvents"]["nodes"].as_array().unwrap();
                answered = nodes.iter().map(|n| pad_of(&n["payload"])).collect();
            }
            (Some("query"), Some("complete")) => completed = true,
            _ => panic!("unexpected {message}"),
        }
    }
    assert_eq!(fed, [Some(pad.len()); 2]);
    assert_eq!(answered, [Some(pad.len()); 2]);
    // The connection is still open: another operation is answered on it.
    client.subscribe("again", "{ __typename }", json!({})).await;
    assert_eq!(
        client.next_data("again").await,
        json!({ "__typename": "Query" })
    );
}
