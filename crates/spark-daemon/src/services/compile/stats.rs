//! The Compile service's counters and compile-time percentiles.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use spark_proto::compile::CompileStats;

/// Compile times kept for the percentiles.
const WINDOW: usize = 1024;

#[derive(Default)]
pub struct Stats {
    pub compiles: AtomicU64,
    pub hits: AtomicU64,
    pub negative_hits: AtomicU64,
    pub joins: AtomicU64,
    pub failures: AtomicU64,
    pub timeouts: AtomicU64,
    pub worker_crashes: AtomicU64,
    pub queued: AtomicU64,
    pub running: AtomicU64,
    times_us: Mutex<VecDeque<u64>>,
}

impl Stats {
    pub fn record_time(&self, d: Duration) {
        let mut t = self.times_us.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == WINDOW {
            t.pop_front();
        }
        t.push_back(d.as_micros() as u64);
    }

    pub fn snapshot(&self, jobs: usize) -> CompileStats {
        let mut t: Vec<u64> = self
            .times_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        t.sort_unstable();
        let pct = |p: usize| {
            if t.is_empty() {
                0
            } else {
                t[((t.len() - 1) * p).div_ceil(100)]
            }
        };
        CompileStats {
            compiles: self.compiles.load(Relaxed),
            hits: self.hits.load(Relaxed),
            negative_hits: self.negative_hits.load(Relaxed),
            joins: self.joins.load(Relaxed),
            failures: self.failures.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            worker_crashes: self.worker_crashes.load(Relaxed),
            queue_depth: self.queued.load(Relaxed),
            running: self.running.load(Relaxed),
            jobs: jobs as u64,
            p50_us: pct(50),
            p90_us: pct(90),
            p99_us: pct(99),
            max_us: t.last().copied().unwrap_or(0),
        }
    }
}

/// The counters as (name, value), for the Namespaces listing of the `compile` namespace.
pub fn counters(s: &CompileStats) -> Vec<(&'static str, u64)> {
    CompileStats::FIELDS
        .iter()
        .copied()
        .zip(s.values())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_the_window() {
        let s = Stats::default();
        for ms in 1..=100 {
            s.record_time(Duration::from_millis(ms));
        }
        let snap = s.snapshot(3);
        assert_eq!(
            (snap.p50_us, snap.p99_us, snap.max_us),
            (51_000, 100_000, 100_000)
        );
        assert_eq!(snap.jobs, 3);
        assert_eq!(counters(&snap).len(), 14);
    }
}
