//! ccache's `http` remote storage backend (ccache 4.4+): GET, HEAD, PUT and DELETE of `/ccache/<key>`, in the
//! `ccache` namespace (its own memory share and disk budget). Both of ccache's path layouts work: `subdirs`
//! (its default, `/ccache/ab/cdef…`) and `flat` (`/ccache/abcdef…`) name the same entry. ccache sends the
//! token as HTTP Basic: `CCACHE_REMOTE_STORAGE="http://:TOKEN@127.0.0.1:PORT/ccache"` (docs/http.md).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::blobs::{self, BadRequest};
use super::server::App;

/// The entry's key: the path under `/ccache/` without its layout's slashes. ccache's keys are letters and
/// digits; anything else is refused rather than stored under a name ccache could never ask for.
fn key(path: &str) -> Result<Vec<u8>, BadRequest> {
    let k: String = path.split('/').collect();
    if k.is_empty() || k.len() > 128 || !k.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(BadRequest(format!(
            "'{path}' is not a ccache key: expected 1..=128 letters and digits, optionally split by '/'\n"
        )));
    }
    Ok(k.into_bytes())
}

pub async fn get(State(app): State<Arc<App>>, Path(path): Path<String>) -> Response {
    match key(&path) {
        Ok(k) => blobs::get(&app.namespaces.expect("ccache"), &k).await,
        Err(r) => r.into_response(),
    }
}

pub async fn head(State(app): State<Arc<App>>, Path(path): Path<String>) -> Response {
    match key(&path) {
        Ok(k) => blobs::head(&app.namespaces.expect("ccache"), &k),
        Err(r) => r.into_response(),
    }
}

pub async fn put(
    State(app): State<Arc<App>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let k = match key(&path) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let ns = app.namespaces.expect("ccache");
    match blobs::put(&ns, k, body, blobs::content_length(&headers), None).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn delete(State(app): State<Arc<App>>, Path(path): Path<String>) -> Response {
    let k = match key(&path) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    match app.namespaces.expect("ccache").remove(k).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("removing failed: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_name_one_key_and_odd_paths_are_refused() {
        assert_eq!(key("ab/cdef").unwrap(), b"abcdef");
        assert_eq!(key("abcdef").unwrap(), b"abcdef");
        assert!(key("../etc").is_err());
        assert!(key("").is_err());
        assert!(key(&"a".repeat(129)).is_err());
    }
}
