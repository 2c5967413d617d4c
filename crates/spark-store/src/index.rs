//! The key index: a sharded map from key to [`Entry`], so gets of different keys never share a lock.

use std::hash::BuildHasher;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use hashbrown::{HashTable, hash_table};

use crate::KeyHasher;
use crate::backend::Location;
use crate::format::Record;

const SHARDS: usize = 64;

/// One cached blob, with its key; immutable but for its tick and hot copy.
///
/// Kept small, since a store may index millions (104 bytes with the `Arc` counts, a 112-byte allocation):
/// the checksum is two `u64`s rather than a `u128` (which would align the whole entry to 16 bytes), and
/// the hot copy, which most entries of a large store lack, is boxed (8 bytes instead of a 32-byte `Bytes`).
pub(crate) struct Entry {
    pub key: Box<[u8]>,
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
        key: Box<[u8]>,
        size: u64,
        loc: Option<Location>,
        checksum: u128,
        tick: u64,
        hot: Option<Bytes>,
    ) -> Arc<Entry> {
        Arc::new(Entry {
            key,
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

/// Hashes a key once, for both the choice of shard and the shard's table: foldhash by default (no
/// allocation, no copy of the key: replaying a million-entry log hashes every key once), or the configured
/// [`KeyHasher`] (tests force collisions with it).
#[derive(Clone, Copy)]
struct KeyHash(Option<KeyHasher>);

impl KeyHash {
    fn of(self, key: &[u8]) -> u64 {
        match self.0 {
            // A fixed seed: every key comes from the daemon's own user, so there is no one to flood it.
            None => foldhash::fast::FixedState::with_seed(0x5eed).hash_one(key),
            Some(f) => f(key),
        }
    }
}

/// The shard of a hash: bits the table does not use (it takes the low bits for the bucket and the top
/// seven for its tags), so keys of one shard still spread over its buckets.
fn shard_of(h: u64) -> usize {
    ((h >> 40) as usize) % SHARDS
}

/// One shard: a table of entries that carry their own keys (8 bytes per bucket, where a map from a boxed
/// key to an `Arc` took 24).
#[derive(Default)]
pub(crate) struct Shard {
    table: HashTable<Arc<Entry>>,
}

impl Shard {
    /// Every key and entry of the shard.
    pub fn iter(&self) -> impl Iterator<Item = (&Box<[u8]>, &Arc<Entry>)> {
        self.table.iter().map(|e| (&e.key, e))
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.table.iter()
    }

    fn get(&self, h: u64, key: &[u8]) -> Option<&Arc<Entry>> {
        self.table.find(h, |e| *e.key == *key)
    }

    fn insert(&mut self, h: u64, entry: Arc<Entry>, hash: KeyHash) -> Option<Arc<Entry>> {
        match self
            .table
            .entry(h, |e| *e.key == *entry.key, |e| hash.of(&e.key))
        {
            hash_table::Entry::Occupied(mut o) => Some(std::mem::replace(o.get_mut(), entry)),
            hash_table::Entry::Vacant(v) => {
                v.insert(entry);
                None
            }
        }
    }

    fn remove(&mut self, h: u64, key: &[u8]) -> Option<Arc<Entry>> {
        self.table
            .find_entry(h, |e| *e.key == *key)
            .ok()
            .map(|o| o.remove().0)
    }
}

pub(crate) struct Index {
    shards: Box<[RwLock<Shard>]>,
    hash: KeyHash,
}

impl Index {
    pub fn new(hasher: Option<KeyHasher>) -> Self {
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(Shard::default()))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Index {
            shards,
            hash: KeyHash(hasher),
        }
    }

    /// Makes room for about `entries` keys in all, so that replaying a large log does not rehash as it goes.
    pub fn reserve(&self, entries: usize) {
        let hash = self.hash;
        for s in self.shards.iter() {
            s.write()
                .unwrap_or_else(|e| e.into_inner())
                .table
                .reserve(entries / SHARDS, |e| hash.of(&e.key));
        }
    }

    fn write(&self, h: u64) -> RwLockWriteGuard<'_, Shard> {
        self.shards[shard_of(h)]
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Read guards of every shard in turn, for scans.
    pub fn each_shard(&self) -> impl Iterator<Item = RwLockReadGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn find(&self, key: &[u8]) -> Option<Arc<Entry>> {
        let h = self.hash.of(key);
        self.shards[shard_of(h)]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(h, key)
            .cloned()
    }

    /// Makes the entry's key map to it; returns the entry it replaces.
    pub fn insert(&self, entry: Arc<Entry>) -> Option<Arc<Entry>> {
        let h = self.hash.of(&entry.key);
        self.write(h).insert(h, entry, self.hash)
    }

    /// Removes `key` if it maps to `want` (any entry when `want` is `None`); returns what was removed.
    pub fn remove_if(&self, key: &[u8], want: Option<&Arc<Entry>>) -> Option<Arc<Entry>> {
        let h = self.hash.of(key);
        let mut shard = self.write(h);
        match (shard.get(h, key), want) {
            (Some(cur), Some(want)) if !Arc::ptr_eq(cur, want) => None,
            (None, _) => None,
            _ => shard.remove(h, key),
        }
    }

    /// Empties the index, returning what it held.
    pub fn drain(&self) -> Vec<(Box<[u8]>, Arc<Entry>)> {
        let mut drained = Vec::new();
        for s in self.shards.iter() {
            let mut s = s.write().unwrap_or_else(|e| e.into_inner());
            drained.extend(s.table.drain().map(|e| (e.key.clone(), e)));
        }
        drained
    }

    /// Removes `key` if it maps to an entry at `gone` (a replayed Del record).
    fn remove_at(&self, key: &[u8], gone: Location) {
        let h = self.hash.of(key);
        let mut s = self.write(h);
        if s.get(h, key).is_some_and(|e| e.loc == Some(gone)) {
            s.remove(h, key);
        }
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
                let key = key.into_boxed_slice();
                self.insert(Entry::new(
                    key,
                    body_len,
                    Some(loc),
                    checksum,
                    file_id,
                    None,
                ));
            }
            Record::Del { key, file_id } => self.remove_at(&key, Location::File { id: file_id }),
            Record::PutPack {
                key,
                pack,
                offset,
                body_len,
                checksum,
            } => {
                // Pack ids are blob ids: a pack's records are about as recent as its creation.
                let loc = Location::Pack { pack, offset };
                let key = key.into_boxed_slice();
                self.insert(Entry::new(key, body_len, Some(loc), checksum, pack, None));
            }
            Record::DelPack {
                key, pack, offset, ..
            } => self.remove_at(&key, Location::Pack { pack, offset }),
            Record::Reserve { .. } | Record::PackEnd { .. } => {}
        }
    }

    /// Makes `key` map to `new` if it maps to `old`; returns whether it did.
    pub fn replace_if(&self, old: &Arc<Entry>, new: Arc<Entry>) -> bool {
        let h = self.hash.of(&old.key);
        let mut shard = self.write(h);
        match shard.table.find_mut(h, |e| *e.key == *old.key) {
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
    /// 112-byte allocation, key pointer included (it was a 128-byte one without the key, with a `u128`
    /// checksum and an unboxed hot copy).
    #[test]
    fn an_entry_fits_a_112_byte_allocation() {
        assert!(std::mem::size_of::<Entry>() + 16 <= 104);
        assert_eq!(std::mem::align_of::<Entry>(), 8);
        let e = Entry::new(Box::new([1]), 1, None, u128::MAX - 5, 0, None);
        assert_eq!(e.checksum(), u128::MAX - 5);
    }
}
