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
/// insert go in one round trip (see `store::script`). On PostgreSQL the increment returns the new value
/// (it runs in one statement with the entity writes, `store::script` again) and the insert carries the
/// positions (a subquery per row there costs more CPU than the round trip
/// it saves), and with `notify` the increment also tells every instance listening (`LISTEN`) that the
/// events up to the last position are committed: PostgreSQL sends the notification on commit, in commit
/// order, and not at all on rollback.
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
    let (mut script, positions) = if backend == DbBackend::Sqlite {
        script.push(&counter);
        let last = Query::select()
            .column(log_position::Column::Last)
            .from(log_position::Entity)
            .and_where(log_position::Column::Id.eq(1))
            .to_owned();
        (
            script,
            Positions::ReadByInsert(Expr::from(SubQueryStatement::from(last))),
        )
    } else {
        let mut returning = vec![Expr::col(log_position::Column::Last)];
        if notify {
            returning.push(Expr::cust_with_values(
                "pg_notify($1, last::text)",
                [crate::events::relay::CHANNEL],
            ));
        }
        counter.returning(Query::returning().exprs(returning));
        script.push(&counter);
        let last: i64 = script
            .run(db)
            .await?
            .first()
            .ok_or_else(missing_counter)?
            .try_get("", "last")?;
        (Script::new(backend), Positions::Known(last))
    };
    let columns: Vec<C> = C::iter().filter(|c| !matches!(c, C::Seq)).collect();
    let mut insert = Query::insert();
    insert
        .into_table(webhook_event::Entity)
        .columns(columns.clone());
    for (row, before_last) in rows.iter().zip((0..count).rev()) {
        insert.values_panic(columns.iter().map(|column| match column {
            C::Position => positions.before_last(before_last),
            column => Expr::val(row.get(*column)),
        }));
    }
    insert
        .on_conflict(OnConflict::column(C::EventId).do_nothing().to_owned())
        .returning(Query::returning().columns([C::Seq, C::EventId, C::Position]));
    script.push(&insert);
    let mut stored: HashMap<String, (i64, Option<i64>)> = script
        .run(db)
        .await?
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

/// Where the events' positions come from: the counter's new value read inside the insert (SQLite), or
/// returned by the increment before it (PostgreSQL).
enum Positions {
    /// The subquery that reads the counter.
    ReadByInsert(Expr),
    Known(i64),
}

impl Positions {
    /// The position of the row `n` rows before the batch's last.
    fn before_last(&self, n: i64) -> Expr {
        match self {
            Self::ReadByInsert(last) => last.clone().sub(n),
            Self::Known(last) => Expr::val(last - n),
        }
    }
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
