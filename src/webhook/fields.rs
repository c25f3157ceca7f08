//! Reading fields out of a free-form `data` object. A key that is present overwrites (JSON `null` clears);
//! a key that is absent leaves the stored value alone.

use serde_json::Value;

/// The first of `keys` present in `data`.
pub fn get<'a>(data: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|key| data.get(*key))
}

/// Overwrites `slot` with a string field when present.
pub fn set_str(slot: &mut Option<String>, data: &Value, keys: &[&str]) {
    if let Some(value) = get(data, keys) {
        *slot = value.as_str().map(str::to_owned);
    }
}

pub fn set_bool(slot: &mut Option<bool>, data: &Value, keys: &[&str]) {
    if let Some(value) = get(data, keys) {
        *slot = value.as_bool();
    }
}

pub fn set_i32(slot: &mut Option<i32>, data: &Value, keys: &[&str]) {
    if let Some(value) = get(data, keys) {
        *slot = value.as_i64().and_then(|n| i32::try_from(n).ok());
    }
}

/// Overwrites `slot` with a JSON object or array when present (`null` clears).
pub fn set_json(slot: &mut Option<Value>, data: &Value, keys: &[&str]) {
    if let Some(value) = get(data, keys) {
        *slot = (!value.is_null()).then(|| value.clone());
    }
}

/// Overwrites `slot` with an RFC 3339 time (in nanoseconds) when present.
pub fn set_time(slot: &mut Option<i64>, data: &Value, keys: &[&str]) {
    if let Some(value) = get(data, keys) {
        *slot = value.as_str().and_then(super::time::parse_rfc3339_ns);
    }
}

/// A non-empty string field.
pub fn text(data: &Value, keys: &[&str]) -> Option<String> {
    get(data, keys)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A duration in seconds from `"HH:MM:SS[.fff]"` (what FastPix sends) or a plain number (older docs).
pub fn duration_seconds(value: &Value) -> Option<f64> {
    if let Some(seconds) = value.as_f64() {
        return Some(seconds);
    }
    let text = value.as_str()?.trim();
    let mut total = 0.0;
    for part in text.split(':') {
        total = total * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(total)
}

/// A status as an enum name: `"In Queue"` → `IN_QUEUE`, `"ready"` → `READY`.
pub fn screaming(status: &str) -> String {
    status
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// A playback id as stored: id and access policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Playback {
    pub id: String,
    pub access_policy: String,
}

/// A row and its playback ids, as one unit of state: a media ([`super::media::MediaState`]) or a live
/// stream ([`super::live::LiveState`]).
#[derive(Clone, Debug, PartialEq)]
pub struct WithPlaybackIds<R> {
    pub row: R,
    pub playback_ids: Vec<Playback>,
}

/// The playback ids an event carries (`playbackIds|playback_ids`), or `None` when it carries none
/// (then the stored set is left alone). Entries without an id (upload settings) do not count.
pub fn playback_ids(data: &Value) -> Option<Vec<Playback>> {
    let list: Vec<Playback> = get(data, &["playbackIds", "playback_ids"])?
        .as_array()?
        .iter()
        .filter_map(|entry| {
            Some(Playback {
                id: text(entry, &["id"])?,
                access_policy: text(entry, &["accessPolicy", "access_policy"])
                    .unwrap_or_else(|| "public".to_owned()),
            })
        })
        .collect();
    (!list.is_empty()).then_some(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_parse_in_both_shapes() {
        assert_eq!(duration_seconds(&json!("00:03:03")), Some(183.0));
        assert_eq!(duration_seconds(&json!("01:00:00.5")), Some(3600.5));
        assert_eq!(duration_seconds(&json!(12.25)), Some(12.25));
        assert_eq!(duration_seconds(&json!("soon")), None);
    }

    #[test]
    fn statuses_become_enum_names() {
        assert_eq!(screaming("In Queue"), "IN_QUEUE");
        assert_eq!(screaming("ready"), "READY");
    }

    #[test]
    fn absent_fields_leave_values_and_null_clears() {
        let mut title = Some("kept".to_owned());
        set_str(&mut title, &json!({}), &["title"]);
        assert_eq!(title.as_deref(), Some("kept"));
        set_str(&mut title, &json!({"title": null}), &["title"]);
        assert_eq!(title, None);
    }

    #[test]
    fn playback_ids_without_ids_do_not_count() {
        assert_eq!(
            playback_ids(&json!({"playbackIds": [{"accessPolicy": "public"}]})),
            None
        );
        assert_eq!(
            playback_ids(&json!({"playback_ids": [{"id": "p", "accessPolicy": "private"}]})),
            Some(vec![Playback {
                id: "p".into(),
                access_policy: "private".into()
            }])
        );
    }
}
