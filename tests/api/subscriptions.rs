//! Acceptance 1–3 of the subscriptions issue, over real websockets against the real server.

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::ws_client::*;

const STREAM_PLAYBACK: &str = "d4e5f6a7-b8c9-4012-8def-0123456789ab";
const MEDIA_PLAYBACK: &str = "a1b2c3d4-e5f6-4789-9abc-def012345678";

/// The stream's (status, encoderConnected, recording) after each live event of the fixture sequence.
const STREAM_FRAMES: [(&str, bool, bool); 10] = [
    ("IDLE", false, false),
    ("PREPARING", false, false),
    ("PREPARING", true, false),
    ("ACTIVE", true, true),
    ("ACTIVE", true, true),
    ("ACTIVE", false, false),
    ("IDLE", false, false),
    ("IDLE", false, false),
    ("DISABLED", false, false),
    ("DELETED", false, false),
];

/// The frames a `liveStream` subscriber gets for the whole live sequence: one per stream change, and the
/// stream again when one of its simulcast targets or recordings changes.
const SUBSCRIBER_FRAMES: [(&str, bool, bool); 16] = [
    ("IDLE", false, false),      // created
    ("IDLE", false, false),      // target created
    ("PREPARING", false, false), // preparing
    ("PREPARING", true, false),  // connected
    ("ACTIVE", true, true),      // recording
    ("ACTIVE", true, true),      // active
    ("ACTIVE", true, true),      // target starting
    ("ACTIVE", true, true),      // recording's media created
    ("ACTIVE", true, true),      // target broadcasting
    ("ACTIVE", true, true),      // target updated
    ("ACTIVE", false, false),    // disconnected
    ("IDLE", false, false),      // idle
    ("IDLE", false, false),      // updated
    ("IDLE", false, false),      // target deleted
    ("DISABLED", false, false),  // disabled
    ("DELETED", false, false),   // deleted
];

fn frame_of(stream: &Value) -> (&str, bool, bool) {
    (
        stream["status"].as_str().unwrap(),
        stream["encoderConnected"].as_bool().unwrap(),
        stream["recording"].as_bool().unwrap(),
    )
}

#[tokio::test]
async fn live_stream_by_playback_id_follows_the_whole_sequence_then_completes() {
    let app = spawn_app().await;
    let mut client = WsClient::admin(&app).await;
    let query = "subscription($p: String) { liveStream(playbackId: $p) { id status encoderConnected recording lastEventType } }";
    client
        .subscribe("s1", query, json!({ "p": STREAM_PLAYBACK }))
        .await;
    let mut by_id = WsClient::admin(&app).await;
    by_id
        .subscribe(
            "s2",
            "subscription($id: ID) { liveStream(id: $id) { status encoderConnected recording } }",
            json!({ "id": STREAM_ID }),
        )
        .await;
    // Not known yet: both wait. Give the server a moment to register the subscriptions.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for name in LIVE_SEQUENCE {
        app.deliver_fixture(name).await;
    }
    for (index, expected) in SUBSCRIBER_FRAMES.iter().enumerate() {
        let data = client.next_data("s1").await;
        assert_eq!(
            frame_of(&data["liveStream"]),
            *expected,
            "frame {index}: {data}"
        );
        assert_eq!(
            frame_of(&by_id.next_data("s2").await["liveStream"]),
            *expected,
            "by id, frame {index}"
        );
    }
    assert_eq!(
        client.message().await,
        json!({ "type": "complete", "id": "s1" })
    );
    assert_eq!(
        by_id.message().await,
        json!({ "type": "complete", "id": "s2" })
    );
}

