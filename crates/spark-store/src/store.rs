//! The store engine: sharded index, two LRU tiers, blob files, recovery.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{info, warn};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::format::{self, BLOB_HEADER_LEN, BLOB_TRAILER_LEN, BlobHeader, Record};
use crate::index_log::{IndexLog, sync_dir};
use crate::{Durability, KeyHasher, StoreConfig, StoreError, StoreStats};

const SHARDS: usize = 64;
/// Blobs up to this size are read whole and verified before they are returned; larger ones stream.
const SMALL_READ_MAX: u64 = 16 << 20;
/// Rewrite the index log when it is this much larger than its live records (and at least `COMPACT_MIN`).
const COMPACT_RATIO: u64 = 3;
const COMPACT_MIN: u64 = 4 << 20;
/// Blob file ids are reserved in the index log this many at a time.
const ID_BLOCK: u64 = 1 << 16;

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// One cached blob. The key lives in the shard map; an entry is immutable but for its tick and hot copy.
struct Entry {
    size: u64,
    /// Blob file id; 0 = no disk copy (memory-only store).
    file_id: u64,
    /// XXH3-128 over the blob file's header, key and body (0 for memory-only entries).
    checksum: u128,
    /// Last access, from the store's clock.
    tick: AtomicU64,
    mem: Mutex<MemState>,
}

struct MemState {
    bytes: Option<Bytes>,
    /// Set once the entry left the index, so a late reader does not re-add a hot copy.
    removed: bool,
}

impl Entry {
    fn new(size: u64, file_id: u64, checksum: u128, tick: u64, hot: Option<Bytes>) -> Arc<Entry> {
        Arc::new(Entry {
            size,
            file_id,
            checksum,
            tick: AtomicU64::new(tick),
            mem: Mutex::new(MemState {
                bytes: hot,
                removed: false,
            }),
        })
    }

    fn mem(&self) -> MutexGuard<'_, MemState> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Copy)]
struct SeamHasher(Option<KeyHasher>);
struct SeamState(Option<KeyHasher>, Vec<u8>);
impl Hasher for SeamState {
    fn finish(&self) -> u64 {
        match self.0 {
            Some(f) => f(&self.1),
            None => xxh3_64(&self.1),
        }
    }
    fn write(&mut self, bytes: &[u8]) {
        self.1.extend_from_slice(bytes);
    }
}
impl BuildHasher for SeamHasher {
    type Hasher = SeamState;
    fn build_hasher(&self) -> SeamState {
        SeamState(self.0, Vec::new())
    }
}

type Shard = HashMap<Box<[u8]>, Arc<Entry>, SeamHasher>;

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    puts: AtomicU64,
    evictions: AtomicU64,
    corrupt_dropped: AtomicU64,
}

/// Everything that changes the index, under one mutex: the log and the LRU victim queues.
struct Writer {
    log: Option<IndexLog>,
    /// Bytes of index records that describe live entries (for compaction).
    live_log_bytes: u64,
    disk_victims: VecDeque<(u64, Box<[u8]>)>,
}

struct Disk {
    blobs: PathBuf,
    tmp: PathBuf,
    next_id: AtomicU64,
    /// Ids below this are covered by a Reserve record in the index log.
    ceiling: AtomicU64,
    /// Ids below this were issued by earlier runs: only those are the sweep's business.
    first_session_id: u64,
    fsync: bool,
}

struct Inner {
    cfg: StoreConfig,
    shards: Box<[RwLock<Shard>]>,
    clock: AtomicU64,
    mem_used: AtomicU64,
    disk_used: AtomicU64,
    entries: AtomicU64,
    entries_mem: AtomicU64,
    counters: Counters,
    disk: Option<Disk>,
    writer: Mutex<Writer>,
    /// Victim queue of the memory tier (demotion needs no index change, so it has its own lock).
    mem_victims: Mutex<VecDeque<(u64, Box<[u8]>)>>,
}

/// A blob store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// The result of [`Store::lookup`], which never touches the disk.
pub enum Lookup {
    Hit(Bytes),
    /// Present on disk only: finish with [`Store::read_cold`] off the async runtime.
    Cold(ColdEntry),
    Miss,
}

/// An entry found on disk by [`Store::lookup`].
pub struct ColdEntry {
    key: Box<[u8]>,
    entry: Arc<Entry>,
}

impl ColdEntry {
    pub fn size(&self) -> u64 {
        self.entry.size
    }
}

/// The result of [`Store::read_cold`].
pub enum ColdRead {
    /// The whole blob, verified.
    Whole(Bytes),
    /// A large blob to stream; verified as it is read.
    Stream(Box<BlobReader>),
    /// Gone (removed meanwhile, or dropped as corrupt): a miss.
    Gone,
}

/// What [`Store::open`] found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub entries: u64,
    pub bytes_on_disk: u64,
    pub index_load_time: Duration,
    /// Index bytes that did not parse (a torn tail, or damage).
    pub damaged_index_bytes: u64,
    /// Entries evicted at start because the disk budget shrank.
    pub trimmed_at_start: u64,
    /// Set when damage was found and recovery ran before serving.
    pub recovered: Option<SweepReport>,
}

/// What [`Store::sweep`] did.
#[derive(Debug, Clone, Default)]
pub struct SweepReport {
    pub temp_files_removed: u64,
    pub orphans_adopted: u64,
    pub orphans_removed: u64,
    pub unknown_skipped: u64,
    pub symlinks_removed: u64,
}

