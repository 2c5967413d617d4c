//! The store's own statistics type, so the store does not depend on the wire protocol: the daemon maps it
//! to `spark_proto::cache::CacheStats`, and a counter can be added here without a protocol change.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::Store;

/// Point-in-time statistics of one store. `evictions` counts entries dropped to stay within a budget (a
/// hot copy leaving memory is not one). More counters may be added: read them by name, or list them all
/// with [`StoreStats::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    pub hits: u64,
    pub misses: u64,
    pub puts: u64,
    pub entries: u64,
    pub entries_in_memory: u64,
    pub bytes_in_memory: u64,
    pub bytes_on_disk: u64,
    pub evictions: u64,
    pub corrupt_dropped: u64,
    /// Memory tier budget in bytes.
    pub memory_budget: u64,
    /// Disk tier budget in bytes; 0 = unbounded, or no disk tier.
    pub disk_budget: u64,
}

impl StoreStats {
    /// Every counter with a stable name, in a stable order (new counters are appended), for logs, tables
    /// and JSON that should not need a change when a counter is added.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("hits", self.hits),
            ("misses", self.misses),
            ("puts", self.puts),
            ("entries", self.entries),
            ("entries_in_memory", self.entries_in_memory),
            ("bytes_in_memory", self.bytes_in_memory),
            ("bytes_on_disk", self.bytes_on_disk),
            ("evictions", self.evictions),
            ("corrupt_dropped", self.corrupt_dropped),
            ("memory_budget", self.memory_budget),
            ("disk_budget", self.disk_budget),
        ]
    }
}

/// Event counters, bumped without a lock.
#[derive(Default)]
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub puts: AtomicU64,
    pub evictions: AtomicU64,
    pub corrupt_dropped: AtomicU64,
    /// Group-commit batches written (each one pack write and one index append).
    pub batches: AtomicU64,
}

impl Store {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_names_and_order() {
        let s = StoreStats {
            hits: 1,
            misses: 2,
            puts: 3,
            entries: 4,
            entries_in_memory: 5,
            bytes_in_memory: 6,
            bytes_on_disk: 7,
            evictions: 8,
            corrupt_dropped: 9,
            memory_budget: 10,
            disk_budget: 11,
        };
        let names: Vec<_> = s.counters().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "hits",
                "misses",
                "puts",
                "entries",
                "entries_in_memory",
                "bytes_in_memory",
                "bytes_on_disk",
                "evictions",
                "corrupt_dropped",
                "memory_budget",
                "disk_budget"
            ]
        );
        let values: Vec<_> = s.counters().iter().map(|(_, v)| *v).collect();
        assert_eq!(values, (1..=11).collect::<Vec<_>>());
    }
}
