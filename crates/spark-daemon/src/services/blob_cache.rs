//! The binary-protocol adapter that the blob-cache services (Shader, Asset) share: get, put (inline and
//! streamed), exists, clear, stats, each a thin call into the service's [`Namespace`].

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use spark_proto::cache::*;
use spark_proto::{BlobHasher, ErrorCode, Frame, MAX_PAYLOAD, Message};
use spark_store::{PutWriter, StoreError, StoreStats};
use tokio::sync::mpsc;

use crate::namespaces::{Blob, Namespace, NsError};
use crate::registry::{
    HandlerError, HandlerResult, Reply, Request, StreamPart, UploadPart, unknown_message,
};

/// Chunk size for streamed replies.
const STREAM_CHUNK: usize = 1 << 20;
/// Chunks of one streamed reply read ahead of the writer.
const STREAM_AHEAD: usize = 2;

/// A key type of one cache service: how it becomes a store key.
pub trait CacheKey: WireKey + Send + Sync + 'static {
    /// The store key, or a reason the key is not acceptable.
    fn store_key(&self) -> Result<Vec<u8>, HandlerError>;
}

/// The shared adapter of a blob-cache service.
pub struct BlobCache<K> {
    pub ns: Arc<Namespace>,
    _key: PhantomData<fn() -> K>,
}

impl<K: CacheKey> BlobCache<K> {
    pub fn new(ns: Arc<Namespace>) -> Self {
        BlobCache {
            ns,
            _key: PhantomData,
        }
    }

    /// Handles the messages common to every blob cache; `None` = not one of them.
    pub async fn handle_common(&self, req: &mut Request) -> Option<HandlerResult> {
        Some(match req.frame.msg_type {
            GET => self.get(req).await,
            PUT => self.put(req).await,
            PUT_STREAM => self.put_stream(req).await,
            EXISTS => self.exists(req),
            CLEAR => self.clear(req).await,
            STATS => self.stats(req),
            _ => return None,
        })
    }

    /// Whether `frame` changes the cache (so later requests on its connection see its effect).
    pub fn is_write(frame: &Frame) -> bool {
        matches!(frame.msg_type, PUT | PUT_STREAM | CLEAR | INVALIDATE)
    }

    /// The key a Get, Put, PutStream or Exists touches (see [`crate::registry::Service::effect_key`]): a hash of
    /// its wire encoding. A frame whose key does not decode touches "any key"; it is answered Malformed anyway.
    pub fn effect_key(frame: &Frame) -> Option<u64> {
        if !matches!(frame.msg_type, GET | PUT | PUT_STREAM | EXISTS) {
            return None;
        }
        let key = K::decode_key(&mut spark_proto::codec::Reader::new(&frame.payload)).ok()?;
        let mut wire = BytesMut::with_capacity(64);
        key.encode_key(&mut wire);
        Some(xxhash_rust::xxh3::xxh3_64(&wire))
    }

    /// Whether `frame` opens an upload: a PutStream whose header decodes. One that does not is answered
    /// Malformed at once, and the chunks after it are dropped as strays.
    pub fn opens_upload(frame: &Frame) -> bool {
        frame.msg_type == PUT_STREAM && PutStream::<K>::decode(&frame.payload).is_ok()
    }

    async fn get(&self, req: &Request) -> HandlerResult {
        let g: Get<K> = req.decode()?;
        let key = g.key.store_key()?;
        match self.ns.get(&key).await.map_err(ns_error)? {
            None => Ok(Reply::msg(GetResponse {
                status: GetStatus::Miss,
            })),
            // Status byte, then the blob straight from the store's buffer.
            Some(Blob::Bytes(b)) if b.len() < MAX_PAYLOAD => Ok(Reply::Blob {
                msg_type: GET_RESPONSE,
                head: Bytes::from_static(&[1]),
                body: b,
            }),
            Some(Blob::Bytes(b)) => Ok(stream_from_memory(b)),
            Some(Blob::Stream(r)) => Ok(stream_from_disk(r)),
        }
    }