impl Store {
    /// Opens a store: creates its directories, replays the index log (never reading blob bodies) and trims
    /// to the disk budget.
    pub fn open(cfg: StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        let t0 = Instant::now();
        let hasher = SeamHasher(cfg.key_hasher);
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(HashMap::with_hasher(hasher)))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let mut report = OpenReport::default();
        // Ids of earlier runs are all below every Put and Reserve they recorded.
        let mut first = 1u64;
        let (disk, log, damaged_mid) = match &cfg.dir {
            None => (None, None, false),
            Some(dir) => {
                let blobs = dir.join("blobs");
                let tmp = dir.join("tmp");
                for d in [dir, &blobs, &tmp] {
                    ensure_real_dir(d)?;
                }
                // Before serving, not in the background sweep: reads and writes would go through a planted
                // symlink in the meantime.
                remove_symlinks_in(&blobs);
                // Records are applied as they are read: no second copy of the index while loading.
                let (log, replay) =
                    IndexLog::open(dir, cfg.durability == Durability::Fsync, |rec| {
                        first = first.max(match &rec {
                            Record::Put { file_id, .. } => file_id.saturating_add(1),
                            Record::Reserve { up_to } => *up_to,
                            _ => 0,
                        });
                        replay_record(&shards, cfg.key_hasher, rec);
                    })?;
                report.damaged_index_bytes = replay.damaged_bytes;
                if replay.damaged_bytes > 0 {
                    warn!(
                        store = %cfg.name,
                        "index log {}: {} damaged byte(s) skipped",
                        IndexLog::path(dir).display(),
                        replay.damaged_bytes
                    );
                }
                let disk = Disk {
                    blobs,
                    tmp,
                    next_id: AtomicU64::new(first),
                    ceiling: AtomicU64::new(first),
                    first_session_id: first,
                    fsync: cfg.durability == Durability::Fsync,
                };
                (Some(disk), Some(log), replay.damaged_mid_log)
            }
        };
        // Totals of what replay left; recency is the file-id order (ids grow with time).
        let (mut entries, mut disk_used, mut live_log_bytes) = (0u64, 0u64, 0u64);
        for s in shards.iter() {
            let s = s.read().unwrap_or_else(|e| e.into_inner());
            for (k, e) in s.iter() {
                entries += 1;
                disk_used = disk_used.saturating_add(format::file_len(k.len(), e.size));
                live_log_bytes += put_record_len(k.len());
            }
        }
        let store = Store {
            inner: Arc::new(Inner {
                shards,
                clock: AtomicU64::new(first),
                mem_used: AtomicU64::new(0),
                disk_used: AtomicU64::new(disk_used),
                entries: AtomicU64::new(entries),
                entries_mem: AtomicU64::new(0),
                counters: Counters::default(),
                disk,
                writer: Mutex::new(Writer {
                    log,
                    live_log_bytes,
                    disk_victims: VecDeque::new(),
                }),
                mem_victims: Mutex::new(VecDeque::new()),
                cfg,
            }),
        };
        report.entries = entries;
        report.bytes_on_disk = disk_used;
        report.index_load_time = t0.elapsed();
        if damaged_mid {
            // Entries may be missing from the index: recover them from the blob files before serving, then
            // write a clean log.
            report.recovered = Some(store.sweep_files(true));
            store.compact()?;
            report.entries = store.inner.entries.load(Ordering::Relaxed);
            report.bytes_on_disk = store.inner.disk_used.load(Ordering::Relaxed);
        }
        {
            let mut w = store.writer();
            let before = store.inner.counters.evictions.load(Ordering::Relaxed);
            store.evict_disk_locked(&mut w);
            report.trimmed_at_start =
                store.inner.counters.evictions.load(Ordering::Relaxed) - before;
        }
        Ok((store, report))
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shard(&self, key: &[u8]) -> &RwLock<Shard> {
        &self.inner.shards[shard_index(self.inner.cfg.key_hasher, key)]
    }

