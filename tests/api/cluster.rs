//! Acceptance of the scale-out issue: two real instances on one PostgreSQL database. These tests need
//! PostgreSQL (`TEST_DATABASE_URL`); on SQLite, where the relay is off, they have nothing to run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastpix_sync::events::relay::{LISTENER_IDLE_CHECK, LISTENER_PING_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use fastpix_sync::http::ws::WsConfig;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::ordering::{in_order_events, renamed, rows_of_case};
use crate::ws_client::*;

/// Two instances on one fresh PostgreSQL database, or `None` on SQLite.
async fn two_instances() -> Option<(TestApp, TestApp)> {
    let db = TestDb::postgres_only("a cluster test").await?;
    let second = db.another_handle();
    let a = spawn_app_on(db).await;
    let b = spawn_configured(second, |_| {}, WsConfig::default()).await;
    Some((a, b))
}

async fn watch(app: &TestApp) -> WsClient {
    let mut client = WsClient::admin(app).await;
    client
        .subscribe(
            "stream",
            "subscription($id: ID) { liveStream(id: $id) { status lastEventType } }",
            json!({ "id": STREAM_ID }),
        )
        .await;
    client
        .subscribe(
            "events",
            "subscription { webhookEvents { id cursor } }",
            json!({}),
        )
        .await;
    // Let the server register both before events arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
}

/// Reads `count` messages and sorts them by operation: (stream statuses, event ids).
async fn read(client: &mut WsClient, count: usize) -> (Vec<String>, Vec<String>) {
    let (mut statuses, mut events) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let message = client.message().await;
        let data = &message["payload"]["data"];
        match message["id"].as_str() {
            Some("stream") => statuses.push(
                data["liveStream"]["lastEventType"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            Some("events") => events.push(data["webhookEvents"]["id"].as_str().unwrap().to_owned()),
            _ => panic!("unexpected {message}"),
        }
    }
    (statuses, events)
}

#[tokio::test]
async fn a_webhook_on_one_instance_reaches_subscribers_of_the_other() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let mut on_a = watch(&a).await;
    let mut on_b = watch(&b).await;

    a.deliver_fixture("video.live_stream.created").await;
    b.deliver_fixture("video.live_stream.preparing").await;
    for client in [&mut on_a, &mut on_b] {
        let (statuses, events) = read(client, 4).await;
        assert_eq!(
            statuses,
            ["video.live_stream.created", "video.live_stream.preparing"]
        );
        assert_eq!(
            events,
            [
                event_id("video.live_stream.created"),
                event_id("video.live_stream.preparing")
            ]
        );
        assert!(
            client
                .recv_within(Duration::from_millis(300))
                .await
                .is_none(),
            "each change exactly once"
        );
    }
}

#[tokio::test]
async fn a_lost_listener_reconnects_and_delivers_what_was_committed_meanwhile() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let mut on_b = watch(&b).await;
    a.deliver_fixture("video.live_stream.created").await;
    assert_eq!(read(&mut on_b, 2).await.0, ["video.live_stream.created"]);

    let admin_db = b.test_db.admin().await;
    let terminated = admin_db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = '{}'", b.instance),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(
        terminated, 1,
        "B's listener connection was found and terminated"
    );
    let names = &LIVE_SEQUENCE[2..8];
    for name in names {
        a.deliver_fixture(name).await;
    }
    // Six events: four change the stream, one its simulcast target and one its recording (a stream frame
    // each).
    let (_, events) = read(&mut on_b, names.len() + 6).await;
    let expected: Vec<String> = names.iter().map(|n| event_id(n)).collect();
    assert_eq!(
        events, expected,
        "every event, in order, after the reconnect"
    );
    assert!(b.metric("fastpix_sync_relay_reconnects_total", &[]).await >= 1.0);
    assert!(on_b.recv_within(Duration::from_millis(300)).await.is_none());
}

/// A notification of a position the log does not hold (instances of another schema on the same
/// database's channel, a hand-made `NOTIFY`) moves no relay past changes still to come.
#[tokio::test]
async fn a_notification_of_a_position_not_in_the_log_holds_nothing_back() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let mut on_a = watch(&a).await;
    let mut on_b = watch(&b).await;
    // A change that reached both: both listeners listen.
    a.deliver_fixture("video.live_stream.created").await;
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(read(client, 2).await.0, ["video.live_stream.created"]);
    }
    a.db.execute_unprepared(&format!(
        "NOTIFY {}, '999999'",
        fastpix_sync::events::relay::CHANNEL
    ))
    .await
    .unwrap();
    a.deliver_fixture("video.live_stream.preparing").await;
    for client in [&mut on_a, &mut on_b] {
        let (statuses, events) = read(client, 2).await;
        assert_eq!(statuses, ["video.live_stream.preparing"]);
        assert_eq!(events, [event_id("video.live_stream.preparing")]);
    }
}

