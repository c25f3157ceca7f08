//! The working set of a transaction that applies events: the entities it reads and writes, in memory.
//!
//! Intake stores a batch of deliveries in one transaction (`webhook::writer`). Applying them one by one
//! straight against the database costs several statements per delivery (take the entity's lock, load it,
//! save its row, save its playback ids), each a round trip. Instead, the batch:
//!
//! 1. takes every entity lock the batch needs, sorted, in one statement ([`Working::lock_for`]): each
//!    delivery's entity, and the simulcast targets a stream event lists (`apply::entities_read`);
//! 2. loads those entities in one query per kind (media and streams joined with their playback ids;
//!    [`Working::load`]);
//! 3. applies each delivery in arrival order against these states in memory;
//! 4. writes what changed at the end, in a few multi-row statements ([`Working::write`]), sent together
//!    with the event log's on SQLite, and in one or two statements on PostgreSQL (`store::script`).
//!
//! This is the same as applying the deliveries one by one against the database, because nothing else
//! writes these entities meanwhile (their locks are held; on SQLite the writer is the only one) and the
//! states in memory follow every write the database would have seen:
//!
//! - An entity not loaded yet (the other simulcast targets of a stream going `idle`) is locked and
//!   loaded when first needed, as before.
//! - A playback id is unique. When an entity takes one that another entity in memory had, it leaves the
//!   other's list, as the database row would move ([`Working::claim`]); an entity loaded later drops the
//!   ids that entities in memory have taken from it.
//! - A late event refolds its entity from its history. The batch's events are written to the log last,
//!   after applying (`store::events::append`), so the history is the log's events plus those of the
//!   batch's deliveries applied so far, the one being applied included ([`Working::applying`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use entity::{live_stream, media, playback_id, simulcast_target, webhook_event};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait};

use super::apply::Locking;
use super::event::{EntityRef, Event};
use super::fields::{Playback, WithPlaybackIds};
use super::live::LiveState;
use super::media::MediaState;
use super::simulcast::TargetState;
use crate::store::entities::{self, Owner, PlaybackOwner};
use crate::store::script::Script;
use crate::store::{events, lock_entities, lock_key};

/// An entity as stored when the transaction first read it, and as it is now.
pub struct Slot<T> {
    stored: Option<T>,
    current: Option<T>,
}

impl<T: Clone> Slot<T> {
    fn loaded(stored: Option<T>) -> Self {
        Self {
            current: stored.clone(),
            stored,
        }
    }
}

/// The entities a transaction works on (see the module documentation).
pub struct Working<'a, C> {
    db: &'a C,
    locking: Locking,
    locked: HashSet<String>,
    /// Events of this transaction applied so far, in the order applied, not in the log yet.
    fresh: Vec<(&'a webhook_event::Model, &'a Event)>,
    media: HashMap<String, Slot<MediaState>>,
    live: HashMap<String, Slot<LiveState>>,
    targets: HashMap<String, Slot<TargetState>>,
}

impl<'a, C: ConnectionTrait> Working<'a, C> {
    pub fn new(db: &'a C, locking: Locking) -> Self {
        Self {
            db,
            locking,
            locked: HashSet::new(),
            fresh: Vec::new(),
            media: HashMap::new(),
            live: HashMap::new(),
            targets: HashMap::new(),
        }
    }

