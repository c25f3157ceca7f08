//! `/graphql`: queries over `POST` and `GET ?query=`, subscriptions over a websocket upgrade on `GET`.

use async_graphql::ParseRequestError;
use async_graphql::http::{MultipartOptions, WebSocketProtocols, receive_body};
use async_graphql_axum::GraphQLResponse;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Query, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sea_orm::DbBackend;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{MAX_BODY_BYTES, body_error};
use crate::app::AppState;
use crate::db::Attempts;
use crate::error::ApiError;
use crate::graphql::errors::met_lost_connection;
use crate::graphql::{Role, documents, prepare, with_error_codes};

pub fn router() -> Router<AppState> {
    Router::new().route("/graphql", get(get_graphql).post(post_graphql))
}

fn role(state: &AppState, headers: &HeaderMap) -> Role {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.admin.role(authorization)
}

/// `POST /graphql`: a body of at most [`MAX_BODY_BYTES`], read as async-graphql reads it (JSON whatever
/// the `Content-Type`, but multipart when it says so). A body too large answers 413, one that is not a
/// GraphQL request 400, both with SPEC's JSON error body.
async fn post_graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<GraphQLResponse, ApiError> {
    let body = body.map_err(body_error)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let request = receive_body(content_type, body.as_ref(), MultipartOptions::default())
        .await
        .map_err(|error| match error {
            ParseRequestError::PayloadTooLarge => ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            },
            error => ApiError::BadRequest(format!("the body is not a GraphQL request: {error}")),
        })?;
    Ok(execute(&state, request, role(&state, &headers)).await)
}

/// Runs one HTTP GraphQL request and counts it.
async fn execute(
    state: &AppState,
    mut request: async_graphql::Request,
    role: Role,
) -> GraphQLResponse {
    let operation = state.documents.parse_kind(&mut request);
    let response = retrying(state, request, |request| {
        state.schema.execute(prepare(request, &state.db, role))
    })
    .await;
    let response = with_error_codes(response);
    state.metrics.graphql(operation, response.is_ok());
    response.into()
}

/// Runs `request` (its document already given by `documents.parse`) with `run`; on PostgreSQL, when it
/// is a query and met a lost connection (one PostgreSQL closed as it restarted, say, which the pool
/// hands out unchecked when it was used in the last few seconds: `db::POSTGRES_TEST_AFTER_IDLE`), runs
/// a copy again, on another connection, as far as [`Attempts`] allow, as the intake writer does with a
/// delivery; the earlier answers are dropped. A query only reads, so running it again is safe. Used for
/// queries over HTTP and over a websocket. Each execution counts in
/// `fastpix_sync_graphql_documents_total`.
pub(super) async fn retrying<F, Fut>(
    state: &AppState,
    mut request: async_graphql::Request,
    mut run: F,
) -> async_graphql::Response
where
    F: FnMut(async_graphql::Request) -> Fut,
    Fut: Future<Output = async_graphql::Response>,
{
    let mut attempts = Attempts::start();
    let again = (state.db.get_database_backend() == DbBackend::Postgres
        && documents::is_query(&mut request))
    .then(|| copy(&request));
    let mut response = run(request).await;
    let Some(request) = again else {
        return response;
    };
    while met_lost_connection(&response) && attempts.another() {
        state.metrics.graphql_retry();
        let mut next = copy(&request);
        state.documents.parse(&mut next);
        response = run(next).await;
    }
    if met_lost_connection(&response) {
        tracing::error!(
            attempts = attempts.made(),
            "a GraphQL query lost its database connection on every attempt"
        );
    }
    response
}

/// What the client sent, for another execution: its document, operation, variables and extensions.
/// Nothing else is set yet: `prepare` adds the role and the data loaders to each execution, and
/// `documents.parse` the parsed document; uploads have no use in this schema, and the introspection mode
/// is never changed.
fn copy(request: &async_graphql::Request) -> async_graphql::Request {
    let mut copy =
        async_graphql::Request::new(request.query.clone()).variables(request.variables.clone());
    copy.operation_name.clone_from(&request.operation_name);
    copy.extensions.clone_from(&request.extensions);
    copy
}

async fn get_graphql(State(state): State<AppState>, request: Request) -> Response {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_upgrade {
        return subscribe(state, request).await;
    }
    let role = role(&state, request.headers());
    // The request is in the query string, for a `HEAD` too (axum serves `HEAD` with this handler).
    match from_query_string(request.uri()) {
        Ok(query) => execute(&state, query, role).await.into_response(),
        Err(error) => ApiError::BadRequest(format!(
            "GET /graphql takes a query in its query string (`query`, and `variables` and \
             `extensions` as JSON objects), or a websocket upgrade: {error}"
        ))
        .into_response(),
    }
}

/// A query-string parameter `name` holding a JSON object, read as `T`; an empty one is as none.
fn json_object<T: DeserializeOwned>(name: &str, text: Option<String>) -> Result<Option<T>, String> {
    text.filter(|t| !t.is_empty())
        .map(|t| {
            serde_json::from_str(&t).map_err(|e| format!("`{name}` is not a JSON object: {e}"))
        })
        .transpose()
}

/// A `GET` request's parameters, as GraphQL over HTTP names them. async-graphql's own reader of the query
/// string takes `operation_name` instead of `operationName`, and an empty document when `query` is
/// missing; `operation_name` is still read, for clients written against it.
#[derive(Deserialize)]
struct GetParams {
    query: String,
    #[serde(rename = "operationName", alias = "operation_name")]
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// The GraphQL request in `uri`'s query string; `variables` and `extensions` are JSON objects.
fn from_query_string(uri: &Uri) -> Result<async_graphql::Request, String> {
    let Query(params) = Query::<GetParams>::try_from_uri(uri).map_err(|e| e.body_text())?;
    let mut request = async_graphql::Request::new(params.query);
    request.operation_name = params.operation_name;
    if let Some(variables) = json_object("variables", params.variables)? {
        request.variables = variables;
    }
    if let Some(extensions) = json_object("extensions", params.extensions)? {
        request.extensions = extensions;
    }
    Ok(request)
}

/// The largest frame a websocket sends. Frames are written one at a time, each flushed before the next
/// (`ws::Connection::send_frame`), so this bounds one frame, not a backlog: an event of a webhook body
/// near [`MAX_BODY_BYTES`], or a page of a few, must fit in one, or its connection closes. The buffer
/// grows only as a frame needs it (a connection that never sent a large frame holds no more), and then
/// keeps that size while the connection lasts.
const MAX_SENT_FRAME_BYTES: usize = 16 * 1024 * 1024;

async fn subscribe(state: AppState, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let offered = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(protocol) = offered
        .split(',')
        .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
    else {
        return ApiError::BadRequest(
            "websocket subprotocol must be `graphql-transport-ws` or `graphql-ws`".into(),
        )
        .into_response();
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        // 426 when the connection cannot be upgraded; else 400, a `HEAD` included (the upgrade needs a `GET`).
        Err(rejection) if rejection.status() == StatusCode::UPGRADE_REQUIRED => {
            return ApiError::UpgradeRequired(rejection.body_text()).into_response();
        }
        Err(rejection) => return ApiError::BadRequest(rejection.body_text()).into_response(),
    };
    upgrade
        .protocols([protocol.sec_websocket_protocol()])
        // Small buffers: a server holds thousands of mostly idle subscribers (the defaults are 128 KiB each).
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_SENT_FRAME_BYTES)
        .max_message_size(MAX_BODY_BYTES)
        .on_upgrade(move |socket| super::ws::serve(socket, protocol, state))
}
