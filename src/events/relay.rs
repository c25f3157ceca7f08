//! The PostgreSQL relay: every change committed by any instance reaches this instance's bus, once, in
//! position order.
//!
//! Intake sends `NOTIFY fastpix_sync_changes, '<position>'` inside its transaction, so the notification
//! goes out on commit, in commit order (= position order). One listener connection per instance receives
//! them. A change this instance committed itself is waiting in the [`Inbox`] (or about to be) and is
//! published as is; another instance's change is loaded from the database once and published. When the
//! listener connection is lost, the relay reconnects with backoff and catches up from the event log by
//! position, so changes committed meanwhile still reach local subscribers, in order. On SQLite the relay
//! is off: intake publishes directly.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::time::timeout;

use entity::{log_position, webhook_event};
use sea_orm::sqlx::Executor as _;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::{Bus, Change, Moved};
use crate::metrics::Metrics;
use crate::store::{entities, events};
use crate::webhook::apply::{Changed, listed_target_ids};
use crate::webhook::{Outcome, live, media};

/// The notification channel.
pub const CHANNEL: &str = "fastpix_sync_changes";

/// How long the listener may go without a notification before the relay asks its connection for a
/// round trip. A connection whose peer vanished without a reset (a NAT or a firewall forgetting an idle
/// flow, a failover) would otherwise wait forever, and with it this instance's own changes, which reach
/// its subscribers through the listener.
pub const LISTENER_IDLE_CHECK: Duration = Duration::from_secs(10);

/// How long that round trip may take before the listener connection counts as lost.
pub const LISTENER_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The first wait before connecting again, doubled after each failure up to [`RECONNECT_BACKOFF_MAX`].
const RECONNECT_BACKOFF_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A listener connection that lasted this long starts the backoff over when it is lost.
const RECONNECT_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);

/// Changes this instance committed, waiting for their notification. Bounded: if the relay falls behind,
/// the oldest are dropped and will be loaded from the database instead.
///
/// A commit's notification can reach the relay before the writer that committed has put its changes
/// here: the two travel on different connections. So a writer marks its commit with the positions it
/// stores ([`Inbox::committing`]), from just before it until its changes are here, and the relay, missing
/// a change at a marked position, waits for it ([`Inbox::take_settled`]) instead of loading from the
/// database a change that is about to arrive. A change at a position no mark holds is another
/// instance's: it is loaded at once.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Shared>);

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken when a marked commit ends.
    settled: Notify,
}

#[derive(Default)]
struct State {
    waiting: BTreeMap<i64, Arc<Change>>,
    /// The positions of the commits marked and not ended, by mark.
    committing: HashMap<u64, RangeInclusive<i64>>,
    next_mark: u64,
}

const INBOX_LIMIT: usize = 4096;

/// How long the relay waits for this instance's commits to put their changes in the inbox before it
/// loads a missing change from the database.
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// A commit in progress, from just before the commit until its changes are in the inbox (or it failed).
#[must_use]
pub struct Committing {
    inbox: Inbox,
    mark: u64,
}

impl Drop for Committing {
    fn drop(&mut self) {
        self.inbox.lock().committing.remove(&self.mark);
        self.inbox.0.settled.notify_waiters();
    }
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No code panics while holding it; should one, the map is still whole.
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn put(&self, change: Arc<Change>) {
        let mut state = self.lock();
        state.waiting.insert(change.position, change);
        while state.waiting.len() > INBOX_LIMIT {
            state.waiting.pop_first();
        }
    }

    /// Marks a commit storing the events at `positions`; keep the mark until its changes are
    /// [put](Inbox::put).
    pub fn committing(&self, positions: RangeInclusive<i64>) -> Committing {
        let mut state = self.lock();
        let mark = state.next_mark;
        state.next_mark += 1;
        state.committing.insert(mark, positions);
        Committing {
            inbox: self.clone(),
            mark,
        }
    }

