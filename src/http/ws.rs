//! GraphQL over websocket on `GET /graphql`: the `graphql-transport-ws` protocol and the legacy `graphql-ws`
//! (subscriptions-transport-ws) one. Message shapes come from async-graphql (`ClientMessage`); this module
//! owns the connection's rules, with the close codes `graphql-transport-ws` specifies:
//! init not received in time 4408, subscribe before ack 4401, duplicate operation id 4409, rejected init
//! 4403, second init 4429, unreadable message 4400; the server pings, and drops peers that stop answering
//! (1008) or stop reading (1011, after `send_timeout`); on shutdown every connection closes with 1001.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{ClientMessage, WebSocketProtocols};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tokio_stream::StreamMap;

use crate::app::AppState;
use crate::graphql::fanout::{Frame, FrameKind, Frames};
use crate::graphql::{Role, documents, loaders};

/// Timeouts of websocket connections.
#[derive(Clone, Copy, Debug)]
pub struct WsConfig {
    /// A client must send `connection_init` within this time (SPEC default 3 s).
    pub init_timeout: Duration,
    /// The server pings this often; a peer silent for two intervals is dropped.
    pub ping_interval: Duration,
    /// A frame that cannot be written within this time (the peer stopped reading) ends the connection.
    pub send_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            init_timeout: Duration::from_secs(3),
            ping_interval: Duration::from_secs(15),
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection ends, as a close frame.
struct Close(u16, &'static str);

struct Connection {
    socket: WebSocket,
    protocol: WebSocketProtocols,
    config: WsConfig,
}

impl Connection {
    async fn send(&mut self, message: Value) -> Result<(), Close> {
        self.send_text(message.to_string()).await
    }

    async fn send_text(&mut self, text: String) -> Result<(), Close> {
        self.send_frame(Message::Text(Utf8Bytes::from(text))).await
    }

    async fn send_frame(&mut self, frame: Message) -> Result<(), Close> {
        match within(self.config.send_timeout, self.socket.send(frame)).await {
            Some(Ok(())) => Ok(()),
            _ => Err(Close(
                1011,
                "a frame could not be sent: too large, or the peer stopped reading",
            )),
        }
    }

    async fn close(mut self, Close(code, reason): Close) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = within(
            self.config.send_timeout,
            self.socket.send(Message::Close(Some(frame))),
        )
        .await;
    }

    fn legacy(&self) -> bool {
        self.protocol == WebSocketProtocols::SubscriptionsTransportWS
    }
}

/// `future`'s output, or `None` when it takes longer than `limit`. A future that is ready at once (a
/// frame the socket takes straight away, the usual case) sets no timer.
async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        return Some(output);
    }
    timeout(limit, future).await.ok()
}

/// Parses a client frame. `Ok(None)` for frames that carry no message (pings, pongs).
fn parse(frame: Message) -> Result<Option<ClientMessage>, Close> {
    let bytes = match frame {
        Message::Text(text) => text.as_bytes().to_vec(),
        Message::Binary(bytes) => bytes.to_vec(),
        Message::Ping(_) | Message::Pong(_) => return Ok(None),
        Message::Close(_) => return Err(Close(1000, "")),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| Close(4400, "Invalid message received"))
}

/// Runs one websocket connection until it closes or the server shuts down.
pub async fn serve(socket: WebSocket, protocol: WebSocketProtocols, state: AppState) {
    let _open = state.metrics.websocket_opened();
    let config = state.ws;
    let mut connection = Connection {
        socket,
        protocol,
        config,
    };
    let outcome = match handshake(&mut connection, &state).await {
        Ok(role) => run(&mut connection, &state, role).await,
        Err(close) => Err(close),
    };
    if let Err(close) = outcome {
        connection.close(close).await;
    }
}

