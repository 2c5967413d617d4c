//! The live dashboard at `/`: one HTML page, a script and a style sheet embedded in the binary
//! (`include_str!`, no build step), charts drawn as inline SVG. The page carries the recent history in the
//! HTML itself, so it has data the moment it loads, then follows `/events` (server-sent events, one sample a
//! second). A browser cannot put a header on an EventSource, so the page passes the token it was opened with
//! (`/?token=…`) on as `?token=…`; only the dashboard's routes accept a token in the query.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::blobs::ChannelBody;
use super::server::App;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Where the page's initial history goes.
const HISTORY_SLOT: &str = "__SPARKD_HISTORY__";
/// Where the assets' URLs get the page's `?token=`.
const QUERY_SLOT: &str = "__SPARKD_Q__";

fn with_type(body: impl Into<Body>, content_type: &'static str) -> Response {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub async fn page(State(app): State<Arc<App>>, uri: axum::http::Uri) -> Response {
    // The assets need the token too: a page opened with `?token=` hands it on in their URLs. Only a token of
    // letters and digits is echoed (the gate checked a query token; a header-authenticated request's query
    // is not checked and must not reach the HTML).
    let q = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("token="))
        .find(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric()))
        .map(|t| format!("?token={t}"))
        .unwrap_or_default();
    // Inside a <script> element nothing may close it: '<' only occurs in JSON strings (client names), where
    // its \u escape means the same.
    let history = app.history.to_json().replace('<', "\\u003c");
    let html = INDEX_HTML
        .replace(QUERY_SLOT, &q)
        .replacen(HISTORY_SLOT, &history, 1);
    with_type(html, "text/html; charset=utf-8")
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => with_type(APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => with_type(STYLE_CSS, "text/css; charset=utf-8"),
        _ => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// Server-sent events: every new sample as one `data:` line, until the client leaves or the daemon stops.
pub async fn events(State(app): State<Arc<App>>) -> Response {
    let (tx, body) = ChannelBody::new(4);
    let mut latest = app.history.latest.subscribe();
    tokio::spawn(async move {
        if tx
            .send(Ok(Bytes::from_static(b"retry: 2000\n\n")))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let sample = latest.borrow_and_update().clone();
            if let Some(s) = sample {
                let event = Bytes::from(format!("data: {s}\n\n"));
                if tx.send(Ok(event)).await.is_err() {
                    return; // The page went away.
                }
            }
            tokio::select! {
                r = latest.changed() => if r.is_err() { return },
                _ = app.state.shutting_down() => return,
            }
        }
    });
    with_type(Body::new(body), "text/event-stream")
}
