//! Prometheus metrics, served as text at `GET /metrics`.

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
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
        )
        .expect("valid metric");
        let ingest_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ingest_seconds",
                "Webhook intake latency, receipt to answer",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["outcome"],
        )
        .expect("valid metric");
        let sql_statements = IntCounter::new(
            "sql_statements_total",
            "SQL statements sent to the database",
        )
        .expect("valid metric");
        for metric in [
            Box::new(webhooks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ingest_seconds.clone()),
            Box::new(sql_statements.clone()),
        ] {
            registry.register(metric).expect("metric registered once");
        }
        Self(Arc::new(Inner {
            registry,
            webhooks,
            ingest_seconds,
            sql_statements,
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.0.registry.gather(), &mut buffer)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}
