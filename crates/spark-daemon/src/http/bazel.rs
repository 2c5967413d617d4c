//! Bazel's HTTP remote cache (`--remote_cache=http://…`): `/ac/<sha256>` (action results, namespace
//! `bazel-ac`) and `/cas/<sha256>` (content-addressed blobs, namespace `bazel-cas`), with GET, HEAD and PUT. A
//! CAS body must hash to its name or nothing is stored (400). Large bodies stream both ways with bounded
//! memory ([`super::blobs`]). Bazel sends the token as HTTP Basic from the URL
//! (`--remote_cache=http://:TOKEN@127.0.0.1:PORT`) or as `--remote_header=Authorization=Bearer TOKEN`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::blobs::{self, BadRequest};
use super::server::App;

/// The 32 bytes a lowercase (or uppercase) hex SHA-256 names.
pub fn parse_sha256(hex: &str) -> Result<[u8; 32], BadRequest> {
    let bad = || {
        BadRequest(format!(
            "'{hex}' is not a SHA-256: expected 64 hex digits\n"
        ))
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

async fn get_in(app: &App, ns: &str, hash: &str) -> Response {
    match parse_sha256(hash) {
        Ok(k) => blobs::get(&app.namespaces.expect(ns), &k).await,
        Err(r) => r.into_response(),
    }
}

fn head_in(app: &App, ns: &str, hash: &str) -> Response {
    match parse_sha256(hash) {
        Ok(k) => blobs::head(&app.namespaces.expect(ns), &k),
        Err(r) => r.into_response(),
    }
}

async fn put_in(app: &App, ns: &str, hash: &str, headers: &HeaderMap, body: Body) -> Response {
    let k = match parse_sha256(hash) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    // Only the CAS is addressed by content; an action result is keyed by its action's digest.
    let verify = (ns == "bazel-cas").then_some(k);
    let len = blobs::content_length(headers);
    match blobs::put(&app.namespaces.expect(ns), k.to_vec(), body, len, verify).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn get_ac(State(app): State<Arc<App>>, Path(h): Path<String>) -> Response {
    get_in(&app, "bazel-ac", &h).await
}

pub async fn head_ac(State(app): State<Arc<App>>, Path(h): Path<String>) -> Response {
    head_in(&app, "bazel-ac", &h)
}

pub async fn put_ac(
    State(app): State<Arc<App>>,
    Path(h): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    put_in(&app, "bazel-ac", &h, &headers, body).await
}

pub async fn get_cas(State(app): State<Arc<App>>, Path(h): Path<String>) -> Response {
    get_in(&app, "bazel-cas", &h).await
}

pub async fn head_cas(State(app): State<Arc<App>>, Path(h): Path<String>) -> Response {
    head_in(&app, "bazel-cas", &h)
}

pub async fn put_cas(
    State(app): State<Arc<App>>,
    Path(h): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    put_in(&app, "bazel-cas", &h, &headers, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_names_parse_or_are_refused() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(parse_sha256(h).unwrap()[..2], [0xe3, 0xb0]);
        assert!(parse_sha256(&h[1..]).is_err());
        assert!(parse_sha256(&h.replace('e', "g")).is_err());
        assert!(parse_sha256(&"é".repeat(32)).is_err());
    }
}
