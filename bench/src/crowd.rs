//! A crowd of websocket clients: `graphql-transport-ws` subscribers of one live stream (fastpix-sync), or
//! bare websockets (the baseline). Each one is a task that timestamps every `next` frame it receives
//! (relative to a shared clock), answers the server's pings, and closes when told to.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Result;
use crate::stats::Latencies;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The subscription every fastpix-sync subscriber runs (operation id `1`).
pub const LIVE_STREAM_SUBSCRIPTION: &str =
    "subscription($id: ID) { liveStream(id: $id) { status } }";

/// What each client of the crowd does once connected.
#[derive(Clone, Debug)]
pub enum Role {
    /// `graphql-transport-ws`: init, subscribe to `liveStream(id:)`, receive the current state.
    Subscriber { stream_id: String },
    /// `graphql-transport-ws`: init, and no subscription (to tell the connection's cost from the
    /// subscription's).
    Initialized,
    /// A bare websocket: nothing to say.
    Bare,
}

/// Shared by the crowd's tasks and its driver.
struct Shared {
    clock: Instant,
    /// When change `k` was posted (ns on `clock`, 0 = not yet).
    sent_ns: Vec<AtomicU64>,
    /// How many clients received change `k`.
    received: Vec<AtomicUsize>,
    /// The status change `k` sets (each frame is checked for it).
    statuses: Vec<&'static str>,
    /// Frames that were not the expected change (wrong status, or before it was posted).
    unexpected: AtomicUsize,
    ready: AtomicUsize,
    failed: AtomicUsize,
    closed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    fn fail(&self, error: String) {
        self.first_error.lock().unwrap().get_or_insert(error);
        self.failed.fetch_add(1, Ordering::SeqCst);
    }
}

/// A connected crowd.
pub struct Crowd {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Vec<(u32, u64)>>>,
    size: usize,
}

/// What a crowd received.
#[derive(Debug)]
pub struct Received {
    /// Post → frame, for every frame of every change.
    pub latencies: Latencies,
    /// Post → the first frame of each change (what comes before sending to the crowd).
    pub first: Latencies,
    /// Frames expected (clients × changes sent) and frames not received.
    pub expected: usize,
    pub missing: usize,
    /// Frames that were not the expected change.
    pub unexpected: usize,
}

/// A client websocket configuration for many connections: small buffers, writes go out at once.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn next_text(socket: &mut Socket, wait: Duration) -> Result<String> {
    loop {
        let frame = tokio::time::timeout(wait, socket.next())
            .await
            .map_err(|_| "no frame in time")?;
        match frame {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(close))) => return Err(format!("closed: {close:?}").into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("closed".into()),
        }
    }
}

