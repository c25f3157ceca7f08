//! Acceptance 4 and 6 of the subscriptions issue: a client that stops reading does not hold the others
//! back and ends up with the current state; 1,000 subscribers of one stream each get the change.

use std::time::{Duration, Instant};

use fastpix_sync::http::ws::WsConfig;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::ws_client::*;

/// A `video.live_stream.updated` with a large metadata value, `n` seconds after the fixture's time.
fn big_update(n: usize) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&fixture("video.live_stream.updated")).unwrap();
    event["id"] = json!(format!("big-update-{n:05}"));
    event["createdAt"] = json!(format!(
        "2026-06-22T15:{:02}:{:02}.000000001Z",
        n / 60,
        n % 60
    ));
    event["data"]["metadata"] = json!({ "n": n.to_string(), "blob": "x".repeat(48 * 1024) });
    serde_json::to_vec(&event).unwrap()
}

/// A client on `protocol` subscribed (operation `s`) to `query` with the variable `id`.
async fn subscribed(app: &TestApp, protocol: &str, query: &str, id: &str) -> WsClient {
    let mut client = WsClient::connect(app, protocol).await;
    client.init(json!({})).await;
    client.subscribe("s", query, json!({ "id": id })).await;
    client
}

/// [`subscribed`], past its first message (returned).
async fn watcher(app: &TestApp, protocol: &str, query: &str, id: &str) -> (WsClient, Value) {
    let mut client = subscribed(app, protocol, query, id).await;
    let first = client.next_data("s").await;
    (client, first)
}

async fn watch_stream(app: &TestApp) -> WsClient {
    let query = "subscription($id: ID) { liveStream(id: $id) { lastEventType metadata } }";
    subscribed(app, TRANSPORT_WS, query, STREAM_ID).await
}

fn n_of(data: &Value) -> Option<usize> {
    data["liveStream"]["metadata"]["n"].as_str()?.parse().ok()
}

/// A server with an 8-change bus and `send_timeout`, a stream, and two of its subscribers past their
/// first message (the stream as created): one to stop reading, one to keep reading.
async fn stuck_and_normal(send_timeout: Duration) -> (TestApp, WsClient, WsClient) {
    let ws = WsConfig {
        send_timeout,
        ..WsConfig::default()
    };
    let app = spawn_configured(TestDb::new().await, |s| s.bus_capacity = 8, ws).await;
    app.deliver_fixture("video.live_stream.created").await;
    let mut stuck = watch_stream(&app).await;
    let mut normal = watch_stream(&app).await;
    for client in [&mut stuck, &mut normal] {
        assert_eq!(
            client.next_data("s").await["liveStream"]["lastEventType"],
            "video.live_stream.created"
        );
    }
    (app, stuck, normal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_neither_delays_others_nor_misses_the_current_state() {
    // The server drops a peer that reads nothing for `send_timeout`: keep it well above this test's length.
    let (app, mut stuck, mut normal) = stuck_and_normal(Duration::from_secs(120)).await;

    // `stuck` reads nothing now: ~48 KiB frames fill its socket buffers, its server task blocks on the
    // write and falls far behind the 8-change channel. `normal` reads each change as it comes.
    const CHANGES: usize = 200;
    let mut latencies = Vec::new();
    for n in 0..CHANGES {
        let posted = Instant::now();
        assert_eq!(
            app.deliver(&big_update(n)).await,
            (200, "applied".to_owned())
        );
        assert_eq!(n_of(&normal.next_data("s").await), Some(n));
        latencies.push(posted.elapsed());
    }
    latencies.sort();
    let worst = *latencies.last().unwrap();
    println!(
        "normal subscriber: p50 {:?}, max {:?} from POST to frame",
        latencies[CHANGES / 2],
        worst
    );
    assert!(
        worst < Duration::from_secs(2),
        "a stuck client delayed the others: {worst:?}"
    );

    // When it reads again it gets what was in flight, then the current state, and never skips past it.
    let mut received = 0;
    let mut last = None;
    while last != Some(CHANGES - 1) {
        last = n_of(&stuck.next_data("s").await);
        received += 1;
    }
    println!(
        "the stuck subscriber received {received} of {CHANGES} changes, ending with the current state"
    );
    assert!(
        received < CHANGES,
        "it lagged and caught up with the current state instead of every change"
    );
    assert!(
        app.metric("fastpix_sync_broadcast_lag_events_total", &[])
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let (app, mut stuck, mut normal) = stuck_and_normal(Duration::from_millis(500)).await;
    let open = || app.metric("fastpix_sync_websocket_connections", &[]);
    assert_eq!(open().await, 2.0);

    // `stuck` reads nothing: once its socket buffers are full, a frame waits for room, and after
    // `send_timeout` the server gives up on the connection. `normal` keeps reading.
    let started = Instant::now();
    let mut n = 0;
    while open().await > 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the stuck connection is still open after {n} changes"
        );
        assert_eq!(
            app.deliver(&big_update(n)).await,
            (200, "applied".to_owned())
        );
        assert_eq!(n_of(&normal.next_data("s").await), Some(n));
        n += 1;
    }

    // The other subscriber is still served.
    app.deliver(&big_update(n)).await;
    assert_eq!(n_of(&normal.next_data("s").await), Some(n));
    // What reached the stuck client's buffers before the server gave up can still be read; then the
    // connection ends.
    let mut read = 0;
    loop {
        match stuck.recv().await {
            Frame::Closed(_) => break,
            Frame::Message(_) => read += 1,
        }
    }
    println!("the stuck client was dropped after {n} changes; {read} frames were in its buffers");
    assert!(read < n, "it got every change, so it was never stuck");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_of_one_stream_each_receive_the_change() {
    let _ = rlimit::increase_nofile_limit(8192);
    let app = spawn_app().await;
    app.deliver_fixture("video.live_stream.created").await;
    const SUBSCRIBERS: usize = 1000;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(SUBSCRIBERS);
    let (go_tx, _) = tokio::sync::broadcast::channel::<Instant>(1);
    let mut tasks = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut client = WsClient::connect(&app, TRANSPORT_WS).await;
        let ready = ready_tx.clone();
        let mut go = go_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            client.init(json!({})).await;
            client
                .subscribe(
                    "s",
                    "subscription($id: ID) { liveStream(id: $id) { status } }",
                    json!({ "id": STREAM_ID }),
                )
                .await;
            assert_eq!(client.next_data("s").await["liveStream"]["status"], "IDLE");
            ready.send(()).await.unwrap();
            let posted_at = go.recv().await.unwrap();
            assert_eq!(
                client.next_data("s").await["liveStream"]["status"],
                "PREPARING"
            );
            posted_at.elapsed()
        }));
    }
    for _ in 0..SUBSCRIBERS {
        ready_rx.recv().await.unwrap();
    }
    assert_eq!(
        app.metric("fastpix_sync_subscriptions", &[]).await as usize,
        SUBSCRIBERS
    );
    let posted_at = Instant::now();
    go_tx.send(posted_at).unwrap();
    app.deliver_fixture("video.live_stream.preparing").await;
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await.expect("every subscriber receives the change"));
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{SUBSCRIBERS} subscribers: POST to frame p50 {:?}, p99 {:?}, max {:?}",
        p(0.50),
        p(0.99),
        latencies.last().unwrap()
    );
}

