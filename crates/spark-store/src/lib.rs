//! SparkDaemon's blob store: one engine behind every cache service. No sockets, no async runtime.
//!
//! A [`Store`] is one namespace (the shader cache, the asset cache, …) with two tiers:
//! - a **memory tier** of blob bodies (`Bytes`), bounded by `memory_budget` bytes, LRU;
//! - a **disk tier** of checksummed blobs plus an append-only index log, bounded by `disk_budget` bytes,
//!   LRU. An entry evicted from memory stays on disk; one evicted from disk is deleted at once.
//!
//! Concurrency: the key index is sharded (`RwLock` per shard), so gets of different keys never share a lock;
//! recency is an atomic tick per entry, so a hit takes only a shard read lock. Mutations (put, remove,
//! evict) take one writer mutex that also owns the index log; gets never take it. Every method that may touch
//! the disk is blocking and must run off the async runtime ([`Store::lookup`] never touches the disk).
//!
//! Integrity: each blob carries its full key and an XXH3-128 over header, key and body; a read that fails
//! the check is a miss, the entry is dropped and counted in `corrupt_dropped`. Blobs appear at their
//! location only after a complete write (blob files: by `rename`), so a torn write is never visible.
//!
//! Startup reads the index log only (never blob bodies). Blobs the index does not name are dealt with by
//! [`Store::sweep`], which the daemon runs in the background after it starts serving.
//!
//! # Modules
//!
//! | module | concern |
//! | --- | --- |
//! | `store` | the [`Store`] API and the write path: put, remove, clear, blob ids, index compaction |
//! | `group` | group commit of small puts (one pack write and one index append per batch), pack compaction |
//! | `index` | the sharded key → entry map and the entry (size, location, checksum, tick, hot copy) |
//! | `operator` | operators' whole-store work: verify every checksum now, trim to a size now |
//! | `lru` | both tiers' exact LRU: ticks, victim queues, eviction, promotion into memory |
//! | `stream` | the cold read path, the verifying [`BlobReader`], the streamed [`PutWriter`] |
//! | `recovery` | open and replay, recovery before serving, trimming at start, the sweep and adoption |
//! | [`backend`] | where blob bytes live: the [`backend::BlobBackend`] seam, files (one per blob), packs |
//! | `index_log` | the append-only index log: replay, append, atomic rewrite |
//! | [`format`](mod@format) | the on-disk byte codecs (format v2: v1's blob files, index records, packs), pure and fuzzed |
//! | `platform` | every platform-specific file call (`O_NOFOLLOW`, modes, directory fsync) |
//! | `stats` | [`StoreStats`] |
//!
//! # Where blobs live: the backend seam
//!
//! The engine (index, LRU, streaming, recovery, the API) never names a file: an index entry holds a
//! [`backend::Location`] and the [`backend::BlobBackend`] turns it into bytes. One file per blob is simple
//! and crash-safe by `rename`, but costs an inode, a directory entry and several syscalls per blob, so the
//! store's backend (format v2) appends blobs up to `pack_max_blob` to a few large pack files, a batch of
//! concurrent puts at a time (group commit), and keeps a file per blob for larger ones. The trait follows
//! what the engine needs from storage and nothing more: write (whole, batched or streamed) returning a
//! location and a checksum, open a verifying reader at a location, remove, and find blobs for recovery.
//! Decisions stay with the engine (what is indexed, what to evict, what to adopt), so every kind of
//! location gets the same LRU, budgets and crash rules.
//!
//! The on-disk format is specified in `docs/storage.md`.

pub mod backend;
pub mod format;
mod group;
mod index;
mod index_log;
mod load;
mod lru;
mod operator;
mod platform;
mod queue;
mod recovery;
mod stats;
mod store;
mod stream;

pub use operator::{TrimReport, VerifyReport};
pub use queue::PutDone;
pub use stats::StoreStats;
pub use store::{ColdEntry, Lookup, OpenReport, Store, SweepReport};
pub use stream::{BlobReader, ColdRead, PutWriter};

