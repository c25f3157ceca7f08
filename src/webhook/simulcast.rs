//! How simulcast target events, and their parent stream's events, move a simulcast target (SPEC §3).
//!
//! FastPix's simulcast object has no status field, only `isEnabled`: the status is derived from the event
//! type (`fastpix-webhooks.md` §2.3). The parent stream's events matter too: `idle` puts every target back
//! to `IDLE`, and `data.simulcastResponses` carries target configuration (never status).

use entity::simulcast_target;
use serde_json::Value;

use super::event::{EntityRef, Event, LIVE_STREAM_TYPES, Resolution, resolve};
use super::fields::{self, set_bool, set_json};

pub type TargetState = simulcast_target::Model;

pub const STATUSES: [&str; 4] = ["IDLE", "STARTING", "BROADCASTING", "DELETED"];

/// The target `id` as its own events and its parent stream's, in order-key order, make it. Each target
/// event names its parent; the stream's events are about `parent`.
pub fn fold(id: &str, parent: &str, history: &[Event]) -> Option<TargetState> {
    history.iter().fold(None, |state, event| {
        let parent = match resolve(&event.envelope) {
            Resolution::Entity(EntityRef::SimulcastTarget { parent, .. }) => parent,
            _ => parent.to_owned(),
        };
        step(state.as_ref(), id, &parent, event).or(state)
    })
}

/// Applies `event` (a target event, or an event of the parent stream) to target `id`.
/// `None` when the event does not concern this target.
pub fn step(
    prior: Option<&TargetState>,
    id: &str,
    parent: &str,
    event: &Event,
) -> Option<TargetState> {
    if prior.is_some_and(|p| p.status == "DELETED") {
        return None;
    }
    let data = &event.envelope.data;
    let from_parent = LIVE_STREAM_TYPES.contains(&event.event_type());
    let (config, status) = if from_parent {
        let entry = listed_targets(data)
            .find(|entry| fields::text(entry, &["simulcastId"]).as_deref() == Some(id));
        let reset = event.verb() == "idle" && (prior.is_some() || entry.is_some());
        if entry.is_none() && !reset {
            return None;
        }
        (entry, reset.then_some("IDLE"))
    } else {
        let status = match event.verb() {
            "starting" => "STARTING",
            "broadcasting" => "BROADCASTING",
            "deleted" => "DELETED",
            _ => "IDLE",
        };
        (Some(data), Some(status))
    };
    let mut target = prior
        .cloned()
        .unwrap_or_else(|| new_target(id, parent, event));
    if let Some(config) = config {
        apply_config(&mut target, config);
    }
    if let Some(status) = status {
        target.status = status.to_owned();
    }
    if !from_parent {
        target.live_stream_id = parent.to_owned();
    }
    target.last_event_type = event.event_type().to_owned();
    target.last_event_ns = event.key.ns;
    target.last_event_id = event.key.id.clone();
    Some(target)
}

/// The targets configured in a stream payload's `simulcastResponses`.
pub fn listed_targets(data: &Value) -> impl Iterator<Item = &Value> {
    data.get("simulcastResponses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn new_target(id: &str, parent: &str, event: &Event) -> TargetState {
    simulcast_target::Model {
        id: id.to_owned(),
        live_stream_id: parent.to_owned(),
        status: "IDLE".to_owned(),
        is_enabled: None,
        metadata: None,
        url: None,
        stream_key: None,
        sort_ns: event.key.ns,
        last_event_type: String::new(),
        last_event_ns: event.key.ns,
        last_event_id: String::new(),
    }
}

/// Configuration fields. The full URL is `rtmpUrl` when sent, else `url` followed by the stream key.
fn apply_config(target: &mut TargetState, data: &Value) {
    set_bool(&mut target.is_enabled, data, &["isEnabled"]);
    set_json(&mut target.metadata, data, &["metadata"]);
    if let Some(key) = fields::text(data, &["streamKey"]) {
        target.stream_key = Some(key);
    }
    let full = fields::text(data, &["rtmpUrl"]).or_else(|| {
        fields::text(data, &["url"]).map(|url| match &target.stream_key {
            Some(key) if !url.ends_with(key.as_str()) => format!("{url}{key}"),
            _ => url,
        })
    });
    if let Some(url) = full {
        target.url = Some(url);
    }
}