    fn tick(&self) -> u64 {
        self.inner.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn find(&self, key: &[u8]) -> Option<Arc<Entry>> {
        self.shard(key)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Looks a key up without touching the disk; safe on an async runtime thread. Counts a hit or a miss,
    /// except for `Cold`, which [`Store::read_cold`] counts.
    pub fn lookup(&self, key: &[u8]) -> Lookup {
        let Some(e) = self.find(key) else {
            self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        };
        e.tick.store(self.tick(), Ordering::Relaxed);
        if let Some(b) = e.mem().bytes.clone() {
            self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(b);
        }
        Lookup::Cold(ColdEntry {
            key: key.into(),
            entry: e,
        })
    }

    /// Reads a cold entry from disk (blocking). Small blobs are verified whole and promoted to the memory
    /// tier; large ones come back as a verifying stream.
    pub fn read_cold(&self, cold: ColdEntry) -> Result<ColdRead, StoreError> {
        let ColdEntry { key, entry } = cold;
        let Some(disk) = &self.inner.disk else {
            self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(ColdRead::Gone);
        };
        let path = disk.blob_path(entry.file_id);
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(nofollow())
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Replaced or evicted meanwhile, or lost: a miss, and forget it if it is still indexed.
                self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
                self.remove_if_same(&key, &entry);
                return Ok(ColdRead::Gone);
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                // A symlink planted in place of the blob file: never followed; the entry is dropped (and the
                // link deleted) like any other damaged one.
                self.drop_corrupt(&key, &entry, "blob file is a symlink");
                return Ok(ColdRead::Gone);
            }
            Err(e) => return Err(StoreError::io("open", &path, e)),
        };
        let mut head = vec![0u8; BLOB_HEADER_LEN + key.len()];
        let header_ok = match file.read_exact(&mut head) {
            Ok(()) => match BlobHeader::decode(&head) {
                Ok(h) => {
                    h.key_len as usize == key.len()
                        && h.body_len == entry.size
                        && head[BLOB_HEADER_LEN..] == key[..]
                }
                Err(_) => false,
            },
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        if !header_ok {
            self.drop_corrupt(&key, &entry, "header or key does not match the index");
            return Ok(ColdRead::Gone);
        }
        let mut hasher = Xxh3::new();
        hasher.update(&head);
        if entry.size > SMALL_READ_MAX {
            return Ok(ColdRead::Stream(Box::new(
                BlobReader {
                    store: self.clone(),
                    key,
                    entry,
                    file,
                    remaining: 0,
                    hasher,
                    done: false,
                }
                .start(),
            )));
        }
        let mut buf = BytesMut::zeroed(entry.size as usize + BLOB_TRAILER_LEN);
        match file.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.drop_corrupt(&key, &entry, "file is shorter than its header says");
                return Ok(ColdRead::Gone);
            }
            Err(e) => return Err(StoreError::io("read", &path, e)),
        }
        let trailer = buf.split_off(entry.size as usize);
        hasher.update(&buf);
        let stored = u128::from_le_bytes(trailer[..].try_into().expect("16 bytes"));
        let mut extra = [0u8; 1];
        let longer = matches!(file.read(&mut extra), Ok(n) if n > 0);
        if hasher.digest128() != stored || stored != entry.checksum || longer {
            self.drop_corrupt(&key, &entry, "checksum mismatch");
            return Ok(ColdRead::Gone);
        }
        let body = buf.freeze();
        self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
        self.promote(&entry, &body);
        Ok(ColdRead::Whole(body))
    }

    /// Convenience for callers that want a whole blob (blocking): memory, then disk. Streams are collected.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        match self.lookup(key) {
            Lookup::Hit(b) => Ok(Some(b)),
            Lookup::Miss => Ok(None),
            Lookup::Cold(c) => match self.read_cold(c)? {
                ColdRead::Whole(b) => Ok(Some(b)),
                ColdRead::Gone => Ok(None),
                ColdRead::Stream(mut r) => {
                    let mut out = BytesMut::with_capacity(r.len() as usize);
                    loop {
                        match r.next_chunk(1 << 20) {
                            Ok(Some(c)) => out.extend_from_slice(&c),
                            Ok(None) => return Ok(Some(out.freeze())),
                            Err(StoreError::Corrupt(_)) => return Ok(None),
                            Err(e) => return Err(e),
                        }
                    }
                }
            },
        }
    }

    /// Size of the blob under `key`, without counting a hit or touching recency.
    pub fn exists(&self, key: &[u8]) -> Option<u64> {
        self.find(key).map(|e| e.size)
    }

    /// Adds a hot copy of a blob just read from disk, then trims the memory tier.
    fn promote(&self, entry: &Arc<Entry>, body: &Bytes) {
        if body.len() as u64 > self.mem_admit_limit() {
            return;
        }
        {
            let mut m = entry.mem();
            if m.removed || m.bytes.is_some() {
                return;
            }
            m.bytes = Some(body.clone());
        }
        self.inner
            .mem_used
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        self.inner.entries_mem.fetch_add(1, Ordering::Relaxed);
        self.trim_memory();
    }

    fn mem_admit_limit(&self) -> u64 {
        let c = &self.inner.cfg;
        if self.inner.disk.is_some() {
            c.max_memory_blob.min(c.memory_budget)
        } else {
            c.memory_budget
        }
    }

    /// Stores a whole blob (blocking). Returns false when it is larger than a budget allows it to be kept
    /// (any older value under the key is then removed, so a stale blob is never served).
    pub fn put(&self, key: &[u8], data: Bytes) -> Result<bool, StoreError> {
        let size = data.len() as u64;
        self.check_size(size)?;
        self.inner.counters.puts.fetch_add(1, Ordering::Relaxed);
        if !self.fits(key, size) {
            self.remove(key)?;
            return Ok(false);
        }
        // What the memory tier keeps gets an allocation of exactly its size: `data` is often a slice of a
        // larger buffer (a connection's read buffer), which a hot copy would otherwise pin whole, so that
        // RSS outgrew the memory budget 2.5x with small blobs.
        let Some(disk) = &self.inner.disk else {
            self.commit(key, size, 0, 0, Some(Bytes::copy_from_slice(&data)))?;
            return Ok(true);
        };
        let id = self.alloc_id(disk)?;
        let checksum = self.retry_on_full(format::file_len(key.len(), size), || {
            disk.write_blob(id, key, &data)
        })?;
        let hot = (size <= self.mem_admit_limit()).then(|| Bytes::copy_from_slice(&data));
        self.commit(key, size, id, checksum, hot)?;
        Ok(true)
    }

    /// Starts a streamed put of `total_len` bytes (blocking). The writer holds at most one chunk in memory
    /// when there is a disk tier.
    pub fn begin_put(&self, key: &[u8], total_len: u64) -> Result<PutWriter, StoreError> {
        self.check_size(total_len)?;
        self.inner.counters.puts.fetch_add(1, Ordering::Relaxed);
        let sink = if !self.fits(key, total_len) {
            Sink::Discard
        } else if let Some(disk) = &self.inner.disk {
            let id = self.alloc_id(disk)?;
            let flen = format::file_len(key.len(), total_len);
            let (file, tmp) = self.retry_on_full(flen, || disk.create_tmp(id))?;
            let header = BlobHeader {
                key_len: key.len() as u32,
                body_len: total_len,
            }
            .encode();
            let mut pending = PendingFile {
                file,
                tmp,
                id,
                hasher: Xxh3::new(),
                done: false,
            };
            let mut head = header.to_vec();
            head.extend_from_slice(key);
            pending.write(&head)?;
            Sink::File(Box::new(pending))
        } else {
            Sink::Memory(BytesMut::new())
        };
        Ok(PutWriter {
            store: self.clone(),
            key: key.into(),
            total: total_len,
            written: 0,
            body_hasher: Xxh3::new(),
            sink,
        })
    }

    /// Issues a blob file id, recording a new reserved block in the index first when needed.
    fn alloc_id(&self, disk: &Disk) -> Result<u64, StoreError> {
        // Saturating: only a crafted index gets ids near the top, and wrapping to 0 ("no file") would be worse.
        let id = disk
            .next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(1))
            })
            .unwrap_or_else(|v| v);
        if id >= disk.ceiling.load(Ordering::Acquire) {
            let mut w = self.writer();
            if id >= disk.ceiling.load(Ordering::Acquire) {
                let up_to = id.saturating_add(ID_BLOCK);
                if let Some(log) = w.log.as_mut() {
                    log.append(&Record::Reserve { up_to })?;
                }
                disk.ceiling.store(up_to, Ordering::Release);
            }
        }
        Ok(id)
    }

    fn check_size(&self, size: u64) -> Result<(), StoreError> {
        let max = self.inner.cfg.max_blob;
        if size > max {
            return Err(StoreError::TooLarge { size, max });
        }
        Ok(())
    }

    /// Whether a blob of `size` can be kept at all: disk stores keep every entry on disk, memory-only stores
    /// in memory.
    fn fits(&self, key: &[u8], size: u64) -> bool {
        let c = &self.inner.cfg;
        match &self.inner.disk {
            Some(_) => c.disk_budget == 0 || format::file_len(key.len(), size) <= c.disk_budget,
            None => size <= c.memory_budget,
        }
    }

    /// Runs a disk write; on "disk full", evicts about `need` bytes of the coldest entries and tries once
    /// more, so a full disk degrades into a smaller cache rather than failed puts.
    fn retry_on_full<T>(
        &self,
        need: u64,
        mut f: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match f() {
            Err(StoreError::NoSpace { path }) => {
                let freed = self.evict_bytes(need.max(1 << 20));
                if freed == 0 {
                    return Err(StoreError::NoSpace { path });
                }
                warn!(store = %self.inner.cfg.name, "disk full: evicted {freed} bytes and retrying");
                f()
            }
            r => r,
        }
    }

    /// Makes `key` map to a new entry: index record, map, accounting, then eviction.
    fn commit(
        &self,
        key: &[u8],
        size: u64,
        file_id: u64,
        checksum: u128,
        hot: Option<Bytes>,
    ) -> Result<(), StoreError> {
        let hot_len = hot.as_ref().map(|b| b.len() as u64);
        let entry = Entry::new(size, file_id, checksum, self.tick(), hot);
        let mut unlink = Vec::new();
        {
            let mut w = self.writer();
            if let Some(log) = w.log.as_mut() {
                let rec = Record::Put {
                    key: key.to_vec(),
                    file_id,
                    body_len: size,
                    checksum,
                };
                if let Err(e) = log.append(&rec) {
                    drop(w);
                    if let Some(d) = &self.inner.disk {
                        let _ = std::fs::remove_file(d.blob_path(file_id));
                    }
                    return Err(e);
                }
                w.live_log_bytes += put_record_len(key.len());
            }
            let old = self
                .shard(key)
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.into(), entry);
            if file_id != 0 {
                self.inner
                    .disk_used
                    .fetch_add(format::file_len(key.len(), size), Ordering::Relaxed);
            }
            if let Some(n) = hot_len {
                self.inner.mem_used.fetch_add(n, Ordering::Relaxed);
                self.inner.entries_mem.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.entries.fetch_add(1, Ordering::Relaxed);
            if let Some(old) = old {
                w.live_log_bytes = w.live_log_bytes.saturating_sub(put_record_len(key.len()));
                if let Some(id) = self.forget(key.len(), &old) {
                    unlink.push(id);
                }
            }
            self.evict_disk_locked(&mut w);
            if self.inner.disk.is_none() {
                self.evict_memory_only_locked(&mut w);
            }
            self.maybe_compact(&mut w);
        }
        // An overwritten file needs no record: the new Put supersedes it.
        if let Some(d) = &self.inner.disk {
            for id in unlink {
                d.unlink(id);
            }
        }
        if self.inner.disk.is_some() {
            self.trim_memory();
        }
        Ok(())
    }

    /// Accounting for an entry that left the index. Returns its file id, if it has a file to delete.
    fn forget(&self, key_len: usize, e: &Arc<Entry>) -> Option<u64> {
        let had = {
            let mut m = e.mem();
            m.removed = true;
            m.bytes.take()
        };
        if let Some(b) = had {
            self.inner
                .mem_used
                .fetch_sub(b.len() as u64, Ordering::Relaxed);
            self.inner.entries_mem.fetch_sub(1, Ordering::Relaxed);
        }
        self.inner.entries.fetch_sub(1, Ordering::Relaxed);
        if e.file_id != 0 {
            self.inner
                .disk_used
                .fetch_sub(format::file_len(key_len, e.size), Ordering::Relaxed);
            Some(e.file_id)
        } else {
            None
        }
    }

    /// Removes `key` if it still maps to `entry`: file first, then the Del record, so a crash in between
    /// can only leave an index entry whose file is missing (a miss), never resurrect a removed blob.
    fn remove_locked(&self, w: &mut Writer, key: &[u8], entry: Option<&Arc<Entry>>) -> bool {
        let removed = {
            let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
            match (shard.get(key), entry) {
                (Some(cur), Some(want)) if !Arc::ptr_eq(cur, want) => None,
                (None, _) => None,
                _ => shard.remove(key),
            }
        };
        let Some(old) = removed else { return false };
        w.live_log_bytes = w.live_log_bytes.saturating_sub(put_record_len(key.len()));
        if let Some(id) = self.forget(key.len(), &old) {
            if let Some(d) = &self.inner.disk {
                d.unlink(id);
            }
            if let Some(log) = w.log.as_mut() {
                let rec = Record::Del {
                    key: key.to_vec(),
                    file_id: id,
                };
                if let Err(e) = log.append(&rec) {
                    warn!(store = %self.inner.cfg.name, "cannot record a removal: {e}");
                }
            }
        }
        true
    }

    fn remove_if_same(&self, key: &[u8], entry: &Arc<Entry>) -> bool {
        let mut w = self.writer();
        self.remove_locked(&mut w, key, Some(entry))
    }

    fn drop_corrupt(&self, key: &[u8], entry: &Arc<Entry>, why: &str) {
        self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        if self.remove_if_same(key, entry) {
            self.inner
                .counters
                .corrupt_dropped
                .fetch_add(1, Ordering::Relaxed);
            warn!(store = %self.inner.cfg.name, file_id = entry.file_id, "dropped a corrupt blob: {why}");
        }
    }

    /// Removes one key (blocking). Returns whether it was present.
    pub fn remove(&self, key: &[u8]) -> Result<bool, StoreError> {
        let mut w = self.writer();
        Ok(self.remove_locked(&mut w, key, None))
    }

    /// Removes several keys under one lock; returns how many were present.
    pub fn remove_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, StoreError> {
        let mut w = self.writer();
        Ok(keys
            .into_iter()
            .filter(|k| self.remove_locked(&mut w, k.as_ref(), None))
            .count() as u64)
    }

    /// Removes everything, in memory and on disk (blocking). Returns how many entries there were.
    pub fn clear(&self) -> Result<u64, StoreError> {
        let mut w = self.writer();
        let mut drained = Vec::new();
        for s in self.inner.shards.iter() {
            let mut s = s.write().unwrap_or_else(|e| e.into_inner());
            drained.extend(s.drain());
        }
        let n = drained.len() as u64;
        for (k, e) in &drained {
            if let (Some(id), Some(d)) = (self.forget(k.len(), e), &self.inner.disk) {
                d.unlink(id);
            }
        }
        w.disk_victims.clear();
        self.inner
            .mem_victims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        w.live_log_bytes = 0;
        let reserve = self.reserve_record();
        if let Some(log) = w.log.as_mut() {
            log.rewrite(reserve.into_iter())?;
        }
        Ok(n)
    }

    /// The Reserve record that keeps a rewritten log covering every id issued so far.
    fn reserve_record(&self) -> Option<Record> {
        self.inner.disk.as_ref().map(|d| Record::Reserve {
            up_to: d
                .ceiling
                .load(Ordering::Acquire)
                .max(d.next_id.load(Ordering::Relaxed)),
        })
    }

    /// Evicts disk-tier LRU entries until within budget.
    fn evict_disk_locked(&self, w: &mut Writer) {
        let budget = self.inner.cfg.disk_budget;
        if self.inner.disk.is_none() || budget == 0 {
            return;
        }
        while self.inner.disk_used.load(Ordering::Relaxed) > budget {
            let Some((key, e)) = self.pop_victim(&mut w.disk_victims, false) else {
                break;
            };
            if self.remove_locked(w, &key, Some(&e)) {
                self.inner
                    .counters
                    .evictions
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Memory-only stores: the memory tier is the cache, so trimming it removes entries.
    fn evict_memory_only_locked(&self, w: &mut Writer) {
        let budget = self.inner.cfg.memory_budget;
        while self.inner.mem_used.load(Ordering::Relaxed) > budget {
            let victim = {
                let mut q = self
                    .inner
                    .mem_victims
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.pop_victim(&mut q, true)
            };
            let Some((key, e)) = victim else { break };
            if self.remove_locked(w, &key, Some(&e)) {
                self.inner
                    .counters
                    .evictions
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Evicts coldest entries worth at least `bytes` (disk full). Returns bytes freed.
    fn evict_bytes(&self, bytes: u64) -> u64 {
        let mut w = self.writer();
        let start = self.inner.disk_used.load(Ordering::Relaxed);
        let mut freed = 0;
        while freed < bytes {
            let Some((key, e)) = self.pop_victim(&mut w.disk_victims, false) else {
                break;
            };
            if self.remove_locked(&mut w, &key, Some(&e)) {
                self.inner
                    .counters
                    .evictions
                    .fetch_add(1, Ordering::Relaxed);
            }
            freed = start.saturating_sub(self.inner.disk_used.load(Ordering::Relaxed));
        }
        freed
    }

    /// Drops hot copies, coldest first, until the memory tier is within budget (disk stores only).
    fn trim_memory(&self) {
        let budget = self.inner.cfg.memory_budget;
        if self.inner.mem_used.load(Ordering::Relaxed) <= budget {
            return;
        }
        let mut q = self
            .inner
            .mem_victims
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while self.inner.mem_used.load(Ordering::Relaxed) > budget {
            let Some((_, e)) = self.pop_victim(&mut q, true) else {
                break;
            };
            let dropped = e.mem().bytes.take();
            if let Some(b) = dropped {
                self.inner
                    .mem_used
                    .fetch_sub(b.len() as u64, Ordering::Relaxed);
                self.inner.entries_mem.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Pops the least recently used entry from a victim queue, refilling the queue by a scan when it runs
    /// dry. Exact LRU: the queue holds the oldest entries at scan time in tick order; anything touched or
    /// created since has a newer tick than all of them, and a touched entry is skipped when it comes up.
    fn pop_victim(
        &self,
        q: &mut VecDeque<(u64, Box<[u8]>)>,
        hot_only: bool,
    ) -> Option<(Box<[u8]>, Arc<Entry>)> {
        let mut refilled = false;
        loop {
            if q.is_empty() {
                if refilled {
                    return None;
                }
                self.refill(q, hot_only);
                refilled = true;
                if q.is_empty() {
                    return None;
                }
            }
            let (tick, key) = q.pop_front()?;
            if let Some(e) = self.find(&key)
                && e.tick.load(Ordering::Relaxed) == tick
                && (!hot_only || e.mem().bytes.is_some())
            {
                return Some((key, e));
            }
        }
    }

    fn refill(&self, q: &mut VecDeque<(u64, Box<[u8]>)>, hot_only: bool) {
        let mut all: Vec<(u64, Box<[u8]>)> = Vec::new();
        for s in self.inner.shards.iter() {
            let s = s.read().unwrap_or_else(|e| e.into_inner());
            for (k, e) in s.iter() {
                if !hot_only || e.mem().bytes.is_some() {
                    all.push((e.tick.load(Ordering::Relaxed), k.clone()));
                }
            }
        }
        // Keep the oldest slice: enough that refills are rare, small enough to stay cheap.
        let keep = (all.len() / 8).max(64).min(all.len());
        if keep < all.len() {
            all.select_nth_unstable_by_key(keep, |(t, _)| *t);
            all.truncate(keep);
        }
        all.sort_unstable_by_key(|(t, _)| *t);
        q.extend(all);
    }

    fn maybe_compact(&self, w: &mut Writer) {
        let Some(log) = w.log.as_ref() else { return };
        if log.len < COMPACT_MIN || log.len < COMPACT_RATIO * w.live_log_bytes {
            return;
        }
        if let Err(e) = self.compact_locked(w) {
            warn!(store = %self.inner.cfg.name, "index compaction failed (will retry later): {e}");
        }
    }

    /// Rewrites the index log with one Put per live entry.
    pub fn compact(&self) -> Result<(), StoreError> {
        let mut w = self.writer();
        self.compact_locked(&mut w)
    }

    fn compact_locked(&self, w: &mut Writer) -> Result<(), StoreError> {
        let Some(log) = w.log.as_mut() else {
            return Ok(());
        };
        let mut live: Vec<(u64, Record)> = Vec::new();
        for s in self.inner.shards.iter() {
            let s = s.read().unwrap_or_else(|e| e.into_inner());
            for (k, e) in s.iter() {
                live.push((
                    e.tick.load(Ordering::Relaxed),
                    Record::Put {
                        key: k.to_vec(),
                        file_id: e.file_id,
                        body_len: e.size,
                        checksum: e.checksum,
                    },
                ));
            }
        }
        live.sort_unstable_by_key(|(t, _)| *t);
        let reserve = self.reserve_record();
        log.rewrite(reserve.into_iter().chain(live.into_iter().map(|(_, r)| r)))?;
        Ok(())
    }

    /// Cleans the disk tier of what the index does not name (blocking; the daemon runs it in the background
    /// after it starts serving): removes temp files of earlier runs and symlinks, adopts complete blob files
    /// the index lost (newest per key, only for keys not indexed), removes other unindexed blob files, and
    /// skips unknown files (counted). Files written by this run are never touched.
    pub fn sweep(&self) -> SweepReport {
        self.sweep_files(false)
    }

    /// `before_serving`: no file of this run exists yet, so every file is examined (recovery from a damaged
    /// index, whose Reserve records may be lost too).
    fn sweep_files(&self, before_serving: bool) -> SweepReport {
        let mut rep = SweepReport::default();
        let Some(disk) = &self.inner.disk else {
            return rep;
        };
        if let Ok(rd) = std::fs::read_dir(&disk.tmp) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                let id = name
                    .strip_suffix(".tmp")
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                if !before_serving && id.is_some_and(|id| id >= disk.first_session_id) {
                    continue;
                }
                if std::fs::remove_file(ent.path()).is_ok() {
                    rep.temp_files_removed += 1;
                }
            }
        }
        let indexed: HashSet<u64> = self
            .inner
            .shards
            .iter()
            .flat_map(|s| {
                let s = s.read().unwrap_or_else(|e| e.into_inner());
                s.values().map(|e| e.file_id).collect::<Vec<_>>()
            })
            .collect();
        let mut orphans: HashMap<Vec<u8>, (u64, BlobHeader, u128)> = HashMap::new();
        let mut losers: Vec<u64> = Vec::new();
        let mut max_seen = 0u64;
        let Ok(rd) = std::fs::read_dir(&disk.blobs) else {
            return rep;
        };
        for sub in rd.flatten() {
            let ft = match sub.file_type() {
                Ok(ft) => ft,
                Err(_) => continue,
            };
            let name = sub.file_name().to_string_lossy().into_owned();
            if ft.is_symlink() {
                if std::fs::remove_file(sub.path()).is_ok() {
                    rep.symlinks_removed += 1;
                }
                continue;
            }
            let fan_ok = name.len() == 2
                && name
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            if !ft.is_dir() || !fan_ok {
                rep.unknown_skipped += 1;
                continue;
            }
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let fname = f.file_name().to_string_lossy().into_owned();
                if f.file_type().is_ok_and(|t| t.is_symlink()) {
                    if std::fs::remove_file(f.path()).is_ok() {
                        rep.symlinks_removed += 1;
                    }
                    continue;
                }
                let Some(id) = format::parse_blob_file_name(&fname) else {
                    rep.unknown_skipped += 1;
                    continue;
                };
                max_seen = max_seen.max(id);
                if (!before_serving && id >= disk.first_session_id) || indexed.contains(&id) {
                    continue;
                }
                match read_blob_meta(&f.path()) {
                    Some((key, h, sum)) if self.find(&key).is_none() => {
                        let newer = orphans.get(&key).is_none_or(|(old, _, _)| *old < id);
                        if newer {
                            if let Some((old, _, _)) = orphans.insert(key, (id, h, sum)) {
                                losers.push(old);
                            }
                        } else {
                            losers.push(id);
                        }
                    }
                    Some(_) => losers.push(id),
                    None => {
                        // Named like a blob but unreadable or failing its checksum: damage (files appear
                        // under their final name only when complete), counted like a damaged entry.
                        self.inner
                            .counters
                            .corrupt_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        warn!(store = %self.inner.cfg.name, file_id = id, "dropped a corrupt unindexed blob file");
                        losers.push(id);
                    }
                }
            }
        }
        if before_serving && max_seen >= disk.next_id.load(Ordering::Relaxed) {
            // The damaged index under-reported the ids in use: never reuse one.
            disk.next_id
                .store(max_seen.saturating_add(1), Ordering::Relaxed);
            disk.ceiling
                .store(max_seen.saturating_add(1), Ordering::Release);
        }
        for id in losers {
            disk.unlink(id);
            rep.orphans_removed += 1;
        }
        for (key, (id, h, sum)) in orphans {
            let fits = self.fits(&key, h.body_len);
            if fits && self.adopt(&key, id, h.body_len, sum) {
                rep.orphans_adopted += 1;
            } else {
                disk.unlink(id);
                rep.orphans_removed += 1;
            }
        }
        if rep.temp_files_removed
            + rep.orphans_adopted
            + rep.orphans_removed
            + rep.unknown_skipped
            + rep.symlinks_removed
            > 0
        {
            info!(store = %self.inner.cfg.name, ?rep, "cache directory swept");
        }
        rep
    }

    /// Indexes a complete blob file found on disk, unless the key got a value meanwhile.
    fn adopt(&self, key: &[u8], id: u64, size: u64, checksum: u128) -> bool {
        if self.find(key).is_some() {
            return false;
        }
        self.commit(key, size, id, checksum, None).is_ok()
    }

    pub fn stats(&self) -> StoreStats {
        let i = &self.inner;
        let c = &i.counters;
        StoreStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            entries: i.entries.load(Ordering::Relaxed),
            entries_in_memory: i.entries_mem.load(Ordering::Relaxed),
            bytes_in_memory: i.mem_used.load(Ordering::Relaxed),
            bytes_on_disk: i.disk_used.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            corrupt_dropped: c.corrupt_dropped.load(Ordering::Relaxed),
            memory_budget: i.cfg.memory_budget,
            disk_budget: if i.disk.is_some() {
                i.cfg.disk_budget
            } else {
                0
            },
        }
    }

    /// The blob file of a key, if it has one (tests and tools).
    pub fn blob_path(&self, key: &[u8]) -> Option<PathBuf> {
        let e = self.find(key)?;
        let d = self.inner.disk.as_ref()?;
        (e.file_id != 0).then(|| d.blob_path(e.file_id))
    }
}

/// The shard a key lives in.
fn shard_index(hasher: Option<KeyHasher>, key: &[u8]) -> usize {
    let h = hasher.map_or_else(|| xxh3_64(key), |f| f(key));
    (h as usize) % SHARDS
}

/// Applies one replayed index record to the shards of a store being opened.
fn replay_record(shards: &[RwLock<Shard>], hasher: Option<KeyHasher>, rec: Record) {
    let shard_of = |key: &[u8]| &shards[shard_index(hasher, key)];
    match rec {
        Record::Put {
            key,
            file_id,
            body_len,
            checksum,
        } => {
            // File ids grow with time, so as ticks they order entries by recency of their put.
            let e = Entry::new(body_len, file_id, checksum, file_id, None);
            let mut s = shard_of(&key).write().unwrap_or_else(|e| e.into_inner());
            s.insert(key.into_boxed_slice(), e);
        }
        Record::Del { key, file_id } => {
            let mut s = shard_of(&key).write().unwrap_or_else(|e| e.into_inner());
            if s.get(key.as_slice()).is_some_and(|e| e.file_id == file_id) {
                s.remove(key.as_slice());
            }
        }
        Record::Clear => {
            for s in shards {
                s.write().unwrap_or_else(|e| e.into_inner()).clear();
            }
        }
        Record::Reserve { .. } => {}
    }
}

/// Encoded size of a Put record for a key of `key_len` bytes.
fn put_record_len(key_len: usize) -> u64 {
    (format::RECORD_PREFIX + 1 + 8 + 8 + 16 + 4 + key_len) as u64
}

/// Reads an unindexed blob file's key, header and checksum, verifying the whole file: such files are only
/// met by the sweep (crash leftovers, or recovery from a damaged index), and a damaged key must not be adopted
/// under the wrong name.
fn read_blob_meta(path: &Path) -> Option<(Vec<u8>, BlobHeader, u128)> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
        .ok()?;
    let mut hb = [0u8; BLOB_HEADER_LEN];
    f.read_exact(&mut hb).ok()?;
    let h = BlobHeader::decode(&hb).ok()?;
    if f.metadata().ok()?.len() != h.file_len() {
        return None;
    }
    let mut key = vec![0u8; h.key_len as usize];
    f.read_exact(&mut key).ok()?;
    let mut hasher = format::blob_hasher(&hb, &key);
    let mut left = h.body_len;
    let mut buf = vec![0u8; (1 << 20).min(left as usize)];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        f.read_exact(&mut buf[..n]).ok()?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut t = [0u8; BLOB_TRAILER_LEN];
    f.read_exact(&mut t).ok()?;
    let sum = u128::from_le_bytes(t);
    (hasher.digest128() == sum).then_some((key, h, sum))
}

/// Deletes symlinks among the fan-out directories (a symlinked fan-out would be followed by every open).
fn remove_symlinks_in(blobs: &Path) {
    let Ok(rd) = std::fs::read_dir(blobs) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_symlink()) {
            warn!("removing planted symlink {}", e.path().display());
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Creates a directory if missing and refuses to go through a symlink.
fn ensure_real_dir(d: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(d) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::io(
            "use",
            d,
            std::io::Error::other("exists but is not a directory (symlinks are not followed)"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| StoreError::io("create directory", d, e))
        }
        Err(e) => Err(StoreError::io("inspect", d, e)),
    }
}

impl Disk {
    fn fan_dir(&self, id: u64) -> PathBuf {
        self.blobs.join(format::blob_dir_name(id))
    }

    fn blob_path(&self, id: u64) -> PathBuf {
        self.fan_dir(id).join(format::blob_file_name(id))
    }

    fn create_tmp(&self, id: u64) -> Result<(File, PathBuf), StoreError> {
        let tmp = self.tmp.join(format!("{id:016x}.tmp"));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nofollow())
            .open(&tmp)
            .map_err(|e| StoreError::io("create", &tmp, e))?;
        Ok((f, tmp))
    }

    /// Writes a whole blob file: temp file, (fsync), rename into place. Returns the file checksum.
    fn write_blob(&self, id: u64, key: &[u8], data: &[u8]) -> Result<u128, StoreError> {
        let header = BlobHeader {
            key_len: key.len() as u32,
            body_len: data.len() as u64,
        }
        .encode();
        let mut h = format::blob_hasher(&header, key);
        h.update(data);
        let sum = h.digest128();
        let (mut f, tmp) = self.create_tmp(id)?;
        let res = (|| {
            if data.len() <= 64 * 1024 {
                let mut buf =
                    Vec::with_capacity(BLOB_HEADER_LEN + key.len() + data.len() + BLOB_TRAILER_LEN);
                buf.extend_from_slice(&header);
                buf.extend_from_slice(key);
                buf.extend_from_slice(data);
                buf.extend_from_slice(&sum.to_le_bytes());
                f.write_all(&buf)?;
            } else {
                f.write_all(&header)?;
                f.write_all(key)?;
                f.write_all(data)?;
                f.write_all(&sum.to_le_bytes())?;
            }
            if self.fsync {
                f.sync_data()?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io("write", &tmp, e));
        }
        drop(f);
        self.install(&tmp, id)?;
        Ok(sum)
    }

    /// Renames a complete temp file to its final name.
    fn install(&self, tmp: &Path, id: u64) -> Result<(), StoreError> {
        let dst = self.blob_path(id);
        let fan = self.fan_dir(id);
        let r = match std::fs::rename(tmp, &dst) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ensure_real_dir(&fan)?;
                if self.fsync {
                    sync_dir(&self.blobs);
                }
                std::fs::rename(tmp, &dst)
            }
            r => r,
        };
        if let Err(e) = r {
            let _ = std::fs::remove_file(tmp);
            return Err(StoreError::io("rename", tmp, e));
        }
        if self.fsync {
            sync_dir(&fan);
        }
        Ok(())
    }

    fn unlink(&self, id: u64) {
        let p = self.blob_path(id);
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!("cannot delete {}: {e}", p.display());
        }
    }
}

