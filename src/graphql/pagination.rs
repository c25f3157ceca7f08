//! Opaque cursors for Relay connections. A cursor names its list and a position in it (the sort key of the
//! last row seen), so the next page is a keyset query: rows inserted meanwhile never shift a page.

use async_graphql::Result;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::errors::bad_input;

/// Largest page; larger `first` values are capped to it.
pub const MAX_PAGE: i32 = 100;

/// The page size when `first` is not given, or given as `null`.
pub const DEFAULT_PAGE: i32 = 20;

/// The page size to fetch for a `first` argument (`null` is the default, as when it is left out).
pub fn page_size(first: Option<i32>) -> Result<u64> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    if first < 0 {
        return Err(bad_input("`first` must not be negative"));
    }
    Ok(u64::try_from(first.min(MAX_PAGE)).unwrap_or(0))
}

/// A list field's query complexity: its page size (at least 1) times a node's.
pub fn page_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    let rows = first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    usize::try_from(rows).unwrap_or(1) * child_complexity
}

/// A position in a list sorted by `(sort, id)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub sort: i64,
    pub id: String,
}

pub fn encode(list: &str, position: &Position) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}:{}:{}", position.sort, position.id))
}

/// Reads a cursor of `list`; a cursor of another list, or a malformed one, is `BAD_USER_INPUT`.
pub fn decode(list: &str, cursor: &str) -> Result<Position> {
    let invalid = || bad_input(format!("`after` is not a cursor of this {list} list"));
    let text = String::from_utf8(
        URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .map_err(|_| invalid())?,
    )
    .map_err(|_| invalid())?;
    let mut parts = text.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(sort), Some(id)) if kind == list => Ok(Position {
            sort: sort.parse().map_err(|_| invalid())?,
            id: id.to_owned(),
        }),
        _ => Err(invalid()),
    }
}

/// The cursor of an event in the log: its position.
pub fn event_cursor(position: i64) -> String {
    encode(
        "webhookEvent",
        &Position {
            sort: position,
            id: String::new(),
        },
    )
}

pub fn decode_event_cursor(cursor: &str) -> Result<i64> {
    decode("webhookEvent", cursor).map(|p| p.sort)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_lists() {
        let position = Position {
            sort: 42,
            id: "a:b".into(),
        };
        let cursor = encode("media", &position);
        assert_eq!(decode("media", &cursor).unwrap(), position);
        assert!(decode("liveStream", &cursor).is_err());
        assert!(decode("media", "%%%").is_err());
        assert_eq!(decode_event_cursor(&event_cursor(7)).unwrap(), 7);
    }
}
