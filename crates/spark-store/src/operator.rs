//! Whole-store operations for the people who run the daemon: verify every entry's checksum now (dropping the
//! corrupt ones), and trim a tier down to a size now. Both are blocking and may take long; the daemon runs
//! them on its blocking pool.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::warn;

use crate::StoreError;
use crate::backend::Opened;
use crate::index::Entry;
use crate::store::Store;

/// Read buffer for verification: large blobs are checked a piece at a time.
const VERIFY_CHUNK: usize = 1 << 20;

/// What [`Store::verify`] found so far (also its progress).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries in the store when the check started.
    pub total: u64,
    /// Entries read and checked (intact or not).
    pub checked: u64,
    /// Body bytes read.
    pub bytes: u64,
    /// Entries whose bytes failed their checksum, or were gone or foreign: dropped.
    pub corrupt: u64,
    /// Memory-only entries: nothing on disk to check.
    pub memory_only: u64,
}

/// What [`Store::trim_to`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrimReport {
    pub evicted: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Store {
    /// Reads every entry on disk and checks its checksum; a damaged, missing or foreign blob is dropped from
    /// the index (counted in `corrupt_dropped`) exactly as a get that found it would. Entries added while it
    /// runs are not checked. `progress` is called after each entry.
    pub fn verify(&self, mut progress: impl FnMut(&VerifyReport)) -> VerifyReport {
        let entries = self.snapshot();
        let mut r = VerifyReport {
            total: entries.len() as u64,
            ..VerifyReport::default()
        };
        let mut buf = vec![0u8; VERIFY_CHUNK];
        for (key, entry) in entries {
            match self.verify_one(&key, &entry, &mut buf) {
                Checked::Intact => {}
                Checked::MemoryOnly => r.memory_only += 1,
                Checked::Dropped(why) => {
                    r.corrupt += 1;
                    self.drop_for_verify(&key, &entry, why);
                }
                Checked::Gone => {}
            }
            r.checked += 1;
            r.bytes += entry.size;
            progress(&r);
        }
        r
    }

    fn verify_one(&self, key: &[u8], entry: &Arc<Entry>, buf: &mut [u8]) -> Checked {
        let (Some(disk), Some(loc)) = (&self.inner.disk, entry.loc) else {
            return Checked::MemoryOnly;
        };
        let mut reader = match disk.backend.open(loc, key, entry.size) {
            Ok(Opened::Ready(r)) => r,
            // Replaced, removed or moved by compaction since the snapshot: not this check's business.
            Ok(Opened::Missing) if !self.still_indexed(key, entry) => return Checked::Gone,
            Ok(Opened::Missing) => return Checked::Dropped("its blob is missing".into()),
            Ok(Opened::Damaged(why)) => return Checked::Dropped(why.into()),
            Err(e) => return Checked::Dropped(format!("cannot open it: {e}")),
        };
        let mut left = entry.size;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            if let Err(e) = reader.read_body(&mut buf[..n]) {
                return self.failed(key, entry, e);
            }
            left -= n as u64;
        }
        match reader.verify(entry.checksum()) {
            Ok(()) => Checked::Intact,
            Err(e) => self.failed(key, entry, e),
        }
    }

    /// A read error: corruption drops the entry; an I/O error does too unless the entry changed meanwhile.
    fn failed(&self, key: &[u8], entry: &Arc<Entry>, e: StoreError) -> Checked {
        match e {
            StoreError::Corrupt(why) => Checked::Dropped(why),
            _ if !self.still_indexed(key, entry) => Checked::Gone,
            e => Checked::Dropped(format!("cannot read it: {e}")),
        }
    }

    fn still_indexed(&self, key: &[u8], entry: &Arc<Entry>) -> bool {
        self.find(key).is_some_and(|cur| Arc::ptr_eq(&cur, entry))
    }

    fn drop_for_verify(&self, key: &[u8], entry: &Arc<Entry>, why: String) {
        if self.remove_if_same(key, entry) {
            self.inner
                .counters
                .corrupt_dropped
                .fetch_add(1, Ordering::Relaxed);
            warn!(store = %self.inner.cfg.name, location = ?entry.loc, "verify dropped a corrupt blob: {why}");
        }
    }

    fn snapshot(&self) -> Vec<(Box<[u8]>, Arc<Entry>)> {
        let mut all = Vec::new();
        for s in self.inner.index.each_shard() {
            all.extend(s.iter().map(|(k, e)| (Box::<[u8]>::from(k), e.clone())));
        }
        all
    }

    /// Evicts least recently used entries until the store holds at most `target` bytes: on disk for a disk
    /// store, in memory for a memory-only one. Returns what it evicted (counted in `evictions`).
    pub fn trim_to(&self, target: u64) -> TrimReport {
        let used = || {
            if self.inner.disk.is_some() {
                self.inner.disk_used.load(Ordering::Relaxed)
            } else {
                self.inner.mem_used.load(Ordering::Relaxed)
            }
        };
        let mut w = self.writer();
        let bytes_before = used();
        let mut evicted = 0;
        while used() > target {
            let victim = if self.inner.disk.is_some() {
                self.pop_victim(&mut w.disk_victims, false)
            } else {
                let mut q = self
                    .inner
                    .mem_victims
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.pop_victim(&mut q, true)
            };
            let Some((key, e)) = victim else { break };
            self.evict(&mut w, &key, &e);
            evicted += 1;
        }
        TrimReport {
            evicted,
            bytes_before,
            bytes_after: used(),
        }
    }
}

