//! `Subscription` (SPEC §4, subscription semantics).
//!
//! Every stream subscribes to the bus before it reads the database, so nothing committed in between is
//! missed; what it then receives from the bus is deduplicated against what it already sent. A subscriber
//! that falls behind the channel (`Lagged`) is never silently skipped past: entity streams re-send the
//! current state, the event feed and the update feeds catch up from the log.

use async_graphql::{Context, ID, Result, Subscription};
use entity::webhook_event;
use futures_util::Stream;
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast::error::RecvError;

use super::auth::Role;
use super::errors::{bad_input, forbidden};
use super::pagination::decode_event_cursor;
use super::types::{LiveStream, LiveStreamStatus, Media, MediaStatus, WebhookEvent};
use super::watch::{CATCH_UP_PAGE, entity_stream, events_after, reading, updates_stream};
use crate::events::{Bus, Snapshot};
use crate::metrics::Metrics;
use entity::{live_stream, media};

pub struct Subscription;

/// What an entity subscription follows.
#[derive(Clone, Debug)]
pub enum Target {
    Id(String),
    PlaybackId(String),
}

fn target(id: Option<ID>, playback_id: Option<String>) -> Result<Target> {
    match (id, playback_id) {
        (Some(id), None) => Ok(Target::Id(id.0)),
        (None, Some(playback_id)) => Ok(Target::PlaybackId(playback_id)),
        _ => Err(bad_input("give exactly one of `id` and `playbackId`")),
    }
}

/// The handles a subscription needs, taken from the schema data.
pub(crate) struct Handles {
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub metrics: Metrics,
}

fn handles(ctx: &Context<'_>) -> Result<Handles> {
    Ok(Handles {
        db: ctx.data::<DatabaseConnection>()?.clone(),
        bus: ctx.data::<Bus>()?.clone(),
        metrics: ctx.data::<Metrics>()?.clone(),
    })
}

#[Subscription]
impl Subscription {
    /// A live stream: its current state first, then every change; after its deletion, the tombstone, then
    /// the end. Give exactly one of `id` and `playbackId`; a stream not yet known is waited for.
    async fn live_stream(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
        playback_id: Option<String>,
    ) -> Result<impl Stream<Item = Result<LiveStream>> + use<>> {
        let target = target(id, playback_id)?;
        let stream = entity_stream::<Snapshot<live_stream::Model>>(handles(ctx)?, target);
        Ok(futures_util::StreamExt::map(stream, |s| {
            s.map(LiveStream::from)
        }))
    }

    /// A media: its current state first, then every change; after its deletion, the tombstone, then the
    /// end. Give exactly one of `id` and `playbackId`; a media not yet known is waited for.
    async fn media(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
        playback_id: Option<String>,
    ) -> Result<impl Stream<Item = Result<Media>> + use<>> {
        let target = target(id, playback_id)?;
        let stream = entity_stream::<Snapshot<media::Model>>(handles(ctx)?, target);
        Ok(futures_util::StreamExt::map(stream, |s| s.map(Media::from)))
    }

    /// Every change to any live stream (for dashboards), optionally only those in one of `status`.
    async fn live_stream_updates(
        &self,
        ctx: &Context<'_>,
        status: Option<Vec<LiveStreamStatus>>,
    ) -> Result<impl Stream<Item = Result<LiveStream>> + use<>> {
        let statuses: Option<Vec<&'static str>> =
            status.map(|s| s.iter().map(|s| s.as_str()).collect());
        let handles = handles(ctx)?;
        let stream = updates_stream::<Snapshot<live_stream::Model>>(handles, move |s| {
            statuses
                .as_ref()
                .is_none_or(|list| list.contains(&s.row.status.as_str()))
        })
        .await?;
        Ok(futures_util::StreamExt::map(stream, |s| {
            s.map(LiveStream::from)
        }))
    }

    /// Every change to any media, optionally only those in one of `status`.
    async fn media_updates(
        &self,
        ctx: &Context<'_>,
        status: Option<Vec<MediaStatus>>,
    ) -> Result<impl Stream<Item = Result<Media>> + use<>> {
        let statuses: Option<Vec<&'static str>> =
            status.map(|s| s.iter().map(|s| s.as_str()).collect());
        let handles = handles(ctx)?;
        let stream = updates_stream::<Snapshot<media::Model>>(handles, move |s| {
            statuses
                .as_ref()
                .is_none_or(|list| list.contains(&s.row.status.as_str()))
        })
        .await?;
        Ok(futures_util::StreamExt::map(stream, |s| s.map(Media::from)))
    }

    /// Admin only: every stored event after the cursor `after` (from the start without it), then every new
    /// one as it is stored, with no gap and no duplicate between the two. Keep the last `cursor` you saw
    /// and pass it as `after` when you reconnect.
    async fn webhook_events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        types: Option<Vec<String>>,
        object_id: Option<String>,
    ) -> Result<impl Stream<Item = Result<WebhookEvent>> + use<>> {
        if ctx.data_opt::<Role>() != Some(&Role::Admin) {
            return Err(forbidden("webhookEvents"));
        }
        let mut last = after
            .as_deref()
            .map(decode_event_cursor)
            .transpose()?
            .unwrap_or(0);
        let Handles { db, bus, metrics } = handles(ctx)?;
        let wanted = move |row: &webhook_event::Model| {
            types.as_ref().is_none_or(|t| t.contains(&row.event_type))
                && object_id
                    .as_ref()
                    .is_none_or(|o| row.object_id.as_ref() == Some(o))
        };
        let mut changes = bus.subscribe();
        Ok(async_stream::try_stream! {
            // `caught_up` is false while the log may hold events after `last` that were not sent yet.
            let mut caught_up = false;
            loop {
                if !caught_up {
                    let page = reading(&metrics, || events_after(&db, last)).await?;
                    caught_up = (page.len() as u64) < CATCH_UP_PAGE;
                    for row in page {
                        last = row.position.unwrap_or(last);
                        if wanted(&row) {
                            yield WebhookEvent::from(row);
                        }
                    }
                    continue;
                }
                match changes.recv().await {
                    Ok(change) if change.position <= last => {}
                    Ok(change) if change.position == last + 1 => {
                        last = change.position;
                        if wanted(&change.event) {
                            yield WebhookEvent { row: change.event.clone() };
                        }
                    }
                    // A gap: changes published out of commit order; the log has them all.
                    Ok(_) => caught_up = false,
                    Err(RecvError::Lagged(_)) => {
                        metrics.lagged();
                        caught_up = false;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        })
    }
}
