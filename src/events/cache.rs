//! `mediaByPlaybackId` answers kept in memory, on a single instance.
//!
//! A player page asks for the media of a playback id, and thousands of viewers ask for the same few. The
//! answer (the media row and its playback ids) is kept here after the first read and forgotten as soon as
//! a change could alter it (its media changed, or one of its playback ids moved): intake hands each
//! committed change to [`PlaybackCache::observe`] before it answers the webhook, so a query sent after a
//! webhook's acknowledgement never sees the state before it.
//!
//! A read that raced a change must not store what it read: it takes the cache's generation before reading
//! the database and stores only if no media changed since ([`PlaybackCache::put`]). A change committed
//! before the read starts but observed after it bumps the generation too, so the worst case is a miss.
//!
//! Only an instance that sees every write can keep it: with SQLite, this process is the only writer.
//! Instances sharing PostgreSQL learn of each other's writes later (through the relay), so there every
//! query reads the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use entity::media;

use super::{Change, Moved, Snapshot};

/// Answers kept at most; past it the cache starts empty again.
const CAPACITY: usize = 10_000;

/// Cheap to clone; one per instance.
#[derive(Clone, Default)]
pub struct PlaybackCache(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    /// Bumped by every change that moves a media or a live stream.
    generation: u64,
    entries: HashMap<String, Snapshot<media::Model>>,
}

impl PlaybackCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The media `playback_id` plays, as of the last change, if it is kept.
    pub fn get(&self, playback_id: &str) -> Option<Snapshot<media::Model>> {
        self.lock().entries.get(playback_id).cloned()
    }

    /// Take it before reading the database; give it back to [`put`](Self::put).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps what a read that started at `generation` found, unless a media changed since.
    pub fn put(&self, generation: u64, playback_id: &str, media: Snapshot<media::Model>) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= CAPACITY {
            inner.entries.clear();
        }
        inner.entries.insert(playback_id.to_owned(), media);
    }

    /// Forgets the answers `change` may alter: those about a media it moved, and those for any playback id
    /// of a media or stream it moved (a playback id may have moved to it from another owner). Every such
    /// change also bumps the generation, so reads racing it are not kept. Call it after the commit, before
    /// answering.
    pub fn observe(&self, change: &Change) {
        let mut media = Vec::new();
        let mut playback_ids = Vec::new();
        for moved in change.moved.iter() {
            match moved {
                Moved::Media(snapshot) => {
                    media.push(snapshot.row.id.as_str());
                    playback_ids.extend(snapshot.playback_ids.iter().map(|p| p.id.as_str()));
                }
                Moved::LiveStream(snapshot) => {
                    playback_ids.extend(snapshot.playback_ids.iter().map(|p| p.id.as_str()));
                }
                Moved::SimulcastTarget(_) => {}
            }
        }
        if media.is_empty() && playback_ids.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.retain(|playback_id, answer| {
            !media.contains(&answer.row.id.as_str())
                && !playback_ids.contains(&playback_id.as_str())
        });
    }
}
