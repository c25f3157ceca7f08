//! `/graphql`: queries over `POST` and `GET ?query=`, subscriptions over a websocket upgrade on `GET`.

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::ApiError;
use crate::graphql::{Role, prepare};

pub fn router() -> Router<AppState> {
    Router::new().route("/graphql", get(get_graphql).post(post_graphql))
}

fn role(state: &AppState, headers: &HeaderMap) -> Role {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.admin.role(authorization)
}

async fn post_graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let role = role(&state, &headers);
    state
        .schema
        .execute(prepare(request.into_inner(), &state.db, role))
        .await
        .into()
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
    match GraphQLRequest::<async_graphql_axum::rejection::GraphQLRejection>::from_request(
        request, &state,
    )
    .await
    {
        Ok(query) => GraphQLResponse::from(
            state
                .schema
                .execute(prepare(query.into_inner(), &state.db, role))
                .await,
        )
        .into_response(),
        Err(rejection) => ApiError::BadRequest(format!(
            "GET /graphql needs a `query` parameter (or a websocket upgrade): {}",
            rejection.0
        ))
        .into_response(),
    }
}

async fn subscribe(state: AppState, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &state).await {
        Ok(protocol) => protocol,
        Err(rejection) => return rejection.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let schema = state.schema.clone();
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let admin = state.admin.clone();
            let db = state.db.clone();
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let authorization = payload
                        .get("authorization")
                        .or_else(|| payload.get("Authorization"))
                        .and_then(|v| v.as_str());
                    if admin.rejects(authorization) {
                        return Err(async_graphql::Error::new(
                            "the admin token in connection_init is not valid",
                        ));
                    }
                    let mut data = Data::default();
                    data.insert(admin.role(authorization));
                    data.insert(crate::graphql::loaders::uncached(db));
                    Ok(data)
                })
                .serve()
                .await;
        })
}
