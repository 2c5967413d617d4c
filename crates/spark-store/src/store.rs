//! The `Store` API and the write path: put, remove, clear, compaction. Reads of cold entries live in
//! `stream.rs`, the tiers' LRU in `lru.rs`, opening and sweeping in `recovery.rs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::warn;
use xxhash_rust::xxh3::Xxh3;

use crate::backend::{BlobBackend, Location};
use crate::format::Record;
use crate::group::GroupCommit;
use crate::index::{Entry, Index};
use crate::index_log::{self, IndexLog};
use crate::lru::VictimQueue;
use crate::stats::Counters;
use crate::stream::{PutWriter, Sink};
use crate::{StoreConfig, StoreError};

/// Rewrite the index log when it is this much larger than its live records (and at least `COMPACT_MIN`).
const COMPACT_RATIO: u64 = 3;
const COMPACT_MIN: u64 = 4 << 20;
/// Blob ids are reserved in the index log this many at a time.
const ID_BLOCK: u64 = 1 << 16;

/// Everything that changes the index, under one mutex: the log and the disk tier's victim queue.
pub(crate) struct Writer {
    pub log: Option<IndexLog>,
    /// Bytes of index records that describe live entries (for compaction).
    pub live_log_bytes: u64,
    pub disk_victims: VictimQueue,
}

/// The disk tier: where blobs live, and the ids they are written under.
pub(crate) struct Disk {
    pub backend: Box<dyn BlobBackend>,
    pub ids: BlobIds,
}

/// Blob ids: unique in a store's lifetime and growing with time (so they double as recency at replay).
pub(crate) struct BlobIds {
    next: AtomicU64,
    /// Ids below this are covered by a Reserve record in the index log.
    ceiling: AtomicU64,
    /// Ids below this were issued by earlier runs: only those are the sweep's business.
    pub first_session: u64,
}

impl BlobIds {
    /// `first`: above every id earlier runs recorded in the index log.
    pub fn starting_at(first: u64) -> Self {
        BlobIds {
            next: AtomicU64::new(first),
            ceiling: AtomicU64::new(first),
            first_session: first,
        }
    }

    /// After recovery from a damaged index, which may have under-reported the ids in use: never reuse one.
    pub fn ensure_above(&self, max_seen: u64) {
        if max_seen >= self.next.load(Ordering::Relaxed) {
            self.next
                .store(max_seen.saturating_add(1), Ordering::Relaxed);
            self.ceiling
                .store(max_seen.saturating_add(1), Ordering::Release);
        }
    }

    /// The Reserve record that keeps a rewritten log covering every id issued so far.
    fn reserve_record(&self) -> Record {
        Record::Reserve {
            up_to: self
                .ceiling
                .load(Ordering::Acquire)
                .max(self.next.load(Ordering::Relaxed)),
        }
    }
}

pub(crate) struct Inner {
    pub cfg: StoreConfig,
    pub index: Index,
    pub clock: AtomicU64,
    pub mem_used: AtomicU64,
    pub disk_used: AtomicU64,
    pub entries: AtomicU64,
    pub entries_mem: AtomicU64,
    pub counters: Counters,
    pub disk: Option<Disk>,
    pub writer: Mutex<Writer>,
    /// Victim queue of the memory tier (demotion needs no index change, so it has its own lock).
    pub mem_victims: Mutex<VictimQueue>,
    /// Batches of small puts, and pack compaction.
    pub group: GroupCommit,
    /// Small puts waiting for the writer thread.
    pub queue: crate::queue::QueueHandle,
}

/// A new index entry, as [`Store::commit_many`] takes it.
pub(crate) struct NewEntry {
    pub key: Box<[u8]>,
    pub size: u64,
    pub loc: Option<Location>,
    pub checksum: u128,
    pub hot: Option<Bytes>,
}

/// A blob store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
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
    pub(crate) key: Box<[u8]>,
    pub(crate) entry: Arc<Entry>,
}

