//! The four scenarios, each measuring fastpix-sync and its baseline in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Result;
use crate::bodies::{LiveEvents, MediaCreated, playback_id, status_frame};
use crate::crowd::{Crowd, Received, Role};
use crate::db::{Backend, BenchDb, pg_synchronous_commit};
use crate::load::{LoadConfig, LoadResult, closed_loop, http_client, post_expect};
use crate::report::{Row, Target};
use crate::server::{BaselineKind, Launch, Server, start_baseline, start_ours};
use crate::stats::Latencies;

/// The sizes of a run.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Webhook senders, warm-up, window, request cap.
    pub ingest: LoadConfig,
    /// (subscribers, changes) per fan-out measurement.
    pub fanout: Vec<(usize, usize)>,
    /// Idle connections.
    pub idle: usize,
    /// Media seeded before the query measurement.
    pub query_media: u64,
    /// Query connections, warm-up, window, request cap.
    pub query: LoadConfig,
    /// Websocket clients setting up at once.
    pub connect_concurrency: usize,
    /// How long to wait for a crowd to connect.
    pub connect_timeout: Duration,
    /// How long idle connections sit before the RSS is read.
    pub idle_settle: Duration,
}

impl Sizes {
    /// The issue's sizes: 64 senders, 100 / 1,000 / 10,000 subscribers, 10,000 idle, 64 connections.
    pub fn full() -> Self {
        Self {
            ingest: LoadConfig {
                workers: 64,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(8),
                max_requests: 1_000_000,
            },
            fanout: vec![(100, 50), (1_000, 30), (10_000, 20)],
            idle: 10_000,
            query_media: 1_000,
            query: LoadConfig {
                workers: 64,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(8),
                max_requests: 10_000_000,
            },
            connect_concurrency: 200,
            connect_timeout: Duration::from_secs(180),
            idle_settle: Duration::from_secs(3),
        }
    }

    /// Small and fast, to try the harness (`--quick`): figures are not comparable to the full run.
    pub fn quick() -> Self {
        Self {
            ingest: LoadConfig {
                workers: 64,
                warmup: Duration::from_millis(300),
                duration: Duration::from_secs(2),
                max_requests: 1_000_000,
            },
            fanout: vec![(20, 5), (200, 5)],
            idle: 200,
            query_media: 100,
            query: LoadConfig {
                workers: 64,
                warmup: Duration::from_millis(300),
                duration: Duration::from_secs(2),
                max_requests: 10_000_000,
            },
            connect_concurrency: 100,
            connect_timeout: Duration::from_secs(60),
            idle_settle: Duration::from_secs(1),
        }
    }

    /// The smoke test's sizes: 20 webhooks, 5 subscribers, 10 idle connections, 20 queries.
    pub fn smoke() -> Self {
        let tiny = |requests| LoadConfig {
            workers: 4,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(20),
            max_requests: requests,
        };
        Self {
            ingest: tiny(20),
            fanout: vec![(5, 3)],
            idle: 10,
            query_media: 10,
            query: tiny(20),
            connect_concurrency: 10,
            connect_timeout: Duration::from_secs(20),
            idle_settle: Duration::from_millis(200),
        }
    }
}

/// Server CPU while it did some work (servers that are processes of their own only).
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    /// CPU time per operation, in ms.
    pub per_op_ms: f64,
    /// CPU time over wall time: how many cores the server kept busy.
    pub cores: f64,
}

impl Cpu {
    /// `used` CPU time over `wall` time, spent on `ops` operations.
    fn over(used: Duration, wall: Duration, ops: u64) -> Self {
        Self {
            per_op_ms: used.as_secs_f64() * 1000.0 / ops.max(1) as f64,
            cores: used.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        }
    }
}

/// A server's CPU over one or more measured windows of work.
#[derive(Default)]
struct CpuTally {
    used: Duration,
    wall: Duration,
    ops: u64,
    unknown: bool,
}

impl CpuTally {
    /// Runs `work` on `server`, adding the server CPU and wall time it took and `ops(&output)` operations.
    async fn time<T>(
        &mut self,
        server: &Server,
        work: impl Future<Output = T>,
        ops: impl FnOnce(&T) -> u64,
    ) -> T {
        let (before, started) = (server.cpu_time(), Instant::now());
        let output = work.await;
        match before.zip(server.cpu_time()) {
            Some((before, after)) => self.used += after.saturating_sub(before),
            None => self.unknown = true,
        }
        self.wall += started.elapsed();
        self.ops += ops(&output);
        output
    }

