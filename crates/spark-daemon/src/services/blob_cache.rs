//! Request handling shared by the blob-cache services (Shader, Asset): get, put (inline and streamed),
//! exists, clear, stats. Store calls that may touch the disk run on the blocking pool, never on a runtime
//! worker thread.

use std::marker::PhantomData;

use bytes::Bytes;
use spark_proto::cache::*;
use spark_proto::{BlobHasher, ErrorCode, MAX_PAYLOAD, Message, msg};
use spark_store::{ColdRead, Lookup, PutWriter, Store, StoreError, StoreStats};

use crate::conn::ConnError;
use crate::registry::{HandlerError, Request, unknown_message};

/// Chunk size for streamed replies.
const STREAM_CHUNK: usize = 1 << 20;

/// A key type of one cache service: how it becomes a store key.
pub trait CacheKey: WireKey + Send + Sync + 'static {
    /// The store key, or a reason the key is not acceptable.
    fn store_key(&self) -> Result<Vec<u8>, HandlerError>;
}

/// The shared engine of a blob-cache service.
pub struct BlobCache<K> {
    pub service: u16,
    pub store: Store,
    _key: PhantomData<fn() -> K>,
}

impl<K: CacheKey> BlobCache<K> {
    pub fn new(service: u16, store: Store) -> Self {
        BlobCache {
            service,
            store,
            _key: PhantomData,
        }
    }

    /// Handles the messages common to every blob cache; `None` = not one of them.
    pub async fn handle_common(&self, req: &mut Request<'_>) -> Option<Result<(), HandlerError>> {
        Some(match req.frame.msg_type {
            GET => self.get(req).await,
            PUT => self.put(req).await,
            PUT_STREAM => self.put_stream(req).await,
            EXISTS => self.exists(req).await,
            CLEAR => self.clear(req).await,
            STATS => self.stats(req).await,
            _ => return None,
        })
    }