impl ColdEntry {
    pub fn size(&self) -> u64 {
        self.entry.size
    }
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
    /// Whole pack records found past what the index accounted for, and adopted.
    pub pack_records_recovered: u64,
    /// Bytes of torn or damaged records cut off pack tails.
    pub pack_bytes_truncated: u64,
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
    pub(crate) fn writer(&self) -> MutexGuard<'_, Writer> {
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn tick(&self) -> u64 {
        self.inner.clock.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn find(&self, key: &[u8]) -> Option<Arc<Entry>> {
        self.inner.index.find(key)
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
        e.touch(self.tick());
        if let Some(b) = e.mem().bytes.as_deref().cloned() {
            self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(b);
        }
        Lookup::Cold(ColdEntry {
            key: key.into(),
            entry: e,
        })
    }

    /// Size of the blob under `key`, without counting a hit or touching recency.
    pub fn exists(&self, key: &[u8]) -> Option<u64> {
        self.find(key).map(|e| e.size)
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
            self.commit(key, size, None, 0, Some(Bytes::copy_from_slice(&data)))?;
            return Ok(true);
        };
        let hot = (size <= self.mem_admit_limit()).then(|| Bytes::copy_from_slice(&data));
        if disk.backend.batches(size) {
            self.put_grouped(key, data, hot)?;
            return Ok(true);
        }
        let id = self.alloc_id(disk)?;
        let written = self.retry_on_full(disk.backend.stored_len(key.len(), size), || {
            disk.backend.write(id, key, &data)
        })?;
        self.commit(key, size, Some(written.loc), written.checksum, hot)?;
        self.maybe_compact_packs();
        Ok(true)
    }

    /// Whether [`Store::put_queued`] takes a put of `size` bytes under `key` without blocking: a disk store
    /// whose backend batches blobs of that size, and a blob the budgets allow.
    pub fn queues_put(&self, key: &[u8], size: u64) -> bool {
        self.inner
            .disk
            .as_ref()
            .is_some_and(|d| d.backend.batches(size))
            && size <= self.inner.cfg.max_blob
            && self.fits(key, size)
    }

    /// Stores a small blob through the store's writer thread, which calls `done` with the result once the
    /// blob's batch is written (and, with fsync durability, synced) and indexed. Does not block when
    /// [`Store::queues_put`] said yes (then `done` runs on the writer thread: keep it short, e.g. completing
    /// a channel); otherwise it runs [`Store::put`] here, blocking, and calls `done` itself.
    pub fn put_queued(
        &self,
        key: &[u8],
        data: Bytes,
        done: impl FnOnce(Result<bool, StoreError>) + Send + 'static,
    ) {
        self.put_queued_hinted(key, data, true, done)
    }

    /// [`Store::put_queued`], saying whether the put may be written alone in this thread when the writer is
    /// idle (fast durability; see `queue.rs`). A caller with more puts right behind passes false, so they
    /// batch on the writer instead of each paying its own write.
    pub fn put_queued_hinted(
        &self,
        key: &[u8],
        data: Bytes,
        may_write_alone: bool,
        done: impl FnOnce(Result<bool, StoreError>) + Send + 'static,
    ) {
        if !self.queues_put(key, data.len() as u64) {
            done(self.put(key, data));
            return;
        }
        self.inner.counters.puts.fetch_add(1, Ordering::Relaxed);
        let size = data.len() as u64;
        let hot = (size <= self.mem_admit_limit()).then(|| Bytes::copy_from_slice(&data));
        self.enqueue(
            crate::queue::Job {
                key: key.into(),
                body: data,
                hot,
                done: Box::new(done),
            },
            may_write_alone,
        );
    }

    /// Whether a pack is worth compacting now (cheap); then run [`Store::compact_packs_if_due`] off the
    /// async runtime.
    pub fn packs_need_compaction(&self) -> bool {
        self.inner
            .disk
            .as_ref()
            .is_some_and(|d| d.backend.compaction_candidate().is_some())
    }