/// A temp file being filled by a streamed put.
struct PendingFile {
    file: File,
    tmp: PathBuf,
    id: u64,
    hasher: Xxh3,
    done: bool,
}

impl PendingFile {
    fn write(&mut self, b: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(b);
        self.file
            .write_all(b)
            .map_err(|e| StoreError::io("write", &self.tmp, e))
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

enum Sink {
    File(Box<PendingFile>),
    Memory(BytesMut),
    /// Too big for every budget: consume the stream, store nothing.
    Discard,
}

/// A streamed put in progress. Dropping it without [`PutWriter::commit`] abandons it and leaves no trace.
pub struct PutWriter {
    store: Store,
    key: Box<[u8]>,
    total: u64,
    written: u64,
    body_hasher: Xxh3,
    sink: Sink,
}

impl PutWriter {
    pub fn total_len(&self) -> u64 {
        self.total
    }

    /// Appends the next piece of the blob.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let n = chunk.len() as u64;
        if self.written + n > self.total {
            return Err(StoreError::StreamMismatch(format!(
                "received more than the announced {} bytes",
                self.total
            )));
        }
        self.body_hasher.update(chunk);
        match &mut self.sink {
            Sink::File(p) => p.write(chunk)?,
            Sink::Memory(m) => m.extend_from_slice(chunk),
            Sink::Discard => {}
        }
        self.written += n;
        Ok(())
    }

    /// Finishes the put. `body_checksum` is the XXH3-128 the client computed over the blob (`None` = not
    /// supplied); a mismatch or a short stream stores nothing. Returns whether the blob was kept.
    pub fn commit(mut self, body_checksum: Option<u128>) -> Result<bool, StoreError> {
        if self.written != self.total {
            return Err(StoreError::StreamMismatch(format!(
                "stream ended after {} of {} announced bytes",
                self.written, self.total
            )));
        }
        if let Some(c) = body_checksum
            && c != self.body_hasher.digest128()
        {
            return Err(StoreError::StreamMismatch(
                "checksum of the received bytes differs from the sender's".into(),
            ));
        }
        let store = self.store.clone();
        match std::mem::replace(&mut self.sink, Sink::Discard) {
            Sink::Discard => {
                store.remove(&self.key)?;
                Ok(false)
            }
            Sink::Memory(m) => {
                store.commit(&self.key, self.total, 0, 0, Some(m.freeze()))?;
                Ok(true)
            }
            Sink::File(mut p) => {
                let sum = p.hasher.digest128();
                p.file
                    .write_all(&sum.to_le_bytes())
                    .map_err(|e| StoreError::io("write", &p.tmp, e))?;
                let disk = store
                    .inner
                    .disk
                    .as_ref()
                    .expect("file sink implies a disk tier");
                if disk.fsync {
                    p.file
                        .sync_data()
                        .map_err(|e| StoreError::io("fsync", &p.tmp, e))?;
                }
                disk.install(&p.tmp, p.id)?;
                p.done = true;
                store.commit(&self.key, self.total, p.id, sum, None)?;
                Ok(true)
            }
        }
    }
}

/// Streams a large blob from disk, verifying it as it goes: the last chunk is only returned once the whole
/// blob has matched its checksum, so a reader never receives all of a corrupt blob.
pub struct BlobReader {
    store: Store,
    key: Box<[u8]>,
    entry: Arc<Entry>,
    file: File,
    remaining: u64,
    hasher: Xxh3,
    done: bool,
}

impl BlobReader {
    fn start(mut self) -> Self {
        self.remaining = self.entry.size;
        self
    }