    /// Runs `load` on `server`, adding the server CPU it cost and the requests answered.
    async fn measure(
        &mut self,
        server: &Server,
        load: impl Future<Output = LoadResult>,
    ) -> LoadResult {
        self.time(server, load, |result| result.total).await
    }

    /// CPU per operation over every window, and cores busy; unknown for an in-process server.
    fn cpu(&self) -> Option<Cpu> {
        (!self.unknown).then(|| Cpu::over(self.used, self.wall, self.ops))
    }
}

fn cpu_note(what: &str, ours: Option<Cpu>, baseline: Option<Cpu>) -> String {
    match (ours, baseline) {
        (Some(o), Some(b)) => format!(
            "server CPU per {what}: ours {:.3} ms ({:.2} cores busy), baseline {:.3} ms ({:.2} cores busy)",
            o.per_op_ms, o.cores, b.per_op_ms, b.cores
        ),
        _ => String::new(),
    }
}

/// Posts a signed webhook to `url` and expects it applied.
async fn post_webhook(
    client: &reqwest::Client,
    url: &str,
    (body, signature): (Vec<u8>, String),
) -> Result<(), String> {
    let headers = [("fastpix-signature", signature)];
    post_expect(client, url, &headers, body, "\"applied\"").await
}

/// Sends signed, unique `video.media.created` webhooks (`n` from `first`) under `config`'s load.
async fn send_webhooks(server: &Server, config: &LoadConfig, first: u64) -> LoadResult {
    let client = http_client(config.workers);
    let url = format!("{}/webhooks/fastpix", server.http());
    let bodies = Arc::new(MediaCreated::new());
    closed_loop(config, move |n| {
        let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
        async move { post_webhook(&client, &url, bodies.signed(first + n)).await }
    })
    .await
}

/// Connects `clients` websockets of `role` to `url`, `sizes.connect_concurrency` at a time.
async fn connect_crowd(
    url: &str,
    role: Role,
    clients: usize,
    statuses: Vec<&'static str>,
    sizes: &Sizes,
) -> Result<Crowd> {
    Crowd::connect(
        url,
        role,
        clients,
        statuses,
        sizes.connect_concurrency,
        sizes.connect_timeout,
    )
    .await
}

/// A row of ours against the baseline at the `p`-th latency percentile, in ms.
fn percentile_row(
    scenario: &str,
    measure: &str,
    p: f64,
    ours: &mut Latencies,
    baseline: &mut Latencies,
    target: Target,
) -> Row {
    let (ours, baseline) = (ours.percentile_ms(p), baseline.percentile_ms(p));
    Row::new(scenario, measure, "ms", ours, baseline, target)
}

/// Ingest on one database kind: fastpix-sync and the bare-handler baseline.
pub struct IngestOutcome {
    pub backend: Backend,
    pub senders: usize,
    pub ours: LoadResult,
    pub baseline: LoadResult,
    pub ours_cpu: Option<Cpu>,
    pub baseline_cpu: Option<Cpu>,
    /// The durability settings in force (PostgreSQL).
    pub durability: Option<String>,
}

/// Measurement windows per side in the ingest and query scenarios. The sides take turns, baseline,
/// ours, ours, baseline (and so on), each window after a warm-up of its own: a machine whose speed
/// drifts during the run slows both sides alike, where one side measured after the other could meet a
/// slow minute alone.
pub const ROUNDS: u32 = 2;

/// A side of a scenario measured in turns.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Turn {
    Baseline,
    Ours,
}

/// Who goes first in round `round`: the baseline in even rounds, fastpix-sync in odd ones.
fn turns(round: u32) -> [Turn; 2] {
    if round.is_multiple_of(2) {
        [Turn::Baseline, Turn::Ours]
    } else {
        [Turn::Ours, Turn::Baseline]
    }
}

/// One of [`ROUNDS`] windows of `config`: its share of the warm-up, the measured time and the requests
/// (rounded up).
fn window_of(config: &LoadConfig) -> LoadConfig {
    LoadConfig {
        warmup: config.warmup / ROUNDS,
        duration: config.duration / ROUNDS,
        max_requests: config.max_requests.div_ceil(u64::from(ROUNDS)),
        ..config.clone()
    }
}

