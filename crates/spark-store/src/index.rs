//! The key index: a sharded map from key to [`Entry`], so gets of different keys never share a lock.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use hashbrown::{HashTable, hash_table};

use crate::KeyHasher;
use crate::backend::Location;

const SHARDS: usize = 64;

/// One cached blob, with its key; immutable but for its tick and hot copy.
///
/// Kept small, since a store may index millions (104 bytes with the `Arc` counts, a 112-byte allocation,
/// short keys included): the checksum is two `u64`s rather than a `u128` (which would align the whole
/// entry to 16 bytes), the hot copy, which most entries of a large store lack, is boxed (8 bytes instead of
/// a 32-byte `Bytes`), "removed" is a tick value rather than a flag, and keys up to 22 bytes are inline.
pub(crate) struct Entry {
    pub key: Key,
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

/// The entry's hot copy (boxed: most entries of a large store have none). The lock also orders adding a
/// copy after a read against [`Entry::mark_removed`].
pub(crate) struct MemState {
    pub bytes: Option<Box<Bytes>>,
}

/// Keys this short live inside the entry (shader keys are 10 bytes): no allocation of their own.
const INLINE_KEY: usize = 22;

/// A key, inline when short (24 bytes either way, where a boxed key took 16 plus a 32-byte allocation).
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl From<&[u8]> for Key {
    fn from(k: &[u8]) -> Key {
        if k.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..k.len()].copy_from_slice(k);
            Key::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(k.into())
        }
    }
}

impl From<Box<[u8]>> for Key {
    fn from(k: Box<[u8]>) -> Key {
        if k.len() <= INLINE_KEY {
            Key::from(&*k)
        } else {
            Key::Heap(k)
        }
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(b) => b,
        }
    }
}

/// The tick of an entry that left the index ([`Entry::mark_removed`]); lookups only ever raise a tick.
const REMOVED: u64 = u64::MAX;

impl Entry {
    pub fn new(
        key: impl Into<Key>,
        size: u64,
        loc: Option<Location>,
        checksum: u128,
        tick: u64,
        hot: Option<Bytes>,
    ) -> Arc<Entry> {
        Arc::new(Entry {
            key: key.into(),
            size,
            loc,
            checksum: [checksum as u64, (checksum >> 64) as u64],
            tick: AtomicU64::new(tick),
            mem: Mutex::new(MemState {
                bytes: hot.map(Box::new),
            }),
        })
    }

    /// Records a use at `tick` (never lowers the tick: a removed entry stays removed).
    pub fn touch(&self, tick: u64) {
        self.tick.fetch_max(tick, Ordering::Relaxed);
    }

    /// Marks an entry that left the index and takes its hot copy, so a late reader does not add one back
    /// (it checks [`Entry::removed`] under the same lock). Returns the copy it held.
    pub fn mark_removed(&self) -> Option<Box<Bytes>> {
        let mut m = self.mem();
        self.tick.store(REMOVED, Ordering::Relaxed);
        m.bytes.take()
    }

    /// Whether the entry left the index; call with its [`Entry::mem`] lock held.
    pub fn removed(&self) -> bool {
        self.tick.load(Ordering::Relaxed) == REMOVED
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
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Arc<Entry>)> {
        self.table.iter().map(|e| (&*e.key, e))
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

/// A replayed index record, as [`Index::load_shard`] applies it (16 bytes: shards list a million).
pub(crate) enum Replayed {
    /// The entry's key maps to it.
    Put(Arc<Entry>),
    /// The key no longer maps to what is at `loc` (boxed: rare, and it would double the size).
    Remove(Box<Removal>),
}

pub(crate) struct Removal {
    pub key: Key,
    pub loc: Location,
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
            drained.extend(s.table.drain().map(|e| (Box::from(&*e.key), e)));
        }
        drained
    }

    /// The hash of `key` and the shard it belongs to: replay sorts records by shard with it, then loads
    /// each shard on its own ([`Index::load_shard`]).
    pub fn locate(&self, key: &[u8]) -> (u64, usize) {
        let h = self.hash.of(key);
        (h, shard_of(h))
    }

    /// How many shards [`Index::locate`] spreads keys over.
    pub const SHARDS: usize = SHARDS;

    /// Applies replayed records of shard `shard`, in log order, each with the hash [`Index::locate`] gave
    /// its key. Entries that left the index (replaced or removed) go to `gone`, so the caller can take
    /// them off its totals.
    pub fn load_shard(&self, shard: usize, ops: Vec<(u64, Replayed)>, gone: &mut Vec<Arc<Entry>>) {
        let hash = self.hash;
        let mut s = self.shards[shard]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // Room for every put at once: the table is built without rehashing, and one shard's table stays
        // in the core's cache while it is filled (inserting into all shards in log order missed it twice
        // per record).
        s.table.reserve(ops.len(), |e| hash.of(&e.key));
        for (h, op) in ops {
            debug_assert_eq!(shard_of(h), shard);
            match op {
                Replayed::Put(e) => gone.extend(s.insert(h, e, hash)),
                Replayed::Remove(r) => {
                    if s.get(h, &r.key).is_some_and(|cur| cur.loc == Some(r.loc)) {
                        gone.extend(s.remove(h, &r.key));
                    }
                }
            }
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
    /// 112-byte allocation (malloc adds 8 and rounds to 16), a short key included (it was a 128-byte one
    /// plus a 32-byte one for the key, with a `u128` checksum and an unboxed hot copy).
    #[test]
    fn an_entry_fits_a_112_byte_allocation() {
        assert!(std::mem::size_of::<Entry>() + 16 <= 104);
        assert_eq!(std::mem::size_of::<Key>(), 24);
        assert_eq!(std::mem::align_of::<Entry>(), 8);
        let e = Entry::new(&[1u8][..], 1, None, u128::MAX - 5, 0, None);
        assert_eq!(e.checksum(), u128::MAX - 5);
        assert_eq!(&*e.key, &[1u8][..]);
    }

    /// Replay lists every record of a large log before loading it: each must stay a pointer and a tag.
    #[test]
    fn a_replayed_record_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Replayed>(), 16);
    }

    #[test]
    fn keys_read_back_inline_or_not() {
        for len in [0, 1, 10, INLINE_KEY, INLINE_KEY + 1, 4097] {
            let k: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let inline = matches!(Key::from(&k[..]), Key::Inline { .. });
            assert_eq!(inline, len <= INLINE_KEY);
            assert_eq!(&*Key::from(&k[..]), &k[..]);
            assert_eq!(&*Key::from(k.clone().into_boxed_slice()), &k[..]);
        }
    }

    /// A removed entry stays removed whatever tick a racing lookup records.
    #[test]
    fn a_removed_entry_stays_removed() {
        let e = Entry::new(&b"k"[..], 1, None, 0, 5, Some(Bytes::from_static(b"x")));
        assert!(!e.removed());
        e.touch(7);
        assert_eq!(e.mark_removed().as_deref(), Some(&Bytes::from_static(b"x")));
        e.touch(9);
        assert!(e.removed());
    }
}
