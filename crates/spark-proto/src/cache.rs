//! Messages shared by the blob-cache services: Shader (`0x0002`) and Asset (`0x0003`).
//!
//! Both services use the same message types and layouts; only the key differs ([`ShaderKey`], [`AssetKey`]).
//! Blobs up to one frame travel inline. Larger ones are streamed: [`PutStream`] (or a [`GetResponse`] with
//! status [`GetStatus::Streamed`]) announces the total length, then [`crate::msg::STREAM_CHUNK`] frames carry
//! the bytes in order, then a [`StreamEnd`] carries the XXH3-128 of the whole blob.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Reader, put_str16};
use crate::control::empty_message;
use crate::{Message, ProtoError};

pub const GET: u16 = 0x0001;
pub const GET_RESPONSE: u16 = 0x0002;
pub const PUT: u16 = 0x0003;
pub const PUT_RESPONSE: u16 = 0x0004;
pub const PUT_STREAM: u16 = 0x0005;
pub const EXISTS: u16 = 0x0007;
pub const EXISTS_RESPONSE: u16 = 0x0008;
pub const CLEAR: u16 = 0x0009;
pub const CLEAR_RESPONSE: u16 = 0x000A;
pub const STATS: u16 = 0x000B;
pub const STATS_RESPONSE: u16 = 0x000C;
/// Asset service only.
pub const INVALIDATE: u16 = 0x000D;
pub const INVALIDATE_RESPONSE: u16 = 0x000E;

/// Longest asset path accepted, in bytes of UTF-8.
pub const MAX_ASSET_PATH: usize = 4096;

/// A key's wire form.
pub trait WireKey: Sized + Clone + std::fmt::Debug {
    fn encode_key(&self, out: &mut BytesMut);
    fn decode_key(r: &mut Reader<'_>) -> Result<Self, ProtoError>;
}

/// Shader key: `u64` source hash, `u8` target, `u8` stage (10 bytes). Target and stage are plain bytes so the
/// daemon depends on no engine enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShaderKey {
    pub source_hash: u64,
    pub target: u8,
    pub stage: u8,
}
impl WireKey for ShaderKey {
    fn encode_key(&self, out: &mut BytesMut) {
        out.put_u64_le(self.source_hash);
        out.put_u8(self.target);
        out.put_u8(self.stage);
    }
    fn decode_key(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(ShaderKey {
            source_hash: r.u64()?,
            target: r.u8()?,
            stage: r.u8()?,
        })
    }
}

/// Asset key: `u8` platform, then `str16` path. The path is an opaque key, never a file-system path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetKey {
    pub path: String,
    pub platform: u8,
}
impl WireKey for AssetKey {
    fn encode_key(&self, out: &mut BytesMut) {
        out.put_u8(self.platform);
        put_str16(out, &self.path);
    }
    fn decode_key(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let platform = r.u8()?;
        let path = r.str16()?;
        Ok(AssetKey { path, platform })
    }
}

/// Get: the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get<K> {
    pub key: K,
}
impl<K: WireKey> Message for Get<K> {
    const TYPE: u16 = GET;
    fn encode(&self, out: &mut BytesMut) {
        self.key.encode_key(out);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let key = K::decode_key(&mut r)?;
        r.finish()?;
        Ok(Get { key })
    }
}

/// How a [`GetResponse`] carries its blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetStatus {
    /// Status byte 0: not in the cache.
    Miss,
    /// Status byte 1: the rest of the payload is the whole blob.
    Inline(Bytes),
    /// Status byte 2: `u64` total length; chunk frames and a [`StreamEnd`] follow.
    Streamed { total_len: u64 },
}

/// GetResponse: `u8` status, then per [`GetStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    pub status: GetStatus,
}
impl Message for GetResponse {
    const TYPE: u16 = GET_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        match &self.status {
            GetStatus::Miss => out.put_u8(0),
            GetStatus::Inline(b) => {
                out.put_u8(1);
                out.put_slice(b);
            }
            GetStatus::Streamed { total_len } => {
                out.put_u8(2);
                out.put_u64_le(*total_len);
            }
        }
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let status = match r.u8()? {
            0 => GetStatus::Miss,
            1 => GetStatus::Inline(r.rest()),
            2 => GetStatus::Streamed {
                total_len: r.u64()?,
            },
            _ => return Err(ProtoError::InvalidValue("get status")),
        };
        r.finish()?;
        Ok(GetResponse { status })
    }
}

/// Put: the key, then the whole blob as the rest of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put<K> {
    pub key: K,
    pub data: Bytes,
}
impl<K: WireKey> Message for Put<K> {
    const TYPE: u16 = PUT;
    fn encode(&self, out: &mut BytesMut) {
        self.key.encode_key(out);
        out.put_slice(&self.data);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let key = K::decode_key(&mut r)?;
        Ok(Put {
            key,
            data: r.rest(),
        })
    }
}

