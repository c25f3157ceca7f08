//! `fastpix-sync simulate`: sends realistic, signed FastPix event sequences to a running server, so a
//! newcomer can watch the playground (or a subscription) change.
//!
//! The sequences are the repository's FastPix fixtures with every id replaced by a fresh one (consistently
//! across a run) and every `createdAt` set to the moment of sending.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde_json::Value;

use crate::webhook::verify::sign;

/// Which sequence to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// A media pulled from a URL: created, ready, updated.
    Media,
    /// A direct upload: upload session, media created, ready.
    Upload,
    /// A live broadcast with a YouTube simulcast and its recording, from created to idle.
    Live,
    /// All of the above, one after the other.
    All,
}

/// `(event type, fixture JSON)` for each named fixture, embedded in the binary.
macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../tests/fixtures/", $name, ".json")))),*]
    };
}

type Fixtures = &'static [(&'static str, &'static str)];

const MEDIA: Fixtures = fixtures![
    "video.media.created",
    "video.media.ready",
    "video.media.updated",
];
const UPLOAD: Fixtures = fixtures!["video.media.upload", "video.upload.media_created"];
const LIVE: Fixtures = fixtures![
    "video.live_stream.created",
    "video.live_stream.simulcast_target.created",
    "video.live_stream.preparing",
    "video.live_stream.connected",
    "video.live_stream.recording",
    "video.live_stream.active",
    "video.live_stream.simulcast_target.starting",
    "video.media.live_stream.created",
    "video.live_stream.simulcast_target.broadcasting",
    "video.live_stream.disconnected",
    "video.live_stream.idle",
];

/// The URL media's ready event, turned into the upload media's (the fixtures have no upload `ready`).
fn upload_ready() -> String {
    let (_, ready) = MEDIA
        .iter()
        .find(|(name, _)| *name == "video.media.ready")
        .expect("the media sequence has a ready event");
    ready
        .replace(
            "7d3c2b1a-4e5f-4a6b-8c9d-0e1f2a3b4c5d",
            "3f9a8b7c-6d5e-4f3a-9b2c-1d0e9f8a7b6c",
        )
        .replace(
            "a1b2c3d4-e5f6-4789-9abc-def012345678",
            "b2c3d4e5-f6a7-4890-8bcd-ef0123456789",
        )
        .replace(
            "0a1b2c3d-1111-4a00-8000-000000000002",
            "0a1b2c3d-2222-4a00-8000-000000000007",
        )
}

/// The events of a scenario, in sending order, as JSON text with the fixture ids.
pub fn sequence(scenario: Scenario) -> Vec<String> {
    let texts = |list: Fixtures| list.iter().map(|(_, text)| (*text).to_owned()).collect();
    match scenario {
        Scenario::Media => texts(MEDIA),
        Scenario::Upload => {
            let mut events: Vec<String> = texts(UPLOAD);
            events.push(upload_ready());
            events
        }
        Scenario::Live => texts(LIVE),
        Scenario::All => [Scenario::Media, Scenario::Upload, Scenario::Live]
            .into_iter()
            .flat_map(sequence)
            .collect(),
    }
}

/// Fresh ids of the same shape (UUID, or 32 hex characters for streams and targets), one per fixture id.
#[derive(Default)]
struct Ids {
    fresh: BTreeMap<String, String>,
}

impl Ids {
    /// Gives `old` a fresh id, unless it has one.
    fn fresh_for(&mut self, old: &str) {
        let hyphenated = old.len() == 36 && old.matches('-').count() == 4;
        self.fresh.entry(old.to_owned()).or_insert_with(|| {
            let id = uuid::Uuid::new_v4();
            if hyphenated {
                id.hyphenated().to_string()
            } else {
                id.simple().to_string()
            }
        });
    }

    /// Collects the ids a payload names (event, media, stream, target, playback and track ids).
    fn collect(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    let is_id = matches!(
                        key.as_str(),
                        "id" | "streamId" | "livestreamId" | "simulcastId" | "uploadId"
                    );
                    match v {
                        Value::String(s) if is_id => self.fresh_for(s),
                        Value::Array(items) if key == "mediaIds" => {
                            for item in items.iter().filter_map(Value::as_str) {
                                self.fresh_for(item);
                            }
                        }
                        other => self.collect(other),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.collect(v)),
            _ => {}
        }
    }
}

