//! Webhook intake (SPEC §3): verify → parse → store and apply in one transaction → publish.
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

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use tokio::sync::Mutex;

use crate::events::{Change, Publisher};
use crate::store::events as log;
use entity::webhook_event;
use envelope::{Body, Envelope, classify};
use event::{Event, OrderKey, Resolution, resolve};
pub use verify::Secrets;

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
    /// The connection pool.
    pub db: DatabaseConnection,
    /// Signing keys; empty accepts unsigned deliveries (loopback development only, enforced at start).
    pub secrets: Secrets,
    /// SQLite allows one writer: intake transactions take this lock so they queue here instead of failing
    /// with `SQLITE_BUSY`. `None` on PostgreSQL, where per-entity advisory locks serialise writers.
    serial: Option<Arc<Mutex<()>>>,
    /// Where committed changes go.
    pub publisher: Publisher,
}

impl Intake {
    pub fn new(db: DatabaseConnection, secrets: Secrets, publisher: Publisher) -> Self {
        let serial =
            (db.get_database_backend() == DbBackend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Self {
            db,
            secrets,
            serial,
            publisher,
        }
    }

    /// Handles one delivery's raw body and `FastPix-Signature` header value.
    #[tracing::instrument(name = "ingest", skip_all, fields(event_id, event_type, outcome))]
    pub async fn ingest(
        &self,
        raw: &[u8],
        signature: Option<&str>,
    ) -> Result<Ingested, IngestError> {
        if let Body::Probe = classify(raw) {
            return Ok(Ingested {
                reply: Reply::Ping,
                event_type: String::new(),
            });
        }
        if !self.secrets.is_empty() && !self.secrets.verify(raw, signature) {
            return Err(IngestError::Unauthorized);
        }
        let text = std::str::from_utf8(raw)
            .map_err(|_| IngestError::BadRequest("the body is not UTF-8 JSON".into()))?;
        let envelope = Envelope::parse(raw)
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
        let resolution = resolve(&envelope);
        let (entity, mut outcome, reason) = match &resolution {
            Resolution::Entity(entity) => (Some(entity), Outcome::Applied, None),
            Resolution::Unknown => (None, Outcome::Ignored, None),
            Resolution::Unusable(reason) => (None, Outcome::Rejected, Some(reason.as_str())),
        };
        let event = Event {
            key: OrderKey {
                ns: envelope.occurred_at_ns.unwrap_or(received_at_ns),
                id: envelope.id.clone(),
            },
            envelope,
        };
        let _writer = match &self.serial {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let txn = self.db.begin().await?;
        let mut row = webhook_event::Model {
            seq: 0,
            position: None,
            event_id: event.envelope.id.clone(),
            event_type: event.envelope.event_type.clone(),
            object_type: event.envelope.object_type.clone(),
            object_id: event.envelope.object_id.clone(),
            entity_kind: entity.map(|e| e.kind().to_owned()),
            entity_id: entity.map(|e| e.id().to_owned()),
            parent_id: entity.and_then(|e| e.parent()).map(str::to_owned),
            occurred_at_ns: event.envelope.occurred_at_ns,
            order_ns: event.key.ns,
            received_at_ns,
            outcome: outcome.as_str().to_owned(),
            reason: reason.map(str::to_owned),
            payload: raw.to_owned(),
        };
        let Some(seq) = log::insert(&txn, &row).await? else {
            return Ok(Reply::Duplicate);
        };
        row.seq = seq;
        let mut changes = Vec::new();
        if let Some(entity) = entity {
            let applied = apply::apply(&txn, entity, &event, apply::Locking::PerEntity).await?;
            if !applied.primary_changed {
                outcome = Outcome::Stale;
                row.outcome = outcome.as_str().to_owned();
                row.reason = Some(STALE_REASON.to_owned());
                log::set_outcome(&txn, seq, &row.outcome, row.reason.as_deref()).await?;
            }
            changes = applied.changes;
        }
        let position = log::assign_position(&txn, seq).await?;
        row.position = Some(position);
        if let Publisher::Relayed(_) = self.publisher {
            log::notify(&txn, position).await?;
        }
        txn.commit().await?;
        // Published before the SQLite writer lock is released, so changes reach the bus in position order
        // (on PostgreSQL the relay orders them).
        self.publisher.publish(Change::new(row, changes));
        drop(_writer);
        Ok(Reply::Stored(outcome))
    }
}
