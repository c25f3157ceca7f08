//! Acceptance 5 of the intake issue: after a shuffled delivery, wiping the entity tables and running
//! `fastpix-sync replay` gives identical rows.

use sea_orm::ConnectionTrait;

use crate::helpers::*;

#[tokio::test]
async fn replay_rebuilds_identical_rows_after_a_shuffled_delivery() {
    let app = spawn_app().await;
    let names: Vec<&str> = MEDIA_SEQUENCE
        .iter()
        .chain(LIVE_SEQUENCE.iter())
        .copied()
        .collect();
    // A fixed shuffle (7 is coprime with 23, so this visits every event once): many arrive late.
    let shuffled: Vec<&str> = (0..names.len())
        .map(|i| names[(i * 7) % names.len()])
        .collect();
    assert_eq!(names.len(), 23);
    for name in &shuffled {
        app.deliver_fixture(name).await;
    }
    app.deliver(br#"{"id":"ev-unknown","type":"video.media.track.ready","object":{"type":"media","id":"x"}}"#).await;
    let before = app.entity_rows().await;
    assert_eq!(before["media"].as_array().unwrap().len(), 4);

    for table in ["playback_id", "simulcast_target", "live_stream", "media"] {
        app.db
            .execute_unprepared(&format!("DELETE FROM {table}"))
            .await
            .unwrap();
    }
    assert_eq!(app.count("media").await, 0);

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fastpix-sync"))
        .arg("replay")
        .env("DATABASE_URL", &app.test_db.url)
        .env_remove("FASTPIX_WEBHOOK_SECRET")
        .output()
        .await
        .expect("running fastpix-sync replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("replayed 24 events"), "{stdout}");

    assert_eq!(app.entity_rows().await, before);
}

/// A target first heard of after its stream went idle (with no target listed) still folds that `idle`,
/// exactly as `replay` does.
#[tokio::test]
async fn a_target_first_seen_after_its_streams_idle_folds_the_idle_like_replay() {
    let app = spawn_app().await;
    let mut idle: serde_json::Value =
        serde_json::from_slice(&fixture("video.live_stream.idle")).unwrap();
    idle["data"]
        .as_object_mut()
        .unwrap()
        .remove("simulcastResponses");
    app.deliver_fixture("video.live_stream.created").await;
    app.deliver(&serde_json::to_vec(&idle).unwrap()).await;
    app.deliver_fixture("video.live_stream.simulcast_target.created")
        .await;
    app.deliver_fixture("video.live_stream.simulcast_target.starting")
        .await;
    let before = app.entity_rows().await;
    assert_eq!(
        before["simulcast_target"][0]["status"], "IDLE",
        "the later idle wins: {before}"
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fastpix-sync"))
        .arg("replay")
        .env("DATABASE_URL", &app.test_db.url)
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    assert_eq!(app.entity_rows().await, before);
}
