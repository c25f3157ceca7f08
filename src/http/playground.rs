//! `GET /`: the GraphiQL playground, with every asset compiled into the binary so that it works offline.
//! The assets are vendored in `assets/graphiql/` (versions and licenses in `VERSIONS.md` there).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::ApiError;

const INDEX: &str = include_str!("../../assets/graphiql/index.html");

/// (file name, bytes, content type) of each asset served under `/assets/graphiql/`.
const ASSETS: &[(&str, &[u8], &str)] = &[
    (
        "graphiql.min.js",
        include_bytes!("../../assets/graphiql/graphiql.min.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "graphiql.min.css",
        include_bytes!("../../assets/graphiql/graphiql.min.css"),
        "text/css; charset=utf-8",
    ),
    (
        "react.production.min.js",
        include_bytes!("../../assets/graphiql/react.production.min.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "react-dom.production.min.js",
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "LICENSE.graphiql",
        include_bytes!("../../assets/graphiql/LICENSE.graphiql"),
        "text/plain; charset=utf-8",
    ),
    (
        "LICENSE.react",
        include_bytes!("../../assets/graphiql/LICENSE.react"),
        "text/plain; charset=utf-8",
    ),
    (
        "LICENSE.react-dom",
        include_bytes!("../../assets/graphiql/LICENSE.react-dom"),
        "text/plain; charset=utf-8",
    ),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/assets/graphiql/{file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, bytes, content_type)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            *bytes,
        )
            .into_response(),
        None => ApiError::NotFound(format!("/assets/graphiql/{file}")).into_response(),
    }
}