/// A proxied connection: its first bytes from its client (its startup message), and whether it is silenced.
type Proxied = (Arc<Mutex<Vec<u8>>>, Arc<AtomicBool>);

/// A TCP proxy to PostgreSQL that can silence chosen connections: it stops passing their bytes, both ways,
/// and keeps their sockets open, as a NAT or a firewall that forgot a flow does. New connections pass.
struct SilencingProxy {
    address: String,
    connections: Arc<Mutex<Vec<Proxied>>>,
}

impl SilencingProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connections: Arc<Mutex<Vec<_>>> = Arc::default();
        let opened = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (startup, silenced) = (Arc::default(), Arc::new(AtomicBool::new(false)));
                opened
                    .lock()
                    .unwrap()
                    .push((Arc::clone(&startup), Arc::clone(&silenced)));
                let ((client_in, client_out), (server_in, server_out)) =
                    (client.into_split(), server.into_split());
                tokio::spawn(pass(
                    client_in,
                    server_out,
                    Some(startup),
                    Arc::clone(&silenced),
                ));
                tokio::spawn(pass(server_in, client_out, None, silenced));
            }
        });
        Self {
            address,
            connections,
        }
    }

    /// Silences the connections whose startup message names `application_name`; how many.
    fn silence(&self, application_name: &str) -> usize {
        let name = application_name.as_bytes();
        let connections = self.connections.lock().unwrap();
        let chosen = connections.iter().filter(|(startup, _)| {
            startup
                .lock()
                .unwrap()
                .windows(name.len())
                .any(|w| w == name)
        });
        chosen
            .map(|(_, silenced)| silenced.store(true, Ordering::SeqCst))
            .count()
    }
}

/// Passes bytes from `from` to `to` (keeping the first of them in `startup`), until either side closes
/// or the connection is silenced: then it holds them, and both sockets, forever.
async fn pass(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    startup: Option<Arc<Mutex<Vec<u8>>>>,
    silenced: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if let Some(startup) = &startup {
            let mut kept = startup.lock().unwrap();
            if kept.len() < 4096 {
                kept.extend_from_slice(&buffer[..read]);
            }
        }
        if silenced.load(Ordering::SeqCst) {
            let _keep_open = (from, to);
            return std::future::pending().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// A listener connection that goes silent (no reset, no error: its packets just stop) is found out by
/// the relay's round trip after [`LISTENER_IDLE_CHECK`] without a notification, replaced, and what was
/// committed meanwhile is caught up from the log.
#[tokio::test]
async fn a_listener_connection_gone_silent_is_replaced_and_misses_nothing() {
    let Some(db) = TestDb::postgres_only("a cluster test").await else {
        return;
    };
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = SilencingProxy::start(upstream).await;
    // Unencrypted, so that the proxy reads which connection is the listener.
    let (host, port) = proxy.address.rsplit_once(':').unwrap();
    url.set_host(Some(host)).unwrap();
    url.set_port(Some(port.parse().unwrap())).unwrap();
    url.query_pairs_mut().append_pair("sslmode", "disable");
    let mut second = db.another_handle();
    second.url = url.to_string();
    let a = spawn_app_on(db).await;
    let b = spawn_configured(second, |_| {}, WsConfig::default()).await;
    let mut on_b = watch(&b).await;
    a.deliver_fixture("video.live_stream.created").await;
    assert_eq!(read(&mut on_b, 2).await.0, ["video.live_stream.created"]);

    assert!(proxy.silence(&b.instance) >= 1, "B's listener connection");
    a.deliver_fixture("video.live_stream.preparing").await;
    let wait = LISTENER_IDLE_CHECK + LISTENER_PING_TIMEOUT + Duration::from_secs(10);
    let first = on_b.recv_within(wait).await;
    assert!(
        matches!(first, Some(Frame::Message(_))),
        "B relays again within {wait:?}: {first:?}"
    );
    assert!(b.metric("fastpix_sync_relay_reconnects_total", &[]).await >= 1.0);
    let Some(Frame::Message(first)) = first else {
        unreachable!()
    };
    let second = on_b.message().await;
    let mut ids: Vec<_> = [&first, &second]
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["events", "stream"]);
    assert!(on_b.recv_within(Duration::from_millis(300)).await.is_none());
}

/// The next `liveStream` message of `client` (operation `s`) that `wanted` accepts, skipping the others.
async fn stream_frame_until(client: &mut WsClient, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let data = client.next_data("s").await;
        if wanted(&data["liveStream"]) {
            return data["liveStream"].clone();
        }
    }
}