#[tokio::test]
async fn media_subscription_follows_the_media_then_completes() {
    let app = spawn_app().await;
    let mut client = WsClient::admin(&app).await;
    client
        .subscribe("m", "subscription($p: String) { media(playbackId: $p) { id status title playbackIds { id } } }", json!({ "p": MEDIA_PLAYBACK }))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for name in MEDIA_SEQUENCE {
        app.deliver_fixture(name).await;
    }
    let statuses: Vec<String> = {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let data = client.next_data("m").await;
            assert_eq!(data["media"]["id"], MEDIA_ID);
            assert_eq!(data["media"]["playbackIds"][0]["id"], MEDIA_PLAYBACK);
            seen.push(data["media"]["status"].as_str().unwrap().to_owned());
        }
        seen
    };
    assert_eq!(statuses, ["CREATED", "READY", "READY", "DELETED"]);
    assert_eq!(client.message().await["type"], "complete");
}

/// A later event that does not list the playback ids publishes them as loaded with the media (one join):
/// in FastPix's order, not the ids' order.
#[tokio::test]
async fn a_change_publishes_the_playback_ids_in_their_order_as_loaded() {
    let app = spawn_app().await;
    let mut client = WsClient::admin(&app).await;
    client
        .subscribe(
            "m",
            "subscription($id: ID) { media(id: $id) { status playbackIds { id } } }",
            json!({ "id": MEDIA_ID }),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut created: Value = serde_json::from_slice(&fixture("video.media.created")).unwrap();
    created["data"]["playbackIds"] = json!([
        { "id": "pb-z", "accessPolicy": "public" },
        { "id": "pb-m", "accessPolicy": "signed" },
        { "id": "pb-a", "accessPolicy": "public" },
    ]);
    let mut ready: Value = serde_json::from_slice(&fixture("video.media.ready")).unwrap();
    ready["data"].as_object_mut().unwrap().remove("playbackIds");
    for body in [created, ready] {
        let body = serde_json::to_vec(&body).unwrap();
        assert_eq!(app.deliver(&body).await, (200, "applied".to_owned()));
    }
    for status in ["CREATED", "READY"] {
        let data = client.next_data("m").await;
        assert_eq!(data["media"]["status"], status);
        assert_eq!(
            data["media"]["playbackIds"],
            json!([{ "id": "pb-z" }, { "id": "pb-m" }, { "id": "pb-a" }]),
            "{status}"
        );
    }
}

#[tokio::test]
async fn update_feeds_send_every_change_that_passes_their_filter() {
    let app = spawn_app().await;
    let mut client = WsClient::admin(&app).await;
    client
        .subscribe(
            "active",
            "subscription { liveStreamUpdates(status: [ACTIVE]) { id status } }",
            json!({}),
        )
        .await;
    client
        .subscribe(
            "all",
            "subscription { liveStreamUpdates { status } }",
            json!({}),
        )
        .await;
    client
        .subscribe(
            "media",
            "subscription { mediaUpdates(status: [READY, FAILED]) { id status } }",
            json!({}),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for name in LIVE_SEQUENCE.iter().chain(MEDIA_SEQUENCE.iter()) {
        app.deliver_fixture(name).await;
    }
    let mut frames: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    // 10 stream changes, 3 of them ACTIVE; media: ready, failed, updated (READY).
    for _ in 0..(10 + 3 + 3) {
        let message = client.message().await;
        let id = message["id"].as_str().unwrap().to_owned();
        let data = &message["payload"]["data"];
        let node = data
            .get("liveStreamUpdates")
            .or(data.get("mediaUpdates"))
            .unwrap();
        frames
            .entry(id)
            .or_default()
            .push(node["status"].as_str().unwrap().to_owned());
    }
    let statuses: Vec<&str> = STREAM_FRAMES.iter().map(|f| f.0).collect();
    assert_eq!(frames["all"], statuses);
    assert_eq!(frames["active"], ["ACTIVE", "ACTIVE", "ACTIVE"]);
    assert_eq!(frames["media"], ["READY", "FAILED", "READY"]);
    assert!(
        client
            .recv_within(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "nothing more"
    );
}

#[tokio::test]
async fn an_entity_subscriber_that_joins_midway_gets_the_current_state_first() {
    let app = spawn_app().await;
    for name in &LIVE_SEQUENCE[..6] {
        app.deliver_fixture(name).await;
    }
    let mut client = WsClient::admin(&app).await;
    client
        .subscribe("s", "subscription($id: ID) { liveStream(id: $id) { status encoderConnected recording simulcastTargets { status } } }", json!({ "id": STREAM_ID }))
        .await;
    let first = client.next_data("s").await;
    assert_eq!(frame_of(&first["liveStream"]), ("ACTIVE", true, true));
    assert_eq!(first["liveStream"]["simulcastTargets"][0]["status"], "IDLE");
    app.deliver_fixture("video.live_stream.disconnected").await;
    assert_eq!(
        frame_of(&client.next_data("s").await["liveStream"]),
        ("ACTIVE", false, false)
    );
}

#[tokio::test]
async fn entity_subscriptions_need_exactly_one_of_id_and_playback_id() {
    let app = spawn_app().await;
    let mut client = WsClient::admin(&app).await;
    client
        .subscribe(
            "both",
            r#"subscription { liveStream(id: "a", playbackId: "b") { id } }"#,
            json!({}),
        )
        .await;
    let message = client.message().await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(
        message["payload"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
    client
        .subscribe("none", "subscription { media { id } }", json!({}))
        .await;
    assert_eq!(
        client.message().await["payload"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
}

/// A nested field whose read fails answers that message with the error, beside the rest of its data,
/// and the subscription goes on: the next change comes as usual.
#[tokio::test]
async fn a_nested_read_failing_answers_its_error_and_the_subscription_goes_on() {
    let app = spawn_app().await;
    app.deliver_fixture("video.live_stream.created").await;
    let mut client = WsClient::admin(&app).await;
    client
        .subscribe(
            "stream",
            "subscription($id: ID) { liveStream(id: $id) { lastEventType recordings { id } } }",
            json!({ "id": STREAM_ID }),
        )
        .await;
    let last_event = |data: &Value| data["liveStream"]["lastEventType"].clone();
    assert_eq!(
        last_event(&client.next_data("stream").await),
        "video.live_stream.created"
    );

    // The stream's recordings are read from `media`, which its own events do not write.
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    app.db
        .execute_unprepared(&rename("media", "media_away"))
        .await
        .unwrap();
    app.deliver_fixture("video.live_stream.preparing").await;
    let failed = client.message().await;
    assert_eq!(failed["type"], "next", "{failed}");
    assert_eq!(
        last_event(&failed["payload"]["data"]),
        "video.live_stream.preparing"
    );
    assert_eq!(
        failed["payload"]["errors"][0]["path"],
        json!(["liveStream", "recordings"]),
        "{failed}"
    );

    app.db
        .execute_unprepared(&rename("media_away", "media"))
        .await
        .unwrap();
    app.deliver_fixture("video.live_stream.connected").await;
    let next = client.next_data("stream").await;
    assert_eq!(last_event(&next), "video.live_stream.connected");
    assert_eq!(next["liveStream"]["recordings"], json!([]));
}

/// What the engine rejects before any resolver runs gets its code on a websocket too.
#[tokio::test]
async fn an_invalid_subscription_gets_bad_user_input() {
    let app = spawn_app().await;
    let mut client = WsClient::admin(&app).await;
    for (id, document) in [
        (
            "unknown-field",
            r#"subscription { liveStream(id: "a") { nope } }"#,
        ),
        ("syntax", "subscription { liveStream(id: "),
    ] {
        client.subscribe(id, document, json!({})).await;
        let message = client.message().await;
        assert_eq!(message["type"], "error", "{message}");
        assert_eq!(message["id"], id);
        assert_eq!(
            message["payload"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{message}"
        );
    }
}

async fn read_events(client: &mut WsClient, id: &str, count: usize) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for _ in 0..count {
        let data = client.next_data(id).await;
        let event = &data["webhookEvents"];
        events.push((
            event["id"].as_str().unwrap().to_owned(),
            event["cursor"].as_str().unwrap().to_owned(),
        ));
    }
    events
}

#[tokio::test]
async fn webhook_events_resume_after_a_disconnect_with_nothing_lost_or_repeated() {
    let app = spawn_app().await;
    let names: Vec<&str> = LIVE_SEQUENCE
        .iter()
        .chain(MEDIA_SEQUENCE.iter())
        .copied()
        .collect();
    let query = "subscription($after: String) { webhookEvents(after: $after) { id type cursor outcome payload } }";

    for name in &names[..5] {
        app.deliver_fixture(name).await;
    }
    let mut first = WsClient::admin(&app).await;
    first.subscribe("e", query, json!({ "after": null })).await;
    let mut seen = read_events(&mut first, "e", 5).await; // replayed from the log
    for name in &names[5..9] {
        app.deliver_fixture(name).await;
    }
    seen.extend(read_events(&mut first, "e", 4).await); // live
    drop(first); // the client goes away

    // More events arrive while it is away, some while it reconnects.
    for name in &names[9..14] {
        app.deliver_fixture(name).await;
    }
    let last_cursor = seen.last().unwrap().1.clone();
    let app_ref = &app;
    let (mut second, ()) = tokio::join!(
        async {
            let mut client = WsClient::admin(app_ref).await;
            client
                .subscribe("e", query, json!({ "after": last_cursor }))
                .await;
            client
        },
        async {
            for name in &names[14..18] {
                app_ref.deliver_fixture(name).await;
            }
        }
    );
    for name in &names[18..] {
        app.deliver_fixture(name).await;
    }
    seen.extend(read_events(&mut second, "e", names.len() - 9).await);

    let expected: Vec<String> = names
        .iter()
        .map(|name| {
            serde_json::from_slice::<Value>(&fixture(name)).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let got: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got, expected, "every event exactly once, in order");
    assert!(
        second
            .recv_within(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "and nothing more"
    );
}

#[tokio::test]
async fn webhook_events_subscription_is_admin_only_and_filters() {
    let app = spawn_app().await;
    let mut public = WsClient::connect(&app, TRANSPORT_WS).await;
    public.init(json!({})).await;
    public
        .subscribe("e", "subscription { webhookEvents { id } }", json!({}))
        .await;
    let message = public.message().await;
    assert_eq!(
        message["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{message}"
    );

    let mut admin = WsClient::admin(&app).await;
    admin
        .subscribe("e", "subscription($o: String) { webhookEvents(types: [\"video.media.ready\", \"video.media.created\"], objectId: $o) { type } }", json!({ "o": MEDIA_ID }))
        .await;
    for name in MEDIA_SEQUENCE {
        app.deliver_fixture(name).await;
    }
    assert_eq!(
        admin.next_data("e").await["webhookEvents"]["type"],
        "video.media.created"
    );
    assert_eq!(
        admin.next_data("e").await["webhookEvents"]["type"],
        "video.media.ready"
    );
    assert!(
        admin
            .recv_within(std::time::Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_stream_subscriber_sees_its_simulcast_targets_change() {
    let app = spawn_app().await;
    app.deliver_fixture("video.live_stream.created").await;
    let mut client = WsClient::admin(&app).await;
    client
        .subscribe("s", "subscription($id: ID) { liveStream(id: $id) { status simulcastTargets { status isEnabled } } }", json!({ "id": STREAM_ID }))
        .await;
    assert_eq!(
        client.next_data("s").await["liveStream"]["simulcastTargets"],
        json!([])
    );
    for (name, status) in [
        ("video.live_stream.simulcast_target.created", "IDLE"),
        ("video.live_stream.simulcast_target.starting", "STARTING"),
        (
            "video.live_stream.simulcast_target.broadcasting",
            "BROADCASTING",
        ),
        ("video.live_stream.simulcast_target.deleted", "DELETED"),
    ] {
        app.deliver_fixture(name).await;
        let data = client.next_data("s").await;
        assert_eq!(
            data["liveStream"]["simulcastTargets"][0]["status"], status,
            "after {name}: {data}"
        );
    }
}
