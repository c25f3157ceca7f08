//! The event vocabulary: which entity an event moves and in which order events apply.

use super::envelope::Envelope;
use super::fields::text;

/// Events apply in this order per entity: `(createdAt at nanosecond precision, event id)` (SPEC §3).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderKey {
    pub ns: i64,
    pub id: String,
}

/// A stored or incoming event: its envelope and its order key.
#[derive(Clone, Debug)]
pub struct Event {
    pub envelope: Envelope,
    pub key: OrderKey,
}

impl Event {
    pub fn event_type(&self) -> &str {
        &self.envelope.event_type
    }

    /// The part of the type after `prefix`, e.g. `ready` for `video.media.ready` with prefix `video.media.`.
    pub fn verb(&self) -> &str {
        let t = self.event_type();
        t.rsplit_once('.').map_or(t, |(_, verb)| verb)
    }
}

/// The entity an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntityRef {
    Media(String),
    LiveStream(String),
    SimulcastTarget { id: String, parent: String },
}

impl EntityRef {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Media(_) => "media",
            Self::LiveStream(_) => "live_stream",
            Self::SimulcastTarget { .. } => "simulcast_target",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::Media(id) | Self::LiveStream(id) | Self::SimulcastTarget { id, .. } => id,
        }
    }

    pub fn parent(&self) -> Option<&str> {
        match self {
            Self::SimulcastTarget { parent, .. } => Some(parent),
            _ => None,
        }
    }
}

/// What an event means for the entity tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// A modelled event type about this entity.
    Entity(EntityRef),
    /// A type this version does not model (track, AI, transform events…): stored as `ignored`.
    Unknown,
    /// A modelled type whose entity cannot be resolved: stored as `rejected` with this reason.
    Unusable(String),
}

pub const MEDIA_TYPES: [&str; 8] = [
    "video.media.upload",
    "video.upload.media_created",
    "video.media.created",
    "video.media.updated",
    "video.media.ready",
    "video.media.failed",
    "video.media.deleted",
    "video.media.live_stream.created",
];

pub const LIVE_STREAM_TYPES: [&str; 10] = [
    "video.live_stream.created",
    "video.live_stream.preparing",
    "video.live_stream.connected",
    "video.live_stream.recording",
    "video.live_stream.active",
    "video.live_stream.disconnected",
    "video.live_stream.idle",
    "video.live_stream.updated",
    "video.live_stream.deleted",
    "video.live_stream.disabled",
];

pub const SIMULCAST_TYPES: [&str; 5] = [
    "video.live_stream.simulcast_target.created",
    "video.live_stream.simulcast_target.starting",
    "video.live_stream.simulcast_target.broadcasting",
    "video.live_stream.simulcast_target.updated",
    "video.live_stream.simulcast_target.deleted",
];

/// Resolves the entity of an event (SPEC §3 "Entities and the events that move them").
pub fn resolve(envelope: &Envelope) -> Resolution {
    let t = envelope.event_type.as_str();
    let data = &envelope.data;
    let object_id = envelope
        .object_id
        .clone()
        .filter(|id| !id.trim().is_empty());
    if MEDIA_TYPES.contains(&t) {
        let id = match t {
            "video.media.upload" => text(data, &["uploadId", "id"]).or(object_id),
            "video.media.live_stream.created" => text(data, &["id"]).or(object_id),
            _ => object_id.or_else(|| text(data, &["id"])),
        };
        return id.map_or_else(
            || Resolution::Unusable("no media id in object.id or data.id".into()),
            |id| Resolution::Entity(EntityRef::Media(id)),
        );
    }
    if LIVE_STREAM_TYPES.contains(&t) {
        return text(data, &["streamId"]).or(object_id).map_or_else(
            || Resolution::Unusable("no stream id in data.streamId or object.id".into()),
            |id| Resolution::Entity(EntityRef::LiveStream(id)),
        );
    }
    if SIMULCAST_TYPES.contains(&t) {
        let parent = text(data, &["livestreamId", "liveStreamId", "streamId"]).or(object_id);
        let id = text(data, &["simulcastId"]).or_else(|| only_simulcast_response(data));
        return match (id, parent) {
            (Some(id), Some(parent)) => Resolution::Entity(EntityRef::SimulcastTarget { id, parent }),
            (None, _) => Resolution::Unusable(
                "no simulcast target id in data.simulcastId or a single data.simulcastResponses entry".into(),
            ),
            (Some(_), None) => Resolution::Unusable(
                "no parent stream id in data.livestreamId, data.streamId or object.id".into(),
            ),
        };
    }
    Resolution::Unknown
}

/// Payloads typed as a live-stream DTO name their target only inside `simulcastResponses`.
fn only_simulcast_response(data: &serde_json::Value) -> Option<String> {
    match data.get("simulcastResponses")?.as_array()?.as_slice() {
        [only] => text(only, &["simulcastId"]),
        _ => None,
    }
}
