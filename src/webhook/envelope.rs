//! Tolerant parsing of the delivery envelope (SPEC §3 step 4; `fastpix-webhooks.md` §1.2 lists the variants):
//! `workspace|Workspace|environment`, `createdAt|created_at`, `object.type|object.name`; extra fields ignored.
//! The raw bytes are kept untouched in the event log; this is only a typed view of them.

use serde_json::{Map, Value};

use super::time::parse_rfc3339_ns;

/// What a body turned out to be before any signature check: FastPix's endpoint probe or an event.
pub enum Body {
    /// Empty, `{}`, or a JSON object without `id` or `type`: answered 200 `ping`, nothing stored.
    Probe,
    /// Anything else, to be verified and then read by [`Envelope::from_parsed`]. The body is parsed once:
    /// here, as JSON (or the reason it is not).
    Delivery(Parsed),
}

/// A body parsed as JSON, or why it is not JSON.
pub type Parsed = Result<Value, serde_json::Error>;

/// Classifies a raw body (SPEC §3 step 2).
pub fn classify(raw: &[u8]) -> Body {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Body::Probe;
    }
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) if !has_string(&map, "id") || !has_string(&map, "type") => {
            Body::Probe
        }
        parsed => Body::Delivery(parsed),
    }
}

fn has_string(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// The envelope fields fastpix-sync uses. `data` stays free-form JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// FastPix event id: the idempotency key.
    pub id: String,
    pub event_type: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub workspace_id: Option<String>,
    /// `createdAt` in nanoseconds since the epoch, when present and readable.
    pub occurred_at_ns: Option<i64>,
    pub data: Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is JSON but not an object")]
    NotAnObject,
}

impl Envelope {
    /// Parses a verified body. A JSON object always parses (a probe-shaped one was answered earlier).
    pub fn parse(raw: &[u8]) -> Result<Self, EnvelopeError> {
        Self::from_parsed(serde_json::from_slice(raw))
    }

    /// Reads a verified body that [`classify`] parsed.
    pub fn from_parsed(parsed: Parsed) -> Result<Self, EnvelopeError> {
        match parsed {
            Ok(Value::Object(map)) => Ok(Self::from_map(map)),
            Ok(_) => Err(EnvelopeError::NotAnObject),
            Err(e) => Err(EnvelopeError::NotJson(e.to_string())),
        }
    }

    fn from_map(mut map: Map<String, Value>) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let object = map.get("object");
        let object_type = text(object.and_then(|o| o.get("type")))
            .or_else(|| text(object.and_then(|o| o.get("name"))));
        let object_id = text(object.and_then(|o| o.get("id")));
        let workspace_id = ["workspace", "Workspace", "environment"]
            .iter()
            .find_map(|key| text(map.get(*key).and_then(|w| w.get("id"))));
        let occurred_at_ns = ["createdAt", "created_at"].iter().find_map(|key| {
            map.get(*key)
                .and_then(Value::as_str)
                .and_then(parse_rfc3339_ns)
        });
        Self {
            id: text(map.get("id")).unwrap_or_default(),
            event_type: text(map.get("type")).unwrap_or_default(),
            object_type,
            object_id,
            workspace_id,
            occurred_at_ns,
            data: map.remove("data").unwrap_or(Value::Null),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_recognised() {
        for body in [
            "",
            "  \n",
            "{}",
            r#"{"id":"x"}"#,
            r#"{"type":"video.media.ready"}"#,
        ] {
            assert!(matches!(classify(body.as_bytes()), Body::Probe), "{body:?}");
        }
        for body in ["not json", "[1]", r#"{"id":"x","type":"t"}"#] {
            let Body::Delivery(parsed) = classify(body.as_bytes()) else {
                panic!("{body:?} is a delivery");
            };
            // What classify parsed is what parsing the body again gives.
            assert_eq!(
                Envelope::from_parsed(parsed),
                Envelope::parse(body.as_bytes()),
                "{body:?}"
            );
        }
    }

    #[test]
    fn spelling_variants_are_accepted() {
        let raw =
            br#"{"id":"e1","type":"video.live_stream.idle","object":{"name":"live","id":"s1"},
            "environment":{"id":"w1"},"created_at":"2026-05-11T20:42:16.361817248Z","extra":1}"#;
        let envelope = Envelope::parse(raw).unwrap();
        assert_eq!(envelope.object_type.as_deref(), Some("live"));
        assert_eq!(envelope.object_id.as_deref(), Some("s1"));
        assert_eq!(envelope.workspace_id.as_deref(), Some("w1"));
        assert_eq!(envelope.occurred_at_ns, Some(1_778_532_136_361_817_248));
        assert_eq!(envelope.data, Value::Null);
    }

    #[test]
    fn non_objects_are_errors() {
        assert_eq!(
            Envelope::parse(b"[1]").unwrap_err(),
            EnvelopeError::NotAnObject
        );
        assert!(matches!(
            Envelope::parse(b"nope"),
            Err(EnvelopeError::NotJson(_))
        ));
    }
}
