//! Acceptance 2 of the intake issue: any permutation of the media and live sequences, with duplicates,
//! ends in the same rows as in-order delivery; a deleted entity stays deleted; `READY` never regresses.
//!
//! One server serves every case: each case renames every id (events, media, streams, targets, playback
//! ids) with a suffix of its own, so cases cannot see each other's rows.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::helpers::*;

/// The media and live sequences in `createdAt` order, plus two events for the upload media: `ready`, then
/// a later `updated` that says `Processing` (which must not take `READY` away).
pub fn in_order_events() -> Vec<Vec<u8>> {
    let mut names: Vec<&str> = MEDIA_SEQUENCE.to_vec();
    names.extend(LIVE_SEQUENCE);
    let mut events: Vec<Vec<u8>> = names.iter().map(|name| fixture(name)).collect();
    let upload_ready = synthetic(
        "video.media.ready",
        "0a1b2c3d-2222-4a00-8000-000000000008",
        "2026-06-22T12:42:00.000000001Z",
        None,
    );
    let upload_processing = synthetic(
        "video.media.updated",
        "0a1b2c3d-2222-4a00-8000-000000000009",
        "2026-06-22T12:50:00.5Z",
        Some("Processing"),
    );
    events.insert(4, upload_ready);
    events.insert(5, upload_processing);
    events
}

/// A media event about the upload media, made from a fixture.
fn synthetic(template: &str, event_id: &str, created_at: &str, status: Option<&str>) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&fixture(template)).unwrap();
    event["id"] = json!(event_id);
    event["createdAt"] = json!(created_at);
    event["object"]["id"] = json!(UPLOAD_ID);
    event["data"]["id"] = json!(UPLOAD_ID);
    event["data"].as_object_mut().unwrap().remove("playbackIds");
    if let Some(status) = status {
        event["data"]["status"] = json!(status);
    }
    serde_json::to_vec_pretty(&event).unwrap()
}

/// Every id an event names, so that a case can rename them all.
fn ids_in(event: &Value) -> Vec<String> {
    let data = &event["data"];
    let mut ids: Vec<&Value> = vec![&event["id"], &event["object"]["id"]];
    for key in ["id", "streamId", "livestreamId", "simulcastId", "uploadId"] {
        ids.push(&data[key]);
    }
    for list in ["playbackIds", "simulcastResponses"] {
        for entry in data[list].as_array().into_iter().flatten() {
            ids.push(&entry["id"]);
            ids.push(&entry["simulcastId"]);
        }
    }
    ids.extend(data["mediaIds"].as_array().into_iter().flatten());
    ids.into_iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The sequence with every id renamed for case `case`.
pub fn renamed(events: &[Vec<u8>], case: usize) -> Vec<Vec<u8>> {
    let ids: BTreeSet<String> = events
        .iter()
        .flat_map(|e| ids_in(&serde_json::from_slice(e).unwrap()))
        .collect();
    let suffix = suffix(case);
    events
        .iter()
        .map(|event| {
            let mut text = String::from_utf8(event.clone()).unwrap();
            for id in &ids {
                text = text.replace(id.as_str(), &format!("{id}{suffix}"));
            }
            text.into_bytes()
        })
        .collect()
}

fn suffix(case: usize) -> String {
    format!("~c{case}~")
}

/// A case's rows with its suffix removed, comparable with another case's.
pub fn rows_of_case(all: &Value, case: usize) -> Value {
    let suffix = suffix(case);
    let mut rows = json!({});
    for (table, list) in all.as_object().unwrap() {
        let mine: Vec<&Value> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["id"].as_str().is_some_and(|id| id.ends_with(&suffix)))
            .collect();
        rows[table] =
            serde_json::from_str(&serde_json::to_string(&mine).unwrap().replace(&suffix, ""))
                .unwrap();
    }
    rows
}

/// Posts `order` (indices into `events`); checks that deleted stays deleted and READY stays READY.
async fn deliver_all(app: &TestApp, events: &[Vec<u8>], order: &[usize], case: usize) {
    let media_id = format!("{MEDIA_ID}{}", suffix(case));
    let upload_id = format!("{UPLOAD_ID}{}", suffix(case));
    let mut seen = BTreeSet::new();
    for &index in order {
        let (code, status) = app.deliver(&events[index]).await;
        assert_eq!(code, 200, "case {case}, event {index}");
        if !seen.insert(index) {
            assert_eq!(status, "duplicate", "case {case}, event {index}");
        } else {
            assert!(
                ["applied", "stale"].contains(&status.as_str()),
                "case {case}: {status}"
            );
        }
        // Event 1 is the URL media's ready, 8 its deletion; 4 is the upload media's ready.
        let media = media_status(app, &media_id).await;
        if seen.contains(&8) {
            assert_eq!(
                media.as_deref(),
                Some("DELETED"),
                "case {case}: deleted must stay deleted"
            );
        } else if seen.contains(&1) {
            assert_eq!(
                media.as_deref(),
                Some("READY"),
                "case {case}: READY must not regress"
            );
        }
        if seen.contains(&4) {
            assert_eq!(
                media_status(app, &upload_id).await.as_deref(),
                Some("READY"),
                "case {case}"
            );
        }
    }
}

async fn media_status(app: &TestApp, id: &str) -> Option<String> {
    use sea_orm::EntityTrait;
    entity::media::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .map(|m| m.status)
}

#[test]
fn permutations_with_duplicates_converge_to_the_in_order_rows() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(spawn_app());
    let events = in_order_events();
    assert_eq!(events.len(), 25);
    // Indices used by `deliver_all`'s checks.
    let types: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::from_slice::<Value>(e).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        (types[1].as_str(), types[8].as_str()),
        ("video.media.ready", "video.media.deleted")
    );

    let in_order: Vec<usize> = (0..events.len()).collect();
    let expected = runtime.block_on(async {
        deliver_all(&app, &renamed(&events, 0), &in_order, 0).await;
        rows_of_case(&app.entity_rows().await, 0)
    });
    assert_eq!(expected["media"].as_array().unwrap().len(), 4);
    assert_eq!(
        expected["media"][0]["status"], "READY",
        "the upload media stays READY: {}",
        expected["media"][0]
    );
    assert_eq!(expected["live_stream"][0]["status"], "DELETED");
    assert_eq!(expected["simulcast_target"][0]["status"], "DELETED");

    let case = AtomicUsize::new(1);
    let strategy = (
        Just(in_order.clone()).prop_shuffle(),
        prop::collection::vec((0..events.len(), any::<Index>()), 0..6),
    );
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        max_shrink_iters: 32,
        ..Config::default()
    });
    runner
        .run(&strategy, |(mut order, duplicates)| {
            for (event, position) in duplicates {
                let at = position.index(order.len() + 1);
                order.insert(at, event);
            }
            let case = case.fetch_add(1, Ordering::Relaxed);
            let events = renamed(&events, case);
            let rows = runtime.block_on(async {
                deliver_all(&app, &events, &order, case).await;
                rows_of_case(&app.entity_rows().await, case)
            });
            prop_assert_eq!(&rows, &expected, "order {:?}", order);
            Ok(())
        })
        .unwrap();
}
