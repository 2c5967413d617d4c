//! Typed blob-cache clients. Blobs that do not fit one frame are streamed in 4 MiB chunks, both ways.

use std::io::{Read, Write};
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use spark_proto::cache::*;
use spark_proto::{BlobHasher, MAX_PAYLOAD, Message, msg, service};

use crate::client::Client;
use crate::conn::{Conn, Next};
use crate::error::{Error, Result};

// The typed views live here, not in `client.rs`, so the connection layer knows nothing of caches.
impl Client {
    /// The shader cache.
    pub fn shader(&self) -> ShaderCache<'_> {
        ShaderCache::new(self, service::SHADER)
    }

    /// The asset cache.
    pub fn asset(&self) -> AssetCache<'_> {
        AssetCache::new(self, service::ASSET)
    }
}

/// Chunk size for streamed puts.
const PUT_CHUNK: usize = 4 << 20;
/// Streamed gets up to this size are read into one buffer allocated from the announced length.
const DIRECT_GET_MAX: u64 = 1 << 30;

/// A typed view of one cache service.
pub struct CacheClient<'a, K> {
    pub(crate) client: &'a Client,
    pub(crate) service: u16,
    _k: PhantomData<K>,
}

pub type ShaderCache<'a> = CacheClient<'a, ShaderKey>;
pub type AssetCache<'a> = CacheClient<'a, AssetKey>;

impl<'a, K: WireKey> CacheClient<'a, K> {
    pub(crate) fn new(client: &'a Client, service: u16) -> Self {
        CacheClient {
            client,
            service,
            _k: PhantomData,
        }
    }

    /// The blob under `key`, or `None` on a miss.
    pub fn get(&self, key: &K) -> Result<Option<Bytes>> {
        let mut c = self.client.lock();
        c.write_msg(self.service, &Get { key: key.clone() })?;
        c.flush()?;
        let r: GetResponse = c.read_msg()?;
        match r.status {
            GetStatus::Miss => Ok(None),
            GetStatus::Inline(b) => Ok(Some(b)),
            GetStatus::Streamed { total_len } if total_len <= DIRECT_GET_MAX => {
                // The blob's whole buffer up front, every chunk read straight into its place: one copy out
                // of the kernel in all. Large buffers are recycled (pool.rs): a fresh one is fresh pages,
                // each faulted in and zeroed by the kernel as the blob lands in it.
                let len = total_len as usize;
                let pooled = len >= crate::pool::POOL_MIN;
                let mut out = if pooled {
                    self.client.pool.take(len)
                } else {
                    vec![0u8; len]
                };
                read_stream(
                    &mut c,
                    self.service,
                    total_len,
                    Some(&mut out),
                    &mut |_, _| Ok(()),
                )?;
                Ok(Some(if pooled {
                    self.client.pool.into_bytes(out)
                } else {
                    Bytes::from(out)
                }))
            }
            GetStatus::Streamed { total_len } => {
                // Too large to trust the announced size with one allocation: grow as chunks arrive.
                let mut out = BytesMut::with_capacity(DIRECT_GET_MAX as usize);
                read_stream(&mut c, self.service, total_len, None, &mut |ch, _| {
                    out.extend_from_slice(ch);
                    Ok(())
                })?;
                Ok(Some(out.freeze()))
            }
        }
    }

    /// Reads the blob under `key` into `buf` (replacing its contents) and returns its size, `None` on a miss.
    /// For callers that fetch large blobs repeatedly: reusing one buffer spares the page faults and kernel
    /// zeroing of a fresh allocation per blob (measured: a quarter of a 32 MiB get's client time).
    pub fn get_into(&self, key: &K, buf: &mut Vec<u8>) -> Result<Option<usize>> {
        let mut c = self.client.lock();
        c.write_msg(self.service, &Get { key: key.clone() })?;
        c.flush()?;
        let r: GetResponse = c.read_msg()?;
        match r.status {
            GetStatus::Miss => Ok(None),
            GetStatus::Inline(b) => {
                buf.clear();
                buf.extend_from_slice(&b);
                Ok(Some(b.len()))
            }
            GetStatus::Streamed { total_len } if total_len > DIRECT_GET_MAX => {
                buf.clear();
                read_stream(&mut c, self.service, total_len, None, &mut |ch, _| {
                    buf.extend_from_slice(ch);
                    Ok(())
                })?;
                Ok(Some(buf.len()))
            }
            GetStatus::Streamed { total_len } => {
                let total = total_len as usize;
                // Zeroes only growth, so a reused buffer is not zeroed again.
                buf.resize(total, 0);
                read_stream(
                    &mut c,
                    self.service,
                    total_len,
                    Some(&mut buf[..]),
                    &mut |_, _| Ok(()),
                )?;
                Ok(Some(total))
            }
        }
    }