    async fn put(&self, req: &Request) -> HandlerResult {
        let p: Put<K> = req.decode()?;
        let key = p.key.store_key()?;
        // A slice of the read buffer: the store copies what it keeps in memory into its own allocation.
        let stored = self
            .ns
            .put_hinted(key, p.data, req.more_behind)
            .await
            .map_err(ns_error)?;
        Ok(Reply::msg(PutResponse { stored }))
    }

    /// PutStream, then chunk frames, then StreamEnd; one PutResponse (or ErrorResponse) answers it all. A
    /// put that fails part-way still takes the rest of the stream, so the connection stays in step.
    async fn put_stream(&self, req: &mut Request) -> HandlerResult {
        let mut upload = req.take_upload()?;
        let p: PutStream<K> = req.decode()?;
        let mut put = StreamedPut {
            total: p.total_len,
            received: 0,
            writer: None,
            failure: None,
            upload: None,
        };
        match p.key.store_key() {
            Ok(key) => match self.ns.begin_put(key.clone(), p.total_len).await {
                Ok(w) => {
                    put.writer = Some(w);
                    // A copy for the team tier's upload, when it takes one this size.
                    put.upload = self
                        .ns
                        .uploads_stream(p.total_len)
                        .then(|| (key, BytesMut::with_capacity(p.total_len as usize)));
                }
                Err(e) => put.failure = Some(ns_error(e)),
            },
            Err(e) => put.failure = Some(e),
        }
        loop {
            match upload.recv().await {
                None => return Err(HandlerError::Gone),
                Some(UploadPart::Abort(e)) => return Err(HandlerError::Close(e)),
                Some(UploadPart::Chunk(c)) => put.chunk(&self.ns, c).await?,
                Some(UploadPart::End(payload)) => return put.end(&self.ns, payload).await,
            }
        }
    }

    fn exists(&self, req: &Request) -> HandlerResult {
        let e: Exists<K> = req.decode()?;
        let key = e.key.store_key()?;
        let size = self.ns.exists(&key);
        Ok(Reply::msg(ExistsResponse {
            exists: size.is_some(),
            size: size.unwrap_or(0),
        }))
    }

    async fn clear(&self, req: &Request) -> HandlerResult {
        let _: Clear = req.decode()?;
        let removed = self.ns.clear().await.map_err(ns_error)?;
        Ok(Reply::msg(ClearResponse { removed }))
    }

    fn stats(&self, req: &Request) -> HandlerResult {
        let _: Stats = req.decode()?;
        Ok(Reply::msg(wire_stats(&self.ns.stats())))
    }

    /// For services' own messages: an unknown type.
    pub fn unknown(&self, req: &Request) -> HandlerError {
        unknown_message(&req.frame)
    }
}

/// An upload in progress.
struct StreamedPut {
    total: u64,
    received: u64,
    writer: Option<PutWriter>,
    /// The first failure; the stream is still taken to its end, then this is the answer.
    failure: Option<HandlerError>,
    /// The key and a copy of the body for the team tier's write-behind (see `Namespace::uploads_stream`).
    upload: Option<(Vec<u8>, BytesMut)>,
}

impl StreamedPut {
    async fn chunk(&mut self, ns: &Namespace, chunk: Bytes) -> Result<(), HandlerError> {
        self.received += chunk.len() as u64;
        if self.received > self.total {
            return Err(HandlerError::close(
                ErrorCode::StreamMismatch,
                format!("stream sent more than its announced {} bytes", self.total),
            ));
        }
        if let Some((_, copy)) = &mut self.upload {
            copy.extend_from_slice(&chunk);
        }
        if let Some(mut w) = self.writer.take() {
            match ns
                .blocking(move |_| {
                    w.write(&chunk)?;
                    Ok(w)
                })
                .await
            {
                Ok(w) => self.writer = Some(w),
                Err(e) => self.failure = Some(ns_error(e)),
            }
        }
        Ok(())
    }

