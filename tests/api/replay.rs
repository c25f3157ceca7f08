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
