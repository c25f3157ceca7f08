//! How media events move a media (SPEC §3, media table).

use entity::media;
use serde_json::Value;

use super::event::Event;
use super::fields::{self, WithPlaybackIds, screaming, set_bool, set_json, set_str, set_time};

/// A media row and its playback ids, as one unit of state.
pub type MediaState = WithPlaybackIds<media::Model>;

pub const STATUSES: [&str; 10] = [
    "AWAITING_UPLOAD",
    "CREATED",
    "DOWNLOADING",
    "DOWNLOADED",
    "VALIDATING",
    "IN_QUEUE",
    "PROCESSING",
    "READY",
    "FAILED",
    "DELETED",
];

/// Statuses before `READY`: a `READY` media never goes back to one of these.
const PROCESSING: [&str; 7] = [
    "AWAITING_UPLOAD",
    "CREATED",
    "DOWNLOADING",
    "DOWNLOADED",
    "VALIDATING",
    "IN_QUEUE",
    "PROCESSING",
];

/// The media `id` as its events, in order-key order, make it (`None` without events).
pub fn fold(id: &str, history: &[Event]) -> Option<MediaState> {
    history
        .iter()
        .fold(None, |state, event| Some(step(state.as_ref(), id, event)))
}

/// Applies `event` to the media `id` whose state was `prior`. A deleted media stays deleted.
pub fn step(prior: Option<&MediaState>, id: &str, event: &Event) -> MediaState {
    if let Some(prior) = prior.filter(|p| p.row.status == "DELETED") {
        return prior.clone();
    }
    let mut state = prior.cloned().unwrap_or_else(|| new_state(id, event));
    let data = &event.envelope.data;
    let row = &mut state.row;
    let status = match event.event_type() {
        "video.media.upload" => Some("AWAITING_UPLOAD".to_owned()),
        "video.media.ready" => Some("READY".to_owned()),
        "video.media.failed" => Some("FAILED".to_owned()),
        "video.media.deleted" => Some("DELETED".to_owned()),
        _ => fields::text(data, &["status"])
            .map(|s| screaming(&s))
            .filter(|s| STATUSES.contains(&s.as_str()) && s != "DELETED"),
    };
    if let Some(status) = status {
        let regress = row.status == "READY" && PROCESSING.contains(&status.as_str());
        if !regress {
            row.status = status;
        }
    }
    if row.status == "DELETED" {
        row.deleted_at_ns = Some(event.key.ns);
    }
    if event.event_type() == "video.media.upload" {
        apply_upload_settings(row, data);
    } else {
        apply_media_fields(row, data);
        if let Some(playback_ids) = fields::playback_ids(data) {
            state.playback_ids = playback_ids;
        }
    }
    let row = &mut state.row;
    if let Some(created) = row.created_at_ns {
        row.sort_ns = created;
    }
    row.last_event_type = event.event_type().to_owned();
    row.last_event_ns = event.key.ns;
    row.last_event_id = event.key.id.clone();
    state
}

fn new_state(id: &str, event: &Event) -> MediaState {
    MediaState {
        row: media::Model {
            id: id.to_owned(),
            status: "CREATED".to_owned(),
            title: None,
            duration_seconds: None,
            aspect_ratio: None,
            max_resolution: None,
            source_resolution: None,
            is_audio_only: None,
            tracks: Value::Array(Vec::new()),
            metadata: None,
            thumbnail_url: None,
            live_stream_id: None,
            created_at_ns: None,
            updated_at_ns: None,
            deleted_at_ns: None,
            sort_ns: event.key.ns,
            last_event_type: String::new(),
            last_event_ns: event.key.ns,
            last_event_id: String::new(),
        },
        playback_ids: Vec::new(),
    }
}

/// A `video.media.upload` carries an upload session, not a media: only its settings are kept.
fn apply_upload_settings(row: &mut media::Model, data: &Value) {
    if let Some(settings) = data.get("pushMediaSettings") {
        set_json(&mut row.metadata, settings, &["metadata"]);
    }
}

fn apply_media_fields(row: &mut media::Model, data: &Value) {
    set_str(&mut row.title, data, &["title"]);
    if let Some(duration) = fields::get(data, &["duration"]) {
        row.duration_seconds = fields::duration_seconds(duration);
    }
    set_str(
        &mut row.aspect_ratio,
        data,
        &["aspectRatio", "aspect_ratio"],
    );
    set_str(
        &mut row.max_resolution,
        data,
        &["maxResolution", "maxresolution"],
    );
    set_str(&mut row.source_resolution, data, &["sourceResolution"]);
    set_bool(&mut row.is_audio_only, data, &["isAudioOnly"]);
    if let Some(tracks) = data.get("tracks").filter(|t| t.is_array()) {
        row.tracks = tracks.clone();
    }
    set_json(&mut row.metadata, data, &["metadata"]);
    set_str(&mut row.thumbnail_url, data, &["thumbnail"]);
    if let Some(stream) = fields::text(data, &["streamId"]) {
        row.live_stream_id = Some(stream);
    }
    set_time(&mut row.created_at_ns, data, &["createdAt"]);
    set_time(&mut row.updated_at_ns, data, &["updatedAt"]);
}