    async fn end(mut self, ns: &Namespace, payload: Bytes) -> HandlerResult {
        let end = StreamEnd::decode(&payload)?;
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        let w = self
            .writer
            .take()
            .expect("a writer exists when nothing failed");
        let sum = (end.checksum != 0).then_some(end.checksum);
        let stored = ns
            .blocking(move |_| w.commit(sum))
            .await
            .map_err(ns_error)?;
        if let (true, Some((key, copy))) = (stored, self.upload.take()) {
            ns.upload(&key, &copy.freeze());
        }
        Ok(Reply::msg(PutResponse { stored }))
    }
}

/// Streams a large blob held in memory (memory-only stores).
fn stream_from_memory(b: Bytes) -> Reply {
    let (tx, rx) = mpsc::channel(STREAM_AHEAD);
    let total_len = b.len() as u64;
    tokio::spawn(async move {
        let mut hasher = BlobHasher::new();
        for off in (0..b.len()).step_by(STREAM_CHUNK) {
            let chunk = b.slice(off..(off + STREAM_CHUNK).min(b.len()));
            hasher.update(&chunk);
            if tx.send(StreamPart::Chunk(chunk)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(StreamPart::End(hasher.digest128())).await;
    });
    Reply::Stream {
        first: Box::new(GetResponse {
            status: GetStatus::Streamed { total_len },
        }),
        parts: rx,
    }
}

/// Streams a large blob from disk, one chunk in memory at a time, read on the blocking pool. If the blob turns
/// out corrupt, the stream ends with an ErrorResponse instead of a StreamEnd.
fn stream_from_disk(mut r: Box<spark_store::BlobReader>) -> Reply {
    let (tx, rx) = mpsc::channel(STREAM_AHEAD);
    let total_len = r.len();
    tokio::task::spawn_blocking(move || {
        let mut hasher = BlobHasher::new();
        let mut pool = BytesMut::new();
        loop {
            let part = match r.next_chunk_from(STREAM_CHUNK, &mut pool) {
                Ok(Some(chunk)) => {
                    hasher.update(&chunk);
                    StreamPart::Chunk(chunk)
                }
                Ok(None) => StreamPart::End(hasher.digest128()),
                Err(e) => match store_error(e) {
                    HandlerError::Reply(e) | HandlerError::Close(e) => StreamPart::Fail(e),
                    HandlerError::Gone => return,
                },
            };
            let last = !matches!(part, StreamPart::Chunk(_));
            if tx.blocking_send(part).is_err() || last {
                return;
            }
        }
    });
    Reply::Stream {
        first: Box::new(GetResponse {
            status: GetStatus::Streamed { total_len },
        }),
        parts: rx,
    }
}

/// The wire form of a store's counters.
pub fn wire_stats(s: &StoreStats) -> CacheStats {
    CacheStats {
        hits: s.hits,
        misses: s.misses,
        puts: s.puts,
        entries: s.entries,
        entries_in_memory: s.entries_in_memory,
        bytes_in_memory: s.bytes_in_memory,
        bytes_on_disk: s.bytes_on_disk,
        evictions: s.evictions,
        corrupt_dropped: s.corrupt_dropped,
        memory_budget: s.memory_budget,
        disk_budget: s.disk_budget,
    }
}

/// Maps a namespace failure to the ErrorResponse a client sees.
pub fn ns_error(e: NsError) -> HandlerError {
    match e {
        NsError::Store(e) => store_error(e),
        NsError::InvalidKey(m) => HandlerError::reply(ErrorCode::InvalidKey, m),
        NsError::Task(m) => {
            HandlerError::reply(ErrorCode::Internal, format!("store task failed: {m}"))
        }
    }
}

/// Maps a store failure to the ErrorResponse a client sees.
pub fn store_error(e: StoreError) -> HandlerError {
    let code = match &e {
        StoreError::NoSpace { .. } => ErrorCode::NoSpace,
        StoreError::TooLarge { .. } => ErrorCode::TooLarge,
        StoreError::StreamMismatch(_) => ErrorCode::StreamMismatch,
        StoreError::Corrupt(_) => ErrorCode::Corrupt,
        StoreError::NewerFormat { .. } | StoreError::Io { .. } => ErrorCode::Io,
    };
    HandlerError::reply(code, e.to_string())
}