/// Webhook numbers of a side's window in round `r` start at `r × INGEST_NUMBERS`, so every webhook it
/// gets is new.
const INGEST_NUMBERS: u64 = 1 << 32;

pub async fn ingest(
    launch: &Launch,
    backend: &Backend,
    config: &LoadConfig,
) -> Result<IngestOutcome> {
    let baseline_db = BenchDb::create(backend).await?;
    let ours_db = match BenchDb::create(backend).await {
        Ok(db) => db,
        Err(e) => {
            baseline_db.remove().await;
            return Err(e);
        }
    };
    let outcome = ingest_on(launch, backend, config, &baseline_db, &ours_db).await;
    ours_db.remove().await;
    baseline_db.remove().await;
    outcome
}

/// What a side's windows measured, over all of them.
#[derive(Default)]
struct Totals {
    load: LoadResult,
    cpu: CpuTally,
}

impl Totals {
    /// Runs one measured window, `load` on `server`, and adds what it measured.
    async fn add(&mut self, server: &Server, load: impl Future<Output = LoadResult>) {
        let result = self.cpu.measure(server, load).await;
        self.load = std::mem::take(&mut self.load).merge(result);
    }
}

/// One side of the ingest scenario: its server and what its windows measured.
struct Side {
    server: Server,
    totals: Totals,
}

impl Side {
    fn new(server: Server) -> Self {
        Self {
            server,
            totals: Totals::default(),
        }
    }

    /// One measured window of webhooks numbered from `first`.
    async fn measure(&mut self, window: &LoadConfig, first: u64) {
        let load = send_webhooks(&self.server, window, first);
        self.totals.add(&self.server, load).await;
    }
}

/// The ingest scenario on two fresh databases; a server that started is stopped as it drops.
async fn ingest_on(
    launch: &Launch,
    backend: &Backend,
    config: &LoadConfig,
    baseline_db: &BenchDb,
    ours_db: &BenchDb,
) -> Result<IngestOutcome> {
    let label = format!("ingest-{}", backend.label().to_lowercase());
    let kind = BaselineKind::Ingest {
        database_url: baseline_db.url.clone(),
    };
    let mut baseline = Side::new(start_baseline(launch, &kind, &label).await?);
    let mut ours = Side::new(start_ours(launch, &ours_db.url, &label).await?);
    // Both servers stay up throughout, each idle while the other is measured.
    let window = window_of(config);
    for round in 0..ROUNDS {
        let first = u64::from(round) * INGEST_NUMBERS;
        for turn in turns(round) {
            let side = match turn {
                Turn::Baseline => &mut baseline,
                Turn::Ours => &mut ours,
            };
            side.measure(&window, first).await;
        }
    }
    let durability = match backend {
        Backend::Postgres { .. } => pg_synchronous_commit(&ours_db.url).await.ok(),
        Backend::Sqlite => Some("WAL, synchronous=FULL".into()),
    };
    ours.server.stop().await;
    baseline.server.stop().await;
    Ok(IngestOutcome {
        backend: backend.clone(),
        senders: config.workers,
        ours: ours.totals.load,
        baseline: baseline.totals.load,
        ours_cpu: ours.totals.cpu.cpu(),
        baseline_cpu: baseline.totals.cpu.cpu(),
        durability,
    })
}

/// The requests/s row of a load on both sides, with `note` and then the failed requests, if any.
fn rate_row(
    scenario: &str,
    measure: impl Into<String>,
    ours: &LoadResult,
    baseline: &LoadResult,
    target: Target,
    mut note: String,
) -> Row {
    if ours.errors > 0 || baseline.errors > 0 {
        note.push_str(&format!(
            "; errors: ours {} (first: {}), baseline {} (first: {})",
            ours.errors,
            ours.first_error.as_deref().unwrap_or("-"),
            baseline.errors,
            baseline.first_error.as_deref().unwrap_or("-")
        ));
    }
    Row::new(scenario, measure, "/s", ours.rate, baseline.rate, target).with_note(note)
}