    pub fn len(&self) -> u64 {
        self.entry.size
    }

    pub fn is_empty(&self) -> bool {
        self.entry.size == 0
    }

    /// The next chunk of at most `max` bytes; `None` after the last one.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        let Some(n) = self.next_len(max) else {
            return Ok(None);
        };
        let mut buf = BytesMut::zeroed(n);
        self.read_next(&mut buf)?;
        Ok(Some(buf.freeze()))
    }

    /// As [`BlobReader::next_chunk`], into `buf` (set to the chunk's length): a caller that streams a blob
    /// reuses one buffer instead of allocating and zeroing a fresh one per chunk. `false` after the last.
    pub fn next_chunk_into(&mut self, max: usize, buf: &mut Vec<u8>) -> Result<bool, StoreError> {
        let Some(n) = self.next_len(max) else {
            return Ok(false);
        };
        // Zeroes only growth: from the second chunk on, the length is already right.
        buf.resize(n, 0);
        self.read_next(buf)?;
        Ok(true)
    }

    /// Length of the next chunk, or `None` when the blob is done.
    fn next_len(&mut self, max: usize) -> Option<usize> {
        if self.done {
            return None;
        }
        if self.remaining == 0 {
            self.done = true;
            return None;
        }
        Some((max as u64).min(self.remaining) as usize)
    }

    /// Fills `buf` with the next bytes of the blob; after the last one, checks the whole blob's checksum.
    fn read_next(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        let n = buf.len();
        if let Err(e) = self.file.read_exact(buf) {
            self.done = true;
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.store.drop_corrupt(
                    &self.key,
                    &self.entry,
                    "file is shorter than its header says",
                );
                return Err(StoreError::Corrupt("blob file truncated".into()));
            }
            return Err(StoreError::io(
                "read",
                self.store.blob_path(&self.key).unwrap_or_default(),
                e,
            ));
        }
        self.hasher.update(buf);
        self.remaining -= n as u64;
        if self.remaining == 0 {
            let mut t = [0u8; BLOB_TRAILER_LEN];
            let ok = self.file.read_exact(&mut t).is_ok()
                && u128::from_le_bytes(t) == self.hasher.digest128()
                && self.entry.checksum == u128::from_le_bytes(t);
            if !ok {
                self.done = true;
                self.store
                    .drop_corrupt(&self.key, &self.entry, "checksum mismatch");
                return Err(StoreError::Corrupt("checksum mismatch".into()));
            }
            self.store
                .inner
                .counters
                .hits
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
