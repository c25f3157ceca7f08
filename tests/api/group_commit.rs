//! Group commit (issue 6): deliveries that arrive together share one intake transaction. Each one is
//! still stored exactly once, applied as in arrival order, answered after its commit, and numbered without
//! gaps; and a delivery that fails makes only its own answer fail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fastpix_sync::webhook::verify::sign;
use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, TransactionTrait};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::ordering::{in_order_events, renamed, rows_of_case};

/// The stored events as (event id, outcome, position), in position order.
async fn stored_events(app: &TestApp) -> Vec<(String, String, Option<i64>)> {
    app.events_by_position()
        .await
        .into_iter()
        .map(|row| (row.event_id, row.outcome, row.position))
        .collect()
}

/// Asserts that the stored positions are exactly 1..=n.
fn assert_gapless(stored: &[(String, String, Option<i64>)]) {
    let positions: Vec<Option<i64>> = stored.iter().map(|(_, _, p)| *p).collect();
    let expected: Vec<Option<i64>> = (1..=stored.len() as i64).map(Some).collect();
    assert_eq!(positions, expected, "positions are 1..=n without gaps");
}

fn event_id(body: &[u8]) -> String {
    let event: Value = serde_json::from_slice(body).unwrap();
    event["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_are_stored_once_in_gapless_positions_with_the_in_order_rows() {
    const CASES: usize = 6;
    const DUPLICATES: usize = 50;
    let app = spawn_app().await;
    let events = in_order_events();
    for body in renamed(&events, 0) {
        assert_eq!(app.deliver(&body).await.0, 200);
    }
    let expected = rows_of_case(&app.entity_rows().await, 0);

    // Every event of cases 1..=CASES once, shuffled (so each entity's events arrive out of order), with
    // a duplicate of some right behind the original, so that both are in flight at the same time.
    let mut distinct: Vec<Vec<u8>> = (1..=CASES).flat_map(|c| renamed(&events, c)).collect();
    shuffle(&mut distinct, 6);
    let mut bodies = Vec::new();
    for (k, body) in distinct.iter().enumerate() {
        bodies.push(body.clone());
        if k % 3 == 0 && k / 3 < DUPLICATES {
            bodies.push(body.clone());
        }
    }
    assert_eq!(bodies.len(), distinct.len() + DUPLICATES);
    assert_eq!(bodies.len(), 200);

    let answers: Vec<(String, u16, String)> = futures_util::stream::iter(&bodies)
        .map(|body| async {
            let (code, status) = app.deliver(body).await;
            (event_id(body), code, status)
        })
        .buffer_unordered(32)
        .collect()
        .await;

    // One answer per event says what was stored; every other one says `duplicate`.
    let mut answered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, code, status) in answers {
        assert_eq!(code, 200, "{id}: {status}");
        answered.entry(id).or_default().push(status);
    }
    assert_eq!(answered.len(), distinct.len());
    let stored = stored_events(&app).await;
    assert_eq!(
        stored.len(),
        events.len() + distinct.len(),
        "each event stored once"
    );
    assert_gapless(&stored);
    let outcomes: BTreeMap<&str, &str> = stored
        .iter()
        .map(|(id, outcome, _)| (id.as_str(), outcome.as_str()))
        .collect();
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for body in &bodies {
        *sent.entry(event_id(body)).or_default() += 1;
    }
    for (id, statuses) in &answered {
        assert_eq!(statuses.len(), sent[id], "{id}: one answer per copy sent");
        let stores: Vec<&String> = statuses.iter().filter(|s| *s != "duplicate").collect();
        assert_eq!(stores.len(), 1, "{id}: {statuses:?}");
        assert_eq!(
            Some(stores[0].as_str()),
            outcomes.get(id.as_str()).copied(),
            "{id}: the answer is the stored outcome"
        );
        assert!(["applied", "stale"].contains(&stores[0].as_str()), "{id}");
    }

    let rows = app.entity_rows().await;
    for case in 1..=CASES {
        assert_eq!(rows_of_case(&rows, case), expected, "case {case}");
    }
    let transactions = app
        .metric("fastpix_sync_intake_batch_size_count", &[])
        .await;
    assert!(
        transactions < (events.len() + bodies.len()) as f64,
        "some transactions held several deliveries ({transactions} transactions)"
    );
    assert_eq!(
        app.metric("fastpix_sync_intake_batch_retries_total", &[])
            .await,
        0.0,
        "no group commit failed"
    );
}