/// A scenario ready to send: fresh ids, timestamps set at send time.
pub fn prepare(scenario: Scenario) -> (Vec<String>, BTreeMap<String, String>) {
    let events = sequence(scenario);
    let mut ids = Ids::default();
    for event in &events {
        ids.collect(&serde_json::from_str(event).expect("fixtures are JSON"));
    }
    let workspace = "5f0c8e3a-2b6d-4c1e-9a7f-3d2e1b0c9a8f";
    ids.fresh.remove(workspace);
    let renamed = events
        .into_iter()
        .map(|mut text| {
            for (old, new) in &ids.fresh {
                text = text.replace(old.as_str(), new);
            }
            text
        })
        .collect();
    (renamed, ids.fresh)
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("cannot reach {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the server answered {status} to {event_type}: {body}")]
    Refused {
        status: u16,
        event_type: String,
        body: String,
    },
}

/// Sends `scenario` to `url` (the server's base URL), signing with `secret` when given, waiting `pace`
/// between events, and writing one progress line per event to `out`. Returns how many were sent.
pub async fn run(
    scenario: Scenario,
    url: &str,
    secret: Option<&str>,
    pace: Duration,
    out: &mut impl Write,
) -> Result<usize, SimulateError> {
    let endpoint = format!("{}/webhooks/fastpix", url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let (events, ids) = prepare(scenario);
    let total = events.len();
    for (index, text) in events.into_iter().enumerate() {
        if index > 0 {
            tokio::time::sleep(pace).await;
        }
        let mut event: Value = serde_json::from_str(&text).expect("fixtures are JSON");
        event["createdAt"] =
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        let event_type = event["type"].as_str().unwrap_or_default().to_owned();
        let body = serde_json::to_vec(&event).expect("JSON serialises");
        let mut request = client
            .post(&endpoint)
            .header("content-type", "application/json");
        if let Some(secret) = secret {
            request = request.header("FastPix-Signature", sign(secret, &body));
        }
        let started = Instant::now();
        let response =
            request
                .body(body)
                .send()
                .await
                .map_err(|source| SimulateError::Unreachable {
                    url: endpoint.clone(),
                    source,
                })?;
        let status = response.status().as_u16();
        let answer = response.text().await.unwrap_or_default();
        if status != 200 {
            return Err(SimulateError::Refused {
                status,
                event_type,
                body: answer,
            });
        }
        let outcome = serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned))
            .unwrap_or(answer);
        let _ = writeln!(
            out,
            "[{}/{total}] {event_type} -> {outcome} ({} ms)",
            index + 1,
            started.elapsed().as_millis()
        );
    }
    let _ = writeln!(out, "sent {total} events. Ids to try in the playground:");
    for (name, old) in [
        ("media", "7d3c2b1a-4e5f-4a6b-8c9d-0e1f2a3b4c5d"),
        ("media playbackId", "a1b2c3d4-e5f6-4789-9abc-def012345678"),
        ("uploaded media", "3f9a8b7c-6d5e-4f3a-9b2c-1d0e9f8a7b6c"),
        ("live stream", "4b1f9e2c7d3a8e5f6a0b1c2d3e4f5a6b"),
        (
            "live stream playbackId",
            "d4e5f6a7-b8c9-4012-8def-0123456789ab",
        ),
    ] {
        if let Some(id) = ids.get(old) {
            let _ = writeln!(out, "  {name}: {id}");
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_consistent_and_keep_their_shape() {
        let (events, ids) = prepare(Scenario::All);
        assert_eq!(events.len(), 3 + 3 + 11);
        let stream = &ids["4b1f9e2c7d3a8e5f6a0b1c2d3e4f5a6b"];
        assert_eq!(stream.len(), 32);
        assert!(stream.chars().all(|c| c.is_ascii_hexdigit()));
        let media = &ids["7d3c2b1a-4e5f-4a6b-8c9d-0e1f2a3b4c5d"];
        assert_eq!((media.len(), media.matches('-').count()), (36, 4));
        let text = events.join("\n");
        assert!(
            !text.contains("4b1f9e2c7d3a8e5f6a0b1c2d3e4f5a6b"),
            "no fixture id is left"
        );
        assert!(
            text.contains(&format!("k{stream}")),
            "stream keys embed the new stream id"
        );
        let (_, again) = prepare(Scenario::All);
        assert_ne!(
            again["4b1f9e2c7d3a8e5f6a0b1c2d3e4f5a6b"], *stream,
            "each run has its own ids"
        );
    }
}