/// A late stream event that leaves the stream as it was but moves a simulcast target it lists is stored
/// `stale`; the subscribers of every instance, not only of the one that stored it, see the target move.
#[tokio::test]
async fn a_late_stream_event_that_moves_only_a_target_reaches_every_instance() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let query = "subscription($id: ID) { liveStream(id: $id) { lastEventType simulcastTargets { isEnabled } } }";
    let mut clients = Vec::new();
    for app in [&a, &b] {
        let mut client = WsClient::admin(app).await;
        client
            .subscribe("s", query, json!({ "id": STREAM_ID }))
            .await;
        clients.push(client);
    }
    for name in [
        "video.live_stream.created",
        "video.live_stream.simulcast_target.created",
        "video.live_stream.connected",
    ] {
        a.deliver_fixture(name).await;
    }
    for client in &mut clients {
        stream_frame_until(client, |stream| {
            stream["lastEventType"] == "video.live_stream.connected"
                && stream["simulcastTargets"] == json!([{ "isEnabled": null }])
        })
        .await;
    }

    // `preparing` came before `connected`; this one lists the target, enabled.
    let mut late: Value = serde_json::from_slice(&fixture("video.live_stream.preparing")).unwrap();
    let active: Value = serde_json::from_slice(&fixture("video.live_stream.active")).unwrap();
    late["data"]["simulcastResponses"] = active["data"]["simulcastResponses"].clone();
    late["id"] = json!("late-preparing");
    assert_eq!(
        a.deliver(&serde_json::to_vec(&late).unwrap()).await,
        (200, "stale".to_owned())
    );
    for client in &mut clients {
        let stream = stream_frame_until(client, |_| true).await;
        assert_eq!(
            stream,
            json!({
                "lastEventType": "video.live_stream.connected",
                "simulcastTargets": [{ "isEnabled": true }]
            })
        );
    }
}

#[tokio::test]
async fn a_cursor_from_one_instance_resumes_on_the_other() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let names: Vec<&str> = MEDIA_SEQUENCE.to_vec();
    for name in &names[..3] {
        a.deliver_fixture(name).await;
    }
    let mut on_a = WsClient::admin(&a).await;
    on_a.subscribe(
        "e",
        "subscription { webhookEvents { id cursor } }",
        json!({}),
    )
    .await;
    let mut cursor = String::new();
    for name in &names[..3] {
        let event = on_a.next_data("e").await["webhookEvents"].clone();
        assert_eq!(event["id"], event_id(name));
        cursor = event["cursor"].as_str().unwrap().to_owned();
    }
    drop(on_a);
    for (i, name) in names[3..].iter().enumerate() {
        if i % 2 == 0 {
            a.deliver_fixture(name).await
        } else {
            b.deliver_fixture(name).await
        };
    }
    let mut on_b = WsClient::admin(&b).await;
    on_b.subscribe(
        "e",
        "subscription($c: String) { webhookEvents(after: $c) { id } }",
        json!({ "c": cursor }),
    )
    .await;
    for name in &names[3..] {
        assert_eq!(
            on_b.next_data("e").await["webhookEvents"]["id"],
            event_id(name)
        );
    }
    assert!(
        on_b.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );
}

/// A fixed pseudo-random permutation of `0..n` for round `round`.
fn shuffled(n: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(
        &mut order,
        (round as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9),
    );
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_deliveries_split_across_instances_end_in_the_in_order_state() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let events = in_order_events();
    let baseline: Vec<usize> = (0..events.len()).collect();
    for &i in &baseline {
        a.deliver(&renamed(&events, 0)[i]).await;
    }
    let expected = rows_of_case(&a.entity_rows().await, 0);
    const ROUNDS: usize = 20;
    for round in 1..=ROUNDS {
        let renamed = renamed(&events, round);
        let order = shuffled(events.len(), round);
        // Every delivery of the round at once, alternately to A and B, plus a duplicate of each on the
        // other instance.
        let posts = order.iter().enumerate().flat_map(|(k, &i)| {
            let (first, second) = if k % 2 == 0 { (&a, &b) } else { (&b, &a) };
            [first.deliver(&renamed[i]), second.deliver(&renamed[i])]
        });
        for (code, status) in futures_util::future::join_all(posts).await {
            assert_eq!(code, 200, "round {round}: {status}");
        }
        let rows = rows_of_case(&a.entity_rows().await, round);
        assert_eq!(rows, expected, "round {round}, order {order:?}");
    }
    let stored = a.count("webhook_event").await;
    assert_eq!(
        stored as usize,
        events.len() * (ROUNDS + 1),
        "each event stored once"
    );
}
