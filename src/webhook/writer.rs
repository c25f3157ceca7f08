//! The intake writer: group commit.
//!
//! Every verified delivery goes to a writer task over a channel (an instance has one writer on SQLite, a
//! few on PostgreSQL: see below). The writer takes the
//! first waiting delivery and whatever else is already queued (at most [`MAX_BATCH`]; it never waits for
//! more, so under light load a batch is one delivery and latency does not grow), and stores the whole
//! batch in one transaction:
//!
//! 1. take the locks of every delivery's entity (and of the targets a stream event lists), sorted, in one
//!    statement; then find which of its event ids the log holds already, in one query: those deliveries,
//!    and a repeat of an event earlier in the same batch, come out `duplicate`;
//! 2. load the other deliveries' entities, apply each delivery to its entity in arrival order, in memory,
//!    then write what changed, in a few multi-row statements (`webhook::working`); a delivery that
//!    changes nothing comes out `stale`;
//! 3. append the new events to the log with their final outcomes and positions: one counter increment by
//!    their number (on PostgreSQL, the same statement notifies the batch's last position), then one
//!    insert, in arrival order (`store::events::append`). On SQLite the insert reads the positions from
//!    the counter itself, so the entity writes, the increment and the insert go in one round trip to the
//!    connection's thread (`store::script`); on PostgreSQL the entity writes go in one or two statements
//!    (`store::script` again), then the increment, which returns the positions, then the insert;
//! 4. commit; then publish every change in position order; then answer every delivery. (On PostgreSQL,
//!    the commit is marked for the relay from just before it until its changes are in the relay's inbox,
//!    so the relay waits for them rather than loading them again: `events::relay::Inbox`.)
//!
//! So a batch costs a handful of round trips however many deliveries it holds (on PostgreSQL `BEGIN`, the
//! locks, the duplicate check, a load per kind of entity, one or two for the entity writes, the counter,
//! the insert, `COMMIT`; on SQLite about six), where one transaction per delivery costs five or more each.
//!
//! Why this is the same as one transaction per delivery, run in arrival order:
//!
//! - Each delivery is applied to the states the deliveries before it left, exactly as it would see them
//!   committed; a late event's refold sees the events of the deliveries before it and its own, not those
//!   after it (see `webhook::working`). So outcomes and entity rows are those of the sequential run.
//! - Positions stay gapless and in commit order: the counter is incremented by exactly the number of
//!   stored events, last, and its row stays locked until the commit (see `store::events`), so a later
//!   batch, from this instance or another, numbers after it. Each event row is written once, with its
//!   outcome and position: updating rows of the log afterwards would write them, and all their index
//!   entries, a second time.
//! - A duplicate is decided before the insert, which sees only committed events, but after the entity
//!   locks: another instance storing the same event holds its entity's lock until it commits, so the
//!   check sees its event. Should the insert meet the event all the same (the same event id naming
//!   another entity), it skips it and the transaction fails: a batch is then stored again one delivery at
//!   a time (below), where that event comes out `duplicate`; a delivery that was alone answers 503, and
//!   the sender's retry gets `duplicate`.
//! - Every delivery is answered after the commit that holds it (SPEC: an authentic event is stored before
//!   it is acknowledged), and a change is published after its commit, in position order.
//! - One notification per batch is enough: the relay publishes every position between the last it
//!   published and the notified one, from its inbox or the event log (`events::relay`).
//!
//! If anything in a batch fails (a database error, a PostgreSQL deadlock between instances whose batches
//! lock the same entities in another order), the
//! transaction rolls back and each delivery of the batch is stored again in a transaction of its own. So a
//! failing delivery fails alone, with nothing of it stored, and answers 503 as before; the others are
//! stored. A panic while storing (a bug) counts as such a failure: the transaction is dropped, so rolled
//! back, the panic is logged, and the writer goes on with the next delivery. Were a writer task to end
//! all the same, `/readyz` says so ([`Writer::stopped`]).
//!
//! On SQLite the writer is also the single writer SQLite allows: intake transactions run one after the
//! other here instead of failing with `SQLITE_BUSY`. It stores through a connection of its own
//! (`db::writer_connection`), so each transaction finds the pages and prepared statements of the one
//! before it.
//!
//! On PostgreSQL, where one writer would spend much of its time waiting for round trips and its commit,
//! an instance runs [`POSTGRES_WRITERS`] of them (one builds its batch while the other commits; more
//! split the load into smaller batches, which cost more statements in all: 4 were slower, 8 slower
//! still), and each delivery goes to the writer its entity hashes to (a simulcast target with its
//! stream, whose lock it takes first). So the deliveries of one entity still queue in
//! arrival order in one writer, and two writers of an instance do not take the same entity locks: their
//! batches normally meet only at the position counter, which each takes last. Where they do meet (batches
//! of different instances locking the same entities in another order; rarely, rows two entities share,
//! such as a playback id moving from one owner to another), PostgreSQL aborts one transaction to break the
//! deadlock, and its deliveries are stored again as above.