impl IngestOutcome {
    pub fn rows(&mut self) -> Vec<Row> {
        let scenario = format!("ingest, {}", self.backend.label());
        let note = format!(
            "{} and {} webhooks acked in {:.1} s and {:.1} s; {}; {}",
            self.ours.ok,
            self.baseline.ok,
            self.ours.elapsed.as_secs_f64(),
            self.baseline.elapsed.as_secs_f64(),
            self.durability.as_deref().unwrap_or(""),
            cpu_note("webhook", self.ours_cpu, self.baseline_cpu),
        );
        let rate = rate_row(
            &scenario,
            format!("webhooks/s at {} senders", self.senders),
            &self.ours,
            &self.baseline,
            Target::RatioAtLeast(0.7),
            note,
        );
        let (ours, baseline) = (&mut self.ours.latencies, &mut self.baseline.latencies);
        vec![
            rate,
            percentile_row(&scenario, "ack p50", 50.0, ours, baseline, Target::None),
            percentile_row(
                &scenario,
                "ack p99",
                99.0,
                ours,
                baseline,
                Target::AtMost(50.0),
            ),
        ]
    }
}

/// Fan-out at one size: fastpix-sync subscribers of one live stream, bare websockets of the broadcast
/// baseline receiving the same bytes, and those of the durable baseline (which commits each change to
/// SQLite before sending it; for comparison, not a target).
pub struct FanoutOutcome {
    pub subscribers: usize,
    pub changes: usize,
    pub ours: Received,
    pub baseline: Received,
    pub durable: Received,
    pub ours_cpu: Option<Cpu>,
    pub baseline_cpu: Option<Cpu>,
}