    /// The changes at the positions after `after` up to `until`, in order, when every one of them is
    /// waiting here (a batch this instance committed): they leave the inbox, with anything older. `None`,
    /// and the inbox unchanged, when one is missing.
    fn take_all(&self, after: i64, until: i64) -> Option<Vec<Arc<Change>>> {
        let mut state = self.lock();
        let wanted = usize::try_from(until - after).ok()?;
        if state.waiting.range(after + 1..=until).count() != wanted {
            return None;
        }
        let newer = state.waiting.split_off(&(until + 1));
        let taken = std::mem::replace(&mut state.waiting, newer);
        Some(taken.range(after + 1..).map(|(_, c)| c.clone()).collect())
    }

    /// [`Inbox::take_all`], once no commit of this instance that stores one of these positions is in
    /// progress (waiting at most [`SETTLE_LIMIT`]). `None` means a change is missing: another instance
    /// committed it.
    async fn take_settled(&self, after: i64, until: i64) -> Option<Vec<Arc<Change>>> {
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        loop {
            // Registered before looking, so a commit ending in between still wakes it.
            let ended = self.0.settled.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(changes) = self.take_all(after, until) {
                return Some(changes);
            }
            let marked = self
                .lock()
                .committing
                .values()
                .any(|marked| *marked.start() <= until && *marked.end() > after);
            if !marked || tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.take_all(after, until);
            }
        }
    }
}

/// Runs the relay until the process ends.
pub struct Relay {
    pub db: DatabaseConnection,
    pub url: String,
    pub bus: Bus,
    pub inbox: Inbox,
    pub metrics: Metrics,
    /// Names the listener connection in `pg_stat_activity` (`application_name`).
    pub name: String,
    /// Becomes `true` when the server shuts down.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl Relay {
    /// Relays until the server shuts down.
    pub async fn run(self) {
        let mut stopping = self.stopping.clone();
        tokio::select! {
            () = self.relay() => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }

    async fn relay(&self) {
        // Read once, then kept across reconnects: the log's position this instance has relayed up to.
        let mut published = None;
        let mut backoff = RECONNECT_BACKOFF_FIRST;
        loop {
            let started = Instant::now();
            let error = match published.as_mut() {
                None => match self.last_position().await {
                    Ok(position) => {
                        published = Some(position);
                        continue;
                    }
                    Err(error) => format!("cannot read the event log's position: {error}"),
                },
                Some(published) => match self.listen(published).await {
                    Ok(()) => return,
                    Err(error) => error,
                },
            };
            if started.elapsed() >= RECONNECT_BACKOFF_RESET_AFTER {
                backoff = RECONNECT_BACKOFF_FIRST;
            }
            tracing::warn!(%error, retry_in = ?backoff, "relay: listener lost; connecting again");
            self.metrics.relay_reconnect();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
        }
    }

    async fn last_position(&self) -> Result<i64, DbErr> {
        Ok(log_position::Entity::find_by_id(1)
            .one(&self.db)
            .await?
            .map_or(0, |row| row.last))
    }

    /// Connects, listens, catches up, then relays notifications until the connection is lost.
    async fn listen(&self, published: &mut i64) -> Result<(), String> {
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| e.to_string())?
            .application_name(&self.name);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| e.to_string())?;
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| e.to_string())?;
        // A lost connection ends `try_recv` at once, and this relay connects again and catches up. sqlx's
        // own reconnect, inside `try_recv`, would be cut short by the idle check below, and the next
        // round trip would connect quietly, without a catch-up.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await.map_err(|e| e.to_string())?;
        // Listening from here on: whatever committed before is in the log.
        self.catch_up(published, i64::MAX)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let notification = match timeout(LISTENER_IDLE_CHECK, listener.try_recv()).await {
                Ok(received) => received.map_err(|e| e.to_string())?,
                // Quiet for a while: the connection must still answer (`try_recv` is cancel-safe).
                Err(_) => match timeout(LISTENER_PING_TIMEOUT, (&mut listener).execute("SELECT 1"))
                    .await
                {
                    Ok(answered) => {
                        answered.map_err(|e| e.to_string())?;
                        continue;
                    }
                    Err(_) => {
                        return Err(format!(
                            "the listener connection did not answer within {LISTENER_PING_TIMEOUT:?}"
                        ));
                    }
                },
            };
            let Some(notification) = notification else {
                return Err("the listener connection closed".into());
            };
            let Ok(position) = notification.payload().parse::<i64>() else {
                continue;
            };
            if position <= *published {
                continue;
            }
            // `published` moves to what was published: a notification whose position the log does not
            // hold (another database's schema on the same channel, a hand-made `NOTIFY`) moves nothing.
            if let Some(changes) = self.inbox.take_settled(*published, position).await {
                // This instance's: no need to ask the log.
                for change in changes {
                    self.bus.publish(change);
                }
                *published = position;
            } else if position == *published + 1 {
                // Not in the inbox (just looked): another instance's.
                if self
                    .publish_from_log(position)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    *published = position;
                }
            } else {
                self.catch_up(published, position)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }

    /// Publishes one change: from the inbox when this instance made it, else loaded from the database.
    async fn publish(&self, position: i64) -> Result<(), DbErr> {
        match self.inbox.take_all(position - 1, position) {
            Some(changes) => changes.into_iter().for_each(|c| self.bus.publish(c)),
            None => {
                self.publish_from_log(position).await?;
            }
        }
        Ok(())
    }

    /// Publishes one change loaded from the database; `false` when no event has that position.
    async fn publish_from_log(&self, position: i64) -> Result<bool, DbErr> {
        tracing::debug!(position, "relay: loading a change from the log");
        let Some(change) = load_change(&self.db, position).await? else {
            return Ok(false);
        };
        self.bus.publish(change);
        Ok(true)
    }

    /// Publishes every change after `published` up to `until` from the log, in order.
    async fn catch_up(&self, published: &mut i64, until: i64) -> Result<(), DbErr> {
        tracing::debug!(after = *published, until, "relay: catching up from the log");
        loop {
            let positions: Vec<i64> = webhook_event::Entity::find()
                .select_only()
                .column(webhook_event::Column::Position)
                .filter(webhook_event::Column::Position.gt(*published))
                .filter(webhook_event::Column::Position.lte(until))
                .order_by_asc(webhook_event::Column::Position)
                .limit(500)
                .into_tuple::<Option<i64>>()
                .all(&self.db)
                .await?
                .into_iter()
                .flatten()
                .collect();
            let Some(&last) = positions.last() else {
                return Ok(());
            };
            for position in positions {
                self.publish(position).await?;
            }
            *published = last;
        }
    }
}

