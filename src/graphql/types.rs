//! GraphQL object types (SPEC §4), built from entity models or from the snapshots a change carries.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{live_stream, media, simulcast_target, webhook_event};
use serde_json::Value;

use super::auth::Role;
use super::errors::{forbidden, internal};
use super::loaders::{
    Loaders, PlaybackOfMedia, PlaybackOfStream, RecordingsOfStream, StreamById, TargetsOfStream,
};
use super::pagination::event_cursor;
use crate::events::Snapshot;
use crate::webhook::fields::Playback;
use crate::webhook::live::LiveState;
use crate::webhook::media::MediaState;
use crate::webhook::time::from_ns;

macro_rules! status_enum {
    ($name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        #[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($variant),* }

        impl $name {
            /// The name stored in the database (the GraphQL name).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }

            fn parse(stored: &str) -> Self {
                match stored {
                    $($text => Self::$variant,)*
                    other => {
                        tracing::warn!(status = other, "unknown stored status");
                        Self::fallback()
                    }
                }
            }
        }
    };
}

status_enum!(MediaStatus {
    AwaitingUpload = "AWAITING_UPLOAD", Created = "CREATED", Downloading = "DOWNLOADING",
    Downloaded = "DOWNLOADED", Validating = "VALIDATING", InQueue = "IN_QUEUE", Processing = "PROCESSING",
    Ready = "READY", Failed = "FAILED", Deleted = "DELETED",
});
status_enum!(LiveStreamStatus {
    Idle = "IDLE", Preparing = "PREPARING", Active = "ACTIVE", Disabled = "DISABLED", Deleted = "DELETED",
});
status_enum!(SimulcastTargetStatus {
    Idle = "IDLE", Starting = "STARTING", Broadcasting = "BROADCASTING", Deleted = "DELETED",
});
status_enum!(WebhookEventOutcome {
    Applied = "applied", Stale = "stale", Ignored = "ignored", Rejected = "rejected",
});

impl MediaStatus {
    fn fallback() -> Self {
        Self::Created
    }
}
impl LiveStreamStatus {
    fn fallback() -> Self {
        Self::Idle
    }
}
impl SimulcastTargetStatus {
    fn fallback() -> Self {
        Self::Idle
    }
}
impl WebhookEventOutcome {
    fn fallback() -> Self {
        Self::Ignored
    }
}

fn time(ns: Option<i64>) -> Option<DateTime<Utc>> {
    ns.map(from_ns)
}

fn json(value: &Option<Value>) -> Option<Json<Value>> {
    value.clone().map(Json)
}

fn loaders<'a>(ctx: &'a Context<'_>) -> Result<&'a Loaders> {
    ctx.data::<Loaders>()
}

