//! Acceptance 1 and 3 of the intake issue: fixtures move their entities; bad input gets a clear answer.

use entity::{live_stream, media, playback_id, simulcast_target, webhook_event};
use fastpix_sync::webhook::verify::sign;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::helpers::*;

async fn media_row(app: &TestApp, id: &str) -> media::Model {
    media::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("media {id}"))
}

async fn stream_row(app: &TestApp) -> live_stream::Model {
    live_stream::Entity::find_by_id(STREAM_ID)
        .one(&app.db)
        .await
        .unwrap()
        .expect("the stream")
}

async fn target_row(app: &TestApp) -> simulcast_target::Model {
    simulcast_target::Entity::find_by_id(TARGET_ID)
        .one(&app.db)
        .await
        .unwrap()
        .expect("the target")
}

async fn playback_ids(app: &TestApp, column: playback_id::Column, owner: &str) -> Vec<String> {
    playback_id::Entity::find()
        .filter(column.eq(owner))
        .order_by_asc(playback_id::Column::Position)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.id)
        .collect()
}

#[tokio::test]
async fn media_fixtures_move_their_media() {
    let app = spawn_app().await;

    assert_eq!(app.deliver_fixture("video.media.created").await, "applied");
    let m = media_row(&app, MEDIA_ID).await;
    assert_eq!(m.status, "CREATED");
    assert_eq!(
        playback_ids(&app, playback_id::Column::MediaId, MEDIA_ID).await,
        ["a1b2c3d4-e5f6-4789-9abc-def012345678"]
    );

    assert_eq!(app.deliver_fixture("video.media.ready").await, "applied");
    let m = media_row(&app, MEDIA_ID).await;
    assert_eq!(m.status, "READY");
    assert_eq!(m.duration_seconds, Some(183.0));
    assert_eq!(m.max_resolution.as_deref(), Some("1080p"));
    assert_eq!(m.tracks.as_array().map(Vec::len), Some(2));
    assert_eq!(m.last_event_type, "video.media.ready");

    assert_eq!(app.deliver_fixture("video.media.upload").await, "applied");
    assert_eq!(media_row(&app, UPLOAD_ID).await.status, "AWAITING_UPLOAD");
    assert_eq!(
        app.deliver_fixture("video.upload.media_created").await,
        "applied"
    );
    assert_eq!(media_row(&app, UPLOAD_ID).await.status, "CREATED");
    assert_eq!(
        playback_ids(&app, playback_id::Column::MediaId, UPLOAD_ID)
            .await
            .len(),
        1
    );

    assert_eq!(app.deliver_fixture("video.media.failed").await, "applied");
    assert_eq!(media_row(&app, FAILED_ID).await.status, "FAILED");

    assert_eq!(app.deliver_fixture("video.media.updated").await, "applied");
    let m = media_row(&app, MEDIA_ID).await;
    assert_eq!(m.status, "READY");
    assert_eq!(
        m.title.as_deref(),
        Some("Lesson 3 - Linear equations (revised)")
    );

    assert_eq!(app.deliver_fixture("video.media.deleted").await, "applied");
    let m = media_row(&app, MEDIA_ID).await;
    assert_eq!(m.status, "DELETED");
    assert!(m.deleted_at_ns.is_some());
    assert_eq!(app.count("webhook_event").await, 7);
}

