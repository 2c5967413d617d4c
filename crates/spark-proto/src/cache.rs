//! Messages shared by the blob-cache services: Shader (`0x0002`) and Asset (`0x0003`).
//!
//! Both services use the same message types and layouts; only the key differs ([`ShaderKey`], [`AssetKey`]).
//! Blobs up to one frame travel inline. Larger ones are streamed: [`PutStream`] (or a [`GetResponse`] with
//! status [`GetStatus::Streamed`]) announces the total length, then [`crate::msg::STREAM_CHUNK`] frames carry
//! the bytes in order, then a [`StreamEnd`] carries the XXH3-128 of the whole blob.
//!
//! Every message is defined once, below, by [`define_messages!`](crate::messages): see [`crate::messages`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Reader, put_str16};
use crate::messages::{MessageInfo, define_messages};
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
/// Asset service only: the source files a variant was built from.
pub const DECLARE_DEPS: u16 = 0x000F;
pub const DECLARE_DEPS_RESPONSE: u16 = 0x0010;
/// Asset service only: receive AssetInvalidated events on this connection.
pub const SUBSCRIBE_INVALIDATIONS: u16 = 0x0011;
pub const SUBSCRIBE_INVALIDATIONS_RESPONSE: u16 = 0x0012;
/// Asset service only: cross-process single-flight import.
pub const IMPORT_CLAIM: u16 = 0x0013;
pub const IMPORT_CLAIM_RESPONSE: u16 = 0x0014;
pub const IMPORT_DONE: u16 = 0x0015;
pub const IMPORT_DONE_RESPONSE: u16 = 0x0016;
/// Event (Asset): a variant was invalidated because a source it was built from changed.
pub const ASSET_INVALIDATED: u16 = 0x8001;

/// ImportClaimResponse status: nobody has this variant; the caller imports it, puts it, then sends ImportDone.
pub const CLAIM_OWNER: u8 = 0;
/// ImportClaimResponse status: the variant is in the cache (possibly just imported by another process).
pub const CLAIM_READY: u8 = 1;

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

