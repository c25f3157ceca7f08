//! The change vocabulary and the bus that fans committed changes out to subscribers.
//!
//! A change carries the stored event and the new state of every entity it moved. Both are what intake just
//! wrote, wrapped in `Arc`s once and shared by every subscriber: fan-out never reads the database per
//! subscriber, and building a GraphQL object from a snapshot copies pointers, not rows.

pub mod cache;
pub mod relay;

use cache::PlaybackCache;

use std::ops::RangeInclusive;
use std::sync::Arc;

use entity::{live_stream, media, simulcast_target, webhook_event};
use tokio::sync::broadcast;

use crate::webhook::apply::Changed;
use crate::webhook::fields::Playback;

/// An entity row and its playback ids, as of one change.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot<M> {
    pub row: Arc<M>,
    pub playback_ids: Arc<Vec<Playback>>,
}

impl<M> Snapshot<M> {
    pub fn new(row: M, playback_ids: Vec<Playback>) -> Self {
        Self {
            row: Arc::new(row),
            playback_ids: Arc::new(playback_ids),
        }
    }
}

/// The new state of one entity a change moved.
#[derive(Clone, Debug, PartialEq)]
pub enum Moved {
    Media(Snapshot<media::Model>),
    LiveStream(Snapshot<live_stream::Model>),
    SimulcastTarget(Arc<simulcast_target::Model>),
}

impl From<Changed> for Moved {
    fn from(changed: Changed) -> Self {
        match changed {
            Changed::Media(state) => Self::Media(Snapshot::new(state.row, state.playback_ids)),
            Changed::LiveStream(state) => {
                Self::LiveStream(Snapshot::new(state.row, state.playback_ids))
            }
            Changed::SimulcastTarget(target) => Self::SimulcastTarget(Arc::new(target)),
        }
    }
}

/// One committed event and what it changed.
#[derive(Debug)]
pub struct Change {
    /// The event's cursor position (gapless, in commit order).
    pub position: i64,
    /// The stored event, as committed.
    pub event: Arc<webhook_event::Model>,
    /// New states of the entities the event changed (empty when it changed none).
    pub moved: Vec<Moved>,
}

impl Change {
    pub fn new(event: webhook_event::Model, changes: Vec<Changed>) -> Arc<Self> {
        Arc::new(Self {
            position: event.position.unwrap_or_default(),
            event: Arc::new(event),
            moved: changes.into_iter().map(Moved::from).collect(),
        })
    }
}

/// Where intake hands a committed change.
#[derive(Clone)]
pub enum Publisher {
    /// Straight onto this instance's bus (SQLite: one instance), after the instance's query cache forgot
    /// what the change made stale.
    Direct { bus: Bus, cache: PlaybackCache },
    /// To the relay, which publishes it when its notification comes back, in order with the changes of
    /// the other instances (PostgreSQL).
    Relayed(relay::Inbox),
}

impl Publisher {
    pub fn publish(&self, change: Arc<Change>) {
        match self {
            Self::Direct { bus, cache } => {
                cache.observe(&change);
                bus.publish(change);
            }
            Self::Relayed(inbox) => inbox.put(change),
        }
    }

    /// Marks a commit about to store the events at `positions`, until the mark is dropped after its
    /// changes are published: the relay then waits for them instead of loading them from the database
    /// (see [`relay::Inbox`]).
    pub fn committing(&self, positions: RangeInclusive<i64>) -> Option<relay::Committing> {
        match self {
            Self::Direct { .. } => None,
            Self::Relayed(inbox) => Some(inbox.committing(positions)),
        }
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