    /// Writes the blob under `key` to `w` without holding it in memory; returns its size, `None` on a miss.
    /// A failing writer is [`Error::Local`]; if the blob was streaming, the rest of the stream is still on
    /// the wire, so the connection is given up (the next call on this client fails with
    /// [`Error::Transport`] instead of reading a stray chunk as its reply).
    pub fn get_to_writer(&self, key: &K, w: &mut impl Write) -> Result<Option<u64>> {
        let mut n = 0u64;
        let found = self.get_with(key, |c, _| {
            n += c.len() as u64;
            w.write_all(c).map_err(Error::Local)
        })?;
        Ok(match found {
            Some(Inline(b)) => {
                w.write_all(&b).map_err(Error::Local)?;
                Some(b.len() as u64)
            }
            Some(Streamed) => Some(n),
            None => None,
        })
    }

    /// Sends a Get; an inline blob is returned, a streamed one is fed to `sink` chunk by chunk and verified.
    fn get_with(
        &self,
        key: &K,
        mut sink: impl FnMut(&[u8], u64) -> Result<()>,
    ) -> Result<Option<Got>> {
        let mut c = self.client.lock();
        c.write_msg(self.service, &Get { key: key.clone() })?;
        c.flush()?;
        let r: GetResponse = c.read_msg()?;
        match r.status {
            GetStatus::Miss => Ok(None),
            GetStatus::Inline(b) => Ok(Some(Inline(b))),
            GetStatus::Streamed { total_len } => {
                read_stream(&mut c, self.service, total_len, None, &mut sink)?;
                Ok(Some(Streamed))
            }
        }
    }

    /// Stores a blob. Returns whether the daemon kept it (false: larger than its budgets allow).
    pub fn put(&self, key: &K, data: &[u8]) -> Result<bool> {
        let mut k = BytesMut::new();
        key.encode_key(&mut k);
        if k.len() + data.len() <= MAX_PAYLOAD {
            // Key and blob go out as they are: the blob is not copied behind the key first.
            let mut c = self.client.lock();
            c.write_frame_parts(self.service, PUT, &k, data)?;
            c.flush()?;
            let r: PutResponse = c.read_msg()?;
            return Ok(r.stored);
        }
        self.put_stream_slice(key, data)
    }

    /// Streams a blob that is already in memory: each chunk is written straight from `data`.
    fn put_stream_slice(&self, key: &K, data: &[u8]) -> Result<bool> {
        let mut c = self.client.lock();
        self.begin_put_stream(&mut c, key, data.len() as u64)?;
        let mut hasher = BlobHasher::new();
        for chunk in data.chunks(PUT_CHUNK) {
            hasher.update(chunk);
            c.write_frame(self.service, msg::STREAM_CHUNK, chunk)?;
        }
        self.finish_put_stream(&mut c, hasher)
    }

    /// Streams `len` bytes from `r` into the cache, a chunk at a time.
    pub fn put_from_reader(&self, key: &K, r: &mut impl Read, len: u64) -> Result<bool> {
        let mut c = self.client.lock();
        self.begin_put_stream(&mut c, key, len)?;
        let mut hasher = BlobHasher::new();
        let mut buf = vec![0u8; PUT_CHUNK.min(len as usize).max(1)];
        let mut left = len;
        while left > 0 {
            let n = (buf.len() as u64).min(left) as usize;
            if let Err(e) = r.read_exact(&mut buf[..n]) {
                // The daemon is owed the rest of the stream; the connection cannot be reused.
                c.poison();
                return Err(Error::Local(e));
            }
            hasher.update(&buf[..n]);
            c.write_frame(self.service, msg::STREAM_CHUNK, &buf[..n])?;
            left -= n as u64;
        }
        self.finish_put_stream(&mut c, hasher)
    }