define_messages! {
    service: "cache";
    hand_written: [GetResponse::INFO];

    /// Get: the key.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Get<K> = GET, exact {
        key: K,
    }

    /// Put: the key, then the whole blob as the rest of the payload.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Put<K> = PUT, exact {
        key: K,
        data: Bytes,
    }

    /// PutStream: the key and the `u64` total length; chunk frames and a [`StreamEnd`] follow. One
    /// [`PutResponse`] answers the whole stream.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PutStream<K> = PUT_STREAM, exact {
        key: K,
        total_len: u64,
    }

    /// PutResponse: `u8` stored (1) or not kept because it exceeds every budget (0).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PutResponse = PUT_RESPONSE, exact {
        stored: bool,
    }

    /// One piece of a streamed blob: the payload is raw blob bytes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StreamChunk = crate::msg::STREAM_CHUNK, exact {
        data: Bytes,
    }

    /// The end of a stream: `u128` XXH3-128 of the whole blob, little-endian.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct StreamEnd = crate::msg::STREAM_END, exact {
        checksum: u128,
    }

    /// Exists: the key.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Exists<K> = EXISTS, exact {
        key: K,
    }

    /// ExistsResponse: `u8` exists, `u64` size in bytes (0 when absent). Does not count as a hit or miss.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ExistsResponse = EXISTS_RESPONSE, exact {
        exists: bool,
        size: u64,
    }

    /// Removes every entry of the service, in memory and on disk.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Clear = CLEAR, exact;

    /// ClearResponse: `u64` entries removed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ClearResponse = CLEAR_RESPONSE, exact {
        removed: u64,
    }

    /// Asks for [`CacheStats`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Stats as "CacheStatsRequest" = STATS, exact;

    /// A cache service's statistics: eleven `u64`, in this order. Decoders ignore trailing bytes so later
    /// revisions can append counters.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct CacheStats = STATS_RESPONSE, lenient {
        hits: u64,
        misses: u64,
        puts: u64,
        entries: u64,
        entries_in_memory: u64,
        bytes_in_memory: u64,
        bytes_on_disk: u64,
        evictions: u64,
        corrupt_dropped: u64,
        /// Hot-tier budget in bytes.
        memory_budget: u64,
        /// Disk budget in bytes; 0 = unbounded (or no disk tier).
        disk_budget: u64,
    }

    /// Invalidate (Asset only): `str16` path. Drops every platform variant of the path.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Invalidate = INVALIDATE, exact {
        path: String,
    }

    /// InvalidateResponse: `u32` variants dropped.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct InvalidateResponse = INVALIDATE_RESPONSE, exact {
        dropped: u32,
    }

    /// DeclareDeps (Asset only): the variant `(path, platform)` was built from these source files (absolute
    /// paths). When any of them changes, the variant is dropped and AssetInvalidated is sent. Replaces the
    /// variant's earlier declaration.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct DeclareDeps = DECLARE_DEPS, exact {
        path: String,
        platform: u8,
        deps: Vec<String>,
    }

    /// DeclareDepsResponse: `u32` source files now watched for the variant.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DeclareDepsResponse = DECLARE_DEPS_RESPONSE, exact {
        watched: u32,
    }

    /// SubscribeInvalidations (Asset only): this connection receives AssetInvalidated events until it closes.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct SubscribeInvalidations = SUBSCRIBE_INVALIDATIONS, exact;

    /// SubscribeInvalidationsResponse: empty.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct SubscribeInvalidationsResponse = SUBSCRIBE_INVALIDATIONS_RESPONSE, exact;

    /// ImportClaim (Asset only): the import of `source` (plus `deps`) by an importer for a platform. The daemon
    /// derives the variant's key from the BLAKE3 of the files' contents, the importer's id and version and the
    /// platform; answers READY when the variant is cached, else OWNER to exactly one caller at a time (others
    /// wait for its ImportDone, or for its connection to close).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ImportClaim = IMPORT_CLAIM, exact {
        platform: u8,
        importer_id: String,
        importer_version: u32,
        source: String,
        deps: Vec<String>,
    }

    /// ImportClaimResponse: `u8` status ([`CLAIM_OWNER`], [`CLAIM_READY`]), `str16` the variant's asset path
    /// (its key is this path and the claim's platform).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ImportClaimResponse = IMPORT_CLAIM_RESPONSE, exact {
        status: u8,
        path: String,
    }

    /// ImportDone (Asset only): the owner of a claim finished. With `ok` the variant was put: the daemon declares
    /// the claim's source and deps as its dependencies. Either way waiters are woken.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ImportDone = IMPORT_DONE, exact {
        path: String,
        platform: u8,
        ok: bool,
    }

    /// ImportDoneResponse: `u32` source files watched for the variant.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ImportDoneResponse = IMPORT_DONE_RESPONSE, exact {
        watched: u32,
    }

    /// AssetInvalidated (event, Asset): the variant `(path, platform)` was dropped because `source` changed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AssetInvalidated = ASSET_INVALIDATED, exact {
        path: String,
        platform: u8,
        source: String,
    }
}

impl CacheStats {
    /// Field names in wire order, for tables and JSON.
    pub const FIELDS: [&'static str; 11] = {
        // From the registry entry, so the names cannot drift from the struct; a counter added without
        // growing the array stops the build here.
        assert!(CacheStats::INFO.fields.len() == 11);
        let mut names = [""; 11];
        let mut i = 0;
        while i < CacheStats::INFO.fields.len() {
            names[i] = CacheStats::INFO.fields[i].0;
            i += 1;
        }
        names
    };
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
///
/// Hand-written: what follows the status byte depends on its value, which the field macro's flat layouts
/// cannot say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    pub status: GetStatus,
}
impl GetResponse {
    /// This message's registry entry (see [`crate::messages::ALL`]).
    pub const INFO: MessageInfo = MessageInfo {
        service: "cache",
        name: "GetResponse",
        msg_type: GET_RESPONSE,
        fields: &[
            ("status", "u8"),
            ("data", "bytes (status 1 only)"),
            ("total_len", "u64 (status 2 only)"),
        ],
        keyed: false,
        exact: true,
    };
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
