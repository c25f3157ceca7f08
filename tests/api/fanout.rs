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

async fn watch_stream(app: &TestApp) -> WsClient {
    let mut client = WsClient::connect(app, TRANSPORT_WS).await;
    client.init(json!({})).await;
    client
        .subscribe(
            "s",
            "subscription($id: ID) { liveStream(id: $id) { lastEventType metadata } }",
            json!({ "id": STREAM_ID }),
        )
        .await;
    client
}

fn n_of(data: &Value) -> Option<usize> {
    data["liveStream"]["metadata"]["n"].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_neither_delays_others_nor_misses_the_current_state() {
    // The server drops a peer that reads nothing for `send_timeout`: keep it well above this test's length.
    let ws = WsConfig {
        send_timeout: Duration::from_secs(120),
        ..WsConfig::default()
    };
    let app = spawn_configured(TestDb::new().await, |s| s.bus_capacity = 8, ws).await;
    app.deliver_fixture("video.live_stream.created").await;
    let mut stuck = watch_stream(&app).await;
    let mut normal = watch_stream(&app).await;
    assert_eq!(
        stuck.next_data("s").await["liveStream"]["lastEventType"],
        "video.live_stream.created"
    );
    assert_eq!(
        normal.next_data("s").await["liveStream"]["lastEventType"],
        "video.live_stream.created"
    );

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
    assert_eq!(latencies.len(), SUBSCRIBERS);
}