const STATUS_OF_STREAM: &str = "subscription($id: ID) { liveStream(id: $id) { status } }";

/// A client on `protocol` subscribed to [`STATUS_OF_STREAM`] for `stream`, past its first frame.
async fn status_watcher(app: &TestApp, protocol: &str) -> (WsClient, Value) {
    watcher(app, protocol, STATUS_OF_STREAM, STREAM_ID).await
}

/// The stream's status as a query answers it now.
async fn queried_status(app: &TestApp) -> Value {
    app.query(
        "query($id: ID!) { liveStream(id: $id) { status } }",
        json!({ "id": STREAM_ID }),
    )
    .await
}

async fn shared_executions(app: &TestApp) -> f64 {
    app.metric("fastpix_sync_shared_subscription_executions", &[])
        .await
}

/// Waits until the metric `name` is `expected`.
async fn await_metric(app: &TestApp, name: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.metric(name, &[]).await != expected {
        assert!(
            Instant::now() < deadline,
            "{name} is still {}",
            app.metric(name, &[]).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the running shared executions are `expected`.
async fn await_shared_executions(app: &TestApp, expected: f64) {
    await_metric(app, "fastpix_sync_shared_subscription_executions", expected).await;
}

#[tokio::test]
async fn identical_entity_subscriptions_share_one_execution_that_ends_with_its_last_subscriber() {
    let app = spawn_app().await;
    app.deliver_fixture("video.live_stream.created").await;
    let mut watchers = Vec::new();
    for protocol in [TRANSPORT_WS; 9].into_iter().chain([LEGACY_WS]) {
        let (client, first) = status_watcher(&app, protocol).await;
        assert_eq!(first, queried_status(&app).await);
        watchers.push(client);
    }
    // Another document for the same stream, and the same document for another stream: two more.
    let mut other = WsClient::connect(&app, TRANSPORT_WS).await;
    other.init(json!({})).await;
    other
        .subscribe(
            "b",
            STATUS_OF_STREAM,
            json!({ "id": "a-stream-not-seen-yet" }),
        )
        .await;
    other
        .subscribe(
            "a",
            "subscription($id: ID) { liveStream(id: $id) { status encoderConnected } }",
            json!({ "id": STREAM_ID }),
        )
        .await;
    assert_eq!(
        other.next_data("a").await["liveStream"]["encoderConnected"],
        false
    );
    assert_eq!(shared_executions(&app).await, 3.0);
    assert_eq!(app.metric("fastpix_sync_subscriptions", &[]).await, 12.0);

    // One change: every subscriber of the shared execution receives it.
    app.deliver_fixture("video.live_stream.preparing").await;
    let now = queried_status(&app).await;
    for watcher in &mut watchers {
        assert_eq!(watcher.next_data("s").await, now);
    }
    assert_eq!(
        other.next_data("a").await["liveStream"]["status"],
        now["liveStream"]["status"]
    );

    // A subscriber joining the running execution starts from the current state, then follows it.
    let (mut late, first) = status_watcher(&app, TRANSPORT_WS).await;
    assert_eq!(first, now);
    assert_eq!(shared_executions(&app).await, 3.0);
    app.deliver_fixture("video.live_stream.active").await;
    let now = queried_status(&app).await;
    assert_eq!(late.next_data("s").await, now);
    assert_eq!(watchers[0].next_data("s").await, now);

    // The execution runs while one subscriber is left, and stops with the last one.
    drop(late);
    watchers.truncate(1);
    let mut last = watchers.pop().unwrap();
    await_metric(&app, "fastpix_sync_subscriptions", 3.0).await;
    assert_eq!(shared_executions(&app).await, 3.0);
    app.deliver_fixture("video.live_stream.disconnected").await;
    assert_eq!(last.next_data("s").await, queried_status(&app).await);
    last.send(json!({ "type": "complete", "id": "s" })).await;
    await_shared_executions(&app, 2.0).await;
    drop(last);
    drop(other);
    await_shared_executions(&app, 0.0).await;
}

#[tokio::test]
async fn a_subscriber_after_a_shared_execution_completed_gets_the_tombstone_and_the_end() {
    let app = spawn_app().await;
    app.deliver_fixture("video.live_stream.created").await;
    let (mut first, _) = status_watcher(&app, TRANSPORT_WS).await;
    app.deliver_fixture("video.live_stream.deleted").await;
    let tombstone = first.next_data("s").await;
    assert_eq!(tombstone, queried_status(&app).await);
    assert_eq!(
        first.message().await,
        json!({ "type": "complete", "id": "s" })
    );
    // The completed execution is not joined: a new one reads the state again (SQL statements run), and
    // ends again.
    let statements = app.metric("fastpix_sync_sql_statements_total", &[]).await;
    let (mut second, state) = status_watcher(&app, TRANSPORT_WS).await;
    assert_eq!(state, tombstone);
    assert!(app.metric("fastpix_sync_sql_statements_total", &[]).await > statements);
    assert_eq!(
        second.message().await,
        json!({ "type": "complete", "id": "s" })
    );
    drop(first);
    drop(second);
    await_shared_executions(&app, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_send_their_changes_and_the_subscriptions_selecting_them_still_share() {
    let app = spawn_app().await;
    for name in [
        "video.live_stream.created",
        "video.media.live_stream.created",
    ] {
        app.deliver_fixture(name).await;
    }
    const RECORDING_AND_STREAM: &str =
        "subscription($id: ID) { media(id: $id) { status liveStream { status } } }";
    const RECORDING: &str = "subscription($id: ID) { media(id: $id) { status } }";
    const RECORDINGS: &str =
        "subscription($id: ID) { liveStream(id: $id) { recordings { status } } }";
    let watch = |query, id| watcher(&app, TRANSPORT_WS, query, id);
    let (mut early, first) = watch(RECORDING_AND_STREAM, RECORDING_ID).await;
    assert_eq!(first["media"]["liveStream"]["status"], "IDLE");
    let (mut recording, first) = watch(RECORDING, RECORDING_ID).await;
    assert_eq!(first["media"]["status"], "CREATED");
    let (mut stream, first) = watch(RECORDINGS, STREAM_ID).await;
    assert_eq!(first["liveStream"]["recordings"][0]["status"], "CREATED");

    // The stream changes: the recording's subscribers that select it get a message.
    app.deliver_fixture("video.live_stream.preparing").await;
    let stream_now = queried_status(&app).await["liveStream"]["status"].clone();
    assert_ne!(stream_now, "IDLE");
    let next = early.next_data("s").await;
    assert_eq!(next["media"]["liveStream"]["status"], stream_now);
    // A later subscriber joins the same execution and starts from that message, which is current.
    let (_late, first) = watch(RECORDING_AND_STREAM, RECORDING_ID).await;
    assert_eq!(first, next);
    assert_eq!(shared_executions(&app).await, 3.0, "one per document");

    // The others got the recording's and the stream's state again too: the stream changed.
    assert_eq!(recording.next_data("s").await["media"]["status"], "CREATED");
    let next = stream.next_data("s").await;
    assert_eq!(next["liveStream"]["recordings"][0]["status"], "CREATED");

    // The recording becomes ready: its stream's subscribers get a message, their recordings differ.
    let ready = String::from_utf8(fixture("video.media.ready"))
        .unwrap()
        .replace(MEDIA_ID, RECORDING_ID)
        .replace("0a1b2c3d-1111-4a00-8000-000000000002", "recording-ready");
    app.deliver(ready.as_bytes()).await;
    assert_eq!(recording.next_data("s").await["media"]["status"], "READY");
    let next = stream.next_data("s").await;
    assert_eq!(next["liveStream"]["recordings"][0]["status"], "READY");
}