/// Waits for `connection_init` and answers it. Pings before it are answered.
async fn handshake(connection: &mut Connection, state: &AppState) -> Result<Role, Close> {
    let deadline = Instant::now() + connection.config.init_timeout;
    let mut shutdown = state.shutdown.clone();
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout_at(deadline, connection.socket.recv()) => frame,
            _ = shutdown.wait_for(|stopping| *stopping) => return Err(Close(1001, "server shutting down")),
        };
        let frame = match frame {
            Err(_) => return Err(Close(4408, "Connection initialisation timeout")),
            Ok(None) | Ok(Some(Err(_))) => return Err(Close(1000, "")),
            Ok(Some(Ok(frame))) => frame,
        };
        match parse(frame)? {
            None => {}
            Some(ClientMessage::ConnectionInit { payload }) => {
                let payload = payload.unwrap_or(Value::Null);
                let authorization = ["authorization", "Authorization"]
                    .iter()
                    .find_map(|key| payload.get(*key))
                    .and_then(Value::as_str);
                if state.admin.rejects(authorization) {
                    if connection.legacy() {
                        let error = json!({ "type": "connection_error", "payload": { "message": "Forbidden" } });
                        connection.send(error).await?;
                    }
                    return Err(Close(4403, "Forbidden"));
                }
                connection.send(json!({ "type": "connection_ack" })).await?;
                return Ok(state.admin.role(authorization));
            }
            Some(ClientMessage::Ping { payload }) => connection.send(pong(payload)).await?,
            Some(ClientMessage::Pong { .. }) => {}
            Some(ClientMessage::ConnectionTerminate) => return Err(Close(1000, "")),
            Some(ClientMessage::Start { .. } | ClientMessage::Stop { .. }) => {
                return Err(Close(4401, "Unauthorized"));
            }
        }
    }
}

fn pong(payload: Option<Value>) -> Value {
    match payload {
        Some(payload) => json!({ "type": "pong", "payload": payload }),
        None => json!({ "type": "pong" }),
    }
}

/// The acknowledged connection: runs operations, forwards their results, pings.
async fn run(connection: &mut Connection, state: &AppState, role: Role) -> Result<(), Close> {
    let mut data = Data::default();
    data.insert(role);
    data.insert(loaders::uncached(state.db.clone()));
    let session = Session {
        role,
        data: Arc::new(data),
    };
    let mut operations: StreamMap<String, Frames> = StreamMap::new();
    let mut ping = tokio::time::interval_at(
        Instant::now() + connection.config.ping_interval,
        connection.config.ping_interval,
    );
    let mut last_heard = Instant::now();
    // One wait for the whole connection, not a new one each time round the loop.
    let mut shutdown = state.shutdown.clone();
    let mut stopping = pin!(async move {
        // An error means the sender is gone: the server is shutting down all the same.
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    });
    loop {
        tokio::select! {
            biased;
            _ = &mut stopping => return Err(Close(1001, "server shutting down")),
            // Before the others, which are polled in this order: a busy subscription must not keep
            // the pings (and the check for a silent peer) from running. It is ready once an interval.
            _ = ping.tick() => {
                if last_heard.elapsed() > connection.config.ping_interval * 2 {
                    return Err(Close(1008, "no answer to pings"));
                }
                if connection.legacy() {
                    // Legacy clients do not answer `ka`; a websocket ping frame gets a pong from any client.
                    connection.send(json!({ "type": "ka" })).await?;
                    connection.send_frame(Message::Ping(Default::default())).await?;
                } else {
                    connection.send(json!({ "type": "ping" })).await?;
                }
            }
            frame = connection.socket.recv() => {
                let Some(Ok(frame)) = frame else { return Ok(()) };
                last_heard = Instant::now();
                let Some(message) = parse(frame)? else { continue };
                handle(connection, &mut operations, state, &session, message).await?;
            }
            Some((id, frame)) = operations.next(), if !operations.is_empty() => {
                forward(connection, &mut operations, id, &frame).await?;
            }
        }
    }
}

/// What operations of an acknowledged connection run with.
struct Session {
    role: Role,
    data: Arc<Data>,
}

