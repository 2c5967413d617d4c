//! A root's clock and the history behind `since` queries.
//!
//! The clock is `(instance, seq)`. `instance` is unique to one incarnation of a watched root in one daemon
//! run, so a clock from before a restart or from a released root is recognised as foreign. `seq` grows by one
//! per settled batch (and per rescan). History keeps the last batches up to a bound on the number of changes;
//! a clock older than what is kept, or older than the last rescan, gets `fresh_instance`: never a silent gap.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use spark_proto::watch::Change;

/// Changes kept per root for `since` queries.
pub const HISTORY_MAX_CHANGES: usize = 100_000;

/// A new instance id: random per daemon run (std's per-process hasher keys), plus a counter within the run.
/// Never 0, which means "no clock" on the wire.
pub fn new_instance() -> u64 {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let run = *RUN.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let v = run.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) << 20);
    if v == 0 { 1 } else { v }
}

pub struct History {
    pub instance: u64,
    /// The clock's current value: the seq of the last batch.
    pub seq: u64,
    /// Clocks with a seq below this have no history: changes before it are unknown (rescan or eviction).
    floor: u64,
    batches: VecDeque<(u64, Vec<Change>)>,
    kept: usize,
}

/// What `since` found.
pub enum Since {
    /// Every change after the clock, in order, at most one per path (the last).
    Changes(Vec<Change>),
    /// No history back to the clock: the client must rescan.
    Fresh,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        History {
            instance: new_instance(),
            seq: 1,
            floor: 1,
            batches: VecDeque::new(),
            kept: 0,
        }
    }

    /// Records a settled batch; returns its seq.
    pub fn push(&mut self, changes: Vec<Change>) -> u64 {
        self.seq += 1;
        self.kept += changes.len();
        self.batches.push_back((self.seq, changes));
        while self.kept > HISTORY_MAX_CHANGES {
            let Some((seq, old)) = self.batches.pop_front() else {
                break;
            };
            self.kept -= old.len();
            self.floor = seq;
        }
        self.seq
    }

    /// Records that changes were missed (an overflow): earlier clocks can no longer be answered.
    pub fn lose(&mut self) -> u64 {
        self.seq += 1;
        self.batches.clear();
        self.kept = 0;
        self.floor = self.seq;
        self.seq
    }

    pub fn since(&self, instance: u64, seq: u64) -> Since {
        if instance != self.instance || seq < self.floor || seq > self.seq {
            return Since::Fresh;
        }
        let mut out: Vec<Change> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for (_, batch) in self.batches.iter().filter(|(s, _)| *s > seq) {
            for c in batch {
                // The last change of a path wins; a rename is keyed by its destination.
                let key = if c.to.is_empty() { &c.path } else { &c.to };
                match at.get(key) {
                    Some(&i) => out[i] = c.clone(),
                    None => {
                        at.insert(key.clone(), out.len());
                        out.push(c.clone());
                    }
                }
            }
        }
        Since::Changes(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spark_proto::watch::ChangeKind;

    #[test]
    fn since_answers_or_says_fresh() {
        let mut h = History::new();
        let c0 = h.seq;
        h.push(vec![Change::new(ChangeKind::Created, "a")]);
        let c1 = h.seq;
        h.push(vec![
            Change::new(ChangeKind::Modified, "a"),
            Change::new(ChangeKind::Created, "b"),
        ]);
        let Since::Changes(all) = h.since(h.instance, c0) else {
            panic!("history lost")
        };
        assert_eq!(
            all,
            vec![
                Change::new(ChangeKind::Modified, "a"),
                Change::new(ChangeKind::Created, "b")
            ]
        );
        let Since::Changes(tail) = h.since(h.instance, c1) else {
            panic!("history lost")
        };
        assert_eq!(tail.len(), 2);
        assert!(matches!(h.since(h.instance ^ 1, c1), Since::Fresh));
        h.lose();
        assert!(matches!(h.since(h.instance, c1), Since::Fresh));
        let Since::Changes(none) = h.since(h.instance, h.seq) else {
            panic!("current clock must answer")
        };
        assert!(none.is_empty());
        assert_ne!(History::new().instance, h.instance);
    }
}
