//! A websocket client for the tests: `graphql-transport-ws` or legacy `graphql-ws`, over a real socket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{ADMIN_TOKEN, TestApp};

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY_WS: &str = "graphql-ws";

/// What the server sent: a protocol message, or the close frame's code.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Message(Value),
    Closed(Option<u16>),
}

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Answer the server's `ping` messages (a well-behaved client does).
    pub answer_pings: bool,
    /// How many `ping` messages the server sent so far.
    pub pings: usize,
    legacy: bool,
}

impl WsClient {
    /// A `graphql-transport-ws` connection, initialised with the admin token.
    pub async fn admin(app: &TestApp) -> Self {
        let mut client = Self::connect(app, TRANSPORT_WS).await;
        client
            .init(json!({ "authorization": format!("Bearer {ADMIN_TOKEN}") }))
            .await;
        client
    }

    pub async fn connect(app: &TestApp, protocol: &str) -> Self {
        let url = format!("{}/graphql", app.address.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket upgrade");
        assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        Self {
            socket,
            answer_pings: true,
            pings: 0,
            legacy: protocol == LEGACY_WS,
        }
    }

    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("sent");
    }

    /// The next protocol message or close, within `wait`. Server pings are answered (when `answer_pings`)
    /// and skipped, as are `ka` keep-alives.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()?;
            match frame {
                None | Some(Err(_)) => return Some(Frame::Closed(None)),
                Some(Ok(Message::Close(frame))) => {
                    return Some(Frame::Closed(frame.map(|f| u16::from(f.code))));
                }
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON from the server");
                    match value["type"].as_str() {
                        Some("ping") => {
                            self.pings += 1;
                            if self.answer_pings {
                                self.send(json!({ "type": "pong" })).await;
                            }
                        }
                        Some("ka") => {}
                        _ => return Some(Frame::Message(value)),
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn recv(&mut self) -> Frame {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("a frame within 10 s")
    }

    /// The next protocol message (panics on a close).
    pub async fn message(&mut self) -> Value {
        match self.recv().await {
            Frame::Message(value) => value,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                Frame::Closed(code) => return code,
                Frame::Message(_) => {}
            }
        }
    }

    /// `connection_init` with an optional payload; expects the ack.
    pub async fn init(&mut self, payload: Value) {
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(self.message().await["type"], "connection_ack");
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.is_legacy() {
            "start"
        } else {
            "subscribe"
        };
        self.send(json!({ "type": kind, "id": id, "payload": { "query": query, "variables": variables } }))
            .await;
    }

    fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// The `data` of the next result of operation `id` (`next`, or `data` in the legacy protocol).
    pub async fn next_data(&mut self, id: &str) -> Value {
        let message = self.message().await;
        assert_eq!(message["id"], id, "{message}");
        assert!(
            ["next", "data"].contains(&message["type"].as_str().unwrap()),
            "{message}"
        );
        assert!(message["payload"].get("errors").is_none(), "{message}");
        message["payload"]["data"].clone()
    }
}