/// A `video.media.created` about media `n`, with ids of its own.
fn media_created(n: usize) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&fixture("video.media.created")).unwrap();
    let media = format!("group-media-{n}");
    event["id"] = json!(format!("group-event-{n}"));
    event["object"]["id"] = json!(media);
    event["data"]["id"] = json!(media);
    event["data"]["playbackIds"][0]["id"] = json!(format!("group-playback-{n}"));
    serde_json::to_vec(&event).unwrap()
}

const POISON: &str = "group-media-0";

/// Makes the insert of media `POISON` fail inside the intake transaction (after the deliveries of the
/// same transaction were applied, when their entities are written).
async fn refuse_poison(app: &TestApp) {
    let statements = match app.test_db.backend() {
        DbBackend::Postgres => vec![
            format!(
                "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN IF NEW.id = '{POISON}' THEN RAISE EXCEPTION 'simulated failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            ),
            "CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON media FOR EACH ROW EXECUTE FUNCTION refuse_poison()".to_owned(),
        ],
        _ => vec![format!(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON media WHEN NEW.id = '{POISON}' BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
        )],
    };
    for statement in &statements {
        app.db.execute_unprepared(statement).await.expect(statement);
    }
}

/// Holds the position counter (on SQLite: the write lock), so that each writer's first transaction waits
/// until the hold ends, and the deliveries after it queue up behind it.
async fn hold_log_position(app: &TestApp) -> DatabaseTransaction {
    let hold = app.db.begin().await.unwrap();
    hold.execute_unprepared("UPDATE log_position SET last = last WHERE id = 1")
        .await
        .unwrap();
    hold
}

/// Waits until `n` deliveries wait for their commit.
async fn await_pending(app: &TestApp, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric("fastpix_sync_intake_pending", &[]).await != n as f64 {
        assert!(
            Instant::now() < deadline,
            "{n} deliveries never waited together"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Posts `bodies` signed while `hold` keeps the writers from committing: each one once every one before it
/// waits for its commit, so that they reach the writers in this order. Then ends `hold`; returns the
/// responses.
async fn post_in_order_behind(
    app: &TestApp,
    hold: DatabaseTransaction,
    bodies: &[Vec<u8>],
) -> Vec<reqwest::Response> {
    let (open, gate) = tokio::sync::watch::channel(0);
    let posts = bodies.iter().enumerate().map(|(k, body)| {
        let mut gate = gate.clone();
        async move {
            gate.wait_for(|&opened| opened >= k).await.unwrap();
            app.post_webhook(body.clone(), Some(sign(SECRET, body)))
                .await
        }
    });
    let driver = async {
        for k in 0..bodies.len() {
            open.send(k).unwrap();
            await_pending(app, k + 1).await;
        }
        hold.commit().await.unwrap();
    };
    let (responses, ()) = tokio::join!(futures_util::future::join_all(posts), driver);
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_delivery_in_a_concurrent_burst_fails_alone() {
    const GOOD: usize = 30;
    let app = spawn_app().await;
    refuse_poison(&app).await;

    // The deliveries queue up behind each writer's first transaction, the poisoned one last: it is stored
    // in a group commit with others.
    let mut bodies: Vec<Vec<u8>> = (1..=GOOD).map(media_created).collect();
    let poison = media_created(0);
    bodies.push(poison.clone());
    let hold = hold_log_position(&app).await;
    let mut responses = post_in_order_behind(&app, hold, &bodies).await;
    let poisoned = responses.pop().unwrap();
    let mut answers = Vec::new();
    for response in responses {
        answers.push(answer_of(response).await);
    }

    assert_eq!(poisoned.status(), 503);
    assert!(poisoned.headers().contains_key("retry-after"));
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &(200, "applied".to_owned()), "delivery {}", n + 1);
    }
    assert!(
        app.metric("fastpix_sync_intake_batch_retries_total", &[])
            .await
            >= 1.0,
        "the poisoned delivery was in a group commit"
    );
    let stored = stored_events(&app).await;
    assert_eq!(
        stored.len(),
        GOOD,
        "nothing of the failed delivery is stored"
    );
    assert!(stored.iter().all(|(id, _, _)| id != "group-event-0"));
    assert_gapless(&stored);
    assert_eq!(app.count("media").await, GOOD as i64);
    assert_eq!(app.count("playback_id").await, GOOD as i64);

    // FastPix retries it once the failure is gone.
    app.drop_media_trigger("refuse_poison").await;
    assert_eq!(app.deliver(&poison).await, (200, "applied".to_owned()));
    let stored = stored_events(&app).await;
    assert_eq!(stored.len(), GOOD + 1);
    assert_gapless(&stored);
}

/// A media created after the fixtures' media, with the same playback id: the id moves to it.
fn playback_thief() -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&fixture("video.media.created")).unwrap();
    let thief = "0a1b2c3d-3333-4a00-8000-00000000000f";
    event["id"] = json!("0a1b2c3d-3333-4a00-8000-000000000001");
    event["createdAt"] = json!("2026-06-22T12:40:00Z");
    event["object"]["id"] = json!(thief);
    event["data"]["id"] = json!(thief);
    serde_json::to_vec_pretty(&event).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_and_ends_as_its_deliveries_one_at_a_time() {
    let app = spawn_app().await;
    let mut events = in_order_events();
    events.insert(1, playback_thief());
    // Out of order (late events refold their entity from the log), with every fourth delivery twice in
    // a row (a duplicate in the same batch).
    let mut shuffled: Vec<usize> = (0..events.len()).collect();
    shuffle(&mut shuffled, 11);
    let order: Vec<usize> = shuffled
        .iter()
        .enumerate()
        .flat_map(|(k, &i)| std::iter::repeat_n(i, if k % 4 == 0 { 2 } else { 1 }))
        .collect();

    // Case 0: one at a time.
    let bodies = renamed(&events, 0);
    let mut expected = Vec::new();
    for &i in &order {
        expected.push(app.deliver(&bodies[i]).await);
    }
    assert!(expected.iter().any(|(_, status)| status == "stale"));
    assert!(expected.iter().any(|(_, status)| status == "duplicate"));
    let expected_rows = rows_of_case(&app.entity_rows().await, 0);

    // Case 1: the same deliveries in the same order, queued behind a held transaction (on SQLite, the
    // write lock; on PostgreSQL, the position counter), so that they are stored together.
    let bodies = renamed(&events, 1);
    let transactions_before = app
        .metric("fastpix_sync_intake_batch_size_count", &[])
        .await;
    let hold = hold_log_position(&app).await;
    let ordered: Vec<Vec<u8>> = order.iter().map(|&i| bodies[i].clone()).collect();
    let mut answers = Vec::new();
    for response in post_in_order_behind(&app, hold, &ordered).await {
        answers.push(answer_of(response).await);
    }
    let transactions = app
        .metric("fastpix_sync_intake_batch_size_count", &[])
        .await
        - transactions_before;

    assert_eq!(answers, expected, "the same answer for each delivery");
    assert_eq!(rows_of_case(&app.entity_rows().await, 1), expected_rows);
    // Each writer's first transaction waits on the held one; the rest of its deliveries form one more.
    let writers = match app.test_db.backend() {
        DbBackend::Postgres => fastpix_sync::webhook::writer::POSTGRES_WRITERS,
        _ => 1,
    };
    assert!(
        transactions <= 2.0 * writers as f64,
        "{} deliveries in {transactions} transactions",
        order.len()
    );
}
