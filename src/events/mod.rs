//! The change vocabulary and the bus that fans committed changes out to subscribers.
//!
//! A change carries the new state of every entity it moved, loaded once (it is the state intake just
//! wrote) and shared behind an `Arc`: fan-out never reads the database per subscriber.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::webhook::Outcome;
use crate::webhook::apply::Changed;
use crate::webhook::envelope::Envelope;

/// One committed event and what it changed.
#[derive(Debug)]
pub struct Change {
    /// The event's sequence in the log (its cursor).
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub outcome: Outcome,
    /// New states of the entities the event changed (empty when it changed none).
    pub changes: Vec<Changed>,
}

impl Change {
    pub fn new(
        seq: i64,
        envelope: &Envelope,
        outcome: Outcome,
        changes: Vec<Changed>,
    ) -> Arc<Self> {
        Arc::new(Self {
            seq,
            event_id: envelope.id.clone(),
            event_type: envelope.event_type.clone(),
            outcome,
            changes,
        })
    }
}

/// A bounded broadcast channel of committed changes. Cheap to clone; lives in application state.
#[derive(Clone, Debug)]
pub struct Bus {
    sender: broadcast::Sender<Arc<Change>>,
}

impl Bus {
    /// A bus that keeps the last `capacity` changes for subscribers that fall behind.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self { sender }
    }

    /// Publishes a committed change. Having no subscriber is fine.
    pub fn publish(&self, change: Arc<Change>) {
        let _ = self.sender.send(change);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }
}
