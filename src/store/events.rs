//! The event log (`webhook_event`).

use std::collections::{HashMap, HashSet};

use entity::{log_position, webhook_event};
use sea_orm::sea_query::ExprTrait;
use sea_orm::sea_query::{Expr, OnConflict, Query, SubQueryStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, Iterable, ModelTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::script::Script;

use crate::webhook::envelope::Envelope;
use crate::webhook::event::{Event, OrderKey};

/// Of `event_ids`, those the log holds already: one query.
pub async fn stored_ids<'i>(
    db: &impl ConnectionTrait,
    event_ids: impl IntoIterator<Item = &'i str>,
) -> Result<HashSet<String>, DbErr> {
    use webhook_event::Column as C;
    let ids: Vec<&str> = event_ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = webhook_event::Entity::find()
        .select_only()
        .column(C::EventId)
        .filter(C::EventId.is_in(ids))
        .into_tuple::<String>()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Runs `script` (the transaction's entity writes), then appends `rows` to the log: increments the
/// one-row counter by their number, then inserts them in one statement, each with its cursor position
/// (the last row gets the counter's new value), and sets each row's `seq` and `position`. Their event
/// ids must be new ([`stored_ids`]); if another transaction stored one of them meanwhile, this fails.
/// On any error the caller rolls back: some of the statements may have run.
///
/// On SQLite the insert reads the counter's new value itself, so the entity writes, the increment and the
/// insert go in one round trip (see `store::script`). On PostgreSQL the entity writes run first (one or
/// two statements, `store::script` again), then the increment, which returns the new value, then the
/// insert, which carries the positions. Reading them inside the insert costs PostgreSQL more than the
/// round trip it saves: a subquery per row on the counter's table did (0.68–0.81× the baseline's ingest
/// rate against 0.88–0.96×), and so did one per row on the increment as a `WITH` query of the insert
/// (0.60–0.87× against 0.76–0.90×, five runs each in turns, 2026-12-03). With `notify` the increment
/// also tells every instance listening (`LISTEN`) that the events up to the last position are
/// committed: PostgreSQL sends the notification on commit, in commit order, and not at all on
/// rollback. The increment does not join the
/// entity writes' statement: PostgreSQL runs a `WITH` query nobody reads after the statement's main
/// query, so the counter would be locked before the entity rows, and a writer waiting for a playback id
/// row another writer holds would hold the counter that writer needs to commit: a deadlock.
///
/// The counter row stays locked until the transaction ends, so positions are gapless and in commit order
/// (see the migration `m20261127_000002_add_log_position`). Call it last, just before the commit. Each row
/// is written once, position included: no update of the log follows.
pub async fn append(
    db: &impl ConnectionTrait,
    mut script: Script,
    rows: Vec<&mut webhook_event::Model>,
    notify: bool,
) -> Result<(), DbErr> {
    use webhook_event::Column as C;
    if rows.is_empty() {
        return script.run(db).await.map(drop);
    }
    let count = i64::try_from(rows.len()).expect("a batch fits in i64");
    let mut counter = Query::update()
        .table(log_position::Entity)
        .value(
            log_position::Column::Last,
            Expr::col(log_position::Column::Last).add(count),
        )
        .and_where(log_position::Column::Id.eq(1))
        .to_owned();
    let missing_counter =
        || DbErr::RecordNotFound("the log_position row (run the migrations)".into());
    let backend = db.get_database_backend();
    let columns: Vec<C> = C::iter().filter(|c| !matches!(c, C::Seq)).collect();
    // The rows, each with its position: `before_last(n)` for the row `n` rows before the last.
    let insert = |before_last: &dyn Fn(i64) -> Expr| {
        let mut insert = Query::insert();
        insert
            .into_table(webhook_event::Entity)
            .columns(columns.clone());
        for (row, n) in rows.iter().zip((0..count).rev()) {
            insert.values_panic(columns.iter().map(|column| match column {
                C::Position => before_last(n),
                column => Expr::val(row.get(*column)),
            }));
        }
        insert
            .on_conflict(OnConflict::column(C::EventId).do_nothing().to_owned())
            .returning(Query::returning().columns([C::Seq, C::EventId, C::Position]));
        insert
    };
    let inserted = if backend == DbBackend::Sqlite {
        script.push(&counter);
        let last = Expr::from(SubQueryStatement::from(
            Query::select()
                .column(log_position::Column::Last)
                .from(log_position::Entity)
                .and_where(log_position::Column::Id.eq(1))
                .to_owned(),
        ));
        script.push(&insert(&|n| last.clone().sub(n)));
        script.run(db).await?
    } else {
        // The counter's own statement, after the entity writes' (see above).
        script.run(db).await?;
        let mut returning = vec![Expr::col(log_position::Column::Last)];
        if notify {
            returning.push(Expr::cust_with_values(
                "pg_notify($1, last::text)",
                [crate::events::relay::CHANNEL],
            ));
        }
        counter.returning(Query::returning().exprs(returning));
        let last: i64 = db
            .query_one_raw(backend.build(&counter))
            .await?
            .ok_or_else(missing_counter)?
            .try_get("", "last")?;
        db.query_all_raw(backend.build(&insert(&|n| Expr::val(last - n))))
            .await?
    };
    let mut stored: HashMap<String, (i64, Option<i64>)> = inserted
        .iter()
        .map(|row| {
            let id = row.try_get("", "event_id")?;
            Ok((id, (row.try_get("", "seq")?, row.try_get("", "position")?)))
        })
        .collect::<Result<_, DbErr>>()?;
    for row in rows {
        let (seq, position) = stored.remove(&row.event_id).ok_or_else(|| {
            DbErr::Custom(format!(
                "event {} was stored by another transaction meanwhile",
                row.event_id
            ))
        })?;
        // On SQLite, a missing counter row reads as NULL.
        position.ok_or_else(missing_counter)?;
        (row.seq, row.position) = (seq, position);
    }
    Ok(())
}

/// Every stored event of an entity, and of its parent stream when given, in order-key order.
pub async fn history(
    db: &impl ConnectionTrait,
    kind: &str,
    id: &str,
    parent: Option<&str>,
) -> Result<Vec<Event>, DbErr> {
    history_until(db, kind, id, parent, None).await
}

/// [`history`] limited, when `position` is given, to the events committed up to that position (another
/// instance may have committed later ones meanwhile).
pub async fn history_until(
    db: &impl ConnectionTrait,
    kind: &str,
    id: &str,
    parent: Option<&str>,
    position: Option<i64>,
) -> Result<Vec<Event>, DbErr> {
    use webhook_event::Column as C;
    // The same condition as `in_history`.
    let mut condition = C::EntityKind.eq(kind).and(C::EntityId.eq(id));
    if let Some(parent) = parent {
        condition = condition.or(C::EntityKind.eq("live_stream").and(C::EntityId.eq(parent)));
    }
    if let Some(position) = position {
        condition = condition.and(C::Position.lte(position));
    }
    let rows = webhook_event::Entity::find()
        .filter(condition)
        .order_by_asc(C::OrderNs)
        .order_by_asc(C::EventId)
        .all(db)
        .await?;
    let mut history: Vec<Event> = rows.iter().filter_map(to_event).collect();
    in_key_order(&mut history, |event| &event.key);
    Ok(history)
}

/// Whether `row` is part of the [`history`] of `kind`/`id` (with `parent`): the query's condition, for
/// events not in the log yet.
pub fn in_history(row: &webhook_event::Model, kind: &str, id: &str, parent: Option<&str>) -> bool {
    let (Some(row_kind), Some(row_id)) = (&row.entity_kind, &row.entity_id) else {
        return false;
    };
    (row_kind == kind && row_id == id)
        || parent.is_some_and(|parent| row_kind == "live_stream" && row_id == parent)
}

/// Sorts by order key as the code compares keys: the database's order of `event_id` follows its
/// collation, which may differ from byte order when two events share a nanosecond. The query's `ORDER BY`
/// leaves the list almost sorted, so this costs little.
pub fn in_key_order<T>(list: &mut [T], key: impl Fn(&T) -> &OrderKey) {
    list.sort_by(|a, b| key(a).cmp(key(b)));
}

/// Rebuilds an [`Event`] from a stored row (payloads are re-parsed with the current code).
pub fn to_event(row: &webhook_event::Model) -> Option<Event> {
    let envelope = Envelope::parse(row.payload.as_bytes()).ok()?;
    Some(Event {
        envelope,
        key: OrderKey {
            ns: row.order_ns,
            id: row.event_id.clone(),
        },
    })
}

/// For tests: a row of the log for event `event_id`, of no entity, not stored yet.
#[cfg(test)]
pub(crate) fn test_row(event_id: &str) -> webhook_event::Model {
    webhook_event::Model {
        seq: 0,
        position: None,
        event_id: event_id.to_owned(),
        event_type: "video.media.updated".to_owned(),
        object_type: None,
        object_id: None,
        entity_kind: None,
        entity_id: None,
        parent_id: None,
        occurred_at_ns: None,
        order_ns: 1,
        received_at_ns: 1,
        outcome: "applied".to_owned(),
        reason: None,
        payload: "{}".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use entity::playback_id;
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

    use crate::db::connect_and_migrate;
    use crate::db::scratch::{ScratchDb, postgres_url};
    use crate::store::entities;
    use crate::store::script::Script;

    /// On PostgreSQL the log's counter is locked after the entity writes: a writer that waits for a
    /// playback id row another transaction holds does not hold the counter meanwhile. (Were it to, and
    /// that transaction to want the counter next, as another writer does before its commit, PostgreSQL
    /// would find a deadlock after `deadlock_timeout`, 1 s by default, and abort one of them.)
    #[tokio::test]
    async fn on_postgres_the_counter_is_locked_after_the_entity_writes() {
        let Some(admin_url) = postgres_url() else {
            return;
        };
        let scratch = ScratchDb::create(&admin_url, "fastpix_sync_test_lock_order").await;
        let (admin, name) = (&scratch.admin, &scratch.name);
        let db = connect_and_migrate(&scratch.url).await.unwrap();
        let raw = |sql: &str| Statement::from_string(DbBackend::Postgres, sql);
        db.execute_raw(raw(
            "INSERT INTO playback_id (id, media_id, access_policy, position) VALUES ('p', 'a', 'public', 0)",
        ))
        .await
        .unwrap();

        // Another transaction holds the playback id's row.
        let other = db.begin().await.unwrap();
        other
            .execute_raw(raw("UPDATE playback_id SET position = 1 WHERE id = 'p'"))
            .await
            .unwrap();
        // A writer moves the playback id to another media, then appends its event: it waits for the row.
        let writer = tokio::spawn({
            let db = db.clone();
            async move {
                let txn = db.begin().await?;
                let mut script = Script::new(DbBackend::Postgres);
                entities::upsert::<playback_id::Entity>(
                    &mut script,
                    vec![playback_id::Model {
                        id: "p".to_owned(),
                        media_id: Some("b".to_owned()),
                        live_stream_id: None,
                        access_policy: "public".to_owned(),
                        position: 0,
                    }],
                );
                let mut row = super::test_row("e");
                super::append(&txn, script, vec![&mut row], false).await?;
                txn.commit().await?;
                Ok::<_, sea_orm::DbErr>(row.position)
            }
        });
        let waiting = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' AND wait_event_type = 'Lock'"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let row = admin.query_one_raw(raw(&waiting)).await.unwrap().unwrap();
            if row.try_get_by_index::<i64>(0).unwrap() > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the writer never waited for the row"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The other transaction takes the counter, as a writer does last, and gets it at once.
        other
            .execute_raw(raw("SET LOCAL lock_timeout = '500ms'"))
            .await
            .unwrap();
        let counter = other
            .execute_raw(raw("UPDATE log_position SET last = last WHERE id = 1"))
            .await;
        other.commit().await.unwrap();
        let position = writer.await.unwrap().unwrap();
        db.close().await.unwrap();
        scratch.remove().await;
        counter.expect("the counter is free while the writer waits for the playback id row");
        assert_eq!(position, Some(1));
    }
}
