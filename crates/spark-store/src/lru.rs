//! LRU for both tiers, by bytes, exact without a global list: a hit is an atomic store of a clock value
//! (`Store::tick`); eviction pops victims from a queue of the oldest entries, refilled by a scan when it runs
//! dry, and skips any whose tick moved since.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::index::Entry;
use crate::store::{Store, Writer};

/// Keys of the oldest entries at scan time, oldest first, with the tick each had then.
pub(crate) type VictimQueue = VecDeque<(u64, Box<[u8]>)>;

impl Store {
    /// Largest blob the memory tier takes.
    pub(crate) fn mem_admit_limit(&self) -> u64 {
        let c = &self.inner.cfg;
        if self.inner.disk.is_some() {
            c.max_memory_blob.min(c.memory_budget)
        } else {
            c.memory_budget
        }
    }

    /// Adds a hot copy of a blob just read from disk, then trims the memory tier.
    pub(crate) fn promote(&self, entry: &Arc<Entry>, body: &Bytes) {
        if body.len() as u64 > self.mem_admit_limit() {
            return;
        }
        {
            let mut m = entry.mem();
            if entry.removed() || m.bytes.is_some() {
                return;
            }
            m.bytes = Some(Box::new(body.clone()));
        }
        self.inner
            .mem_used
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        self.inner.entries_mem.fetch_add(1, Ordering::Relaxed);
        self.trim_memory();
    }

    /// Evicts disk-tier LRU entries until within budget.
    pub(crate) fn evict_disk_locked(&self, w: &mut Writer) {
        let budget = self.inner.cfg.disk_budget;
        if self.inner.disk.is_none() || budget == 0 {
            return;
        }
        while self.inner.disk_used.load(Ordering::Relaxed) > budget {
            let Some((key, e)) = self.pop_victim(&mut w.disk_victims, false) else {
                break;
            };
            self.evict(w, &key, &e);
        }
    }

    /// Memory-only stores: the memory tier is the cache, so trimming it removes entries.
    pub(crate) fn evict_memory_only_locked(&self, w: &mut Writer) {
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
            self.evict(w, &key, &e);
        }
    }

    /// Evicts coldest entries worth at least `bytes` (disk full). Returns bytes freed.
    pub(crate) fn evict_bytes(&self, bytes: u64) -> u64 {
        let mut w = self.writer();
        let start = self.inner.disk_used.load(Ordering::Relaxed);
        let mut freed = 0;
        while freed < bytes {
            let Some((key, e)) = self.pop_victim(&mut w.disk_victims, false) else {
                break;
            };
            self.evict(&mut w, &key, &e);
            freed = start.saturating_sub(self.inner.disk_used.load(Ordering::Relaxed));
        }
        freed
    }

    pub(crate) fn evict(&self, w: &mut Writer, key: &[u8], e: &Arc<Entry>) {
        if self.remove_locked(w, key, Some(e)) {
            self.inner
                .counters
                .evictions
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops hot copies, coldest first, until the memory tier is within budget (disk stores only).
    pub(crate) fn trim_memory(&self) {
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
    pub(crate) fn pop_victim(
        &self,
        q: &mut VictimQueue,
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

    fn refill(&self, q: &mut VictimQueue, hot_only: bool) {
        let mut all: Vec<(u64, Box<[u8]>)> = Vec::new();
        for s in self.inner.index.each_shard() {
            for (k, e) in s.iter() {
                if !hot_only || e.mem().bytes.is_some() {
                    all.push((e.tick.load(Ordering::Relaxed), k.into()));
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
}
