//! Loading a replayed index log into the [`Index`], fast enough that a million entries serve within half a
//! second of starting.
//!
//! Two passes. Replay hands each record over in log order; [`Loader::add`] makes its entry (or a removal)
//! and files it under its key's shard, in log order. [`Loader::finish`] then loads shard by shard,
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
use crate::index::{Entry, Index, Removal, Replayed};
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
    /// Per pack, bytes of its records that entries name (foldhash: it is updated once per replayed put,
    /// where std's SipHash showed in the profile).
    pub pack_live: HashMap<u64, u64, foldhash::fast::FixedState>,
}

impl Totals {
    /// Counts `e` in (`sign` 1) or out (`sign` -1).
    fn count(&mut self, e: &Entry, stored: u64, sign: i64) {
        let Some(loc) = e.loc else { return };
        let add = |v: &mut u64, n: u64| *v = v.wrapping_add_signed(sign.wrapping_mul(n as i64));
        add(&mut self.entries, 1);
        add(&mut self.disk_used, stored);
        add(
            &mut self.live_log_bytes,
            index_log::put_record_len(e.key.len(), loc),
        );
        if let Location::Pack { pack, .. } = loc {
            add(self.pack_live.entry(pack).or_default(), stored);
        }
    }
}

/// Builds an index from replayed records; see the module documentation.
pub(crate) struct Loader<'a> {
    index: &'a Index,
    /// Per shard, each replayed put or removal with its key's hash, in log order.
    shards: Vec<Vec<(u64, Replayed)>>,
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
        let (key, op) = match rec {
            // File ids grow with time, so as ticks they order entries by recency of their put.
            RecordRef::Put {
                key,
                file_id,
                body_len,
                checksum,
            } => {
                let loc = Location::File { id: file_id };
                let e = Entry::new(key, body_len, Some(loc), checksum, file_id, None);
                (key, self.put(e))
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
                let e = Entry::new(key, body_len, Some(loc), checksum, pack, None);
                (key, self.put(e))
            }
            RecordRef::Del { key, file_id } => (key, removal(key, Location::File { id: file_id })),
            RecordRef::DelPack {
                key, pack, offset, ..
            } => (key, removal(key, Location::Pack { pack, offset })),
            RecordRef::Reserve { .. } | RecordRef::PackEnd { .. } => return,
        };
        let (h, shard) = self.index.locate(key);
        self.shards[shard].push((h, op));
        self.records += 1;
    }

    /// Counts a replayed put in (what it replaces is counted out when the load finds it).
    fn put(&mut self, e: Arc<Entry>) -> Replayed {
        let stored = e
            .loc
            .map_or(0, |loc| (self.stored_len)(loc, e.key.len(), e.size));
        self.totals.count(&e, stored, 1);
        Replayed::Put(e)
    }

    /// Loads every shard (on up to `threads` threads) and returns the totals over what the index holds.
    pub fn finish(self, threads: usize) -> Totals {
        let threads = if self.records < PARALLEL_MIN {
            1
        } else {
            threads.clamp(1, MAX_THREADS)
        };
        self.load(threads)
    }

    fn load(self, threads: usize) -> Totals {
        let Loader {
            index,
            shards,
            stored_len,
            mut totals,
            ..
        } = self;
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
    shards: Vec<Vec<(u64, Replayed)>>,
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
                    .spawn_scoped(s, work)
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

fn removal(key: &[u8], loc: Location) -> Replayed {
    Replayed::Remove(Box::new(Removal {
        key: key.into(),
        loc,
    }))
}

/// Threads for loading an index: the machine's cores, up to [`MAX_THREADS`].
pub(crate) fn load_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Record, pack::record_len};

    /// A log with puts, overwrites and removals of the same keys, in blob files and packs, some removals
    /// naming a location the key no longer has (they must not apply).
    fn log(keys: u64, records: usize) -> Vec<Record> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut last: HashMap<u64, Location> = HashMap::new();
        let mut id = 1u64;
        (0..records)
            .map(|_| {
                let k = next() % keys;
                // Long and short keys: inline and boxed ones.
                let key = if k.is_multiple_of(5) {
                    vec![k as u8; 40 + (k % 7) as usize]
                } else {
                    k.to_le_bytes().to_vec()
                };
                id += 1;
                let old = last.get(&k).copied();
                match (next() % 8, old) {
                    (0, Some(Location::File { id: file_id })) => Record::Del { key, file_id },
                    (1, Some(Location::Pack { pack, offset })) => Record::DelPack {
                        key: key.clone(),
                        pack,
                        offset,
                        len: record_len(key.len(), 0) as u32,
                    },
                    // A removal of a location the key had long ago, or never.
                    (2, _) => Record::DelPack {
                        key: key.clone(),
                        pack: 1,
                        offset: 4096,
                        len: record_len(key.len(), 0) as u32,
                    },
                    (3 | 4, _) => {
                        last.insert(k, Location::File { id });
                        Record::Put {
                            key,
                            file_id: id,
                            body_len: next() % 100_000,
                            checksum: u128::from(next()),
                        }
                    }
                    _ => {
                        let (pack, offset) = (1 + id % 3, 4096 + (id as u32) * 64);
                        last.insert(k, Location::Pack { pack, offset });
                        Record::PutPack {
                            key,
                            pack,
                            offset,
                            body_len: next() % 1000,
                            checksum: u128::from(next()) << 3,
                        }
                    }
                }
            })
            .collect()
    }

    fn stored_len(loc: Location, key_len: usize, size: u64) -> u64 {
        match loc {
            Location::Pack { .. } => record_len(key_len, size),
            Location::File { .. } => crate::format::file_len(key_len, size),
        }
    }

    type Contents = HashMap<Vec<u8>, (Option<Location>, u64, u128, u64)>;

    /// Replays `log` through a loader on `threads` threads (no minimum size for going parallel).
    fn load(
        log: &[Record],
        hasher: Option<crate::KeyHasher>,
        threads: usize,
    ) -> (Contents, Totals) {
        let index = Index::new(hasher);
        let mut bytes = Vec::new();
        for r in log {
            r.encode(&mut bytes);
        }
        let mut l = Loader::new(&index, &stored_len);
        let mut off = 0;
        while off < bytes.len() {
            let (rec, n) = RecordRef::decode(&bytes[off..]).unwrap();
            l.add(rec.unwrap());
            off += n;
        }
        let totals = l.load(threads);
        let contents = index
            .each_shard()
            .flat_map(|s| {
                s.iter()
                    .map(|(k, e)| {
                        (
                            k.to_vec(),
                            (
                                e.loc,
                                e.size,
                                e.checksum(),
                                e.tick.load(std::sync::atomic::Ordering::Relaxed),
                            ),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        (contents, totals)
    }

    /// What replaying `log` one record at a time means: the model the shard-wise load must equal.
    fn model(log: &[Record]) -> (Contents, Totals) {
        let mut m: Contents = HashMap::new();
        for r in log {
            match r.clone() {
                Record::Put {
                    key,
                    file_id,
                    body_len,
                    checksum,
                } => {
                    m.insert(
                        key,
                        (
                            Some(Location::File { id: file_id }),
                            body_len,
                            checksum,
                            file_id,
                        ),
                    );
                }
                Record::PutPack {
                    key,
                    pack,
                    offset,
                    body_len,
                    checksum,
                } => {
                    m.insert(
                        key,
                        (
                            Some(Location::Pack { pack, offset }),
                            body_len,
                            checksum,
                            pack,
                        ),
                    );
                }
                Record::Del { key, file_id } => {
                    if m.get(&key)
                        .is_some_and(|v| v.0 == Some(Location::File { id: file_id }))
                    {
                        m.remove(&key);
                    }
                }
                Record::DelPack {
                    key, pack, offset, ..
                } => {
                    if m.get(&key)
                        .is_some_and(|v| v.0 == Some(Location::Pack { pack, offset }))
                    {
                        m.remove(&key);
                    }
                }
                Record::Reserve { .. } | Record::PackEnd { .. } => {}
            }
        }
        let mut t = Totals::default();
        for (k, (loc, size, _, _)) in &m {
            let loc = loc.unwrap();
            t.entries += 1;
            t.disk_used += stored_len(loc, k.len(), *size);
            t.live_log_bytes += index_log::put_record_len(k.len(), loc);
            if let Location::Pack { pack, .. } = loc {
                *t.pack_live.entry(pack).or_default() += stored_len(loc, k.len(), *size);
            }
        }
        (m, t)
    }

    #[test]
    fn a_shard_wise_load_on_any_number_of_threads_equals_replay_in_log_order() {
        let log = log(3000, 20_000);
        let kinds = |f: fn(&Record) -> bool| log.iter().filter(|r| f(r)).count();
        assert!(kinds(|r| matches!(r, Record::Del { .. })) > 100);
        assert!(kinds(|r| matches!(r, Record::DelPack { .. })) > 1000);
        let (want, want_totals) = model(&log);
        assert!(
            want.len() > 1000 && want.len() < 3000,
            "some keys removed, most kept"
        );
        for threads in [1, 2, 3, 4] {
            let (got, totals) = load(&log, None, threads);
            assert_eq!(got, want, "{threads} thread(s)");
            assert_eq!(totals, want_totals, "{threads} thread(s)");
        }
    }

    /// Every key in one shard, every hash equal: order within a shard and key comparison carry it all.
    #[test]
    fn a_load_where_every_key_collides_equals_replay_in_log_order() {
        let log = log(200, 3000);
        let (want, want_totals) = model(&log);
        for threads in [1, 2] {
            let (got, totals) = load(&log, Some(|_| 7), threads);
            assert_eq!(got, want);
            assert_eq!(totals, want_totals);
        }
    }
}
