//! How live stream events move a live stream (SPEC §3, live streams).

use entity::live_stream;
use serde_json::Value;

use super::event::Event;
use super::fields::{
    self, WithPlaybackIds, screaming, set_bool, set_i32, set_json, set_str, set_time,
};

/// A live stream row and its playback ids, as one unit of state.
pub type LiveState = WithPlaybackIds<live_stream::Model>;

pub const STATUSES: [&str; 5] = ["IDLE", "PREPARING", "ACTIVE", "DISABLED", "DELETED"];

/// The stream `id` as its events, in order-key order, make it (`None` without events).
pub fn fold(id: &str, history: &[Event]) -> Option<LiveState> {
    history
        .iter()
        .fold(None, |state, event| Some(step(state.as_ref(), id, event)))
}

/// Applies `event` to the stream `id` whose state was `prior`. A deleted stream stays deleted.
pub fn step(prior: Option<&LiveState>, id: &str, event: &Event) -> LiveState {
    if let Some(prior) = prior.filter(|p| p.row.status == "DELETED") {
        return prior.clone();
    }
    let mut state = prior.cloned().unwrap_or_else(|| new_state(id, event));
    let data = &event.envelope.data;
    apply_fields(&mut state.row, data);
    if let Some(playback_ids) = fields::playback_ids(data) {
        state.playback_ids = playback_ids;
    }
    let row = &mut state.row;
    let verb = event.verb();
    if verb == "deleted" {
        row.status = "DELETED".to_owned();
        row.deleted_at_ns = Some(event.key.ns);
    } else if let Some(status) = fields::text(data, &["status"])
        .map(|s| screaming(&s))
        .filter(|s| STATUSES.contains(&s.as_str()) && s != "DELETED")
    {
        row.status = status;
    }
    // The two flags come from the event type: `data.status` does not carry them.
    match verb {
        "connected" => row.encoder_connected = true,
        "recording" => (row.encoder_connected, row.recording) = (true, true),
        "active" => {
            row.encoder_connected = true;
            row.recording = row.enable_recording == Some(true);
        }
        "disconnected" | "idle" | "disabled" | "deleted" => {
            (row.encoder_connected, row.recording) = (false, false);
        }
        _ => {}
    }
    if let Some(created) = row.created_at_ns {
        row.sort_ns = created;
    }
    row.last_event_type = event.event_type().to_owned();
    row.last_event_ns = event.key.ns;
    row.last_event_id = event.key.id.clone();
    state
}

fn new_state(id: &str, event: &Event) -> LiveState {
    LiveState {
        row: live_stream::Model {
            id: id.to_owned(),
            status: "IDLE".to_owned(),
            encoder_connected: false,
            recording: false,
            max_resolution: None,
            reconnect_window_seconds: None,
            max_duration_seconds: None,
            enable_recording: None,
            low_latency: None,
            media_policy: None,
            metadata: None,
            trial: None,
            stream_key: None,
            srt_secret: None,
            created_at_ns: None,
            deleted_at_ns: None,
            sort_ns: event.key.ns,
            last_event_type: String::new(),
            last_event_ns: event.key.ns,
            last_event_id: String::new(),
        },
        playback_ids: Vec::new(),
    }
}

fn apply_fields(row: &mut live_stream::Model, data: &Value) {
    set_str(&mut row.max_resolution, data, &["maxResolution"]);
    set_i32(
        &mut row.reconnect_window_seconds,
        data,
        &["reconnectWindow"],
    );
    set_i32(&mut row.max_duration_seconds, data, &["maxDuration"]);
    set_bool(&mut row.enable_recording, data, &["enableRecording"]);
    set_bool(&mut row.low_latency, data, &["lowLatency"]);
    set_str(&mut row.media_policy, data, &["mediaPolicy", "mediapolicy"]);
    set_json(&mut row.metadata, data, &["metadata"]);
    set_bool(&mut row.trial, data, &["trial", "dataTrail", "test"]);
    set_str(&mut row.stream_key, data, &["streamKey"]);
    set_str(&mut row.srt_secret, data, &["srtSecret", "srtSecert"]);
    set_time(&mut row.created_at_ns, data, &["createdAt"]);
}
