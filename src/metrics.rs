//! Prometheus metrics, served as text at `GET /metrics`.

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric of one server. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    /// Webhook deliveries by event type and answer (`applied`, `stale`, `duplicate`, `ping`, …).
    webhooks: IntCounterVec,
    /// Time from receiving a delivery to answering it, by answer.
    ingest_seconds: HistogramVec,
    /// SQL statements sent to the database (all kinds).
    sql_statements: IntCounter,
    /// Times a subscriber fell behind the broadcast channel and had to catch up.
    lag_events: IntCounter,
    /// Open websocket connections on `/graphql`.
    websockets: IntGauge,
    /// Running subscription operations.
    subscriptions: IntGauge,
    /// Running shared executions of entity subscriptions.
    shared_executions: IntGauge,
    /// GraphQL operations by type (`query`, `subscription`) and outcome (`ok`, `error`).
    graphql_requests: IntCounterVec,
    /// GraphQL documents by where their parsed form came from (`graphql::documents`).
    graphql_documents: IntCounterVec,
    /// GraphQL queries run again after they met a lost database connection.
    graphql_retries: IntCounter,
    /// Times the PostgreSQL relay lost its listener connection.
    relay_reconnects: IntCounter,
    /// Deliveries per intake group commit.
    intake_batch_size: Histogram,
    /// Group commits that failed and were stored again one delivery at a time.
    intake_batch_retries: IntCounter,
    /// Verified deliveries handed to the intake writers and not answered yet.
    intake_pending: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, metric: C) -> C {
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("fastpix_sync".into()), None).expect("valid prefix");
        let webhooks = IntCounterVec::new(
            Opts::new(
                "webhooks_total",
                "Webhook deliveries by event type and outcome",
            ),
            &["type", "outcome"],
        );
        let ingest_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ingest_seconds",
                "Webhook intake latency, receipt to answer",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["outcome"],
        );
        let sql_statements = IntCounter::new(
            "sql_statements_total",
            "SQL statements sent to the database (on SQLite, a script of several counts once)",
        );
        let lag_events = IntCounter::new(
            "broadcast_lag_events_total",
            "Times a subscriber fell behind the broadcast channel and caught up from the database",
        );
        let websockets = IntGauge::new(
            "websocket_connections",
            "Open websocket connections on /graphql",
        );
        let subscriptions =
            IntGauge::new("subscriptions", "Running GraphQL subscription operations");
        let shared_executions = IntGauge::new(
            "shared_subscription_executions",
            "Running executions of entity subscriptions, each shared by every identical subscription",
        );
        let graphql_requests = IntCounterVec::new(
            Opts::new(
                "graphql_requests_total",
                "GraphQL operations by operation type and outcome",
            ),
            &["operation", "outcome"],
        );
        let graphql_documents = IntCounterVec::new(
            Opts::new(
                "graphql_documents_total",
                "GraphQL documents by where their parsed form came from: kept (parsed for an earlier \
                 request), parsed (and kept), not_kept (too long to keep, or not parsable); a query run \
                 again after a lost connection counts again",
            ),
            &["source"],
        );
        let graphql_retries = IntCounter::new(
            "graphql_query_retries_total",
            "GraphQL queries (over HTTP or a websocket) and subscriptions' reads of the database, run \
             again on another connection after they met a lost PostgreSQL connection",
        );
        let relay_reconnects = IntCounter::new(
            "relay_reconnects_total",
            "Times the PostgreSQL change relay lost its listener connection and reconnected",
        );
        let intake_pending = IntGauge::new(
            "intake_pending",
            "Verified webhook deliveries waiting for their intake transaction to commit",
        );
        let intake_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "intake_batch_size",
                "Webhook deliveries stored per intake transaction (group commit)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        );
        let intake_batch_retries = IntCounter::new(
            "intake_batch_retries_total",
            "Intake group commits that failed and were stored again one delivery per transaction",
        );
        let valid = "metric definitions are valid";
        Self(Arc::new(Inner {
            webhooks: register(&registry, webhooks.expect(valid)),
            ingest_seconds: register(&registry, ingest_seconds.expect(valid)),
            sql_statements: register(&registry, sql_statements.expect(valid)),
            lag_events: register(&registry, lag_events.expect(valid)),
            websockets: register(&registry, websockets.expect(valid)),
            subscriptions: register(&registry, subscriptions.expect(valid)),
            shared_executions: register(&registry, shared_executions.expect(valid)),
            graphql_requests: register(&registry, graphql_requests.expect(valid)),
            graphql_documents: register(&registry, graphql_documents.expect(valid)),
            graphql_retries: register(&registry, graphql_retries.expect(valid)),
            relay_reconnects: register(&registry, relay_reconnects.expect(valid)),
            intake_batch_size: register(&registry, intake_batch_size.expect(valid)),
            intake_batch_retries: register(&registry, intake_batch_retries.expect(valid)),
            intake_pending: register(&registry, intake_pending.expect(valid)),
            registry,
        }))
    }

    pub fn webhook(&self, event_type: &str, outcome: &str, seconds: f64) {
        self.0
            .webhooks
            .with_label_values(&[event_type, outcome])
            .inc();
        self.0
            .ingest_seconds
            .with_label_values(&[outcome])
            .observe(seconds);
    }

    pub fn sql_statement(&self) {
        self.0.sql_statements.inc();
    }

    /// Counts one intake transaction of `size` deliveries.
    pub fn intake_batch(&self, size: usize) {
        self.0.intake_batch_size.observe(size as f64);
    }

    /// Counts a failed group commit whose deliveries are stored again one by one.
    pub fn intake_batch_retry(&self) {
        self.0.intake_batch_retries.inc();
    }

    pub fn graphql_retry(&self) {
        self.0.graphql_retries.inc();
    }

    pub fn relay_reconnect(&self) {
        self.0.relay_reconnects.inc();
    }

    pub fn lagged(&self) {
        self.0.lag_events.inc();
    }

    /// Counts an open websocket until the guard is dropped.
    pub fn websocket_opened(&self) -> GaugeGuard {
        GaugeGuard::new(self.0.websockets.clone())
    }

    /// Counts a running subscription until the guard is dropped.
    pub fn subscription_started(&self) -> GaugeGuard {
        GaugeGuard::new(self.0.subscriptions.clone())
    }

    /// Counts a delivery waiting for its intake commit until the guard is dropped.
    pub fn intake_waiting(&self) -> GaugeGuard {
        GaugeGuard::new(self.0.intake_pending.clone())
    }

    /// Counts a running shared execution until the guard is dropped.
    pub fn shared_execution_started(&self) -> GaugeGuard {
        GaugeGuard::new(self.0.shared_executions.clone())
    }

    /// Counts one GraphQL operation of `operation` type (`query`, `mutation`, `subscription`).
    pub fn graphql(&self, operation: &str, ok: bool) {
        self.graphql_outcomes(operation).count(ok);
    }

    /// The `ok` and `error` counters of `operation`, looked up once for a subscription's many results.
    pub fn graphql_outcomes(&self, operation: &str) -> Outcomes {
        let counter = |outcome| {
            self.0
                .graphql_requests
                .with_label_values(&[operation, outcome])
        };
        Outcomes {
            ok: counter("ok"),
            error: counter("error"),
        }
    }

    /// The counter of GraphQL documents from `source` (`kept`, `parsed`, `not_kept`).
    pub fn graphql_documents(&self, source: &str) -> IntCounter {
        self.0.graphql_documents.with_label_values(&[source])
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.0.registry.gather(), &mut buffer)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// Keeps a gauge one higher while it lives.
pub struct GaugeGuard(IntGauge);

/// The outcome counters of one GraphQL operation type.
pub struct Outcomes {
    ok: IntCounter,
    error: IntCounter,
}

impl Outcomes {
    pub fn count(&self, ok: bool) {
        if ok { &self.ok } else { &self.error }.inc();
    }
}

impl GaugeGuard {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