    /// PutStream: the key and the announced length.
    fn begin_put_stream(&self, c: &mut Conn, key: &K, total_len: u64) -> Result<()> {
        c.write_msg(
            self.service,
            &PutStream {
                key: key.clone(),
                total_len,
            },
        )
    }

    /// StreamEnd with the checksum of everything sent, then the one PutResponse for the whole stream.
    fn finish_put_stream(&self, c: &mut Conn, hasher: BlobHasher) -> Result<bool> {
        c.write_msg(
            self.service,
            &StreamEnd {
                checksum: hasher.digest128(),
            },
        )?;
        c.flush()?;
        let r: PutResponse = c.read_msg()?;
        Ok(r.stored)
    }

    /// Whether `key` is cached, and its size. Counts neither a hit nor a miss.
    pub fn exists(&self, key: &K) -> Result<Option<u64>> {
        let r: ExistsResponse = self
            .client
            .call(self.service, &Exists { key: key.clone() })?;
        Ok(r.exists.then_some(r.size))
    }

    /// Removes every entry; returns how many there were.
    pub fn clear(&self) -> Result<u64> {
        let r: ClearResponse = self.client.call(self.service, &Clear)?;
        Ok(r.removed)
    }

    pub fn stats(&self) -> Result<CacheStats> {
        self.client.call(self.service, &Stats)
    }
}

impl CacheClient<'_, AssetKey> {
    /// Drops every platform variant of `path`; returns how many there were.
    pub fn invalidate(&self, path: &str) -> Result<u32> {
        let r: InvalidateResponse = self
            .client
            .call(self.service, &Invalidate { path: path.into() })?;
        Ok(r.dropped)
    }
}

enum Got {
    Inline(Bytes),
    Streamed,
}
use Got::*;

/// Reads the chunks and end of a streamed reply, checking length and checksum. An ErrorResponse in place
/// of the end (the daemon found the blob corrupt) is returned as [`Error::Daemon`].
/// With `dst` (exactly `total` bytes long), chunk payloads are read straight into it and `sink` is not called.
/// A `sink` error abandons the stream and poisons the connection.
fn read_stream(
    c: &mut Conn,
    service: u16,
    total: u64,
    mut dst: Option<&mut [u8]>,
    sink: &mut impl FnMut(&[u8], u64) -> Result<()>,
) -> Result<()> {
    let mut got = 0u64;
    let mut hasher = BlobHasher::new();
    loop {
        let f = match dst.as_deref_mut() {
            Some(out) => {
                let at = got as usize;
                match c.read_chunk_into(service, &mut out[at..])? {
                    Next::Chunk(n) => {
                        hasher.update(&out[at..at + n]);
                        got += n as u64;
                        continue;
                    }
                    Next::Frame(f) => f,
                }
            }
            None => c.read_reply()?,
        };
        if f.service != service {
            c.poison();
            return Err(Error::Protocol(format!(
                "stream frame for service 0x{:04x}",
                f.service
            )));
        }
        match f.msg_type {
            msg::STREAM_CHUNK => {
                got += f.payload.len() as u64;
                if got > total {
                    c.poison();
                    return Err(Error::Protocol(format!(
                        "stream longer than its announced {total} bytes"
                    )));
                }
                hasher.update(&f.payload);
                if let Err(e) = sink(&f.payload, total) {
                    // The rest of the stream is still on the wire: a later reply would be read out of step.
                    c.poison();
                    return Err(e);
                }
            }
            msg::STREAM_END => {
                let end = StreamEnd::decode(&f.payload)?;
                if got != total {
                    return Err(Error::Protocol(format!(
                        "stream ended after {got} of {total} bytes"
                    )));
                }
                if end.checksum != 0 && end.checksum != hasher.digest128() {
                    return Err(Error::Protocol("streamed blob failed its checksum".into()));
                }
                return Ok(());
            }
            t => {
                c.poison();
                return Err(Error::Protocol(format!(
                    "unexpected message 0x{t:04x} in a stream"
                )));
            }
        }
    }
}