    /// Takes the locks of `entities` (a target's stream's too) and the locks named `others`, those this
    /// transaction does not hold yet: sorted, in one statement.
    pub async fn lock_for<'e>(
        &mut self,
        entities: impl IntoIterator<Item = &'e EntityRef>,
        others: impl IntoIterator<Item = String>,
    ) -> Result<(), DbErr> {
        let keys: BTreeSet<String> = entities
            .into_iter()
            .flat_map(lock_keys)
            .chain(others)
            .collect();
        self.lock_all(keys).await
    }

    /// Loads `entities`, whose locks this transaction holds ([`Working::lock_for`]): one query per kind.
    pub async fn load<'e>(
        &mut self,
        entities: impl IntoIterator<Item = &'e EntityRef>,
    ) -> Result<(), DbErr> {
        let (mut media, mut live, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        for entity in entities {
            match entity {
                EntityRef::Media(id) => media.push(id.clone()),
                EntityRef::LiveStream(id) => live.push(id.clone()),
                EntityRef::SimulcastTarget { id, .. } => targets.push(id.clone()),
            }
        }
        let loaded = entities::load_owners(self.db, media.clone()).await?;
        preload(&mut self.media, media, loaded, |s| s.row.id.clone());
        let loaded = entities::load_owners(self.db, live.clone()).await?;
        preload(&mut self.live, live, loaded, |s| s.row.id.clone());
        let loaded = entities::load_targets(self.db, targets.clone()).await?;
        preload(&mut self.targets, targets, loaded, |s| s.id.clone());
        Ok(())
    }

    /// The event of `row`, to be written to the log with this transaction, is being applied: it is part
    /// of histories from now on.
    pub fn applying(&mut self, row: &'a webhook_event::Model, event: &'a Event) {
        self.fresh.push((row, event));
    }

    /// Takes an entity's lock, unless this transaction holds it (or locks whole tables).
    pub async fn lock(&mut self, kind: &str, id: &str) -> Result<(), DbErr> {
        self.lock_all([lock_key(kind, id)]).await
    }

    /// Takes the locks named `keys` that this transaction does not hold yet, in the order given, in one
    /// statement (none when it locks whole tables).
    async fn lock_all(&mut self, keys: impl IntoIterator<Item = String>) -> Result<(), DbErr> {
        if self.locking == Locking::PerEntity {
            let new: Vec<String> = keys
                .into_iter()
                .filter(|key| !self.locked.contains(key))
                .collect();
            lock_entities(self.db, new.iter().cloned()).await?;
            self.locked.extend(new);
        }
        Ok(())
    }

    /// Every stored event of an entity, and of its parent stream when given, in order-key order, with
    /// the events of this transaction applied so far.
    pub async fn history(
        &self,
        kind: &str,
        id: &str,
        parent: Option<&str>,
    ) -> Result<Vec<Event>, DbErr> {
        let mut history = events::history(self.db, kind, id, parent).await?;
        let fresh: Vec<Event> = self
            .fresh
            .iter()
            .filter(|(row, _)| events::in_history(row, kind, id, parent))
            .map(|(_, event)| (*event).clone())
            .collect();
        if !fresh.is_empty() {
            history.extend(fresh);
            events::in_key_order(&mut history, |event| &event.key);
        }
        Ok(history)
    }

    pub async fn media(&mut self, id: &str) -> Result<Option<MediaState>, DbErr> {
        self.owner(id).await
    }

    pub async fn live(&mut self, id: &str) -> Result<Option<LiveState>, DbErr> {
        self.owner(id).await
    }

    /// A media or live stream, loaded when first needed.
    async fn owner<M: Kept>(&mut self, id: &str) -> Result<Option<WithPlaybackIds<M>>, DbErr>
    where
        M::Entity: EntityTrait<Model = M>,
    {
        if !M::table(self).contains_key(id) {
            let stored = entities::load_owners::<M>(self.db, vec![id.to_owned()])
                .await?
                .pop();
            let mut slot = Slot::loaded(stored);
            if let Some(state) = &mut slot.current {
                self.drop_claimed(&mut state.playback_ids);
            }
            M::table(self).insert(id.to_owned(), slot);
        }
        Ok(M::table(self)[id].current.clone())
    }

    pub async fn target(&mut self, id: &str) -> Result<Option<TargetState>, DbErr> {
        if !self.targets.contains_key(id) {
            let stored = entities::load_target(self.db, id).await?;
            self.targets.insert(id.to_owned(), Slot::loaded(stored));
        }
        Ok(self.targets[id].current.clone())
    }

    /// The new state of a media or live stream.
    pub fn set_owner<M: Kept>(&mut self, state: WithPlaybackIds<M>) {
        let id = state.row.owner().id();
        self.claim(state.row.owner(), &state.playback_ids);
        slot(M::table(self), id).current = Some(state);
    }

    pub fn set_target(&mut self, state: TargetState) {
        let id = state.id.clone();
        slot(&mut self.targets, id).current = Some(state);
    }

    /// Ids of the simulcast targets of a stream: those stored and those this transaction created.
    pub async fn target_ids_of(&mut self, stream: &str) -> Result<Vec<String>, DbErr> {
        let mut ids: BTreeSet<String> = entities::target_ids_of(self.db, stream)
            .await?
            .into_iter()
            .collect();
        ids.extend(
            self.targets
                .iter()
                .filter(|(_, slot)| {
                    slot.current
                        .as_ref()
                        .is_some_and(|t| t.live_stream_id == stream)
                })
                .map(|(id, _)| id.clone()),
        );
        Ok(ids.into_iter().collect())
    }

    /// `owner` now lists `list`: any other entity in memory listing one of those ids loses it, as its
    /// stored row would move to `owner`.
    fn claim(&mut self, owner: Owner<'_>, list: &[Playback]) {
        let taken: HashSet<&str> = list.iter().map(|p| p.id.as_str()).collect();
        let media = self
            .media
            .iter_mut()
            .filter(|(id, _)| owner != Owner::Media(id))
            .filter_map(|(_, slot)| slot.current.as_mut().map(|s| &mut s.playback_ids));
        let live = self
            .live
            .iter_mut()
            .filter(|(id, _)| owner != Owner::LiveStream(id))
            .filter_map(|(_, slot)| slot.current.as_mut().map(|s| &mut s.playback_ids));
        for others in media.chain(live) {
            others.retain(|p| !taken.contains(p.id.as_str()));
        }
    }

    /// Drops from a freshly loaded list the ids that entities in memory took in this transaction.
    fn drop_claimed(&self, list: &mut Vec<Playback>) {
        let media = self.media.values().filter_map(|s| s.current.as_ref());
        let live = self.live.values().filter_map(|s| s.current.as_ref());
        let claimed: HashSet<&str> = media
            .flat_map(|s| &s.playback_ids)
            .chain(live.flat_map(|s| &s.playback_ids))
            .map(|p| p.id.as_str())
            .collect();
        list.retain(|p| !claimed.contains(p.id.as_str()));
    }

    /// Writes every change now (see [`Working::write`]).
    pub async fn flush(self) -> Result<(), DbErr> {
        let db = self.db;
        let mut script = Script::new(db.get_database_backend());
        self.write(&mut script);
        script.run(db).await.map(drop)
    }

    /// Adds every change to `script`: the changed rows in one upsert per table, then the changed playback
    /// id lists (one delete, one upsert).
    pub fn write(self, script: &mut Script) {
        let mut owners = Vec::new();
        let mut playbacks = Vec::new();
        let media_rows = owner_changes(&self.media, &mut owners, &mut playbacks);
        let live_rows = owner_changes(&self.live, &mut owners, &mut playbacks);
        let target_rows: Vec<simulcast_target::Model> = self
            .targets
            .values()
            .filter(|slot| slot.current.is_some() && slot.current != slot.stored)
            .filter_map(|slot| slot.current.clone())
            .collect();
        // A list naming a playback id twice stores it once, at its last position, as saving the rows one
        // by one would.
        let mut seen = HashSet::new();
        playbacks.reverse();
        playbacks.retain(|row| seen.insert(row.id.clone()));
        entities::upsert::<media::Entity>(script, media_rows);
        entities::upsert::<live_stream::Entity>(script, live_rows);
        entities::upsert::<simulcast_target::Entity>(script, target_rows);
        entities::delete_playback_ids(script, &owners);
        entities::upsert::<playback_id::Entity>(script, playbacks);
    }
}