/// PutStream: the key and the `u64` total length; chunk frames and a [`StreamEnd`] follow. One
/// [`PutResponse`] answers the whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutStream<K> {
    pub key: K,
    pub total_len: u64,
}
impl<K: WireKey> Message for PutStream<K> {
    const TYPE: u16 = PUT_STREAM;
    fn encode(&self, out: &mut BytesMut) {
        self.key.encode_key(out);
        out.put_u64_le(self.total_len);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let key = K::decode_key(&mut r)?;
        let total_len = r.u64()?;
        r.finish()?;
        Ok(PutStream { key, total_len })
    }
}

/// PutResponse: `u8` stored (1) or not kept because it exceeds every budget (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutResponse {
    pub stored: bool,
}
impl Message for PutResponse {
    const TYPE: u16 = PUT_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.stored as u8);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let stored = r.u8()? != 0;
        r.finish()?;
        Ok(PutResponse { stored })
    }
}

/// One piece of a streamed blob: the payload is raw blob bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    pub data: Bytes,
}
impl Message for StreamChunk {
    const TYPE: u16 = crate::msg::STREAM_CHUNK;
    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.data);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        Ok(StreamChunk { data: p.clone() })
    }
}

/// The end of a stream: `u128` XXH3-128 of the whole blob, little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    pub checksum: u128,
}
impl Message for StreamEnd {
    const TYPE: u16 = crate::msg::STREAM_END;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u128_le(self.checksum);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let checksum = r.u128()?;
        r.finish()?;
        Ok(StreamEnd { checksum })
    }
}

/// Exists: the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exists<K> {
    pub key: K,
}
impl<K: WireKey> Message for Exists<K> {
    const TYPE: u16 = EXISTS;
    fn encode(&self, out: &mut BytesMut) {
        self.key.encode_key(out);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let key = K::decode_key(&mut r)?;
        r.finish()?;
        Ok(Exists { key })
    }
}

/// ExistsResponse: `u8` exists, `u64` size in bytes (0 when absent). Does not count as a hit or miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistsResponse {
    pub exists: bool,
    pub size: u64,
}
impl Message for ExistsResponse {
    const TYPE: u16 = EXISTS_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.exists as u8);
        out.put_u64_le(self.size);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = ExistsResponse {
            exists: r.u8()? != 0,
            size: r.u64()?,
        };
        r.finish()?;
        Ok(m)
    }
}

empty_message!(
    /// Removes every entry of the service, in memory and on disk.
    Clear = CLEAR
);
empty_message!(
    /// Asks for [`CacheStats`].
    Stats = STATS
);

/// ClearResponse: `u64` entries removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClearResponse {
    pub removed: u64,
}
impl Message for ClearResponse {
    const TYPE: u16 = CLEAR_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.removed);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = ClearResponse { removed: r.u64()? };
        r.finish()?;
        Ok(m)
    }
}

/// A cache service's statistics: eleven `u64`, in this order. Decoders ignore trailing bytes so later
/// revisions can append counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub puts: u64,
    pub entries: u64,
    pub entries_in_memory: u64,
    pub bytes_in_memory: u64,
    pub bytes_on_disk: u64,
    pub evictions: u64,
    pub corrupt_dropped: u64,
    /// Hot-tier budget in bytes.
    pub memory_budget: u64,
    /// Disk budget in bytes; 0 = unbounded (or no disk tier).
    pub disk_budget: u64,
}
impl CacheStats {
    /// Field names in wire order, for tables and JSON.
    pub const FIELDS: [&'static str; 11] = [
        "hits",
        "misses",
        "puts",
        "entries",
        "entries_in_memory",
        "bytes_in_memory",
        "bytes_on_disk",
        "evictions",
        "corrupt_dropped",
        "memory_budget",
        "disk_budget",
    ];
    pub fn values(&self) -> [u64; 11] {
        [
            self.hits,
            self.misses,
            self.puts,
            self.entries,
            self.entries_in_memory,
            self.bytes_in_memory,
            self.bytes_on_disk,
            self.evictions,
            self.corrupt_dropped,
            self.memory_budget,
            self.disk_budget,
        ]
    }
}
impl Message for CacheStats {
    const TYPE: u16 = STATS_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        for v in self.values() {
            out.put_u64_le(v);
        }
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        Ok(CacheStats {
            hits: r.u64()?,
            misses: r.u64()?,
            puts: r.u64()?,
            entries: r.u64()?,
            entries_in_memory: r.u64()?,
            bytes_in_memory: r.u64()?,
            bytes_on_disk: r.u64()?,
            evictions: r.u64()?,
            corrupt_dropped: r.u64()?,
            memory_budget: r.u64()?,
            disk_budget: r.u64()?,
        })
    }
}

/// Invalidate (Asset only): `str16` path. Drops every platform variant of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidate {
    pub path: String,
}
impl Message for Invalidate {
    const TYPE: u16 = INVALIDATE;
    fn encode(&self, out: &mut BytesMut) {
        put_str16(out, &self.path);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let path = r.str16()?;
        r.finish()?;
        Ok(Invalidate { path })
    }
}

/// InvalidateResponse: `u32` variants dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidateResponse {
    pub dropped: u32,
}
impl Message for InvalidateResponse {
    const TYPE: u16 = INVALIDATE_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.dropped);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = InvalidateResponse { dropped: r.u32()? };
        r.finish()?;
        Ok(m)
    }
}