#[tokio::test]
async fn live_fixtures_move_the_stream_its_target_and_its_recording() {
    let app = spawn_app().await;
    // (fixture, stream status, encoderConnected, recording, target status)
    let steps = [
        ("video.live_stream.created", "IDLE", false, false, None),
        (
            "video.live_stream.simulcast_target.created",
            "IDLE",
            false,
            false,
            Some("IDLE"),
        ),
        (
            "video.live_stream.preparing",
            "PREPARING",
            false,
            false,
            Some("IDLE"),
        ),
        (
            "video.live_stream.connected",
            "PREPARING",
            true,
            false,
            Some("IDLE"),
        ),
        (
            "video.live_stream.recording",
            "ACTIVE",
            true,
            true,
            Some("IDLE"),
        ),
        (
            "video.live_stream.active",
            "ACTIVE",
            true,
            true,
            Some("IDLE"),
        ),
        (
            "video.live_stream.simulcast_target.starting",
            "ACTIVE",
            true,
            true,
            Some("STARTING"),
        ),
        (
            "video.media.live_stream.created",
            "ACTIVE",
            true,
            true,
            Some("STARTING"),
        ),
        (
            "video.live_stream.simulcast_target.broadcasting",
            "ACTIVE",
            true,
            true,
            Some("BROADCASTING"),
        ),
        (
            "video.live_stream.simulcast_target.updated",
            "ACTIVE",
            true,
            true,
            Some("IDLE"),
        ),
        (
            "video.live_stream.disconnected",
            "ACTIVE",
            false,
            false,
            Some("IDLE"),
        ),
        ("video.live_stream.idle", "IDLE", false, false, Some("IDLE")),
        (
            "video.live_stream.updated",
            "IDLE",
            false,
            false,
            Some("IDLE"),
        ),
        (
            "video.live_stream.simulcast_target.deleted",
            "IDLE",
            false,
            false,
            Some("DELETED"),
        ),
        (
            "video.live_stream.disabled",
            "DISABLED",
            false,
            false,
            Some("DELETED"),
        ),
        (
            "video.live_stream.deleted",
            "DELETED",
            false,
            false,
            Some("DELETED"),
        ),
    ];
    for (name, status, encoder, recording, target_status) in steps {
        assert_eq!(app.deliver_fixture(name).await, "applied", "{name}");
        let stream = stream_row(&app).await;
        assert_eq!(
            (
                stream.status.as_str(),
                stream.encoder_connected,
                stream.recording
            ),
            (status, encoder, recording),
            "stream after {name}"
        );
        if let Some(target_status) = target_status {
            assert_eq!(
                target_row(&app).await.status,
                target_status,
                "target after {name}"
            );
        }
    }

    let stream = stream_row(&app).await;
    assert!(
        stream
            .stream_key
            .as_deref()
            .is_some_and(|k| k.ends_with(STREAM_ID)),
        "stream key stored"
    );
    assert!(stream.srt_secret.is_some(), "SRT secret stored");
    assert!(stream.deleted_at_ns.is_some());
    assert_eq!(
        playback_ids(&app, playback_id::Column::LiveStreamId, STREAM_ID).await,
        ["d4e5f6a7-b8c9-4012-8def-0123456789ab"]
    );

    let target = target_row(&app).await;
    assert_eq!(target.live_stream_id, STREAM_ID);
    assert_eq!(target.is_enabled, Some(false));
    assert_eq!(
        target.stream_key.as_deref(),
        Some("abcd-efgh-ijkl-mnop-qrst")
    );
    assert_eq!(
        target.url.as_deref(),
        Some("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop-qrst")
    );

    let recording = media_row(&app, RECORDING_ID).await;
    assert_eq!(recording.live_stream_id.as_deref(), Some(STREAM_ID));
    assert_eq!(recording.status, "CREATED");
}

#[tokio::test]
async fn missing_or_wrong_signature_is_401_and_stores_nothing() {
    let app = spawn_app().await;
    let body = fixture("video.media.ready");
    let missing = app.post_webhook(body.clone(), None).await;
    assert_eq!(missing.status(), 401);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], "UNAUTHORIZED");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FASTPIX_WEBHOOK_SECRET")
    );

    let keyed_with_raw_secret = "6y02b2jHYPxGx3eUDxznf2ufj0shycC3iDWt42yXZ7M=".to_owned();
    assert_eq!(
        app.post_webhook(body.clone(), Some(keyed_with_raw_secret))
            .await
            .status(),
        401
    );
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        app.post_webhook(tampered, Some(sign(SECRET, &body)))
            .await
            .status(),
        401
    );
    assert_eq!(app.count("webhook_event").await, 0);
    assert_eq!(app.count("media").await, 0);
}

#[tokio::test]
async fn the_documented_test_vector_and_fixture_signature_verify() {
    let app = spawn_app().await;
    let vector = br#"{"type":"video.media.ready","object":{"type":"media","id":"7d3c2b1a-4e5f-4a6b-8c9d-0e1f2a3b4c5d"},"id":"0a1b2c3d-1111-4a00-8000-000000000002"}"#;
    let response = app
        .post_webhook(
            vector.to_vec(),
            Some("3QV/Yld9ne5iKDF2OuHzwvrSkfwvYZfBjm1kI4vjL7g=".into()),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "applied");

    let response = app
        .post_webhook(
            fixture("video.media.created"),
            Some(sign(SECRET, &fixture("video.media.created"))),
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let app = spawn_app().await;
    let mut body = br#"{"id":"big","type":"video.media.ready","pad":""#.to_vec();
    body.resize(1024 * 1024 + 10, b'a');
    body.extend_from_slice(b"\"}");
    let signature = sign(SECRET, &body);
    let response = app.post_webhook(body, Some(signature)).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(app.count("webhook_event").await, 0);
}

#[tokio::test]
async fn signed_non_json_is_400() {
    let app = spawn_app().await;
    for body in [&b"this is not json"[..], b"[1,2,3]", b"\"text\""] {
        let response = app
            .post_webhook(body.to_vec(), Some(sign(SECRET, body)))
            .await;
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(body));
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "BAD_REQUEST");
    }
    assert_eq!(app.count("webhook_event").await, 0);
}