    /// Compacts the packs worth it (blocking; one caller at a time, others return at once).
    pub fn compact_packs_if_due(&self) {
        self.maybe_compact_packs();
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
            let need = disk.backend.stored_len(key.len(), total_len);
            Sink::Backend(self.retry_on_full(need, || disk.backend.begin(id, key, total_len))?)
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

    /// Issues a blob id, recording a new reserved block in the index first when needed.
    pub(crate) fn alloc_id(&self, disk: &Disk) -> Result<u64, StoreError> {
        let ids = &disk.ids;
        // Saturating: only a crafted index gets ids near the top, and wrapping to 0 ("no file") would be worse.
        let id = ids
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(1))
            })
            .unwrap_or_else(|v| v);
        if id >= ids.ceiling.load(Ordering::Acquire) {
            let mut w = self.writer();
            if id >= ids.ceiling.load(Ordering::Acquire) {
                let up_to = id.saturating_add(ID_BLOCK);
                if let Some(log) = w.log.as_mut() {
                    log.append(&Record::Reserve { up_to })?;
                }
                ids.ceiling.store(up_to, Ordering::Release);
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
    pub(crate) fn fits(&self, key: &[u8], size: u64) -> bool {
        let c = &self.inner.cfg;
        match &self.inner.disk {
            Some(d) => c.disk_budget == 0 || d.backend.stored_len(key.len(), size) <= c.disk_budget,
            None => size <= c.memory_budget,
        }
    }

    /// Disk bytes an entry accounts for.
    pub(crate) fn stored_len(&self, key_len: usize, e: &Entry) -> u64 {
        match (&self.inner.disk, e.loc) {
            (Some(d), Some(loc)) => d.backend.stored_len_at(loc, key_len, e.size),
            _ => 0,
        }
    }

    /// Runs a disk write; on "disk full", evicts about `need` bytes of the coldest entries and tries once
    /// more, so a full disk degrades into a smaller cache rather than failed puts.
    pub(crate) fn retry_on_full<T>(
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
    pub(crate) fn commit(
        &self,
        key: &[u8],
        size: u64,
        loc: Option<Location>,
        checksum: u128,
        hot: Option<Bytes>,
    ) -> Result<(), StoreError> {
        self.commit_many(vec![NewEntry {
            key: key.into(),
            size,
            loc,
            checksum,
            hot,
        }])
    }

    /// Makes each key map to its new entry: one index append for all of them, then the map, accounting
    /// and eviction. On an error nothing is committed and the new blobs are removed.
    pub(crate) fn commit_many(&self, items: Vec<NewEntry>) -> Result<(), StoreError> {
        let mut unlink = Vec::new();
        {
            let mut w = self.writer();
            if let Some(log) = w.log.as_mut() {
                let recs: Vec<Record> = items
                    .iter()
                    .filter_map(|n| {
                        n.loc
                            .map(|l| index_log::put_record(&n.key, l, n.size, n.checksum))
                    })
                    .collect();
                if !recs.is_empty()
                    && let Err(e) = log.append_many(&recs)
                {
                    drop(w);
                    if let Some(d) = &self.inner.disk {
                        for n in &items {
                            if let Some(l) = n.loc {
                                d.backend
                                    .remove(l, d.backend.stored_len_at(l, n.key.len(), n.size));
                            }
                        }
                    }
                    return Err(e);
                }
                w.live_log_bytes += items
                    .iter()
                    .filter_map(|n| n.loc.map(|l| index_log::put_record_len(n.key.len(), l)))
                    .sum::<u64>();
            }
            for n in items {
                self.insert_locked(&mut w, n, &mut unlink);
            }
            self.evict_disk_locked(&mut w);
            if self.inner.disk.is_none() {
                self.evict_memory_only_locked(&mut w);
            }
            self.maybe_compact(&mut w);
        }
        // An overwritten blob needs no record: the new Put supersedes it.
        if let Some(d) = &self.inner.disk {
            for (loc, stored) in unlink {
                d.backend.remove(loc, stored);
            }
            self.trim_memory();
        }
        Ok(())
    }

    /// One entry of [`Store::commit_many`] into the map, with its accounting; an entry it replaces goes to
    /// `unlink`.
    fn insert_locked(&self, w: &mut Writer, n: NewEntry, unlink: &mut Vec<(Location, u64)>) {
        let hot_len = n.hot.as_ref().map(|b| b.len() as u64);
        let key_len = n.key.len();
        let entry = Entry::new(n.key, n.size, n.loc, n.checksum, self.tick(), n.hot);
        let stored = self.stored_len(key_len, &entry);
        let old = self.inner.index.insert(entry);
        self.inner.disk_used.fetch_add(stored, Ordering::Relaxed);
        if let Some(len) = hot_len {
            self.inner.mem_used.fetch_add(len, Ordering::Relaxed);
            self.inner.entries_mem.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.entries.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = old {
            if let Some(l) = old.loc {
                w.live_log_bytes = w
                    .live_log_bytes
                    .saturating_sub(index_log::put_record_len(key_len, l));
            }
            unlink.extend(self.forget(key_len, &old));
        }
    }

    /// Accounting for an entry that left the index. Returns its location and stored length, if it has a
    /// blob to delete.
    pub(crate) fn forget(&self, key_len: usize, e: &Arc<Entry>) -> Option<(Location, u64)> {
        let had = e.mark_removed();
        if let Some(b) = had {
            self.inner
                .mem_used
                .fetch_sub(b.len() as u64, Ordering::Relaxed);
            self.inner.entries_mem.fetch_sub(1, Ordering::Relaxed);
        }
        self.inner.entries.fetch_sub(1, Ordering::Relaxed);
        let stored = self.stored_len(key_len, e);
        self.inner.disk_used.fetch_sub(stored, Ordering::Relaxed);
        e.loc.map(|l| (l, stored))
    }

    /// Removes `key` if it still maps to `entry`: blob first, then the Del record, so a crash in between
    /// can only leave an index entry whose blob is missing (a miss), never resurrect a removed blob.
    pub(crate) fn remove_locked(
        &self,
        w: &mut Writer,
        key: &[u8],
        entry: Option<&Arc<Entry>>,
    ) -> bool {
        let Some(old) = self.inner.index.remove_if(key, entry) else {
            return false;
        };
        if let Some((loc, stored)) = self.forget(key.len(), &old) {
            w.live_log_bytes = w
                .live_log_bytes
                .saturating_sub(index_log::put_record_len(key.len(), loc));
            // A blob file goes first (an unindexed file would be adopted again by the sweep); a packed
            // record's Del goes first (its bytes stay, and the Del's mark keeps recovery from adopting
            // them; removing first would leave a zeroed record the index still names).
            let packed = matches!(loc, Location::Pack { .. });
            if let (Some(d), false) = (&self.inner.disk, packed) {
                d.backend.remove(loc, stored);
            }
            if let Some(log) = w.log.as_mut()
                && let Err(e) = log.append(&index_log::del_record(key, loc, stored))
            {
                warn!(store = %self.inner.cfg.name, "cannot record a removal: {e}");
            }
            if let (Some(d), true) = (&self.inner.disk, packed) {
                d.backend.remove(loc, stored);
            }
        }
        true
    }

    pub(crate) fn remove_if_same(&self, key: &[u8], entry: &Arc<Entry>) -> bool {
        let mut w = self.writer();
        self.remove_locked(&mut w, key, Some(entry))
    }

    pub(crate) fn drop_corrupt(&self, key: &[u8], entry: &Arc<Entry>, why: &str) {
        self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        if self.remove_if_same(key, entry) {
            self.inner
                .counters
                .corrupt_dropped
                .fetch_add(1, Ordering::Relaxed);
            warn!(store = %self.inner.cfg.name, location = ?entry.loc, "dropped a corrupt blob: {why}");
        }
    }

    /// Removes one key (blocking). Returns whether it was present.
    pub fn remove(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.remove_many([key])? == 1)
    }

    /// Removes several keys under one lock; returns how many were present. With fsync durability the
    /// removal is durable when this returns: a packed blob's bytes stay in its pack until compaction, so
    /// only the log's Del record keeps it from coming back after a power loss.
    pub fn remove_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, StoreError> {
        let n = {
            let mut w = self.writer();
            let n = keys
                .into_iter()
                .filter(|k| self.remove_locked(&mut w, k.as_ref(), None))
                .count() as u64;
            if n > 0
                && self.inner.cfg.durability == crate::Durability::Fsync
                && let Some(log) = w.log.as_mut()
            {
                log.sync()?;
            }
            n
        };
        self.maybe_compact_packs();
        Ok(n)
    }

    /// Removes everything, in memory and on disk (blocking). Returns how many entries there were.
    pub fn clear(&self) -> Result<u64, StoreError> {
        let mut w = self.writer();
        let drained = self.inner.index.drain();
        let n = drained.len() as u64;
        for (k, e) in &drained {
            if let (Some((loc, stored)), Some(d)) = (self.forget(k.len(), e), &self.inner.disk) {
                d.backend.remove(loc, stored);
            }
        }
        // Packs go before the log forgets their records: recovery would find them again otherwise.
        if let Some(d) = &self.inner.disk {
            d.backend.clear_packs();
        }
        w.disk_victims.clear();
        self.inner
            .mem_victims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        w.live_log_bytes = 0;
        let reserve = self.inner.disk.as_ref().map(|d| d.ids.reserve_record());
        if let Some(log) = w.log.as_mut() {
            log.rewrite(reserve.into_iter())?;
        }
        Ok(n)
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
        // Marks first: the rewritten log no longer holds the Del records that accounted for dead records.
        let marks = self.inner.disk.as_ref().map_or_else(Vec::new, |d| {
            d.backend
                .pack_ends()
                .into_iter()
                .map(|(pack, end)| Record::PackEnd { pack, end })
                .collect()
        });
        let mut live: Vec<(u64, Record)> = Vec::new();
        for s in self.inner.index.each_shard() {
            for (k, e) in s.iter() {
                if let Some(loc) = e.loc {
                    let rec = index_log::put_record(k, loc, e.size, e.checksum());
                    live.push((e.tick.load(Ordering::Relaxed), rec));
                }
            }
        }
        live.sort_unstable_by_key(|(t, _)| *t);
        let reserve = self.inner.disk.as_ref().map(|d| d.ids.reserve_record());
        let live_bytes = live.iter().map(|(_, r)| r.encoded_len() as u64).sum();
        log.rewrite(
            reserve
                .into_iter()
                .chain(marks)
                .chain(live.into_iter().map(|(_, r)| r)),
        )?;
        w.live_log_bytes = live_bytes;
        Ok(())
    }

    /// The file holding the blob of a key, if it has one (tests and tools).
    pub fn blob_path(&self, key: &[u8]) -> Option<PathBuf> {
        let e = self.find(key)?;
        self.inner.disk.as_ref()?.backend.path(e.loc?)
    }
}