use std::panic::AssertUnwindSafe;

use entity::webhook_event;
use futures_util::FutureExt;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use super::apply::{self, Changed, Locking};
use super::event::{EntityRef, Event};
use super::working::Working;
use super::{Outcome, Reply, STALE_REASON};
use crate::db::{Attempts, is_lost_connection, sqlstate};
use crate::events::relay::Committing;
use crate::events::{Change, Publisher};
use crate::metrics::Metrics;
use crate::store::events as log;
use crate::store::lock_key;
use crate::store::script::Script;

/// The most deliveries one transaction holds.
pub const MAX_BATCH: usize = 128;

/// Writers of an instance on PostgreSQL.
pub const POSTGRES_WRITERS: usize = 2;

/// How many deliveries may wait for a writer; beyond that, senders wait for room.
const QUEUE: usize = 4 * MAX_BATCH;

/// How many times a delivery's own transaction is tried when PostgreSQL keeps aborting it to break
/// deadlocks.
const DEADLOCK_ATTEMPTS: u32 = 5;

/// A verified, parsed delivery, ready to store.
pub struct Delivery {
    /// The event row to insert (`seq` and `position` are assigned by the database and the writer).
    pub row: webhook_event::Model,
    /// The outcome unless applying finds the event stale.
    pub outcome: Outcome,
    pub event: Event,
    /// The entity the event is about, when it resolved to one.
    pub entity: Option<EntityRef>,
}

/// The handle deliveries are sent through. Cheap to clone; the writer tasks stop once every handle is
/// dropped (when the server shuts down) and their queues are empty.
#[derive(Clone)]
pub struct Writer {
    queues: Vec<mpsc::Sender<Queued>>,
    metrics: Metrics,
}

impl Writer {
    /// Starts `writers` writer tasks (at least one; on the current tokio runtime).
    pub fn spawn(
        db: DatabaseConnection,
        publisher: Publisher,
        metrics: Metrics,
        writers: usize,
    ) -> Self {
        let queues = (0..writers.max(1))
            .map(|_| {
                let (queue, deliveries) = mpsc::channel(QUEUE);
                let writer = GroupCommit {
                    db: db.clone(),
                    publisher: publisher.clone(),
                    metrics: metrics.clone(),
                };
                tokio::spawn(writer.run(deliveries));
                queue
            })
            .collect();
        Self { queues, metrics }
    }

    /// How many writer tasks have ended (each drops its queue's receiver as it ends). They end only once
    /// every handle is dropped, so with a handle at hand, any is a fault: deliveries sent to it fail.
    pub fn stopped(&self) -> usize {
        self.queues.iter().filter(|queue| queue.is_closed()).count()
    }

    /// The writer of `delivery`: the one its entity (a target's stream) hashes to.
    fn queue_of(&self, delivery: &Delivery) -> &mpsc::Sender<Queued> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let key = match &delivery.entity {
            Some(entity) => entity.parent().unwrap_or(entity.id()),
            None => delivery.row.event_id.as_str(),
        };
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        &self.queues[(hash % self.queues.len() as u64) as usize]
    }

    /// Stores a delivery; answers once it is committed (or failed).
    pub async fn store(&self, delivery: Delivery) -> Result<Reply, DbErr> {
        let _waiting = self.metrics.intake_waiting();
        let (reply, answer) = oneshot::channel();
        let stopped = || DbErr::Custom("the intake writer has stopped".into());
        self.queue_of(&delivery)
            .send((delivery, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Logs a writer task's end by a panic that [`GroupCommit::commit_caught`] did not catch (the panic hook
/// prints it to standard error, not to the log).
struct EndOnPanic;

impl Drop for EndOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                "an intake writer task panicked and stopped (a bug); /readyz now fails"
            );
        }
    }
}

type Queued = (Delivery, oneshot::Sender<Result<Reply, DbErr>>);

/// What a committed transaction stored, for each delivery (`None` for a duplicate), and the commit's mark
/// for the relay (PostgreSQL), to keep until the changes are published.
type Committed = (Vec<Option<Stored>>, Option<Committing>);

