//! Each benchmark scenario at a tiny size, with the servers in this process, so the harness cannot rot:
//! 20 webhooks, 5 subscribers, 10 idle connections, 20 queries. SQLite always; PostgreSQL too when
//! `TEST_DATABASE_URL` is set. The figures are only checked for sanity; the benchmark is
//! `cargo run --release -p bench -- all`.

use bench::db::{Backend, BenchDb};
use bench::load::{LoadResult, http_client, post_expect};
use bench::scenarios::{self, Sizes};
use bench::server::{BaselineKind, Launch, start_baseline};
use bench::stats::Latencies;

fn sane_latency(ms: f64) -> bool {
    ms.is_finite() && ms > 0.0 && ms < 10_000.0
}

/// Both sides answered all `requests` as expected, at a rate and with latencies that make sense.
fn assert_all_answered(ours: &mut LoadResult, baseline: &mut LoadResult, requests: u64) {
    for (name, result) in [("ours", ours), ("baseline", baseline)] {
        assert_eq!(
            (result.ok, result.errors),
            (requests, 0),
            "{name} answered every request: {:?}",
            result.first_error
        );
        assert!(result.rate > 0.0, "{name} rate");
        assert!(sane_latency(result.latencies.p50_ms()), "{name} p50");
        assert!(sane_latency(result.latencies.p99_ms()), "{name} p99");
    }
}

async fn ingest_on(backend: Backend) {
    let sizes = Sizes::smoke();
    let mut outcome = scenarios::ingest(&Launch::InProcess, &backend, &sizes.ingest)
        .await
        .expect("the ingest scenario runs");
    assert_all_answered(&mut outcome.ours, &mut outcome.baseline, 20);
    let rows = outcome.rows();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.ratio().is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_on_sqlite() {
    ingest_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_on_postgres_when_configured() {
    match std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(admin_url) => ingest_on(Backend::Postgres { admin_url }).await,
        None => eprintln!("TEST_DATABASE_URL is not set: PostgreSQL ingest smoke skipped"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reaches_every_subscriber() {
    bench::raise_fd_limit();
    let sizes = Sizes::smoke();
    let (subscribers, changes) = sizes.fanout[0];
    let mut outcome = scenarios::fanout(&Launch::InProcess, subscribers, changes, &sizes)
        .await
        .expect("the fan-out scenario runs");
    for (name, received) in [
        ("ours", &mut outcome.ours),
        ("baseline", &mut outcome.baseline),
        ("durable baseline", &mut outcome.durable),
    ] {
        assert_eq!(received.expected, subscribers * changes, "{name}");
        assert_eq!(
            received.missing, 0,
            "{name}: every subscriber got every change"
        );
        assert_eq!(received.unexpected, 0, "{name}: only the expected frames");
        assert!(sane_latency(received.latencies.p99_ms()), "{name} p99");
        assert_eq!(
            received.first.len(),
            changes,
            "{name}: a first frame per change"
        );
        // The earliest frame of all is some change's first; no first frame is later than the last frame.
        let earliest = |l: &mut Latencies| l.percentile_ms(f64::MIN_POSITIVE);
        assert_eq!(
            earliest(&mut received.first),
            earliest(&mut received.latencies),
            "{name}"
        );
        assert!(
            received.first.max_ms() <= received.latencies.max_ms(),
            "{name}"
        );
    }
    assert!(outcome.rows().iter().all(|r| r.ratio().is_some()));
}

/// The durable fan-out baseline answers a publish after its frame is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_fanout_baseline_commits_each_frame_before_answering() {
    let db = BenchDb::create(&Backend::Sqlite).await.unwrap();
    let kind = BaselineKind::Fanout {
        database_url: Some(db.url.clone()),
    };
    let server = start_baseline(&Launch::InProcess, &kind, "durable-smoke")
        .await
        .unwrap();
    let (client, url) = (http_client(1), format!("{}/publish", server.http()));
    for frame in ["first", "second"] {
        post_expect(&client, &url, &[], frame.into(), "receivers")
            .await
            .unwrap();
    }
    let store = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT payload FROM deliveries ORDER BY seq")
        .fetch_all(&store)
        .await
        .unwrap();
    assert_eq!(stored, ["first", "second"]);
    store.close().await;
    server.stop().await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_stay_open() {
    bench::raise_fd_limit();
    let sizes = Sizes::smoke();
    let outcome = scenarios::idle(&Launch::InProcess, &sizes)
        .await
        .expect("the idle scenario runs");
    assert_eq!(outcome.ours.open, sizes.idle);
    assert_eq!(outcome.baseline.open, sizes.idle);
    assert_eq!(outcome.ours_unsubscribed.open, sizes.idle);
    // In-process servers have no RSS of their own: the full run measures it; the row says so.
    let rows = outcome.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].ours, None);
    assert!(
        rows[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("open: ours"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer() {
    let sizes = Sizes::smoke();
    let mut outcome = scenarios::query(&Launch::InProcess, &sizes)
        .await
        .expect("the query scenario runs");
    assert_all_answered(&mut outcome.ours, &mut outcome.baseline, 20);
    let rows = outcome.rows();
    assert_eq!(rows.len(), 2, "requests/s and p99");
    assert!(rows.iter().all(|r| r.ratio().is_some()));
}
