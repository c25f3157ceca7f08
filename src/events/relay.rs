//! The PostgreSQL relay: every change committed by any instance reaches this instance's bus, once, in
//! position order.
//!
//! Intake sends `NOTIFY fastpix_sync_changes, '<position>'` inside its transaction, so the notification
//! goes out on commit, in commit order (= position order). One listener connection per instance receives
//! them. A change this instance committed itself is waiting in the [`Inbox`] and is published as is;
//! another instance's change is loaded from the database once and published. When the listener connection
//! is lost, the relay reconnects with backoff and catches up from the event log by position, so changes
//! committed meanwhile still reach local subscribers, in order. On SQLite the relay is off: intake
//! publishes directly.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entity::{log_position, webhook_event};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::{Bus, Change, Moved};
use crate::metrics::Metrics;
use crate::store::{entities, events};
use crate::webhook::apply::Changed;
use crate::webhook::{live, media};

/// The notification channel.
pub const CHANNEL: &str = "fastpix_sync_changes";

/// Changes this instance committed, waiting for their notification. Bounded: if the relay falls behind,
/// the oldest are dropped and will be loaded from the database instead.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<BTreeMap<i64, Arc<Change>>>>);

const INBOX_LIMIT: usize = 4096;

impl Inbox {
    pub fn put(&self, change: Arc<Change>) {
        let mut waiting = self.0.lock().expect("inbox lock");
        waiting.insert(change.position, change);
        while waiting.len() > INBOX_LIMIT {
            waiting.pop_first();
        }
    }

    fn take(&self, position: i64) -> Option<Arc<Change>> {
        let mut waiting = self.0.lock().expect("inbox lock");
        // Anything older was published already (or will be loaded): drop it.
        let mut newer = waiting.split_off(&position);
        let found = newer.remove(&position);
        *waiting = newer;
        found
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
        let mut published = match self.last_position().await {
            Ok(position) => position,
            Err(error) => {
                tracing::error!(%error, "relay: cannot read the event log position; changes of other instances will not be relayed");
                return;
            }
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.listen(&mut published).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "relay: listener connection lost; reconnecting");
                    self.metrics.relay_reconnect();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
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
        listener.listen(CHANNEL).await.map_err(|e| e.to_string())?;
        // Listening from here on: whatever committed before is in the log.
        self.catch_up(published, i64::MAX)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let notification = listener.try_recv().await.map_err(|e| e.to_string())?;
            let Some(notification) = notification else {
                return Err("the listener connection closed".into());
            };
            let Ok(position) = notification.payload().parse::<i64>() else {
                continue;
            };
            if position == *published + 1 {
                self.publish(position).await.map_err(|e| e.to_string())?;
                *published = position;
            } else if position > *published {
                self.catch_up(published, position)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }

    /// Publishes one change: from the inbox when this instance made it, else loaded from the database.
    async fn publish(&self, position: i64) -> Result<(), DbErr> {
        let change = match self.inbox.take(position) {
            Some(change) => change,
            None => match load_change(&self.db, position).await? {
                Some(change) => change,
                None => return Ok(()),
            },
        };
        self.bus.publish(change);
        Ok(())
    }

    /// Publishes every change after `published` up to `until` from the log, in order.
    async fn catch_up(&self, published: &mut i64, until: i64) -> Result<(), DbErr> {
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
    if event.outcome == "applied"
        && let Some(id) = event.entity_id.as_deref()
    {
        let kind = event.entity_kind.as_deref().unwrap_or_default();
        let history = events::history_until(db, kind, id, None, Some(position)).await?;
        match kind {
            "media" => moved.extend(
                media::fold(id, &history)
                    .map(Changed::Media)
                    .map(Moved::from),
            ),
            "live_stream" => {
                moved.extend(
                    live::fold(id, &history)
                        .map(Changed::LiveStream)
                        .map(Moved::from),
                );
                let targets = entities::targets_of(db, id).await?;
                moved.extend(
                    targets
                        .into_iter()
                        .map(Changed::SimulcastTarget)
                        .map(Moved::from),
                );
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