fn require_admin(ctx: &Context<'_>, field: &str) -> Result<()> {
    match ctx.data_opt::<Role>() {
        Some(Role::Admin) => Ok(()),
        _ => Err(forbidden(field)),
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct PlaybackId {
    pub id: String,
    pub access_policy: String,
}

impl From<&Playback> for PlaybackId {
    fn from(p: &Playback) -> Self {
        Self {
            id: p.id.clone(),
            access_policy: p.access_policy.clone(),
        }
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Track {
    pub id: ID,
    #[graphql(name = "type")]
    pub kind: String,
    pub status: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub frame_rate: Option<String>,
    pub language_code: Option<String>,
    pub language_name: Option<String>,
}

impl Track {
    fn from_json(track: &Value) -> Self {
        let text = |key: &str| track.get(key).and_then(Value::as_str).map(str::to_owned);
        let int = |key: &str| {
            track
                .get(key)
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
        };
        Self {
            id: ID(text("id").unwrap_or_default()),
            kind: text("type").unwrap_or_else(|| "unknown".to_owned()),
            status: text("status"),
            width: int("width"),
            height: int("height"),
            frame_rate: text("frameRate").or_else(|| {
                track
                    .get("frameRate")
                    .and_then(Value::as_f64)
                    .map(|f| f.to_string())
            }),
            language_code: text("languageCode"),
            language_name: text("languageName"),
        }
    }
}

/// A media. Playback ids come with it when it was built from a change snapshot; else they are loaded.
#[derive(Clone)]
pub struct Media {
    pub row: Arc<media::Model>,
    pub playback_ids: Option<Arc<Vec<Playback>>>,
    /// The stream this media is a recording of, when the caller already has it (no query then).
    pub stream: Option<Box<LiveStream>>,
}

impl From<media::Model> for Media {
    fn from(row: media::Model) -> Self {
        Self {
            row: Arc::new(row),
            playback_ids: None,
            stream: None,
        }
    }
}

impl From<Snapshot<media::Model>> for Media {
    fn from(snapshot: Snapshot<media::Model>) -> Self {
        Self {
            row: snapshot.row,
            playback_ids: Some(snapshot.playback_ids),
            stream: None,
        }
    }
}

impl From<&MediaState> for Media {
    fn from(state: &MediaState) -> Self {
        Self {
            row: Arc::new(state.row.clone()),
            playback_ids: Some(Arc::new(state.playback_ids.clone())),
            stream: None,
        }
    }
}

#[Object]
impl Media {
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }
    async fn status(&self) -> MediaStatus {
        MediaStatus::parse(&self.row.status)
    }
    async fn title(&self) -> Option<&str> {
        self.row.title.as_deref()
    }
    async fn playback_ids(&self, ctx: &Context<'_>) -> Result<Vec<PlaybackId>> {
        let list = match &self.playback_ids {
            Some(list) => list.clone(),
            None => loaders(ctx)?
                .load_one(PlaybackOfMedia(self.row.id.clone()))
                .await
                .map_err(internal)?
                .unwrap_or_default(),
        };
        Ok(list.iter().map(PlaybackId::from).collect())
    }
    async fn duration_seconds(&self) -> Option<f64> {
        self.row.duration_seconds
    }
    async fn aspect_ratio(&self) -> Option<&str> {
        self.row.aspect_ratio.as_deref()
    }
    async fn max_resolution(&self) -> Option<&str> {
        self.row.max_resolution.as_deref()
    }
    async fn source_resolution(&self) -> Option<&str> {
        self.row.source_resolution.as_deref()
    }
    async fn is_audio_only(&self) -> Option<bool> {
        self.row.is_audio_only
    }
    async fn tracks(&self) -> Vec<Track> {
        self.row
            .tracks
            .as_array()
            .into_iter()
            .flatten()
            .map(Track::from_json)
            .collect()
    }
    async fn metadata(&self) -> Option<Json<Value>> {
        json(&self.row.metadata)
    }
    async fn thumbnail_url(&self) -> Option<&str> {
        self.row.thumbnail_url.as_deref()
    }
    /// The live stream this media is a recording of.
    async fn live_stream(&self, ctx: &Context<'_>) -> Result<Option<LiveStream>> {
        let Some(stream) = &self.row.live_stream_id else {
            return Ok(None);
        };
        if let Some(known) = self.stream.as_ref().filter(|s| &s.row.id == stream) {
            return Ok(Some((**known).clone()));
        }
        let row = loaders(ctx)?
            .load_one(StreamById(stream.clone()))
            .await
            .map_err(internal)?;
        Ok(row.map(LiveStream::from_row))
    }
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        time(self.row.created_at_ns)
    }
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        time(self.row.updated_at_ns)
    }
    async fn deleted_at(&self) -> Option<DateTime<Utc>> {
        time(self.row.deleted_at_ns)
    }
    async fn last_event_type(&self) -> &str {
        &self.row.last_event_type
    }
    async fn last_event_at(&self) -> DateTime<Utc> {
        from_ns(self.row.last_event_ns)
    }
}

/// A live stream. Playback ids come with it when it was built from a change snapshot; else they are loaded.
#[derive(Clone)]
pub struct LiveStream {
    pub row: Arc<live_stream::Model>,
    pub playback_ids: Option<Arc<Vec<Playback>>>,
}

impl LiveStream {
    pub fn from_row(row: Arc<live_stream::Model>) -> Self {
        Self {
            row,
            playback_ids: None,
        }
    }
}

impl From<live_stream::Model> for LiveStream {
    fn from(row: live_stream::Model) -> Self {
        Self::from_row(Arc::new(row))
    }
}

impl From<Snapshot<live_stream::Model>> for LiveStream {
    fn from(snapshot: Snapshot<live_stream::Model>) -> Self {
        Self {
            row: snapshot.row,
            playback_ids: Some(snapshot.playback_ids),
        }
    }
}

impl From<&LiveState> for LiveStream {
    fn from(state: &LiveState) -> Self {
        Self {
            row: Arc::new(state.row.clone()),
            playback_ids: Some(Arc::new(state.playback_ids.clone())),
        }
    }
}

#[Object]
impl LiveStream {
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }
    async fn status(&self) -> LiveStreamStatus {
        LiveStreamStatus::parse(&self.row.status)
    }
    /// True while an encoder is connected (after `connected`, `recording`, `active`).
    async fn encoder_connected(&self) -> bool {
        self.row.encoder_connected
    }
    /// True while FastPix records the broadcast.
    async fn recording(&self) -> bool {
        self.row.recording
    }
    async fn playback_ids(&self, ctx: &Context<'_>) -> Result<Vec<PlaybackId>> {
        let list = match &self.playback_ids {
            Some(list) => list.clone(),
            None => loaders(ctx)?
                .load_one(PlaybackOfStream(self.row.id.clone()))
                .await
                .map_err(internal)?
                .unwrap_or_default(),
        };
        Ok(list.iter().map(PlaybackId::from).collect())
    }
    async fn max_resolution(&self) -> Option<&str> {
        self.row.max_resolution.as_deref()
    }
    async fn reconnect_window_seconds(&self) -> Option<i32> {
        self.row.reconnect_window_seconds
    }
    /// Maximum broadcast length; 0 means unbounded.
    async fn max_duration_seconds(&self) -> Option<i32> {
        self.row.max_duration_seconds
    }
    async fn enable_recording(&self) -> Option<bool> {
        self.row.enable_recording
    }
    async fn low_latency(&self) -> Option<bool> {
        self.row.low_latency
    }
    async fn media_policy(&self) -> Option<&str> {
        self.row.media_policy.as_deref()
    }
    async fn metadata(&self) -> Option<Json<Value>> {
        json(&self.row.metadata)
    }
    async fn trial(&self) -> Option<bool> {
        self.row.trial
    }
    async fn simulcast_targets(&self, ctx: &Context<'_>) -> Result<Vec<SimulcastTarget>> {
        let rows = loaders(ctx)?
            .load_one(TargetsOfStream(self.row.id.clone()))
            .await
            .map_err(internal)?
            .unwrap_or_default();
        Ok(rows
            .iter()
            .map(|row| SimulcastTarget {
                row: Arc::new(row.clone()),
                stream: Some(Box::new(self.clone())),
            })
            .collect())
    }
    /// Media recorded from this stream, newest first.
    async fn recordings(&self, ctx: &Context<'_>) -> Result<Vec<Media>> {
        let rows = loaders(ctx)?
            .load_one(RecordingsOfStream(self.row.id.clone()))
            .await
            .map_err(internal)?
            .unwrap_or_default();
        Ok(rows
            .iter()
            .map(|(row, playback_ids)| Media {
                row: Arc::new(row.clone()),
                playback_ids: Some(playback_ids.clone()),
                stream: Some(Box::new(self.clone())),
            })
            .collect())
    }
    /// Admin only: the RTMP stream key.
    async fn stream_key(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        require_admin(ctx, "streamKey")?;
        Ok(self.row.stream_key.as_deref())
    }
    /// Admin only: the SRT secret.
    async fn srt_secret(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        require_admin(ctx, "srtSecret")?;
        Ok(self.row.srt_secret.as_deref())
    }
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        time(self.row.created_at_ns)
    }
    async fn deleted_at(&self) -> Option<DateTime<Utc>> {
        time(self.row.deleted_at_ns)
    }
    async fn last_event_type(&self) -> &str {
        &self.row.last_event_type
    }
    async fn last_event_at(&self) -> DateTime<Utc> {
        from_ns(self.row.last_event_ns)
    }
}