enum Checked {
    Intact,
    MemoryOnly,
    Dropped(String),
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;
    use bytes::Bytes;

    fn disk_store(dir: &std::path::Path) -> Store {
        let mut cfg = StoreConfig::on_disk("t", dir, 1 << 20);
        // A file per blob, so the test can damage one blob's bytes.
        cfg.pack_max_blob = 0;
        Store::open(cfg).unwrap().0
    }

    #[test]
    fn verify_finds_and_drops_exactly_the_damaged_blob() {
        let dir = tempfile::tempdir().unwrap();
        let s = disk_store(dir.path());
        for i in 0..10u8 {
            s.put(&[i; 8], Bytes::from(vec![i; 3000])).unwrap();
        }
        let victim = s.blob_path(&[4u8; 8]).expect("a blob file");
        let mut bytes = std::fs::read(&victim).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 0xff;
        std::fs::write(&victim, bytes).unwrap();
        let mut calls = 0;
        let r = s.verify(|_| calls += 1);
        assert_eq!((r.total, r.checked, r.corrupt, calls), (10, 10, 1, 10));
        assert_eq!(r.bytes, 30_000);
        assert!(s.exists(&[4u8; 8]).is_none(), "the damaged entry is gone");
        assert!(s.exists(&[5u8; 8]).is_some());
        assert_eq!(s.stats().corrupt_dropped, 1);
        let again = s.verify(|_| {});
        assert_eq!((again.checked, again.corrupt), (9, 0));
    }

    #[test]
    fn trim_evicts_least_recent_first_down_to_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let s = disk_store(dir.path());
        for i in 0..10u8 {
            s.put(&[i; 8], Bytes::from(vec![i; 4096])).unwrap();
        }
        // Touch the oldest so it is the most recent now.
        s.get(&[0u8; 8]).unwrap();
        let before = s.stats().bytes_on_disk;
        let r = s.trim_to(before / 2);
        assert!(r.bytes_after <= before / 2, "{r:?}");
        assert_eq!(r.bytes_before, before);
        assert!(r.evicted >= 5, "{r:?}");
        assert!(s.exists(&[0u8; 8]).is_some(), "recently used survives");
        assert!(
            s.exists(&[1u8; 8]).is_none(),
            "least recently used goes first"
        );
        assert_eq!(s.trim_to(u64::MAX).evicted, 0);
    }

    #[test]
    fn memory_only_stores_verify_nothing_and_trim_memory() {
        let s = Store::open(StoreConfig::memory("m", 1 << 20)).unwrap().0;
        for i in 0..4u8 {
            s.put(&[i; 8], Bytes::from(vec![i; 1000])).unwrap();
        }
        let r = s.verify(|_| {});
        assert_eq!((r.checked, r.memory_only, r.corrupt), (4, 4, 0));
        let t = s.trim_to(2000);
        assert_eq!((t.evicted, t.bytes_after), (2, 2000));
    }
}