/// Rebuilds the change of the event at `position` from the database: the event, and the state of what it
/// moved as of that position (the fold of the entity's events committed up to it, exactly what intake
/// published on the instance that committed it), so that a catch-up replays every intermediate state.
pub async fn load_change(
    db: &DatabaseConnection,
    position: i64,
) -> Result<Option<Arc<Change>>, DbErr> {
    let Some(event) = webhook_event::Entity::find()
        .filter(webhook_event::Column::Position.eq(position))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let mut moved = Vec::new();
    let kind = event.entity_kind.as_deref().unwrap_or_default();
    let applied = event.outcome == Outcome::Applied.as_str();
    // A late stream event is stored `stale`, the stream left as it was, yet it may move the targets it
    // lists, as intake published on the instance that stored it.
    let stale_stream = event.outcome == Outcome::Stale.as_str() && kind == "live_stream";
    if let Some(id) = event.entity_id.as_deref()
        && (applied || stale_stream)
    {
        let history = || events::history_until(db, kind, id, None, Some(position));
        match kind {
            "media" => moved.extend(
                media::fold(id, &history().await?)
                    .map(Changed::Media)
                    .map(Moved::from),
            ),
            "live_stream" => {
                if applied {
                    moved.extend(
                        live::fold(id, &history().await?)
                            .map(Changed::LiveStream)
                            .map(Moved::from),
                    );
                }
                // The targets a stream event concerns, as intake's `apply` finds them: those it lists,
                // and on `idle` all of them. One it did not move is sent as it is.
                if let Some(stream_event) = events::to_event(&event) {
                    let listed: Vec<String> = listed_target_ids(&stream_event).collect();
                    let idle = stream_event.verb() == "idle";
                    if idle || !listed.is_empty() {
                        let targets = entities::targets_of(db, id).await?;
                        moved.extend(
                            targets
                                .into_iter()
                                .filter(|target| idle || listed.contains(&target.id))
                                .map(Changed::SimulcastTarget)
                                .map(Moved::from),
                        );
                    }
                }
            }
            "simulcast_target" => {
                let target = entities::load_target(db, id).await?;
                moved.extend(target.map(Changed::SimulcastTarget).map(Moved::from));
            }
            _ => {}
        }
    }
    Ok(Some(Arc::new(Change {
        position,
        event: Arc::new(event),
        moved,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(position: i64) -> Arc<Change> {
        Arc::new(Change {
            position,
            event: Arc::new(webhook_event::Model {
                seq: position,
                position: Some(position),
                ..crate::store::events::test_row(&format!("e{position}"))
            }),
            moved: Vec::new(),
        })
    }

    fn positions(changes: &[Arc<Change>]) -> Vec<i64> {
        changes.iter().map(|c| c.position).collect()
    }

    #[test]
    fn a_whole_batch_leaves_the_inbox_in_order_with_anything_older() {
        let inbox = Inbox::default();
        for position in [7, 3, 5, 4, 6, 2] {
            inbox.put(change(position));
        }
        let taken = inbox.take_all(2, 5).expect("3, 4 and 5 are waiting");
        assert_eq!(positions(&taken), [3, 4, 5]);
        // 2 was older: dropped. 6 and 7 wait for their notification.
        assert!(inbox.take_all(1, 2).is_none());
        assert_eq!(positions(&inbox.take_all(5, 7).unwrap()), [6, 7]);
    }

    #[tokio::test]
    async fn the_relay_waits_for_a_commit_of_this_instance_to_put_its_changes() {
        let inbox = Inbox::default();
        let committing = inbox.committing(1..=2);
        let writer = {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                // The notification came first; the writer puts its changes a moment later.
                tokio::time::sleep(Duration::from_millis(20)).await;
                inbox.put(change(1));
                inbox.put(change(2));
                drop(committing);
            })
        };
        let taken = inbox
            .take_settled(0, 2)
            .await
            .expect("the commit's changes");
        assert_eq!(positions(&taken), [1, 2]);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_change_no_commit_of_this_instance_can_put_is_missing_without_waiting_long() {
        let inbox = Inbox::default();
        inbox.put(change(1));
        let start = std::time::Instant::now();
        // No commit marked: position 2 is another instance's.
        assert!(inbox.take_settled(0, 2).await.is_none());
        // Nor does a commit of later positions hold it: it is not waited for.
        let later = inbox.committing(3..=5);
        assert!(inbox.take_settled(0, 2).await.is_none());
        assert!(start.elapsed() < SETTLE_LIMIT / 2, "{:?}", start.elapsed());
        drop(later);
        // A commit that fails ends its mark without putting anything.
        let failed = inbox.committing(2..=2);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(failed);
        });
        assert!(inbox.take_settled(0, 2).await.is_none());
        assert!(start.elapsed() < SETTLE_LIMIT, "{:?}", start.elapsed());
        // What is there stays for a later notification.
        assert_eq!(positions(&inbox.take_all(0, 1).unwrap()), [1]);
    }

    #[test]
    fn a_batch_with_a_missing_position_leaves_the_inbox_as_it_was() {
        let inbox = Inbox::default();
        for position in [1, 2, 4] {
            inbox.put(change(position));
        }
        assert!(inbox.take_all(0, 4).is_none());
        assert_eq!(positions(&inbox.take_all(0, 2).unwrap()), [1, 2]);
        assert_eq!(positions(&inbox.take_all(3, 4).unwrap()), [4]);
    }
}