#[derive(Clone)]
pub struct SimulcastTarget {
    pub row: Arc<simulcast_target::Model>,
    /// The parent stream, when the caller already has it (no query then).
    pub stream: Option<Box<LiveStream>>,
}

impl From<simulcast_target::Model> for SimulcastTarget {
    fn from(row: simulcast_target::Model) -> Self {
        Self {
            row: Arc::new(row),
            stream: None,
        }
    }
}

#[Object]
impl SimulcastTarget {
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }
    async fn live_stream_id(&self) -> ID {
        ID(self.row.live_stream_id.clone())
    }
    async fn live_stream(&self, ctx: &Context<'_>) -> Result<Option<LiveStream>> {
        if let Some(known) = &self.stream {
            return Ok(Some((**known).clone()));
        }
        let row = loaders(ctx)?
            .load_one(StreamById(self.row.live_stream_id.clone()))
            .await
            .map_err(internal)?;
        Ok(row.map(LiveStream::from_row))
    }
    async fn status(&self) -> SimulcastTargetStatus {
        SimulcastTargetStatus::parse(&self.row.status)
    }
    async fn is_enabled(&self) -> Option<bool> {
        self.row.is_enabled
    }
    async fn metadata(&self) -> Option<Json<Value>> {
        json(&self.row.metadata)
    }
    /// Admin only: the full destination URL (it embeds the third-party stream key).
    async fn url(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        require_admin(ctx, "url")?;
        Ok(self.row.url.as_deref())
    }
    async fn last_event_type(&self) -> &str {
        &self.row.last_event_type
    }
    async fn last_event_at(&self) -> DateTime<Utc> {
        from_ns(self.row.last_event_ns)
    }
}

