//! Loading a replayed index log into the [`Index`], fast enough that a million entries serve within half a
//! second of starting.
//!
//! Two passes. Replay hands each record over in log order; [`Loader::add`] makes its entry (or removal
//! marker) and files it under its key's shard, in log order. [`Loader::finish`] then loads shard by shard,
//! over a few threads: a key always falls in one shard, so its records still apply in log order, and one
//! shard's table fits the core's cache while it is filled. Inserting into all shards as records came was
//! two cache misses per record, most of a large store's start-up.
//!
//! The totals the store keeps (entries, bytes on disk, live log bytes, live bytes per pack) are counted on
//! the way, from each put, less what the load replaced or removed: no pass over every entry afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::backend::Location;
use crate::format::RecordRef;
use crate::index::{Entry, Index};
use crate::index_log;

/// More threads than this gain little: the work is memory-bound, and the daemon opens other stores too.
const MAX_THREADS: usize = 4;
/// Below this many records one thread is quicker than starting more.
const PARALLEL_MIN: usize = 64 * 1024;

/// What the store counts over its index, as [`Loader::finish`] leaves it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Totals {
    pub entries: u64,
    /// Bytes the entries occupy on disk ([`crate::backend::BlobBackend::stored_len_at`]).
    pub disk_used: u64,
    /// Bytes of the log records that name the entries (index compaction compares the log's size to it).
    pub live_log_bytes: u64,
    /// Per pack, bytes of its records that entries name.
    pub pack_live: HashMap<u64, u64>,
}

impl Totals {
    /// Counts `e` in (`sign` 1) or out (`sign` -1).
    fn count(&mut self, e: &Entry, stored: u64, sign: i64) {
        let Some(loc) = e.loc else { return };
        let add = |v: &mut u64, n: u64| *v = v.wrapping_add_signed(sign.wrapping_mul(n as i64));
        add(&mut self.entries, 1);
        add(&mut self.disk_used, stored);
        add(&mut self.live_log_bytes, index_log::put_record_len(e.key.len(), loc));
        if let Location::Pack { pack, .. } = loc {
            add(self.pack_live.entry(pack).or_default(), stored);
        }
    }
}

/// Builds an index from replayed records; see the module documentation.
pub(crate) struct Loader<'a> {
    index: &'a Index,
    /// Per shard, each replayed entry or removal marker with its key's hash, in log order.
    shards: Vec<Vec<(u64, Arc<Entry>)>>,
    records: usize,
    /// Bytes the blob at a location occupies, for the disk totals.
    stored_len: &'a (dyn Fn(Location, usize, u64) -> u64 + Sync),
    totals: Totals,
}

impl<'a> Loader<'a> {
    pub fn new(
        index: &'a Index,
        stored_len: &'a (dyn Fn(Location, usize, u64) -> u64 + Sync),
    ) -> Self {
        Loader {
            index,
            shards: (0..Index::SHARDS).map(|_| Vec::new()).collect(),
            records: 0,
            stored_len,
            totals: Totals::default(),
        }
    }

    /// Takes one replayed record, in log order.
    pub fn add(&mut self, rec: RecordRef<'_>) {
        let (key, entry) = match rec {
            // File ids grow with time, so as ticks they order entries by recency of their put.
            RecordRef::Put {
                key,
                file_id,
                body_len,
                checksum,
            } => {
                let loc = Location::File { id: file_id };
                (key, Entry::new(key, body_len, Some(loc), checksum, file_id, None))
            }
            // Pack ids are blob ids: a pack's records are about as recent as its creation.
            RecordRef::PutPack {
                key,
                pack,
                offset,
                body_len,
                checksum,
            } => {
                let loc = Location::Pack { pack, offset };
                (key, Entry::new(key, body_len, Some(loc), checksum, pack, None))
            }
            RecordRef::Del { key, file_id } => {
                (key, Entry::removal(key, Location::File { id: file_id }))
            }
            RecordRef::DelPack {
                key, pack, offset, ..
            } => (key, Entry::removal(key, Location::Pack { pack, offset })),
            RecordRef::Reserve { .. } | RecordRef::PackEnd { .. } => return,
        };
        if !entry.removed() {
            let stored = self.stored(&entry);
            self.totals.count(&entry, stored, 1);
        }
        let (h, shard) = self.index.locate(key);
        self.shards[shard].push((h, entry));
        self.records += 1;
    }

    fn stored(&self, e: &Entry) -> u64 {
        e.loc
            .map_or(0, |loc| (self.stored_len)(loc, e.key.len(), e.size))
    }

    /// Loads every shard (on up to `threads` threads) and returns the totals over what the index holds.
    pub fn finish(self, threads: usize) -> Totals {
        let Loader {
            index,
            shards,
            records,
            stored_len,
            mut totals,
        } = self;
        let threads = if records < PARALLEL_MIN {
            1
        } else {
            threads.clamp(1, MAX_THREADS)
        };
        let gone = if threads == 1 {
            let mut gone = Vec::new();
            for (i, ops) in shards.into_iter().enumerate() {
                index.load_shard(i, ops, &mut gone);
            }
            gone
        } else {
            load_parallel(index, shards, threads)
        };
        for e in &gone {
            let stored = e.loc.map_or(0, |loc| stored_len(loc, e.key.len(), e.size));
            totals.count(e, stored, -1);
        }
        totals.pack_live.retain(|_, v| *v > 0);
        totals
    }
}

/// Threads take shards off one queue (a thread slowed by a busy core takes fewer); this thread is one
/// of them, so a thread that cannot be started only makes the load slower. Returns the entries the load
/// replaced or removed.
fn load_parallel(
    index: &Index,
    shards: Vec<Vec<(u64, Arc<Entry>)>>,
    threads: usize,
) -> Vec<Arc<Entry>> {
    let queue = Mutex::new(shards.into_iter().enumerate().collect::<Vec<_>>());
    let work = || {
        let mut gone = Vec::new();
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((i, ops)) = next else { return gone };
            index.load_shard(i, ops, &mut gone);
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("spark-index-load".into())
                    .spawn_scoped(s, &work)
                    .ok()
            })
            .collect();
        let mut gone = work();
        for h in helpers {
            gone.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        gone
    })
}

/// Threads for loading an index: the machine's cores, up to [`MAX_THREADS`].
pub(crate) fn load_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
}
