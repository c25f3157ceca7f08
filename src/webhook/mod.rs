//! Webhook intake (SPEC §3): verify → parse → store and apply in a transaction → publish → answer.
//!
//! Storing goes through the instance's writer tasks (one on SQLite, a few on PostgreSQL), each of which
//! commits the deliveries waiting at the same time in one transaction (group commit; see [`writer`]).
//!
//! Provider facts (envelope variants, signature scheme, id formats) are in `fastpix-webhooks.md`.

pub mod apply;
pub mod envelope;
pub mod event;
pub mod fields;
pub mod live;
pub mod media;
pub mod simulcast;
pub mod time;
pub mod verify;
pub mod working;
pub mod writer;

use sea_orm::{DatabaseConnection, DbBackend, DbErr};

use crate::events::Publisher;
use crate::metrics::Metrics;
use entity::webhook_event;
use envelope::{Body, Envelope, classify};
use event::{Event, OrderKey, Resolution, resolve};
pub use verify::Secrets;
use writer::{Delivery, Writer};

/// Why an event that changed nothing is `stale`.
const STALE_REASON: &str =
    "an event newer for this entity was already applied, or the entity was deleted";

/// Outcome stored with each event (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Stale,
    Ignored,
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Ignored => "ignored",
            Self::Rejected => "rejected",
        }
    }
}

/// The answer to one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// FastPix's endpoint probe: nothing stored.
    Ping,
    /// This event id was already stored: nothing changed.
    Duplicate,
    /// Stored (and applied, when it could be) with this outcome.
    Stored(Outcome),
}

impl Reply {
    pub fn status(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Duplicate => "duplicate",
            Self::Stored(outcome) => outcome.as_str(),
        }
    }
}

/// A handled delivery: the answer and the event type (empty for a probe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    pub reply: Reply,
    pub event_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing or invalid FastPix-Signature header")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("database unavailable: {0}")]
    Database(#[from] DbErr),
}

/// Everything intake needs. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    /// Signing keys; empty accepts unsigned deliveries (loopback development only, enforced at start).
    pub secrets: Secrets,
    /// The group-commit writer tasks that store deliveries (on SQLite one: SQLite's single writer).
    writer: Writer,
}

impl Intake {
    /// Starts the writer tasks, so it must run inside a tokio runtime. They stop when the last clone of
    /// this `Intake` is dropped.
    pub fn new(
        db: DatabaseConnection,
        secrets: Secrets,
        publisher: Publisher,
        metrics: Metrics,
    ) -> Self {
        let writers = match db.get_database_backend() {
            DbBackend::Postgres => writer::POSTGRES_WRITERS,
            _ => 1,
        };
        let writer = Writer::spawn(db, publisher, metrics, writers);
        Self { secrets, writer }
    }

    /// `Ok` while every writer task runs; else why intake cannot store anything. A task ends only on a
    /// fault its own handling did not catch: deliveries it would store answer 503 until a restart.
    pub fn check_running(&self) -> Result<(), String> {
        match self.writer.stopped() {
            0 => Ok(()),
            stopped => Err(format!(
                "{stopped} intake writer task(s) stopped (see the log): the deliveries they would \
                 store answer 503; restart the server"
            )),
        }
    }

    /// Handles one delivery's raw body and `FastPix-Signature` header value. Records `event_id`,
    /// `event_type` and `outcome` on the current span: the HTTP request's, whose response line shows them.
    pub async fn ingest(
        &self,
        raw: &[u8],
        signature: Option<&str>,
    ) -> Result<Ingested, IngestError> {
        let Body::Delivery(parsed) = classify(raw) else {
            return Ok(Ingested {
                reply: Reply::Ping,
                event_type: String::new(),
            });
        };
        if !self.secrets.is_empty() && !self.secrets.verify(raw, signature) {
            return Err(IngestError::Unauthorized);
        }
        let text = std::str::from_utf8(raw)
            .map_err(|_| IngestError::BadRequest("the body is not UTF-8 JSON".into()))?;
        let envelope = Envelope::from_parsed(parsed)
            .map_err(|e| IngestError::BadRequest(format!("{e}; expected a JSON object")))?;
        let span = tracing::Span::current();
        span.record("event_id", envelope.id.as_str());
        span.record("event_type", envelope.event_type.as_str());
        let event_type = envelope.event_type.clone();
        let reply = self.store(envelope, text).await?;
        span.record("outcome", reply.status());
        Ok(Ingested { reply, event_type })
    }

    async fn store(&self, envelope: Envelope, raw: &str) -> Result<Reply, IngestError> {
        let received_at_ns = time::now_ns();
        let (entity, outcome, reason) = match resolve(&envelope) {
            Resolution::Entity(entity) => (Some(entity), Outcome::Applied, None),
            Resolution::Unknown => (None, Outcome::Ignored, None),
            Resolution::Unusable(reason) => (None, Outcome::Rejected, Some(reason)),
        };
        let event = Event {
            key: OrderKey {
                ns: envelope.occurred_at_ns.unwrap_or(received_at_ns),
                id: envelope.id.clone(),
            },
            envelope,
        };
        let row = webhook_event::Model {
            seq: 0,
            position: None,
            event_id: event.envelope.id.clone(),
            event_type: event.envelope.event_type.clone(),
            object_type: event.envelope.object_type.clone(),
            object_id: event.envelope.object_id.clone(),
            entity_kind: entity.as_ref().map(|e| e.kind().to_owned()),
            entity_id: entity.as_ref().map(|e| e.id().to_owned()),
            parent_id: entity.as_ref().and_then(|e| e.parent()).map(str::to_owned),
            occurred_at_ns: event.envelope.occurred_at_ns,
            order_ns: event.key.ns,
            received_at_ns,
            outcome: outcome.as_str().to_owned(),
            reason,
            payload: raw.to_owned(),
        };
        let delivery = Delivery {
            row,
            outcome,
            event,
            entity,
        };
        Ok(self.writer.store(delivery).await?)
    }
}