/// A stored webhook delivery (admin only: the payload carries secrets).
#[derive(Clone)]
pub struct WebhookEvent {
    pub row: Arc<webhook_event::Model>,
}

impl From<webhook_event::Model> for WebhookEvent {
    fn from(row: webhook_event::Model) -> Self {
        Self { row: Arc::new(row) }
    }
}

#[Object]
impl WebhookEvent {
    /// Pass it to `webhookEvents(after:)` to resume after this event.
    async fn cursor(&self) -> String {
        event_cursor(self.row.position.unwrap_or_default())
    }
    async fn id(&self) -> ID {
        ID(self.row.event_id.clone())
    }
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.row.event_type
    }
    async fn object_type(&self) -> Option<&str> {
        self.row.object_type.as_deref()
    }
    async fn object_id(&self) -> Option<&str> {
        self.row.object_id.as_deref()
    }
    async fn occurred_at(&self) -> Option<DateTime<Utc>> {
        time(self.row.occurred_at_ns)
    }
    async fn received_at(&self) -> DateTime<Utc> {
        from_ns(self.row.received_at_ns)
    }
    async fn outcome(&self) -> WebhookEventOutcome {
        WebhookEventOutcome::parse(&self.row.outcome)
    }
    async fn reason(&self) -> Option<&str> {
        self.row.reason.as_deref()
    }
    /// The delivery's JSON exactly as received.
    async fn payload(&self, ctx: &Context<'_>) -> Result<Json<Value>> {
        require_admin(ctx, "payload")?;
        serde_json::from_str(&self.row.payload)
            .map(Json)
            .map_err(internal)
    }
}
