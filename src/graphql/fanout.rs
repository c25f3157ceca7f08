//! One execution for many identical entity subscriptions.
//!
//! A status page has thousands of viewers subscribed to the same stream with the same document. Run once
//! per viewer, a change would be resolved and serialised thousands of times, and every viewer would hold
//! its own parsed document and stream. Instead, entity subscriptions (`liveStream`, `media`) whose request
//! (document, operation name, variables) and role are the same share one execution: each of its responses
//! is serialised once, and every subscriber gets the same bytes.
//!
//! Why a subscriber of a shared execution sees what it would have seen alone: an entity subscription emits
//! the whole current state first, then one message per change. A subscriber that joins a running execution
//! gets the execution's last message (its current state) and then every later one; both are taken under
//! the lock the execution publishes under, so nothing is doubled or missed at the seam. A subscriber that
//! falls behind the channel gets the last message again (the current state), as an unshared entity
//! subscription re-sends it. The last message is current in its nested fields too: an entity sends its
//! state again when an entity those fields show changes (`watch::Watched::touched_by`). Other
//! subscriptions (update feeds, the event feed with its cursor) run per subscriber, as they did.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use async_graphql::parser::types::{OperationType, Selection};
use async_graphql::{Data, Request, Response};
use futures_util::{Stream, StreamExt};
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;

use super::{AppSchema, Role, loaders};
use crate::metrics::{GaugeGuard, Metrics};

/// Root fields whose subscriptions can be shared: every message is the whole current state.
const SHAREABLE_FIELDS: [&str; 2] = ["liveStream", "media"];

/// Messages an execution keeps for subscribers that are a little behind.
const CHANNEL_CAPACITY: usize = 16;

/// One result of a subscription, serialised once for every subscriber that receives it.
#[derive(Debug)]
pub struct Frame {
    /// Numbers the messages of one execution from 1; 0 for an unshared one.
    seq: u64,
    pub kind: FrameKind,
}

#[derive(Debug)]
pub enum FrameKind {
    /// A result: the serialised response and whether it had no error.
    Next { response: String, ok: bool },
    /// The operation could not start (no data, only errors): the response and its errors, serialised.
    Failed { response: String, errors: String },
    /// The subscription ended.
    Complete,
}

impl Frame {
    pub fn from_response(seq: u64, response: Response) -> Self {
        Self {
            seq,
            kind: FrameKind::from_response(response),
        }
    }

    pub fn complete(seq: u64) -> Self {
        Self {
            seq,
            kind: FrameKind::Complete,
        }
    }
}