/// A stored event, before publishing.
struct Stored {
    outcome: Outcome,
    row: webhook_event::Model,
    changes: Vec<Changed>,
}

struct GroupCommit {
    db: DatabaseConnection,
    publisher: Publisher,
    metrics: Metrics,
}

impl GroupCommit {
    async fn run(self, mut deliveries: mpsc::Receiver<Queued>) {
        let _logs_an_unexpected_end = EndOnPanic;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while deliveries.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.write(std::mem::take(&mut batch)).await;
        }
    }

    /// Stores a batch in one transaction, or, if that fails, each delivery in a transaction of its own.
    async fn write(&self, batch: Vec<Queued>) {
        let (deliveries, replies): (Vec<Delivery>, Vec<_>) = batch.into_iter().unzip();
        if deliveries.len() > 1 {
            self.metrics.intake_batch(deliveries.len());
            match self.commit_caught(&deliveries).await {
                Ok(committed) => return self.finish(committed, replies),
                Err(error) => {
                    self.metrics.intake_batch_retry();
                    tracing::debug!(
                        %error,
                        size = deliveries.len(),
                        "group commit failed; storing its deliveries one by one"
                    );
                }
            }
        }
        for (delivery, reply) in deliveries.iter().zip(replies) {
            match self.commit_alone(delivery).await {
                Ok(committed) => self.finish(committed, vec![reply]),
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    /// Stores one delivery in a transaction of its own, again when PostgreSQL aborted it to break a
    /// deadlock with another instance's transaction, or when its connection was lost (as far as
    /// [`Attempts`] allow: the deliveries queued behind this one wait meanwhile). A transaction whose
    /// connection was lost during its commit may have committed: the next attempt then finds its event
    /// stored and answers it as a duplicate.
    async fn commit_alone(&self, delivery: &Delivery) -> Result<Committed, DbErr> {
        let (mut deadlocks, mut attempts) = (0, Attempts::start());
        loop {
            self.metrics.intake_batch(1);
            match self.commit_caught(std::slice::from_ref(delivery)).await {
                Err(error) if is_deadlock(&error) && deadlocks + 1 < DEADLOCK_ATTEMPTS => {
                    deadlocks += 1;
                    tracing::debug!(%error, deadlocks, "intake transaction aborted by a deadlock; trying again");
                }
                Err(error) if is_lost_connection(&error) && attempts.another() => {
                    tracing::warn!(%error, attempts = attempts.made(), "intake transaction lost its database connection; trying again on another");
                }
                result => return result,
            }
        }
    }

    /// After the commit: publishes the changes in position order, then answers the deliveries; then the
    /// commit's mark ends.
    fn finish(
        &self,
        (stored, _committing): Committed,
        replies: Vec<oneshot::Sender<Result<Reply, DbErr>>>,
    ) {
        let answers: Vec<Reply> = stored
            .into_iter()
            .map(|stored| match stored {
                Some(Stored {
                    outcome,
                    row,
                    changes,
                }) => {
                    self.publisher.publish(Change::new(row, changes));
                    Reply::Stored(outcome)
                }
                None => Reply::Duplicate,
            })
            .collect();
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The sender may be gone (the client hung up); its event is stored all the same.
            let _ = reply.send(Ok(answer));
        }
    }

    /// [`Self::commit`], with a panic turned into an error: the transaction, dropped as the panic unwinds,
    /// rolls back, and the writer task lives on. The panic's message goes to the log (and to standard
    /// error, by the panic hook).
    async fn commit_caught(&self, deliveries: &[Delivery]) -> Result<Committed, DbErr> {
        AssertUnwindSafe(self.commit(deliveries))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                tracing::error!(
                    panic = %message,
                    size = deliveries.len(),
                    "storing a batch panicked (a bug); its deliveries answer 503"
                );
                Err(DbErr::Custom(format!(
                    "storing the delivery panicked: {message}"
                )))
            })
    }

    /// Stores `deliveries` in one transaction and commits it; on error, rolls it back.
    async fn commit(&self, deliveries: &[Delivery]) -> Result<Committed, DbErr> {
        // On SQLite, a write transaction from the start: the first statements only read, and a read
        // transaction that must become a write one after another connection wrote fails at once with
        // `SQLITE_BUSY` instead of waiting for the lock.
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?;
        match self.store_all(&txn, deliveries).await {
            Ok(stored) => {
                // Positions are consecutive: the batch's new events, if it has any.
                let mut positions = stored.iter().flatten().filter_map(|s| s.row.position);
                let committing = positions.next().and_then(|first| {
                    let last = positions.next_back().unwrap_or(first);
                    self.publisher.committing(first..=last)
                });
                txn.commit().await?;
                Ok((stored, committing))
            }
            Err(error) => {
                // Rolled back now, not when the connection is next used, so the retry does not wait on
                // this transaction's locks.
                let _ = txn.rollback().await;
                Err(error)
            }
        }
    }

    async fn store_all(
        &self,
        txn: &DatabaseTransaction,
        deliveries: &[Delivery],
    ) -> Result<Vec<Option<Stored>>, DbErr> {
        let mut working = Working::new(txn, Locking::PerEntity);
        // What each delivery reads first: its entity, and the targets a stream event lists.
        let reads: Vec<Vec<EntityRef>> = deliveries
            .iter()
            .map(|d| {
                d.entity
                    .as_ref()
                    .map_or_else(Vec::new, |entity| apply::entities_read(entity, &d.event))
            })
            .collect();
        // The locks first, for every delivery: a delivery of the same event to another instance holds
        // them until it commits, so the duplicate check below sees its event. (An event without an
        // entity has a lock of its own.)
        working
            .lock_for(
                reads.iter().flatten(),
                deliveries
                    .iter()
                    .filter(|d| d.entity.is_none())
                    .map(|d| lock_key("event", &d.row.event_id)),
            )
            .await?;
        // Of deliveries sharing an event id, the first is stored; the others, and those of events stored
        // before, are duplicates.
        let mut seen =
            log::stored_ids(txn, deliveries.iter().map(|d| d.row.event_id.as_str())).await?;
        let mut stored: Vec<Option<Stored>> = deliveries
            .iter()
            .map(|delivery| {
                seen.insert(delivery.row.event_id.clone()).then(|| Stored {
                    outcome: delivery.outcome,
                    row: delivery.row.clone(),
                    changes: Vec::new(),
                })
            })
            .collect();
        working
            .load(
                reads
                    .iter()
                    .zip(&stored)
                    .filter(|(_, stored)| stored.is_some())
                    .flat_map(|(read, _)| read),
            )
            .await?;
        for (delivery, stored) in deliveries.iter().zip(&mut stored) {
            let (Some(stored), Some(entity)) = (stored, &delivery.entity) else {
                continue;
            };
            working.applying(&delivery.row, &delivery.event);
            let applied = apply::apply(&mut working, entity, &delivery.event).await?;
            if !applied.primary_changed {
                stored.outcome = Outcome::Stale;
                stored.row.outcome = Outcome::Stale.as_str().to_owned();
                stored.row.reason = Some(STALE_REASON.to_owned());
            }
            stored.changes = applied.changes;
        }
        // Last: the entity writes, then the log's counter, whose row stays locked from here to the
        // commit, and the events; on SQLite all in one round trip.
        let mut writes = Script::new(txn.get_database_backend());
        working.write(&mut writes);
        let rows: Vec<&mut webhook_event::Model> =
            stored.iter_mut().flatten().map(|s| &mut s.row).collect();
        let notify = matches!(self.publisher, Publisher::Relayed(_));
        log::append(txn, writes, rows, notify).await?;
        #[cfg(test)]
        tests::panic_on_marked(deliveries);
        Ok(stored)
    }
}

