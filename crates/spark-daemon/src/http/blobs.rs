//! Blobs between an HTTP body and a namespace, with bounded memory either way: a large PUT is written to the
//! store a chunk at a time through [`Namespace::begin_put`] (hashed on the way when the caller must verify it),
//! a large GET is read from disk a chunk at a time into a small channel the response body drains.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body::{Body as _, Frame};
use sha2::{Digest, Sha256};
use spark_store::StoreError;
use tokio::sync::mpsc;

use crate::namespaces::{Blob, Namespace, NsError};

/// Bodies up to this size are collected and stored with one `put` (small blobs go to pack files); larger ones
/// are streamed.
const WHOLE_MAX: u64 = 1 << 20;
/// Chunk size of a streamed GET.
const READ_CHUNK: usize = 256 * 1024;
/// Chunks in flight between the body and the store, each way: what bounds a transfer's memory.
const CHANNEL_CHUNKS: usize = 4;

/// A response body fed by a channel: the producer (a blocking task reading the store, or the SSE loop) stops
/// when the client goes away because its sends fail.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl ChannelBody {
    pub fn new(capacity: usize) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, ChannelBody) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelBody { rx })
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// A request naming something that cannot exist (a malformed key or digest): 400 with the reason.
#[derive(Debug)]
pub struct BadRequest(pub String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.0).into_response()
    }
}

/// Why a PUT failed, as an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("a body without Content-Length may be at most {WHOLE_MAX} bytes; send Content-Length")]
    LengthRequired,
    #[error("the body ended early or could not be read: {0}")]
    Body(String),
    #[error("storing failed: {0}")]
    Store(String),
}

impl IntoResponse for PutError {
    fn into_response(self) -> Response {
        let status = match &self {
            PutError::BadRequest(_) | PutError::Body(_) => StatusCode::BAD_REQUEST,
            PutError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PutError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            PutError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, format!("{self}\n")).into_response()
    }
}

fn store_error(e: NsError) -> PutError {
    match e {
        NsError::Store(e @ StoreError::TooLarge { .. }) => PutError::TooLarge(e.to_string()),
        NsError::InvalidKey(m) => PutError::BadRequest(m),
        e => PutError::Store(e.to_string()),
    }
}

/// The next data chunk of a request body (trailers are skipped); `None` at its end.
async fn next_chunk(body: &mut Body) -> Option<Result<Bytes, PutError>> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    return Some(Ok(d));
                }
            }
            Err(e) => return Some(Err(PutError::Body(e.to_string()))),
        }
    }
}

/// Checks a body against the SHA-256 its URL names.
fn check_sha256(got: &[u8], want: &[u8; 32]) -> Result<(), PutError> {
    if got == want {
        return Ok(());
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Err(PutError::BadRequest(format!(
        "the body's SHA-256 is {}, not {} as its URL says; nothing was stored",
        hex(got),
        hex(want)
    )))
}

/// Stores `body` under `key`. `len` is the request's Content-Length; `sha256`, when given, is what the body
/// must hash to (else nothing is stored). Returns the number of bytes stored.
pub async fn put(
    ns: &Arc<Namespace>,
    key: Vec<u8>,
    mut body: Body,
    len: Option<u64>,
    sha256: Option<[u8; 32]>,
) -> Result<u64, PutError> {
    ns.check_key(&key).map_err(store_error)?;
    match len {
        Some(n) if n > WHOLE_MAX => put_streamed(ns, key, body, n, sha256).await,
        _ => {
            let mut buf = BytesMut::with_capacity(len.unwrap_or(0) as usize);
            while let Some(c) = next_chunk(&mut body).await {
                let c = c?;
                if buf.len() + c.len() > WHOLE_MAX as usize {
                    return Err(match len {
                        None => PutError::LengthRequired,
                        Some(n) => PutError::Body(format!("more bytes than the announced {n}")),
                    });
                }
                buf.extend_from_slice(&c);
            }
            if let Some(n) = len
                && n != buf.len() as u64
            {
                return Err(PutError::Body(format!(
                    "received {} of the announced {n} bytes",
                    buf.len()
                )));
            }
            if let Some(want) = &sha256 {
                check_sha256(&Sha256::digest(&buf), want)?;
            }
            let n = buf.len() as u64;
            ns.put(key, buf.freeze()).await.map_err(store_error)?;
            Ok(n)
        }
    }
}

/// A large PUT: chunks go through a small channel to a blocking task that writes them to the store (and
/// hashes them); only a complete, matching body is committed.
async fn put_streamed(
    ns: &Arc<Namespace>,
    key: Vec<u8>,
    mut body: Body,
    len: u64,
    sha256: Option<[u8; 32]>,
) -> Result<u64, PutError> {
    let mut writer = ns.begin_put(key, len).await.map_err(store_error)?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let task = tokio::task::spawn_blocking(move || -> Result<u64, PutError> {
        let mut hasher = sha256.map(|_| Sha256::new());
        let mut n = 0u64;
        while let Some(c) = rx.blocking_recv() {
            if let Some(h) = hasher.as_mut() {
                h.update(&c);
            }
            n += c.len() as u64;
            writer.write(&c).map_err(|e| match e {
                StoreError::StreamMismatch(m) => PutError::Body(m),
                e => PutError::Store(e.to_string()),
            })?;
        }
        if n != len {
            // Dropping the writer abandons the put and leaves no trace.
            return Err(PutError::Body(format!(
                "received {n} of the announced {len} bytes"
            )));
        }
        if let (Some(h), Some(want)) = (hasher, &sha256) {
            check_sha256(&h.finalize(), want)?;
        }
        writer
            .commit(None)
            .map_err(|e| PutError::Store(e.to_string()))?;
        Ok(n)
    });
    let mut read_err = None;
    while let Some(c) = next_chunk(&mut body).await {
        match c {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break; // The writer failed; its error is the answer.
                }
            }
            Err(e) => {
                read_err = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let r = task
        .await
        .map_err(|e| PutError::Store(format!("store task failed: {e}")))?;
    match read_err {
        Some(e) => Err(e),
        None => r,
    }
}

/// A GET's response: the blob (streamed from disk when large), or 404.
pub async fn get(ns: &Arc<Namespace>, key: &[u8]) -> Response {
    match ns.get(key).await {
        Ok(None) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Ok(Some(Blob::Bytes(b))) => octets(b.len() as u64, Body::from(b)),
        Ok(Some(Blob::Stream(mut r))) => {
            let total = r.len();
            let (tx, body) = ChannelBody::new(CHANNEL_CHUNKS);
            tokio::task::spawn_blocking(move || {
                loop {
                    let next = match r.next_chunk(READ_CHUNK) {
                        Ok(Some(c)) => Ok(c),
                        Ok(None) => return,
                        // A corrupt blob ends the body early: the client sees a short read, never bad bytes.
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    let failed = next.is_err();
                    if tx.blocking_send(next).is_err() || failed {
                        return;
                    }
                }
            });
            octets(total, Body::new(body))
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading failed: {e}\n"),
        )
            .into_response(),
    }
}

/// A HEAD's response: 200 with the size, or 404; never counts a hit or a miss, never reads the blob.
pub fn head(ns: &Namespace, key: &[u8]) -> Response {
    match ns.exists(key) {
        Some(n) => octets(n, Body::empty()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn octets(len: u64, body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// The request's Content-Length, if it has a valid one.
pub fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
