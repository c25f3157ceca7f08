//! Acceptance 4 of the operations issue: pruning old events keeps cursors resumable and `replay` exact.

use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::helpers::*;
use crate::ws_client::*;

async fn run(app: &TestApp, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fastpix-sync"))
        .args(args)
        .env("DATABASE_URL", &app.test_db.url)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn pruning_keeps_cursors_resumable_and_replay_exact() {
    let app = spawn_app().await;
    for name in MEDIA_SEQUENCE.iter().chain(LIVE_SEQUENCE.iter()) {
        app.deliver_fixture(name).await;
    }
    app.deliver(br#"{"id":"old-ignored","type":"video.media.track.ready","object":{"type":"media","id":"m"}}"#).await;
    let rejected =
        br#"{"id":"old-rejected","type":"video.media.ready","object":{"type":"media"},"data":{}}"#;
    assert_eq!(app.deliver(rejected).await, (200, "rejected".to_owned()));
    let mut client = WsClient::admin(&app).await;
    client
        .subscribe(
            "e",
            "subscription { webhookEvents { id cursor } }",
            json!({}),
        )
        .await;
    let mut cursor = String::new();
    for _ in 0..5 {
        cursor = client.next_data("e").await["webhookEvents"]["cursor"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    drop(client);

    // Everything was received 200 days ago, as far as retention can tell; keeping nothing would be wrong.
    let day_ns: i64 = 24 * 3600 * 1_000_000_000;
    app.db
        .execute_unprepared(&format!(
            "UPDATE webhook_event SET received_at_ns = received_at_ns - {}",
            200 * day_ns
        ))
        .await
        .unwrap();
    let before_rows = app.entity_rows().await;
    let before_events = app.count("webhook_event").await;
    assert_eq!(
        run(&app, &["prune", "--event-retention-days", "0"])
            .await
            .lines()
            .next()
            .unwrap(),
        "pruned 0 events; kept every old event of 0 entities that need them"
    );
    let report = run(&app, &["prune"]).await;
    let after_events = app.count("webhook_event").await;
    println!("{report}{before_events} events before, {after_events} after");
    assert!(
        after_events < before_events,
        "old events were pruned: {report}"
    );
    // The newest applied event of every media stays.
    let kept: Vec<String> = app
        .events_by_position()
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    for newest in [
        "video.media.deleted",
        "video.upload.media_created",
        "video.media.failed",
        "video.media.live_stream.created",
    ] {
        assert!(kept.iter().any(|t| t == newest), "{newest} kept: {kept:?}");
    }
    assert!(
        !kept.iter().any(|t| t == "video.media.track.ready"),
        "an old ignored event goes"
    );
    assert!(
        app.events_by_position()
            .await
            .iter()
            .any(|e| e.event_id == "old-rejected"),
        "an old rejected event stays, for `replay` after a fix"
    );

    // A cursor taken before the prune resumes with exactly the events that remain after it.
    let remaining_after_cursor = {
        let position = fastpix_sync::graphql::pagination::decode_event_cursor(&cursor).unwrap();
        app.events_by_position()
            .await
            .into_iter()
            .filter(|e| e.position.unwrap() > position)
            .map(|e| e.event_id)
            .collect::<Vec<_>>()
    };
    let mut resumed = WsClient::admin(&app).await;
    resumed
        .subscribe(
            "e",
            "subscription($c: String) { webhookEvents(after: $c) { id } }",
            json!({ "c": cursor }),
        )
        .await;
    for expected in &remaining_after_cursor {
        assert_eq!(
            &resumed.next_data("e").await["webhookEvents"]["id"],
            expected
        );
    }
    assert!(
        resumed
            .recv_within(std::time::Duration::from_millis(300))
            .await
            .is_none()
    );

    for table in ["playback_id", "simulcast_target", "live_stream", "media"] {
        app.db
            .execute_unprepared(&format!("DELETE FROM {table}"))
            .await
            .unwrap();
    }
    run(&app, &["replay"]).await;
    assert_eq!(
        app.entity_rows().await,
        before_rows,
        "replay after the prune rebuilds every entity"
    );
}