/// Whether PostgreSQL aborted the transaction to break a deadlock (or a serialisation conflict), so that
/// trying it again may succeed.
fn is_deadlock(error: &DbErr) -> bool {
    sqlstate(error).is_some_and(|code| matches!(&*code, "40P01" | "40001"))
}

#[cfg(test)]
mod tests {
    use entity::{media, webhook_event};
    use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait};

    use super::{Delivery, Writer};
    use crate::db::scratch::{ScratchDb, postgres_url};
    use crate::db::{connect_and_migrate, writer_connection};
    use crate::events::cache::PlaybackCache;
    use crate::events::{Bus, Publisher};
    use crate::metrics::Metrics;
    use crate::webhook::verify::Secrets;
    use crate::webhook::{IngestError, Intake};

    /// The event id whose transaction panics in these tests: a fault no known input causes.
    const PANICS: &str = "00000000-0000-4000-8000-0000000000ff";

    /// Called by the writer in test builds, inside its transaction.
    pub(super) fn panic_on_marked(deliveries: &[Delivery]) {
        if deliveries.iter().any(|d| d.row.event_id == PANICS) {
            panic!("a delivery marked to panic");
        }
    }

    const MEDIA_CREATED: &str = include_str!("../../tests/fixtures/video.media.created.json");
    const MEDIA_READY: &str = include_str!("../../tests/fixtures/video.media.ready.json");
    const LIVE_CREATED: &str = include_str!("../../tests/fixtures/video.live_stream.created.json");

    fn with_event_id(fixture: &str, id: &str) -> Vec<u8> {
        let mut event: serde_json::Value = serde_json::from_str(fixture).unwrap();
        event["id"] = id.into();
        serde_json::to_vec(&event).unwrap()
    }

    fn direct() -> Publisher {
        Publisher::Direct {
            bus: Bus::new(16),
            cache: PlaybackCache::default(),
        }
    }

    #[tokio::test]
    async fn a_panic_while_storing_fails_that_delivery_alone_and_the_writer_goes_on() {
        let db = connect_and_migrate("sqlite::memory:").await.unwrap();
        let intake = Intake::new(
            writer_connection(&db).await.unwrap(),
            Secrets::default(),
            direct(),
            Metrics::new(),
        );
        // Everything of the marked event is written when it panics, just before the commit.
        let marked = with_event_id(MEDIA_READY, PANICS);
        let (media, live) = (MEDIA_CREATED.as_bytes(), LIVE_CREATED.as_bytes());
        // Sent together, so they may share a batch: the panic then fails the batch, whose deliveries
        // are stored again one by one.
        let (before, panicking, after) = tokio::join!(
            intake.ingest(media, None),
            intake.ingest(&marked, None),
            intake.ingest(live, None),
        );
        assert_eq!(before.unwrap().reply.status(), "applied");
        assert_eq!(after.unwrap().reply.status(), "applied");
        match panicking {
            Err(IngestError::Database(error)) => assert!(
                error.to_string().contains("a delivery marked to panic"),
                "{error}"
            ),
            other => panic!("expected a storage error, got {other:?}"),
        }
        assert_eq!(intake.check_running(), Ok(()));
        // The marked event left nothing behind: not in the log, and its media is not ready.
        let media_status = || async {
            let id = "7d3c2b1a-4e5f-4a6b-8c9d-0e1f2a3b4c5d";
            let row = media::Entity::find_by_id(id).one(&db).await.unwrap();
            row.expect("the created media").status
        };
        assert_eq!(webhook_event::Entity::find().count(&db).await.unwrap(), 2);
        assert_ne!(media_status().await, "READY");
        // The writer still stores, and the same change under another event id is no duplicate.
        let next = intake.ingest(MEDIA_READY.as_bytes(), None).await.unwrap();
        assert_eq!(next.reply.status(), "applied");
        assert_eq!(webhook_event::Entity::find().count(&db).await.unwrap(), 3);
        assert_eq!(media_status().await, "READY");
    }

    /// After the PostgreSQL server ended every connection (as a restart does), the next delivery is
    /// stored all the same: each lost connection fails an attempt and is dropped.
    #[tokio::test]
    async fn on_postgres_a_delivery_is_stored_after_its_connections_were_ended() {
        let Some(admin_url) = postgres_url() else {
            return;
        };
        let scratch = ScratchDb::create(&admin_url, "fastpix_sync_test_lost_connections").await;
        let db = connect_and_migrate(&scratch.url).await.unwrap();
        let intake = Intake::new(db.clone(), Secrets::default(), direct(), Metrics::new());
        let first = intake.ingest(MEDIA_CREATED.as_bytes(), None).await.unwrap();
        assert_eq!(first.reply.status(), "applied");
        let open = db.get_postgres_connection_pool().size();
        let end_all = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            scratch.name
        );
        scratch.admin.execute_unprepared(&end_all).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let next = intake.ingest(MEDIA_READY.as_bytes(), None).await;
        drop(intake);
        db.close().await.unwrap();
        scratch.remove().await;
        assert!(open > 0);
        assert_eq!(next.unwrap().reply.status(), "applied");
    }

    #[test]
    fn writer_tasks_that_ended_are_counted_as_stopped_and_intake_is_not_running() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (writer, intake) = runtime.block_on(async {
            let db = connect_and_migrate("sqlite::memory:").await.unwrap();
            let writer = Writer::spawn(db.clone(), direct(), Metrics::new(), 2);
            let intake = Intake::new(db, Secrets::default(), direct(), Metrics::new());
            (writer, intake)
        });
        assert_eq!(writer.stopped(), 0);
        assert_eq!(intake.check_running(), Ok(()));
        // The tasks end with their runtime, as a task would on a panic nothing caught.
        drop(runtime);
        assert_eq!(writer.stopped(), 2);
        let reason = intake.check_running().unwrap_err();
        assert!(
            reason.starts_with("1 intake writer task(s) stopped"),
            "{reason}"
        );
    }
}