/// Media and live streams: the entities with playback ids, each kind in its own table here.
pub trait Kept: PlaybackOwner + Clone + PartialEq {
    fn table<'w, C>(
        working: &'w mut Working<'_, C>,
    ) -> &'w mut HashMap<String, Slot<WithPlaybackIds<Self>>>;
}

impl Kept for media::Model {
    fn table<'w, C>(working: &'w mut Working<'_, C>) -> &'w mut HashMap<String, Slot<MediaState>> {
        &mut working.media
    }
}

impl Kept for live_stream::Model {
    fn table<'w, C>(working: &'w mut Working<'_, C>) -> &'w mut HashMap<String, Slot<LiveState>> {
        &mut working.live
    }
}

/// What changed in `table`: the rows to write (returned), and the owners whose playback id lists to
/// replace (those stored before go to `owners`, to delete their old rows) with their new rows.
fn owner_changes<'t, M: Kept>(
    table: &'t HashMap<String, Slot<WithPlaybackIds<M>>>,
    owners: &mut Vec<Owner<'t>>,
    playbacks: &mut Vec<playback_id::Model>,
) -> Vec<M> {
    let mut rows = Vec::new();
    for slot in table.values() {
        let Some(current) = &slot.current else {
            continue;
        };
        let stored = slot.stored.as_ref();
        if stored.map(|s| &s.row) != Some(&current.row) {
            rows.push(current.row.clone());
        }
        if stored.map(|s| &s.playback_ids) != Some(&current.playback_ids) {
            if stored.is_some() {
                owners.push(current.row.owner());
            }
            playbacks.extend(current.row.owner().rows(&current.playback_ids));
        }
    }
    rows
}

/// The names of the locks an entity's writer takes: a simulcast target's stream's too.
fn lock_keys(entity: &EntityRef) -> Vec<String> {
    let mut keys = vec![lock_key(entity.kind(), entity.id())];
    if let Some(parent) = entity.parent() {
        keys.push(lock_key("live_stream", parent));
    }
    keys
}

fn slot<T>(table: &mut HashMap<String, Slot<T>>, id: String) -> &mut Slot<T> {
    table.entry(id).or_insert(Slot {
        stored: None,
        current: None,
    })
}

/// Records the entities of `ids` as loaded: those in `found` as stored, the others as not stored.
fn preload<T: Clone>(
    table: &mut HashMap<String, Slot<T>>,
    ids: Vec<String>,
    found: Vec<T>,
    id_of: impl Fn(&T) -> String,
) {
    let mut found: HashMap<String, T> = found
        .into_iter()
        .map(|state| (id_of(&state), state))
        .collect();
    for id in ids {
        let stored = found.remove(&id);
        table.entry(id).or_insert_with(|| Slot::loaded(stored));
    }
}