impl FrameKind {
    fn from_response(response: Response) -> Self {
        let response = super::with_error_codes(response);
        if response.data == async_graphql::Value::Null && !response.errors.is_empty() {
            Self::Failed {
                response: to_json(&response),
                errors: to_json(&response.errors),
            }
        } else {
            Self::Next {
                response: to_json(&response),
                ok: response.errors.is_empty(),
            }
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    // Responses and errors are maps of strings and values: serialising them cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

pub type Frames = Pin<Box<dyn Stream<Item = Arc<Frame>> + Send>>;

/// What makes two subscriptions the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    role: Role,
    query: String,
    operation_name: Option<String>,
    variables: String,
}

/// The running shared executions, by request. Cheap to clone; lives in application state.
#[derive(Clone)]
pub struct Fanout {
    schema: AppSchema,
    db: DatabaseConnection,
    metrics: Metrics,
    running: Arc<Mutex<Registry>>,
}

/// Shared executions by request. Entries of stopped executions are swept when the map has doubled since
/// the last sweep, so finding and adding stay O(1) amortised.
#[derive(Default)]
struct Registry {
    executions: HashMap<Key, Weak<Execution>>,
    sweep_at: usize,
}

impl Registry {
    fn insert(&mut self, key: Key, execution: &Arc<Execution>) {
        if self.executions.len() >= self.sweep_at {
            self.executions.retain(|_, e| e.strong_count() > 0);
            self.sweep_at = (self.executions.len() * 2).max(64);
        }
        self.executions.insert(key, Arc::downgrade(execution));
    }
}

impl Fanout {
    pub fn new(schema: AppSchema, db: DatabaseConnection, metrics: Metrics) -> Self {
        Self {
            schema,
            db,
            metrics,
            running: Arc::default(),
        }
    }

    /// The subscription's messages from a shared execution, or the request back when it is not a shareable
    /// entity subscription (the caller runs it alone). The request's document is parsed here unless the
    /// caller gave it one (`graphql::documents`).
    #[allow(clippy::result_large_err)]
    pub fn subscribe(&self, mut request: Request, role: Role) -> Result<Frames, Request> {
        if !request.extensions.is_empty() {
            return Err(request);
        }
        let Ok(variables) = serde_json::to_string(&request.variables) else {
            return Err(request);
        };
        let key = Key {
            role,
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables,
        };
        // A key in the registry was found shareable when its first execution started; a new one is looked
        // at here, outside the lock, and its execution runs the request's document.
        let known = self.registry().executions.contains_key(&key);
        if !known && !shareable(&mut request) {
            return Err(request);
        }
        let execution = {
            let mut running = self.registry();
            match running.executions.get(&key).and_then(Weak::upgrade) {
                Some(execution) if !execution.channel.ended() => execution,
                _ => {
                    let execution = self.start(request, role);
                    running.insert(key, &execution);
                    execution
                }
            }
        };
        Ok(self.follow(execution))
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, request: Request, role: Role) -> Arc<Execution> {
        let mut data = Data::default();
        data.insert(role);
        data.insert(loaders::uncached(self.db.clone()));
        let responses = self
            .schema
            .execute_stream_with_session_data(request, Arc::new(data));
        let channel = Arc::new(Channel {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            state: Mutex::default(),
        });
        let publishing = Completes(channel.clone());
        let task = tokio::spawn(async move {
            let mut responses = std::pin::pin!(responses);
            while let Some(response) = responses.next().await {
                // Serialised here, outside the channel's lock.
                publishing.0.publish(FrameKind::from_response(response));
            }
            // `publishing` completes the execution as it drops: here, or if a resolver panicked.
        });
        Arc::new(Execution {
            channel,
            task: task.abort_handle(),
            _running: self.metrics.shared_execution_started(),
        })
    }

    /// One subscriber's messages: the execution's last message, if any, then every later one; when the
    /// execution completed before the subscriber joined, its last message and the completion.
    fn follow(&self, execution: Arc<Execution>) -> Frames {
        let channel = execution.channel.clone();
        let Joined {
            mut receiver,
            last,
            complete,
        } = channel.join();
        let metrics = self.metrics.clone();
        Box::pin(async_stream::stream! {
            // The execution runs while a subscriber holds it.
            let _execution = execution;
            let mut seen = 0;
            let mut next = last;
            let mut completed = complete;
            loop {
                if let Some(frame) = next.take().filter(|frame| frame.seq > seen) {
                    seen = frame.seq;
                    let done = matches!(frame.kind, FrameKind::Complete);
                    yield frame;
                    if done {
                        break;
                    }
                }
                if let Some(complete) = completed.take() {
                    yield complete;
                    break;
                }
                next = match receiver.recv().await {
                    Ok(frame) => Some(frame),
                    Err(RecvError::Lagged(_)) => {
                        metrics.lagged();
                        channel.last()
                    }
                    Err(RecvError::Closed) => break,
                };
            }
        })
    }
}

/// Whether `request` selects exactly one shareable root field of a subscription.
fn shareable(request: &mut Request) -> bool {
    let Some(operation) = super::documents::operation(request) else {
        return false;
    };
    operation.ty == OperationType::Subscription
        && matches!(
            operation.selection_set.node.items.as_slice(),
            [item] if matches!(&item.node, Selection::Field(field)
                if SHAREABLE_FIELDS.contains(&field.node.name.node.as_str()))
        )
}

/// A running shared execution; dropping the last handle stops it.
struct Execution {
    channel: Arc<Channel>,
    task: AbortHandle,
    _running: GaugeGuard,
}

impl Drop for Execution {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where an execution publishes its messages.
struct Channel {
    sender: broadcast::Sender<Arc<Frame>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seq: u64,
    /// The last result (not the completion): the current state, for subscribers joining or behind.
    last: Option<Arc<Frame>>,
    /// The completion, once the execution completed: new subscribers then start a new one.
    complete: Option<Arc<Frame>>,
}

impl Channel {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a message to every subscriber. A result with errors does not replace a good last one:
    /// subscribers joining later start from the good one.
    fn publish(&self, kind: FrameKind) {
        let mut state = self.lock();
        state.seq += 1;
        let frame = Arc::new(Frame {
            seq: state.seq,
            kind,
        });
        match frame.kind {
            FrameKind::Complete => state.complete = Some(frame.clone()),
            FrameKind::Next { ok: false, .. } if state.last.is_some() => {}
            _ => state.last = Some(frame.clone()),
        }
        let _ = self.sender.send(frame);
    }

    /// A receiver of the messages after the last one, the last one, and the completion if it came: taken
    /// together, so a subscriber joining misses nothing and gets nothing twice.
    fn join(&self) -> Joined {
        let state = self.lock();
        Joined {
            receiver: self.sender.subscribe(),
            last: state.last.clone(),
            complete: state.complete.clone(),
        }
    }

    fn last(&self) -> Option<Arc<Frame>> {
        self.lock().last.clone()
    }

    fn ended(&self) -> bool {
        self.lock().complete.is_some()
    }
}

/// What a subscriber joining an execution starts from.
struct Joined {
    receiver: broadcast::Receiver<Arc<Frame>>,
    last: Option<Arc<Frame>>,
    complete: Option<Arc<Frame>>,
}

/// Completes its channel when dropped, unless the execution already did: when the execution's stream
/// ends, and when its task panics or is stopped.
struct Completes(Arc<Channel>);

impl Drop for Completes {
    fn drop(&mut self) {
        if !self.0.ended() {
            self.0.publish(FrameKind::Complete);
        }
    }
}
