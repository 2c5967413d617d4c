//! SparkDaemon's blob store: one engine behind every cache service. No sockets, no async runtime.
//!
//! A [`Store`] is one namespace (the shader cache, the asset cache, …) with two tiers:
//! - a **memory tier** of blob bodies (`Bytes`), bounded by `memory_budget` bytes, LRU;
//! - a **disk tier** of one checksummed file per blob plus an append-only index log, bounded by
//!   `disk_budget` bytes, LRU. An entry evicted from memory stays on disk; one evicted from disk is deleted
//!   at once.
//!
//! Concurrency: the key index is sharded (`RwLock` per shard), so gets of different keys never share a lock;
//! recency is an atomic tick per entry, so a hit takes only a shard read lock. Mutations (put, remove,
//! evict) take one writer mutex that also owns the index log; gets never take it. Every method that may touch
//! the disk is blocking and must run off the async runtime ([`Store::lookup`] never touches the disk).
//!
//! Integrity: each blob file carries its full key and an XXH3-128 over header, key and body; a read that
//! fails the check is a miss, the entry is dropped and counted in `corrupt_dropped`. Files appear under
//! their final name only by `rename` after a complete write, so a torn write is never visible.
//!
//! Startup reads the index log only (never blob bodies). Files the index does not name are dealt with by
//! [`Store::sweep`], which the daemon runs in the background after it starts serving.
//!
//! The on-disk format is specified in `docs/storage.md`.

pub mod format;
mod index_log;
mod store;

pub use store::{BlobReader, ColdRead, Lookup, OpenReport, PutWriter, Store, SweepReport};

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
    /// Replaces the key hash (tests force collisions with it). `None` = XXH3-64.
    pub key_hasher: Option<KeyHasher>,
}

impl StoreConfig {
    pub const DEFAULT_MAX_BLOB: u64 = 4 << 30;
    pub const DEFAULT_MAX_MEMORY_BLOB: u64 = 8 << 20;

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
        if is_no_space(&source) {
            StoreError::NoSpace { path }
        } else {
            StoreError::Io { op, path, source }
        }
    }
}

pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)
    )
}

/// Point-in-time statistics of one store: the same counters the cache services report on the wire.
/// `evictions` counts entries dropped to stay within a budget (a hot copy leaving memory is not one).
pub type StoreStats = spark_proto::cache::CacheStats;