use std::path::PathBuf;

/// When a put is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The blob file and its index record are written (to the OS) before the put is acknowledged. A daemon
    /// crash loses nothing acknowledged; a power loss may lose recent puts, never serve a wrong byte.
    #[default]
    Fast,
    /// As `Fast`, plus the blob file, its directory and the index record are fsynced before the put is
    /// acknowledged: an acknowledged put survives power loss.
    Fsync,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fast" => Ok(Durability::Fast),
            "fsync" => Ok(Durability::Fsync),
            _ => Err(format!("unknown durability '{s}': use fast or fsync")),
        }
    }
}

/// A test seam: the hash used to place keys in shards and hash tables.
pub type KeyHasher = fn(&[u8]) -> u64;

/// How one store is set up.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Namespace name, for logs (`shader`, `asset`).
    pub name: String,
    /// Disk tier directory; `None` = memory only.
    pub dir: Option<PathBuf>,
    /// Memory tier budget in bytes.
    pub memory_budget: u64,
    /// Disk tier budget in bytes; 0 = unbounded.
    pub disk_budget: u64,
    /// Largest blob accepted at all.
    pub max_blob: u64,
    /// Largest blob kept in the memory tier when there is a disk tier (bigger ones stream from disk).
    pub max_memory_blob: u64,
    pub durability: Durability,
    /// Blobs up to this many bytes are appended to pack files in batches (format v2); larger ones get a
    /// file each. 0 = no packs (every blob a file, as in v1).
    pub pack_max_blob: u64,
    /// A pack is sealed (and a new one started) once it holds this many bytes.
    pub pack_size: u64,
    /// Replaces the key hash (tests force collisions with it). `None` = XXH3-64.
    pub key_hasher: Option<KeyHasher>,
}

impl StoreConfig {
    pub const DEFAULT_MAX_BLOB: u64 = 4 << 30;
    pub const DEFAULT_MAX_MEMORY_BLOB: u64 = 8 << 20;
    /// Where a blob file's creation stops mattering next to its write (BENCHMARKS.md, "Storage v2").
    pub const DEFAULT_PACK_MAX_BLOB: u64 = 128 << 10;
    pub const DEFAULT_PACK_SIZE: u64 = 64 << 20;

    /// A memory-only store.
    pub fn memory(name: &str, memory_budget: u64) -> Self {
        StoreConfig {
            name: name.to_string(),
            dir: None,
            memory_budget,
            disk_budget: 0,
            max_blob: Self::DEFAULT_MAX_BLOB,
            max_memory_blob: Self::DEFAULT_MAX_MEMORY_BLOB,
            durability: Durability::Fast,
            pack_max_blob: Self::DEFAULT_PACK_MAX_BLOB,
            pack_size: Self::DEFAULT_PACK_SIZE,
            key_hasher: None,
        }
    }

    /// A store with a disk tier in `dir`.
    pub fn on_disk(name: &str, dir: impl Into<PathBuf>, memory_budget: u64) -> Self {
        StoreConfig {
            dir: Some(dir.into()),
            ..Self::memory(name, memory_budget)
        }
    }
}

/// Store failures. Each says what went wrong and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "no space left on device writing {path}: free disk space or lower the cache's disk budget"
    )]
    NoSpace { path: PathBuf },
    #[error("blob of {size} bytes exceeds the maximum of {max} bytes (raise --max-blob-mb)")]
    TooLarge { size: u64, max: u64 },
    #[error("streamed blob does not match its announcement: {0}")]
    StreamMismatch(String),
    #[error("stored blob failed its integrity check and was dropped: {0}")]
    Corrupt(String),
    #[error(
        "{path} was written by a newer sparkd (format '{found}'); upgrade sparkd or use another cache directory"
    )]
    NewerFormat { path: PathBuf, found: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if platform::is_no_space(&source) {
            StoreError::NoSpace { path }
        } else {
            StoreError::Io { op, path, source }
        }
    }
}