#[tokio::test]
async fn probes_answer_ping_and_store_nothing() {
    let app = spawn_app().await;
    for body in [&b""[..], b"{}", br#"{"type":"video.media.ready"}"#] {
        let response = app.post_webhook(body.to_vec(), None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"status": "ping"})
        );
    }
    assert_eq!(app.count("webhook_event").await, 0);
}

#[tokio::test]
async fn known_type_without_an_entity_id_is_rejected_and_stored_with_its_reason() {
    let app = spawn_app().await;
    let body = br#"{"id":"ev-no-object","type":"video.media.ready","data":{"status":"Ready"}}"#;
    assert_eq!(app.deliver(body).await, (200, "rejected".to_owned()));
    let row = webhook_event::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(row.outcome, "rejected");
    assert!(
        row.reason
            .as_deref()
            .is_some_and(|r| r.contains("media id")),
        "{:?}",
        row.reason
    );
    assert_eq!(row.payload.as_bytes(), body);
    assert_eq!(app.count("media").await, 0);
}

#[tokio::test]
async fn unknown_type_is_ignored_and_stored() {
    let app = spawn_app().await;
    let body = br#"{"id":"ev-track","type":"video.media.track.ready","object":{"type":"media","id":"m1"},"data":{}}"#;
    assert_eq!(app.deliver(body).await, (200, "ignored".to_owned()));
    let row = webhook_event::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        (row.outcome.as_str(), row.object_id.as_deref()),
        ("ignored", Some("m1"))
    );
    assert_eq!(app.count("media").await, 0);
}

#[tokio::test]
async fn duplicate_delivery_is_applied_once() {
    let app = spawn_app().await;
    assert_eq!(app.deliver_fixture("video.media.created").await, "applied");
    assert_eq!(app.deliver_fixture("video.media.ready").await, "applied");
    let before = app.entity_rows().await;
    assert_eq!(
        app.deliver_fixture("video.media.created").await,
        "duplicate"
    );
    assert_eq!(app.deliver_fixture("video.media.ready").await, "duplicate");
    assert_eq!(app.count("webhook_event").await, 2);
    assert_eq!(app.entity_rows().await, before);
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let missing = app
        .client
        .get(format!("{}/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "NOT_FOUND"
    );
}

/// SPEC §2: every error response is `{"error": {"code", "message"}}`, also where axum or async-graphql
/// would answer on their own: a method a route does not take, a GraphQL body that is not JSON or is too
/// large, a websocket upgrade that is not one.
#[tokio::test]
async fn errors_outside_the_handlers_answer_json_too() {
    let app = spawn_app().await;
    let url = |path: &str| format!("{}{path}", app.address);
    let mut big = br#"{"query":"{ __typename }","pad":""#.to_vec();
    big.resize(1024 * 1024 + 10, b'a');
    big.extend_from_slice(b"\"}");
    let requests = [
        (
            app.client.get(url("/webhooks/fastpix")),
            405,
            "METHOD_NOT_ALLOWED",
            Some("POST"),
        ),
        (
            app.client.put(url("/graphql")),
            405,
            "METHOD_NOT_ALLOWED",
            Some("GET,HEAD,POST"),
        ),
        (
            app.client.post(url("/graphql")).body("{ not json"),
            400,
            "BAD_REQUEST",
            None,
        ),
        (
            app.client.post(url("/graphql")).body(big),
            413,
            "PAYLOAD_TOO_LARGE",
            None,
        ),
        (
            app.client
                .get(url("/graphql"))
                .header("upgrade", "websocket")
                .header("sec-websocket-protocol", "graphql-transport-ws"),
            400,
            "BAD_REQUEST",
            None,
        ),
    ];
    for (request, status, code, allow) in requests {
        let response = request.send().await.unwrap();
        let what = format!("{} {}", response.status(), response.url());
        assert_eq!(response.status(), status, "{what}");
        let allowed = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().replace(' ', ""));
        assert_eq!(allowed.as_deref(), allow, "{what}");
        let error: Value = response.json().await.expect("a JSON body");
        assert_eq!(error["error"]["code"], code, "{what}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {error}"
        );
    }
    // A GraphQL request in a body within the limit is still answered.
    let answer = app
        .post_graphql(json!({ "query": "{ __typename }" }), false)
        .await;
    assert_eq!(answer["data"]["__typename"], "Query");
}