/// Posts `changes` changes one at a time; each waits until every client got it (up to 15 s).
async fn drive_changes(
    crowd: &Crowd,
    changes: usize,
    mut post: impl AsyncFnMut(usize) -> Result<(), String>,
) -> Result<usize> {
    for k in 0..changes {
        crowd.mark_sent(k);
        post(k)
            .await
            .map_err(|e| format!("posting change {k}: {e}"))?;
        crowd
            .wait_received(k, Instant::now() + Duration::from_secs(15))
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(changes)
}

/// One fan-out baseline at one size: `frames` posted one at a time to `POST /publish`, received by
/// `subscribers` plain websockets.
async fn fanout_baseline(
    launch: &Launch,
    kind: &BaselineKind,
    label: &str,
    subscribers: usize,
    frames: &[Vec<u8>],
    statuses: &[&'static str],
    sizes: &Sizes,
) -> Result<(Received, Option<Cpu>)> {
    let client = http_client(4);
    let server = start_baseline(launch, kind, label).await?;
    let crowd = connect_crowd(
        &server.ws("/ws"),
        Role::Bare,
        subscribers,
        statuses.to_vec(),
        sizes,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("{}/publish", server.http());
    let mut cpu = CpuTally::default();
    let sent = cpu
        .time(
            &server,
            drive_changes(&crowd, frames.len(), async |k| {
                post_expect(&client, &url, &[], frames[k].clone(), "receivers").await
            }),
            |_| frames.len() as u64,
        )
        .await;
    let received = crowd.finish(*sent.as_ref().unwrap_or(&0)).await;
    server.stop().await;
    sent?;
    Ok((received, cpu.cpu()))
}

pub async fn fanout(
    launch: &Launch,
    subscribers: usize,
    changes: usize,
    sizes: &Sizes,
) -> Result<FanoutOutcome> {
    // Every change's webhook (signed) and frame are made before the timed loop: neither side pays for
    // building its request while a change is being timed.
    let events = LiveEvents::new(subscribers as u64);
    let webhooks: Vec<(Vec<u8>, String, &'static str)> =
        (0..changes).map(|k| events.change(k as u64)).collect();
    let statuses: Vec<&'static str> = webhooks.iter().map(|(_, _, status)| *status).collect();
    let frames: Vec<Vec<u8>> = statuses
        .iter()
        .map(|status| status_frame(status).into_bytes())
        .collect();
    let label = format!("fanout-{subscribers}");

    // Baseline: broadcast + plain websockets, triggered by POST /publish with the frame's bytes.
    let (baseline, baseline_cpu) = fanout_baseline(
        launch,
        &BaselineKind::FANOUT,
        &label,
        subscribers,
        &frames,
        &statuses,
        sizes,
    )
    .await?;

    // The same, committing each frame to SQLite (WAL, synchronous=FULL) before sending it.
    let db = BenchDb::create(&Backend::Sqlite).await?;
    let durable = BaselineKind::Fanout {
        database_url: Some(db.url.clone()),
    };
    let durable = fanout_baseline(
        launch,
        &durable,
        &format!("{label}-durable"),
        subscribers,
        &frames,
        &statuses,
        sizes,
    )
    .await;
    db.remove().await;
    let (durable, _) = durable?;

    // fastpix-sync: a signed webhook per change, `liveStream(id:)` subscribers.
    let client = http_client(4);
    let db = BenchDb::create(&Backend::Sqlite).await?;
    let server = start_ours(launch, &db.url, &label).await?;
    let webhook = format!("{}/webhooks/fastpix", server.http());
    post_webhook(&client, &webhook, events.created()).await?;
    let crowd = connect_crowd(
        &server.ws("/graphql"),
        Role::Subscriber {
            stream_id: events.stream_id(),
        },
        subscribers,
        statuses.clone(),
        sizes,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ours_cpu = CpuTally::default();
    let sent = ours_cpu
        .time(
            &server,
            drive_changes(&crowd, changes, async |k| {
                let (body, signature, _) = &webhooks[k];
                post_webhook(&client, &webhook, (body.clone(), signature.clone())).await
            }),
            |_| changes as u64,
        )
        .await;
    let ours_cpu = ours_cpu.cpu();
    let ours = crowd.finish(*sent.as_ref().unwrap_or(&0)).await;
    server.stop().await;
    db.remove().await;
    sent?;
    Ok(FanoutOutcome {
        subscribers,
        changes,
        ours,
        baseline,
        durable,
        ours_cpu,
        baseline_cpu,
    })
}

impl FanoutOutcome {
    pub fn rows(&mut self) -> Vec<Row> {
        let scenario = format!("fan-out, {} subscribers", thousands(self.subscribers));
        let p99_target = if self.subscribers >= 10_000 {
            Target::RatioAtMostAndAtMost(2.0, 100.0)
        } else {
            Target::RatioAtMost(2.0)
        };
        let mut note = format!(
            "{} changes; frames received: ours {}/{}, baseline {}/{}",
            self.changes,
            self.ours.latencies.len(),
            self.ours.expected,
            self.baseline.latencies.len(),
            self.baseline.expected
        );
        if let (Some(o), Some(b)) = (self.ours_cpu, self.baseline_cpu) {
            let per_frame = |cpu: Cpu| cpu.per_op_ms * 1000.0 / self.subscribers as f64;
            note.push_str(&format!(
                "; server CPU per change: ours {:.2} ms ({:.1} µs per subscriber), baseline {:.2} ms ({:.1} µs per subscriber)",
                o.per_op_ms,
                per_frame(o),
                b.per_op_ms,
                per_frame(b)
            ));
        }
        // The slowest change's frames are the p99's when a change gives more than 1% of the samples.
        note.push_str(&format!(
            "; POST → first frame of a change, p50: ours {:.2} ms, baseline {:.2} ms; of the slowest change: ours {:.2} ms, baseline {:.2} ms",
            self.ours.first.p50_ms(),
            self.baseline.first.p50_ms(),
            self.ours.first.max_ms(),
            self.baseline.first.max_ms()
        ));
        let unexpected = self.ours.unexpected + self.baseline.unexpected + self.durable.unexpected;
        if unexpected > 0 {
            note.push_str(&format!(
                "; unexpected frames: ours {}, baseline {}, durable baseline {}",
                self.ours.unexpected, self.baseline.unexpected, self.durable.unexpected
            ));
        }
        let durable_note = format!(
            "for comparison, not a target: the baseline committing each change to SQLite (WAL, \
             synchronous=FULL) before sending it, as fastpix-sync commits before it publishes; frames \
             received {}/{}; POST → first frame of a change, p50 {:.2} ms, of the slowest change {:.2} ms",
            self.durable.latencies.len(),
            self.durable.expected,
            self.durable.first.p50_ms(),
            self.durable.first.max_ms()
        );
        let (ours, baseline) = (&mut self.ours.latencies, &mut self.baseline.latencies);
        vec![
            percentile_row(
                &scenario,
                "POST → frame p50",
                50.0,
                ours,
                baseline,
                Target::None,
            ),
            percentile_row(
                &scenario,
                "POST → frame p99",
                99.0,
                ours,
                baseline,
                p99_target,
            )
            .with_note(note),
            percentile_row(
                &scenario,
                "POST → frame p99 vs durable baseline",
                99.0,
                ours,
                &mut self.durable.latencies,
                Target::None,
            )
            .with_note(durable_note),
        ]
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One side of the idle measurement.
#[derive(Clone, Debug)]
pub struct IdleSide {
    /// Connections still open when the RSS was read.
    pub open: usize,
    /// Server RSS before connecting and after `settle`, when the server is a process of its own.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
}

impl IdleSide {
    pub fn per_connection_kib(&self, connections: usize) -> Option<f64> {
        let (before, after) = (self.rss_before_kib?, self.rss_after_kib?);
        Some((after as f64 - before as f64) / connections.max(1) as f64)
    }
}

/// Idle connections: `liveStream` subscriptions to fastpix-sync vs bare websockets to the baseline; and,
/// to tell the costs apart, fastpix-sync connections that only sent `connection_init`.
pub struct IdleOutcome {
    pub connections: usize,
    pub ours: IdleSide,
    pub baseline: IdleSide,
    /// fastpix-sync `graphql-transport-ws` connections without a subscription.
    pub ours_unsubscribed: IdleSide,
}

async fn hold_idle(server: &Server, url: &str, role: Role, sizes: &Sizes) -> Result<IdleSide> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.own_process.then(|| server.rss_kib()).flatten();
    let crowd = connect_crowd(url, role, sizes.idle, Vec::new(), sizes).await?;
    tokio::time::sleep(sizes.idle_settle).await;
    let after = server.own_process.then(|| server.rss_kib()).flatten();
    let open = crowd.open();
    crowd.finish(0).await;
    Ok(IdleSide {
        open,
        rss_before_kib: before,
        rss_after_kib: after,
    })
}

/// A fresh fastpix-sync holding `sizes.idle` connections of `subscribe`rs or of initialised clients.
async fn idle_ours(launch: &Launch, sizes: &Sizes, subscribe: bool) -> Result<IdleSide> {
    let db = BenchDb::create(&Backend::Sqlite).await?;
    let label = if subscribe {
        "idle"
    } else {
        "idle-unsubscribed"
    };
    let server = start_ours(launch, &db.url, label).await?;
    let events = LiveEvents::new(1);
    let webhook = format!("{}/webhooks/fastpix", server.http());
    let side = match post_webhook(&http_client(1), &webhook, events.created()).await {
        Ok(()) => {
            let role = if subscribe {
                Role::Subscriber {
                    stream_id: events.stream_id(),
                }
            } else {
                Role::Initialized
            };
            hold_idle(&server, &server.ws("/graphql"), role, sizes).await
        }
        Err(e) => Err(e.into()),
    };
    server.stop().await;
    db.remove().await;
    side
}

pub async fn idle(launch: &Launch, sizes: &Sizes) -> Result<IdleOutcome> {
    let server = start_baseline(launch, &BaselineKind::FANOUT, "idle").await?;
    let baseline = hold_idle(&server, &server.ws("/ws"), Role::Bare, sizes).await;
    server.stop().await;
    let baseline = baseline?;
    let ours = idle_ours(launch, sizes, true).await?;
    let ours_unsubscribed = idle_ours(launch, sizes, false).await?;
    Ok(IdleOutcome {
        connections: sizes.idle,
        ours,
        baseline,
        ours_unsubscribed,
    })
}

impl IdleOutcome {
    pub fn rows(&self) -> Vec<Row> {
        let scenario = format!("idle, {} connections", thousands(self.connections));
        let measure = "RSS growth per connection";
        let n = self.connections;
        match (
            self.ours.per_connection_kib(n),
            self.baseline.per_connection_kib(n),
        ) {
            (Some(ours), Some(baseline)) => vec![
                Row::new(
                    &scenario,
                    measure,
                    "KiB",
                    ours,
                    baseline,
                    Target::RatioAtMostAndAtMost(2.0, 32.0),
                )
                .with_note(format!(
                    "server RSS before → after: ours {} → {} KiB, baseline {} → {} KiB; \
                     a fastpix-sync connection after `connection_init` without a subscription: {:.2} KiB; \
                     open: ours {}, baseline {}, unsubscribed {}",
                    self.ours.rss_before_kib.unwrap_or(0),
                    self.ours.rss_after_kib.unwrap_or(0),
                    self.baseline.rss_before_kib.unwrap_or(0),
                    self.baseline.rss_after_kib.unwrap_or(0),
                    self.ours_unsubscribed.per_connection_kib(n).unwrap_or(f64::NAN),
                    self.ours.open,
                    self.baseline.open,
                    self.ours_unsubscribed.open,
                )),
            ],
            _ => vec![Row::not_run(
                scenario,
                measure,
                format!(
                    "servers in-process: no RSS of their own; open: ours {}, baseline {}, unsubscribed {}",
                    self.ours.open, self.baseline.open, self.ours_unsubscribed.open
                ),
            )],
        }
    }
}

/// Queries on one server: `mediaByPlaybackId` over seeded media vs `{ __typename }`.
pub struct QueryOutcome {
    pub connections: usize,
    pub media: u64,
    pub ours: LoadResult,
    pub baseline: LoadResult,
    pub ours_cpu: Option<Cpu>,
    pub baseline_cpu: Option<Cpu>,
}

/// A closed loop of `POST`s of `body(n)` to `url` through `client`, each answered with `expect` in it.
fn posts(
    config: &LoadConfig,
    client: &reqwest::Client,
    url: &str,
    body: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static,
    expect: &'static str,
) -> impl Future<Output = LoadResult> {
    let (client, url) = (client.clone(), Arc::new(url.to_owned()));
    closed_loop(config, move |n| {
        let (client, url, body) = (client.clone(), url.clone(), body(n));
        async move { post_expect(&client, &url, &[], body, expect).await }
    })
}

/// The `mediaByPlaybackId` request for media `n`.
pub fn media_query(n: u64) -> Vec<u8> {
    serde_json::json!({
        "query": "query($p: String!) { mediaByPlaybackId(playbackId: $p) { id status playbackIds { id } } }",
        "variables": { "p": playback_id(n) },
    })
    .to_string()
    .into_bytes()
}

pub async fn query(launch: &Launch, sizes: &Sizes) -> Result<QueryOutcome> {
    let db = BenchDb::create(&Backend::Sqlite).await?;
    let server = start_ours(launch, &db.url, "query").await?;
    let outcome = query_on(&server, sizes).await;
    server.stop().await;
    db.remove().await;
    outcome
}

async fn query_on(server: &Server, sizes: &Sizes) -> Result<QueryOutcome> {
    let media = sizes.query_media;
    let seed = LoadConfig {
        workers: 16,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(120),
        max_requests: media,
    };
    let seeded = send_webhooks(server, &seed, 0).await;
    if seeded.ok != media {
        return Err(format!(
            "seeding {media} media: {} acked ({:?})",
            seeded.ok, seeded.first_error
        )
        .into());
    }
    let config = window_of(&sizes.query);
    let url = format!("{}/graphql", server.http());
    // Each side has its own connections, so neither starts on the other's warm ones.
    let (ours_client, baseline_client) = (http_client(config.workers), http_client(config.workers));
    let (mut ours, mut baseline) = (Totals::default(), Totals::default());
    for round in 0..ROUNDS {
        for turn in turns(round) {
            // The request for number `n` of `media`, and what its answer holds.
            let (totals, client, body, expect): (_, _, fn(u64, u64) -> Vec<u8>, _) = match turn {
                Turn::Baseline => (
                    &mut baseline,
                    &baseline_client,
                    |_, _| br#"{"query":"{ __typename }"}"#.to_vec(),
                    r#""__typename":"Query""#,
                ),
                Turn::Ours => (
                    &mut ours,
                    &ours_client,
                    |n, media| media_query(n % media),
                    r#""mediaByPlaybackId":{"id""#,
                ),
            };
            let load = posts(&config, client, &url, move |n| body(n, media), expect);
            totals.add(server, load).await;
        }
    }
    Ok(QueryOutcome {
        connections: config.workers,
        media,
        ours: ours.load,
        baseline: baseline.load,
        ours_cpu: ours.cpu.cpu(),
        baseline_cpu: baseline.cpu.cpu(),
    })
}

impl QueryOutcome {
    pub fn rows(&mut self) -> Vec<Row> {
        let scenario = format!("query, {} connections", self.connections);
        let note = format!(
            "`mediaByPlaybackId` over {} media vs `{{ __typename }}` (on SQLite, an answer read once is then kept in memory until a change touches it); {} and {} answered; {}",
            self.media,
            self.ours.ok,
            self.baseline.ok,
            cpu_note("request", self.ours_cpu, self.baseline_cpu)
        );
        let rate = rate_row(
            &scenario,
            "requests/s",
            &self.ours,
            &self.baseline,
            Target::RatioAtLeast(0.5),
            note,
        );
        let (ours, baseline) = (&mut self.ours.latencies, &mut self.baseline.latencies);
        vec![
            rate,
            percentile_row(&scenario, "p99", 99.0, ours, baseline, Target::None),
        ]
    }
}
