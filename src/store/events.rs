//! The event log (`webhook_event`).

use std::collections::{HashMap, HashSet};

use entity::{log_position, webhook_event};
use sea_orm::sea_query::ExprTrait;
use sea_orm::sea_query::{CaseStatement, Expr, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QueryTrait, Statement,
};

use crate::webhook::envelope::Envelope;
use crate::webhook::event::{Event, OrderKey};

/// Stores, in one statement, the rows whose event id is not stored yet (their `seq` and `position` are
/// ignored; of rows sharing an event id, the first). Returns the `seq` of each row stored, by event id: a
/// row missing from it is a duplicate delivery.
pub async fn insert_new<'r>(
    db: &impl ConnectionTrait,
    rows: impl IntoIterator<Item = &'r webhook_event::Model>,
) -> Result<HashMap<String, i64>, DbErr> {
    use webhook_event::Column as C;
    let mut ids = HashSet::new();
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|row| ids.insert(row.event_id.as_str()))
        .map(|row| {
            let mut active = row.clone().into_active_model().reset_all();
            active.seq = NotSet;
            active.position = Set(None);
            active
        })
        .collect();
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let mut insert = webhook_event::Entity::insert_many(rows)
        .on_conflict(OnConflict::column(C::EventId).do_nothing().to_owned())
        .into_query();
    insert.returning(Query::returning().columns([C::Seq, C::EventId]));
    db.query_all(&insert)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("", "event_id")?, row.try_get("", "seq")?)))
        .collect()
}

/// Gives the events stored in this transaction (`seqs`, in the order they were stored) their cursor
/// positions: the next numbers of the one-row counter, in that order, with one increment of the counter.
/// Returns the first position. The counter row stays locked until the transaction ends, so positions are
/// gapless and in commit order (see the migration `m20261127_000002_add_log_position`). Call it last, just
/// before the commit.
pub async fn assign_positions(db: &impl ConnectionTrait, seqs: &[i64]) -> Result<i64, DbErr> {
    use log_position::Column as C;
    let count = i64::try_from(seqs.len()).expect("a batch fits in i64");
    let counter = log_position::Entity::update_many()
        .col_expr(C::Last, Expr::col(C::Last).add(count))
        .filter(C::Id.eq(1))
        .exec_with_returning(db)
        .await?;
    let last = counter
        .first()
        .ok_or_else(|| DbErr::RecordNotFound("the log_position row (run the migrations)".into()))?
        .last;
    let first = last - count + 1;
    let positions = seqs
        .iter()
        .zip(first..)
        .fold(CaseStatement::new(), |case, (&seq, position)| {
            case.case(webhook_event::Column::Seq.eq(seq), position)
        });
    webhook_event::Entity::update_many()
        .col_expr(webhook_event::Column::Position, positions.into())
        .filter(webhook_event::Column::Seq.is_in(seqs.iter().copied()))
        .exec(db)
        .await?;
    Ok(first)
}

/// Tells every instance listening (PostgreSQL `LISTEN`) that the event at `position` is committed: the
/// notification is sent on commit, in commit order, and not at all on rollback.
pub async fn notify(db: &impl ConnectionTrait, position: i64) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [
            crate::events::relay::CHANNEL.into(),
            position.to_string().into(),
        ],
    ))
    .await
    .map(drop)
}

/// Records the outcome decided after applying, for the events `seqs`: one statement.
pub async fn set_outcome(
    db: &impl ConnectionTrait,
    seqs: Vec<i64>,
    outcome: &str,
    reason: Option<&str>,
) -> Result<(), DbErr> {
    if seqs.is_empty() {
        return Ok(());
    }
    webhook_event::Entity::update_many()
        .col_expr(webhook_event::Column::Outcome, outcome.into())
        .col_expr(
            webhook_event::Column::Reason,
            reason.map(str::to_owned).into(),
        )
        .filter(webhook_event::Column::Seq.is_in(seqs))
        .exec(db)
        .await
        .map(drop)
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

/// [`history`] limited, when `position` is given, to the events committed up to that position. (Without
/// it, the history includes the event being applied in this transaction, which has no position yet.)
pub async fn history_until(
    db: &impl ConnectionTrait,
    kind: &str,
    id: &str,
    parent: Option<&str>,
    position: Option<i64>,
) -> Result<Vec<Event>, DbErr> {
    use webhook_event::Column as C;
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
    Ok(rows.iter().filter_map(to_event).collect())
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