    /// Runs blocking store work off the runtime.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, HandlerError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| {
                HandlerError::reply(ErrorCode::Internal, format!("store task failed: {e}"))
            })?
            .map_err(store_error)
    }

    async fn get(&self, req: &mut Request<'_>) -> Result<(), HandlerError> {
        let g: Get<K> = req.decode()?;
        let key = g.key.store_key()?;
        let found = match self.store.lookup(&key) {
            Lookup::Hit(b) => Some(b),
            Lookup::Miss => None,
            Lookup::Cold(c) => match self.blocking(move |s| s.read_cold(c)).await? {
                ColdRead::Whole(b) => Some(b),
                ColdRead::Gone => None,
                ColdRead::Stream(r) => return self.stream_from_disk(req, r).await,
            },
        };
        match found {
            None => {
                req.reply(&GetResponse {
                    status: GetStatus::Miss,
                })
                .await
            }
            Some(b) if b.len() < MAX_PAYLOAD => {
                // Status byte, then the blob straight from the store's buffer: copied once into the write
                // buffer when small, written from where it is when large.
                req.conn
                    .send_parts(self.service, GET_RESPONSE, &[1u8], &b)
                    .await?;
                Ok(())
            }
            Some(b) => self.stream_from_memory(req, b).await,
        }
    }

    /// Streams a large blob held in memory (memory-only stores).
    async fn stream_from_memory(
        &self,
        req: &mut Request<'_>,
        b: Bytes,
    ) -> Result<(), HandlerError> {
        let total_len = b.len() as u64;
        req.reply(&GetResponse {
            status: GetStatus::Streamed { total_len },
        })
        .await?;
        let mut hasher = BlobHasher::new();
        for off in (0..b.len()).step_by(STREAM_CHUNK) {
            let chunk = b.slice(off..(off + STREAM_CHUNK).min(b.len()));
            hasher.update(&chunk);
            req.conn
                .send_raw(self.service, msg::STREAM_CHUNK, &chunk)
                .await?;
        }
        req.reply(&StreamEnd {
            checksum: hasher.digest128(),
        })
        .await
    }

    /// Streams a large blob from disk, one chunk in memory at a time. If the blob turns out corrupt, the
    /// stream ends with an ErrorResponse instead of a StreamEnd, and the client discards what it got.
    async fn stream_from_disk(
        &self,
        req: &mut Request<'_>,
        mut r: Box<spark_store::BlobReader>,
    ) -> Result<(), HandlerError> {
        req.reply(&GetResponse {
            status: GetStatus::Streamed { total_len: r.len() },
        })
        .await?;
        let mut hasher = BlobHasher::new();
        // One chunk buffer for the whole stream: each chunk is written out before the next is read into it.
        let mut buf = Vec::new();
        loop {
            let (back, back_buf, next) = tokio::task::spawn_blocking(move || {
                let n = r.next_chunk_into(STREAM_CHUNK, &mut buf);
                (r, buf, n)
            })
            .await
            .map_err(|e| {
                HandlerError::Close(spark_proto::ErrorResponse::new(
                    ErrorCode::Internal,
                    e.to_string(),
                ))
            })?;
            r = back;
            buf = back_buf;
            match next {
                Ok(true) => {
                    hasher.update(&buf);
                    req.conn
                        .send_raw(self.service, msg::STREAM_CHUNK, &buf)
                        .await?;
                }
                Ok(false) => {
                    return req
                        .reply(&StreamEnd {
                            checksum: hasher.digest128(),
                        })
                        .await;
                }
                Err(e) => {
                    // Ends the stream: exactly one terminal frame, an ErrorResponse.
                    let err = store_error(e);
                    let HandlerError::Reply(resp) = err else {
                        return Err(err);
                    };
                    req.conn.send_error(self.service, &resp).await?;
                    return Ok(());
                }
            }
        }
    }

    async fn put(&self, req: &mut Request<'_>) -> Result<(), HandlerError> {
        let p: Put<K> = req.decode()?;
        let key = p.key.store_key()?;
        // A slice of the read buffer: the store copies what it keeps in memory into its own allocation.
        let data = p.data;
        let stored = if self.store.config().dir.is_none() {
            self.store.put(&key, data).map_err(store_error)?
        } else {
            self.blocking(move |s| s.put(&key, data)).await?
        };
        req.reply(&PutResponse { stored }).await
    }

    /// PutStream, then chunk frames, then StreamEnd; one PutResponse (or ErrorResponse) answers it all. A
    /// put that fails part-way still reads the rest of the stream, so the connection stays in step.
    async fn put_stream(&self, req: &mut Request<'_>) -> Result<(), HandlerError> {
        let p: PutStream<K> = req.decode()?;
        let total = p.total_len;
        let mut failure: Option<HandlerError> = None;
        let mut writer: Option<PutWriter> = match p.key.store_key() {
            Ok(key) => match self.blocking(move |s| s.begin_put(&key, total)).await {
                Ok(w) => Some(w),
                Err(e) => {
                    failure = Some(e);
                    None
                }
            },
            Err(e) => {
                failure = Some(e);
                None
            }
        };
        let mut received: u64 = 0;
        // Replies to earlier pipelined requests must not wait behind this upload: the client may be
        // waiting for them before it sends the chunks.
        req.conn.flush().await?;
        loop {
            let f = req.conn.read_frame().await.map_err(|e| match e {
                // The stream cannot continue; say why before the connection closes.
                ConnError::Proto(p) => HandlerError::Close(spark_proto::ErrorResponse::new(
                    ErrorCode::TooLarge,
                    format!("{p} inside an upload stream; closing the connection"),
                )),
                ConnError::FrameTimeout(t) => HandlerError::Close(spark_proto::ErrorResponse::new(
                    ErrorCode::StreamMismatch,
                    format!(
                        "upload stream frame not completed within {t:?}; closing the connection"
                    ),
                )),
                e => HandlerError::Conn(e),
            })?;
            if f.service != self.service
                || !(f.msg_type == msg::STREAM_CHUNK || f.msg_type == msg::STREAM_END)
            {
                return Err(HandlerError::Close(spark_proto::ErrorResponse::new(
                    ErrorCode::StreamMismatch,
                    format!(
                        "expected a stream chunk or end for service 0x{:04x}, got message 0x{:04x} on service 0x{:04x}",
                        self.service, f.msg_type, f.service
                    ),
                )));
            }
            if f.msg_type == msg::STREAM_CHUNK {
                received += f.payload.len() as u64;
                if received > total {
                    return Err(HandlerError::Close(spark_proto::ErrorResponse::new(
                        ErrorCode::StreamMismatch,
                        format!("stream sent more than its announced {total} bytes"),
                    )));
                }
                if let Some(mut w) = writer.take() {
                    let chunk = f.payload;
                    match self
                        .blocking(move |_| {
                            w.write(&chunk)?;
                            Ok(w)
                        })
                        .await
                    {
                        Ok(w) => writer = Some(w),
                        Err(e) => failure = Some(e),
                    }
                }
                continue;
            }
            let end = StreamEnd::decode(&f.payload)?;
            if let Some(e) = failure {
                return Err(e);
            }
            let w = writer.take().expect("a writer exists when nothing failed");
            let sum = (end.checksum != 0).then_some(end.checksum);
            let stored = self.blocking(move |_| w.commit(sum)).await?;
            return req.reply(&PutResponse { stored }).await;
        }
    }

    async fn exists(&self, req: &mut Request<'_>) -> Result<(), HandlerError> {
        let e: Exists<K> = req.decode()?;
        let key = e.key.store_key()?;
        let size = self.store.exists(&key);
        req.reply(&ExistsResponse {
            exists: size.is_some(),
            size: size.unwrap_or(0),
        })
        .await
    }

    async fn clear(&self, req: &mut Request<'_>) -> Result<(), HandlerError> {
        let _: Clear = req.decode()?;
        let removed = self.blocking(|s| s.clear()).await?;
        req.reply(&ClearResponse { removed }).await
    }

    async fn stats(&self, req: &mut Request<'_>) -> Result<(), HandlerError> {
        let _: Stats = req.decode()?;
        req.reply(&wire_stats(&self.store.stats())).await
    }

    /// For services' own messages: an unknown type.
    pub fn unknown(&self, req: &Request<'_>) -> HandlerError {
        unknown_message(&req.frame)
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

/// The store's statistics as the wire reports them (the store does not depend on the protocol).
fn wire_stats(s: &StoreStats) -> CacheStats {
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