async fn handle(
    connection: &mut Connection,
    operations: &mut StreamMap<String, Frames>,
    state: &AppState,
    session: &Session,
    message: ClientMessage,
) -> Result<(), Close> {
    match message {
        ClientMessage::ConnectionInit { .. } => {
            Err(Close(4429, "Too many initialisation requests"))
        }
        ClientMessage::Start { id, mut payload } => {
            if operations.contains_key(&id) {
                return Err(Close(4409, "Subscriber for this id already exists"));
            }
            let operation = state.documents.parse_kind(&mut payload);
            // Only subscriptions can share an execution (a document that does not parse runs alone:
            // async-graphql reports its error).
            let shared = match operation {
                "subscription" => state.fanout.subscribe(payload, session.role),
                _ => Err(payload),
            };
            let frames = shared.unwrap_or_else(|payload| alone(state, session, payload));
            let guard = state.metrics.subscription_started();
            let outcomes = state.metrics.graphql_outcomes(operation);
            let frames = frames.inspect(move |frame| {
                let _running = &guard;
                match frame.kind {
                    FrameKind::Next { ok, .. } => outcomes.count(ok),
                    FrameKind::Failed { .. } => outcomes.count(false),
                    FrameKind::Complete => {}
                }
            });
            operations.insert(id, Box::pin(frames));
            Ok(())
        }
        ClientMessage::Stop { id } => {
            if operations.remove(&id).is_some() && connection.legacy() {
                connection
                    .send(json!({ "type": "complete", "id": id }))
                    .await?;
            }
            Ok(())
        }
        ClientMessage::ConnectionTerminate => Err(Close(1000, "")),
        ClientMessage::Ping { payload } => connection.send(pong(payload)).await,
        ClientMessage::Pong { .. } => Ok(()),
    }
}

/// Runs an operation for this subscriber only (anything but an entity subscription). A query gives its
/// one answer, then the end; on PostgreSQL, one that met a lost connection runs again on another
/// (`http::graphql::retrying`).
fn alone(state: &AppState, session: &Session, mut request: async_graphql::Request) -> Frames {
    if !documents::is_query(&mut request) {
        return streamed(state, session, request);
    }
    let (state, data) = (state.clone(), session.data.clone());
    let response = async move {
        let response = super::graphql::retrying(&state, request, |request| {
            let mut answers = state
                .schema
                .execute_stream_with_session_data(request, data.clone());
            async move { answers.next().await.unwrap_or_default() }
        })
        .await;
        Arc::new(Frame::from_response(0, response))
    };
    let complete = futures_util::stream::once(async { Arc::new(Frame::complete(0)) });
    Box::pin(futures_util::stream::once(response).chain(complete))
}

/// Runs anything but a query for this subscriber only (a subscription, or a document that does not parse
/// or names no operation, which answers its error): every answer, then the end.
fn streamed(state: &AppState, session: &Session, request: async_graphql::Request) -> Frames {
    let responses = state
        .schema
        .execute_stream_with_session_data(request, session.data.clone())
        .map(|response| Arc::new(Frame::from_response(0, response)));
    let complete = futures_util::stream::once(async { Arc::new(Frame::complete(0)) });
    Box::pin(responses.chain(complete))
}

/// Sends one message of operation `id`; after its completion or failure the operation is removed.
async fn forward(
    connection: &mut Connection,
    operations: &mut StreamMap<String, Frames>,
    id: String,
    frame: &Frame,
) -> Result<(), Close> {
    let quoted = serde_json::to_string(&id).map_err(|_| Close(1011, "unwritable id"))?;
    let (kind, payload) = match (&frame.kind, connection.legacy()) {
        (FrameKind::Next { response, .. }, false) => ("next", response),
        (FrameKind::Next { response, .. } | FrameKind::Failed { response, .. }, true) => {
            ("data", response)
        }
        (FrameKind::Failed { errors, .. }, false) => {
            operations.remove(&id);
            ("error", errors)
        }
        (FrameKind::Complete, _) => {
            operations.remove(&id);
            return connection
                .send_text(format!(r#"{{"type":"complete","id":{quoted}}}"#))
                .await;
        }
    };
    // The payload is serialised once for every subscriber of a shared execution; only the id differs.
    connection
        .send_text(format!(
            r#"{{"type":"{kind}","id":{quoted},"payload":{payload}}}"#
        ))
        .await
}
