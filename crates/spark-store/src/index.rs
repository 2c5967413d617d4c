//! The key index: a sharded map from key to [`Entry`], so gets of different keys never share a lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use crate::KeyHasher;
use crate::backend::Location;
use crate::format::Record;

const SHARDS: usize = 64;

/// One cached blob. The key lives in the shard map; an entry is immutable but for its tick and hot copy.
///
/// Kept small, since a store may index millions (88 bytes with the `Arc` counts, a 96-byte allocation):
/// the checksum is two `u64`s rather than a `u128` (which would align the whole entry to 16 bytes), and
/// the hot copy, which most entries of a large store lack, is boxed (8 bytes instead of a 32-byte `Bytes`).
pub(crate) struct Entry {
    pub size: u64,
    /// Where the blob's bytes are on disk; `None` in a memory-only store.
    pub loc: Option<Location>,
    /// The backend's checksum of the stored blob (for blob files: XXH3-128 over header, key and body);
    /// 0 for memory-only entries. See [`Entry::checksum`].
    checksum: [u64; 2],
    /// Last access, from the store's clock.
    pub tick: AtomicU64,
    mem: Mutex<MemState>,
}

pub(crate) struct MemState {
    pub bytes: Option<Box<Bytes>>,
    /// Set once the entry left the index, so a late reader does not re-add a hot copy.
    pub removed: bool,
}

impl Entry {
    pub fn new(
        size: u64,
        loc: Option<Location>,
        checksum: u128,
        tick: u64,
        hot: Option<Bytes>,
    ) -> Arc<Entry> {
        Arc::new(Entry {
            size,
            loc,
            checksum: [checksum as u64, (checksum >> 64) as u64],
            tick: AtomicU64::new(tick),
            mem: Mutex::new(MemState {
                bytes: hot.map(Box::new),
                removed: false,
            }),
        })
    }

    pub fn checksum(&self) -> u128 {
        u128::from(self.checksum[0]) | (u128::from(self.checksum[1]) << 64)
    }

    pub fn mem(&self) -> MutexGuard<'_, MemState> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hashes keys for the shard tables: foldhash by default (no allocation, no copy of the key: replaying a
/// million-entry log hashes every key at least twice as the tables grow), or the configured [`KeyHasher`]
/// over the whole key (tests force collisions with it).
#[derive(Clone, Copy)]
pub(crate) struct SeamHasher(Option<KeyHasher>);
pub(crate) enum SeamState {
    Fast(foldhash::fast::FoldHasher),
    Custom(KeyHasher, Vec<u8>),
}
impl Hasher for SeamState {
    fn finish(&self) -> u64 {
        match self {
            SeamState::Fast(h) => h.finish(),
            SeamState::Custom(f, bytes) => f(bytes),
        }
    }
    fn write(&mut self, bytes: &[u8]) {
        match self {
            SeamState::Fast(h) => h.write(bytes),
            SeamState::Custom(_, all) => all.extend_from_slice(bytes),
        }
    }
}
impl BuildHasher for SeamHasher {
    type Hasher = SeamState;
    fn build_hasher(&self) -> SeamState {
        match self.0 {
            // A fixed seed: every key comes from the daemon's own user, so there is no one to flood it.
            None => SeamState::Fast(foldhash::fast::FixedState::with_seed(0x5eed).build_hasher()),
            Some(f) => SeamState::Custom(f, Vec::new()),
        }
    }
}

pub(crate) type Shard = HashMap<Box<[u8]>, Arc<Entry>, SeamHasher>;

pub(crate) struct Index {
    shards: Box<[RwLock<Shard>]>,
    hasher: Option<KeyHasher>,
}

impl Index {
    pub fn new(hasher: Option<KeyHasher>) -> Self {
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(HashMap::with_hasher(SeamHasher(hasher))))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Index { shards, hasher }
    }

    /// Makes room for about `entries` keys in all, so that replaying a large log does not rehash as it goes.
    pub fn reserve(&self, entries: usize) {
        for s in self.shards.iter() {
            s.write()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(entries / SHARDS);
        }
    }

