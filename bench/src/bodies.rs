//! Webhook bodies: the FastPix fixtures with fresh ids, signed as FastPix signs them.

use fastpix_sync::webhook::verify::sign;

/// The signing secret every benchmarked server is started with.
pub const SECRET: &str = "ZmFzdHBpeC1kZW1vLXNpZ25pbmctc2VjcmV0LTMyYiE=";

const MEDIA_CREATED: &str = include_str!("../../tests/fixtures/video.media.created.json");
const LIVE_CREATED: &str = include_str!("../../tests/fixtures/video.live_stream.created.json");
const LIVE_ACTIVE: &str = include_str!("../../tests/fixtures/video.live_stream.active.json");
const LIVE_IDLE: &str = include_str!("../../tests/fixtures/video.live_stream.idle.json");

/// Ids in the fixtures, replaced by fresh ones.
const FIXTURE_MEDIA_ID: &str = "7d3c2b1a-4e5f-4a6b-8c9d-0e1f2a3b4c5d";
const FIXTURE_MEDIA_PLAYBACK_ID: &str = "a1b2c3d4-e5f6-4789-9abc-def012345678";
const FIXTURE_STREAM_ID: &str = "4b1f9e2c7d3a8e5f6a0b1c2d3e4f5a6b";

/// A UUID-shaped id, unique per (`kind`, `n`).
pub fn uuid(kind: u32, n: u64) -> String {
    format!("{kind:08x}-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

/// The event id of the `n`-th webhook of this run (kind 1).
pub fn event_id(n: u64) -> String {
    uuid(1, n)
}

/// The media id of the `n`-th media (kind 2).
pub fn media_id(n: u64) -> String {
    uuid(2, n)
}

/// The playback id of the `n`-th media (kind 3).
pub fn playback_id(n: u64) -> String {
    uuid(3, n)
}

/// A live stream id (32 hex digits, as FastPix's).
pub fn stream_id(n: u64) -> String {
    format!("{n:032x}")
}

/// Replaces `from` by `to` in `text`, checking the fixture still holds `from`.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the fixture no longer contains {from}");
    text.replace(from, to)
}

/// Replaces the envelope's `id` and `createdAt` (top-level keys of a fixture).
fn envelope(mut event: serde_json::Value, id: String, created_at: String) -> Vec<u8> {
    event["id"] = serde_json::Value::String(id);
    event["createdAt"] = serde_json::Value::String(created_at);
    serde_json::to_vec(&event).expect("a JSON value serialises")
}

/// `video.media.created` for media `n`: fresh event, media and playback ids. Body and signature.
///
/// Built by text replacement of the fixture's exact bytes (as FastPix sends them: pretty-printed).
pub struct MediaCreated {
    template: String,
}

impl Default for MediaCreated {
    fn default() -> Self {
        Self::new()
    }
}

impl MediaCreated {
    pub fn new() -> Self {
        let event: serde_json::Value = serde_json::from_str(MEDIA_CREATED).expect("fixture JSON");
        let event_id = event["id"].as_str().expect("fixture event id").to_owned();
        let template = swap(MEDIA_CREATED, &event_id, "{EVENT}");
        let template = swap(&template, FIXTURE_MEDIA_ID, "{MEDIA}");
        let template = swap(&template, FIXTURE_MEDIA_PLAYBACK_ID, "{PLAYBACK}");
        Self { template }
    }

    /// The body of media `n` (event `n` too).
    pub fn body(&self, n: u64) -> Vec<u8> {
        self.template
            .replace("{EVENT}", &event_id(n))
            .replace("{MEDIA}", &media_id(n))
            .replace("{PLAYBACK}", &playback_id(n))
            .into_bytes()
    }

    /// Body and `FastPix-Signature` of media `n`.
    pub fn signed(&self, n: u64) -> (Vec<u8>, String) {
        let body = self.body(n);
        let signature = sign(SECRET, &body);
        (body, signature)
    }
}

/// Events of one live stream: `created`, then alternately `active` and `idle` (so each one changes its
/// `status`), with increasing `createdAt`.
pub struct LiveEvents {
    stream: u64,
}

impl LiveEvents {
    pub fn new(stream: u64) -> Self {
        Self { stream }
    }

    pub fn stream_id(&self) -> String {
        stream_id(self.stream)
    }

    fn event(&self, fixture: &str, step: u64) -> Vec<u8> {
        let text = swap(fixture, FIXTURE_STREAM_ID, &self.stream_id());
        let event: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
        envelope(
            event,
            uuid(0x10 + (self.stream as u32 & 0xfff), step),
            // One event per millisecond of a fixed day, after the fixtures' dates: always newer.
            format!(
                "2030-01-01T{:02}:{:02}:{:02}.{:03}000000Z",
                step / 3_600_000 % 24,
                step / 60_000 % 60,
                step / 1000 % 60,
                step % 1000
            ),
        )
    }

    /// The stream's `video.live_stream.created` (status IDLE).
    pub fn created(&self) -> (Vec<u8>, String) {
        let body = self.event(LIVE_CREATED, 0);
        let signature = sign(SECRET, &body);
        (body, signature)
    }

    /// Change `k` (from 0): `active` for even `k`, `idle` for odd; and the status it sets.
    pub fn change(&self, k: u64) -> (Vec<u8>, String, &'static str) {
        let (fixture, status) = if k.is_multiple_of(2) {
            (LIVE_ACTIVE, "ACTIVE")
        } else {
            (LIVE_IDLE, "IDLE")
        };
        let body = self.event(fixture, k + 1);
        let signature = sign(SECRET, &body);
        (body, signature, status)
    }
}

/// The `next` frame a `liveStream { status }` subscriber with operation id `1` receives, byte for byte
/// (async-graphql's response inside the server's `json!` envelope, keys in serde_json's sorted order).
/// The baseline fan-out server pushes exactly these bytes.
pub fn status_frame(status: &str) -> String {
    format!(
        r#"{{"id":"1","payload":{{"data":{{"liveStream":{{"status":"{status}"}}}}}},"type":"next"}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_fresh_and_valid_json() {
        let media = MediaCreated::new();
        let a: serde_json::Value = serde_json::from_slice(&media.body(1)).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&media.body(2)).unwrap();
        assert_ne!(a["id"], b["id"]);
        assert_eq!(a["object"]["id"], a["data"]["id"]);
        assert_eq!(a["data"]["playbackIds"][0]["id"], playback_id(1));
        let live = LiveEvents::new(7);
        let (created, _) = live.created();
        let (c0, _, s0) = live.change(0);
        let (c1, _, s1) = live.change(1);
        let created: serde_json::Value = serde_json::from_slice(&created).unwrap();
        let c0: serde_json::Value = serde_json::from_slice(&c0).unwrap();
        let c1: serde_json::Value = serde_json::from_slice(&c1).unwrap();
        assert_eq!((s0, s1), ("ACTIVE", "IDLE"));
        assert!(created["createdAt"].as_str() < c0["createdAt"].as_str());
        assert!(c0["createdAt"].as_str() < c1["createdAt"].as_str());
        assert_eq!(c1["object"]["id"], live.stream_id());
    }
}