/// Connects one client and brings it to the point where it only waits for changes.
async fn set_up(url: &str, role: &Role) -> Result<Socket> {
    let mut request = url.into_client_request()?;
    if let Role::Subscriber { .. } | Role::Initialized = role {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    }
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(client_config()), true).await?;
    let wait = Duration::from_secs(30);
    if let Role::Subscriber { .. } | Role::Initialized = role {
        socket
            .send(Message::text(r#"{"type":"connection_init"}"#))
            .await?;
        let ack = next_text(&mut socket, wait).await?;
        if !ack.contains("connection_ack") {
            return Err(format!("expected connection_ack, got {ack}").into());
        }
    }
    if let Role::Subscriber { stream_id } = role {
        let subscribe = serde_json::json!({
            "type": "subscribe",
            "id": "1",
            "payload": { "query": LIVE_STREAM_SUBSCRIPTION, "variables": { "id": stream_id } },
        });
        socket.send(Message::text(subscribe.to_string())).await?;
        // The current state comes first.
        let first = next_text(&mut socket, wait).await?;
        if !first.contains("\"next\"") || first.contains("errors") {
            return Err(format!("expected the current state, got {first}").into());
        }
    }
    Ok(socket)
}

/// One client: set up (at most `gate` at once), then record change frames until stopped.
async fn client(
    url: String,
    role: Role,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Vec<(u32, u64)> {
    let permit = gate.acquire_owned().await;
    let mut socket = match set_up(&url, &role).await {
        Ok(socket) => socket,
        Err(e) => {
            shared.fail(e.to_string());
            return Vec::new();
        }
    };
    drop(permit);
    shared.ready.fetch_add(1, Ordering::SeqCst);
    let changes = shared.statuses.len();
    let mut arrivals = Vec::with_capacity(changes);
    let mut count = 0usize;
    // One wait for the stop signal for the whole loop: a new `changed()` future on each frame would
    // register with, and leave, the watch channel that all the crowd's clients share, under its lock.
    let mut stopped = std::pin::pin!(stop.changed());
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if text.contains("\"next\"") {
                        let now = shared.now_ns();
                        let expected = count < changes
                            && shared.sent_ns[count].load(Ordering::SeqCst) != 0
                            && text.contains(shared.statuses[count]);
                        if expected {
                            arrivals.push((count as u32, now));
                            shared.received[count].fetch_add(1, Ordering::SeqCst);
                        } else {
                            shared.unexpected.fetch_add(1, Ordering::SeqCst);
                        }
                        count += 1;
                    } else if text.contains("\"ping\"") {
                        let _ = socket.send(Message::text(r#"{"type":"pong"}"#)).await;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    shared.closed.fetch_add(1, Ordering::SeqCst);
                    return arrivals;
                }
                Some(Ok(_)) => {}
            },
            _ = &mut stopped => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    arrivals
}

impl Crowd {
    /// Connects `size` clients to `url` (at most `concurrency` setting up at once) and waits until all
    /// are ready (or `timeout`). `statuses[k]` is the status change `k` will set.
    pub async fn connect(
        url: &str,
        role: Role,
        size: usize,
        statuses: Vec<&'static str>,
        concurrency: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            clock: Instant::now(),
            sent_ns: statuses.iter().map(|_| AtomicU64::new(0)).collect(),
            received: statuses.iter().map(|_| AtomicUsize::new(0)).collect(),
            statuses,
            unexpected: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
        });
        let (stop, stopped) = watch::channel(false);
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let tasks = (0..size)
            .map(|_| {
                tokio::spawn(client(
                    url.to_owned(),
                    role.clone(),
                    shared.clone(),
                    gate.clone(),
                    stopped.clone(),
                ))
            })
            .collect();
        let crowd = Self {
            shared,
            stop,
            tasks,
            size,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let ready = crowd.shared.ready.load(Ordering::SeqCst);
            let failed = crowd.shared.failed.load(Ordering::SeqCst);
            if failed > 0 || ready + failed >= size || Instant::now() >= deadline {
                if ready == size {
                    return Ok(crowd);
                }
                let error = crowd.shared.first_error.lock().unwrap().clone();
                crowd.stop().await;
                return Err(format!(
                    "{ready} of {size} websocket clients ready, {failed} failed (first error: {})",
                    error.unwrap_or_else(|| "timed out".into())
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Clients connected and not closed by the server.
    pub fn open(&self) -> usize {
        self.shared.ready.load(Ordering::SeqCst) - self.shared.closed.load(Ordering::SeqCst)
    }

    /// Marks change `k` as posted now (call just before sending it).
    pub fn mark_sent(&self, k: usize) {
        let now = self.shared.now_ns().max(1);
        self.shared.sent_ns[k].store(now, Ordering::SeqCst);
    }

    /// Waits until every open client received change `k`, or `deadline`. Returns how many did.
    pub async fn wait_received(&self, k: usize, deadline: Instant) -> usize {
        loop {
            let received = self.shared.received[k].load(Ordering::SeqCst);
            if received >= self.open() || Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Closes every client; returns the post → frame latencies of the first `changes_sent` changes.
    pub async fn finish(self, changes_sent: usize) -> Received {
        let shared = self.shared.clone();
        let size = self.size;
        let arrivals = self.stop().await;
        let sent: Vec<u64> = shared
            .sent_ns
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .collect();
        let mut latencies = Latencies::new();
        let mut first_of_change: Vec<Option<u64>> = vec![None; changes_sent];
        for (k, at) in arrivals.into_iter().flatten() {
            let k = k as usize;
            if k < changes_sent {
                let micros = at.saturating_sub(sent[k]) / 1000;
                latencies.push_micros(micros);
                let first = first_of_change[k].get_or_insert(micros);
                *first = (*first).min(micros);
            }
        }
        let mut first = Latencies::new();
        for micros in first_of_change.into_iter().flatten() {
            first.push_micros(micros);
        }
        let expected = size * changes_sent;
        Received {
            missing: expected.saturating_sub(latencies.len()),
            expected,
            latencies,
            first,
            unexpected: shared.unexpected.load(Ordering::SeqCst),
        }
    }

    /// Tells every client to close and waits for them (up to 60 s).
    async fn stop(self) -> Vec<Vec<(u32, u64)>> {
        let _ = self.stop.send(true);
        let mut all = Vec::with_capacity(self.tasks.len());
        let deadline = Instant::now() + Duration::from_secs(60);
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(deadline.into(), task).await {
                Ok(Ok(arrivals)) => all.push(arrivals),
                Ok(Err(_)) => {}
                Err(_) => abort.abort(),
            }
        }
        all
    }
}