    fn shard(&self, key: &[u8]) -> &RwLock<Shard> {
        let h = self.hasher.map_or_else(|| xxh3_64(key), |f| f(key));
        &self.shards[(h as usize) % SHARDS]
    }

    fn write(&self, key: &[u8]) -> RwLockWriteGuard<'_, Shard> {
        self.shard(key).write().unwrap_or_else(|e| e.into_inner())
    }

    /// Read guards of every shard in turn, for scans.
    pub fn each_shard(&self) -> impl Iterator<Item = RwLockReadGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn find(&self, key: &[u8]) -> Option<Arc<Entry>> {
        self.shard(key)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub fn insert(&self, key: &[u8], entry: Arc<Entry>) -> Option<Arc<Entry>> {
        self.write(key).insert(key.into(), entry)
    }

    /// Removes `key` if it maps to `want` (any entry when `want` is `None`); returns what was removed.
    pub fn remove_if(&self, key: &[u8], want: Option<&Arc<Entry>>) -> Option<Arc<Entry>> {
        let mut shard = self.write(key);
        match (shard.get(key), want) {
            (Some(cur), Some(want)) if !Arc::ptr_eq(cur, want) => None,
            (None, _) => None,
            _ => shard.remove(key),
        }
    }

    /// Empties the index, returning what it held.
    pub fn drain(&self) -> Vec<(Box<[u8]>, Arc<Entry>)> {
        let mut drained = Vec::new();
        for s in self.shards.iter() {
            drained.extend(s.write().unwrap_or_else(|e| e.into_inner()).drain());
        }
        drained
    }

    /// Applies one replayed index record to an index being opened.
    pub fn apply(&self, rec: Record) {
        match rec {
            Record::Put {
                key,
                file_id,
                body_len,
                checksum,
            } => {
                // File ids grow with time, so as ticks they order entries by recency of their put.
                let loc = Location::File { id: file_id };
                let e = Entry::new(body_len, Some(loc), checksum, file_id, None);
                self.write(&key).insert(key.into_boxed_slice(), e);
            }
            Record::Del { key, file_id } => {
                let mut s = self.write(&key);
                let gone = Some(Location::File { id: file_id });
                if s.get(key.as_slice()).is_some_and(|e| e.loc == gone) {
                    s.remove(key.as_slice());
                }
            }
            Record::PutPack {
                key,
                pack,
                offset,
                body_len,
                checksum,
            } => {
                // Pack ids are blob ids: a pack's records are about as recent as its creation.
                let loc = Location::Pack { pack, offset };
                let e = Entry::new(body_len, Some(loc), checksum, pack, None);
                self.write(&key).insert(key.into_boxed_slice(), e);
            }
            Record::DelPack {
                key, pack, offset, ..
            } => {
                let mut s = self.write(&key);
                let gone = Some(Location::Pack { pack, offset });
                if s.get(key.as_slice()).is_some_and(|e| e.loc == gone) {
                    s.remove(key.as_slice());
                }
            }
            Record::Reserve { .. } | Record::PackEnd { .. } => {}
        }
    }

    /// Makes `key` map to `new` if it maps to `old`; returns whether it did.
    pub fn replace_if(&self, key: &[u8], old: &Arc<Entry>, new: Arc<Entry>) -> bool {
        let mut shard = self.write(key);
        match shard.get_mut(key) {
            Some(cur) if Arc::ptr_eq(cur, old) => {
                *cur = new;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry is most of the index's memory per key: with the `Arc` counts it must stay within a
    /// 96-byte allocation (it was a 128-byte one with a `u128` checksum and an unboxed hot copy).
    #[test]
    fn an_entry_fits_a_96_byte_allocation() {
        assert!(std::mem::size_of::<Entry>() + 16 <= 88);
        assert_eq!(std::mem::align_of::<Entry>(), 8);
        let e = Entry::new(1, None, u128::MAX - 5, 0, None);
        assert_eq!(e.checksum(), u128::MAX - 5);
    }
}
