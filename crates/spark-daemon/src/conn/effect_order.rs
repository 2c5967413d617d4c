//! Effect order: which earlier requests of a connection a new one must wait for before it starts.

use std::collections::HashMap;

use tokio::sync::watch;

/// Resolves once one request's handler has finished (or was dropped).
pub(crate) type Done = watch::Receiver<bool>;

/// Keeps one connection's effects in request order while its requests execute concurrently. Per key (see
/// [`crate::registry::Service::effect_key`]): a request that changes a key starts only after every earlier
/// request on that key has finished, and one that reads a key only after every earlier write of it. A
/// request without a key counts as touching every key: as a write it waits for everything before it and
/// everything after it waits for it; as a read it waits for every earlier write. Reads run concurrently, and
/// so do writes of different keys.
#[derive(Default)]
pub(crate) struct EffectOrder {
    /// The latest keyless write still running (it waited for everything before it).
    all_write: Option<Done>,
    /// The latest write of each key still running, started since `all_write`.
    key_writes: HashMap<u64, Done>,
    /// Reads still running, with their key, started since `all_write`.
    reads: Vec<(Option<u64>, Done)>,
}

fn finished(d: &Done) -> bool {
    *d.borrow()
}

impl EffectOrder {
    /// What a new request must wait for before it starts.
    pub(crate) fn deps(&mut self, write: bool, key: Option<u64>) -> Vec<Done> {
        self.reads.retain(|(_, d)| !finished(d));
        self.key_writes.retain(|_, d| !finished(d));
        if self.all_write.as_ref().is_some_and(finished) {
            self.all_write = None;
        }
        let mut deps: Vec<Done> = self.all_write.iter().cloned().collect();
        match key {
            Some(k) => {
                deps.extend(self.key_writes.get(&k).cloned());
                if write {
                    let touching = |(rk, _): &&(Option<u64>, Done)| rk.is_none_or(|rk| rk == k);
                    deps.extend(self.reads.iter().filter(touching).map(|(_, d)| d.clone()));
                }
            }
            None => {
                deps.extend(self.key_writes.values().cloned());
                if write {
                    deps.extend(self.reads.iter().map(|(_, d)| d.clone()));
                }
            }
        }
        deps
    }

    /// Records a request that is still running.
    pub(crate) fn running(&mut self, write: bool, key: Option<u64>, done: Done) {
        match (write, key) {
            (true, None) => {
                // It waits for everything running: later requests need wait only for it.
                self.all_write = Some(done);
                self.key_writes.clear();
                self.reads.clear();
            }
            (true, Some(k)) => {
                // It waits for the earlier reads of its key, so they need not be waited for again.
                self.reads.retain(|(rk, _)| *rk != Some(k));
                self.key_writes.insert(k, done);
            }
            (false, key) => self.reads.push((key, done)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req(watch::Sender<bool>);

    impl Req {
        /// Starts a request on `o`; returns it and how many earlier ones it waits for.
        fn start(o: &mut EffectOrder, write: bool, key: Option<u64>) -> (Req, usize) {
            let deps = o.deps(write, key).len();
            let (tx, rx) = watch::channel(false);
            o.running(write, key, rx);
            (Req(tx), deps)
        }
        fn finish(&self) {
            self.0.send_replace(true);
        }
    }

    #[test]
    fn writes_of_different_keys_run_together_and_one_key_stays_in_order() {
        let mut o = EffectOrder::default();
        let (_a, n) = Req::start(&mut o, true, Some(1));
        assert_eq!(n, 0);
        let (_b, n) = Req::start(&mut o, true, Some(2));
        assert_eq!(n, 0, "another key: no wait");
        let (_c, n) = Req::start(&mut o, false, Some(1));
        assert_eq!(n, 1, "a read of key 1 waits for its write");
        let (_d, n) = Req::start(&mut o, true, Some(1));
        assert_eq!(n, 2, "a write of key 1 waits for its write and its read");
        let (_e, n) = Req::start(&mut o, false, Some(3));
        assert_eq!(n, 0);
    }

    #[test]
    fn a_keyless_write_is_a_barrier_both_ways() {
        let mut o = EffectOrder::default();
        let (_a, _) = Req::start(&mut o, true, Some(1));
        let (_b, _) = Req::start(&mut o, false, Some(2));
        let (_c, _) = Req::start(&mut o, false, None);
        let (clear, n) = Req::start(&mut o, true, None);
        assert_eq!(n, 3, "a clear waits for everything before it");
        let (_d, n) = Req::start(&mut o, false, Some(9));
        assert_eq!(n, 1, "and everything after waits for the clear");
        clear.finish();
        let (_e, n) = Req::start(&mut o, true, Some(9));
        assert_eq!(n, 1, "the clear is done; the read of key 9 is not");
    }

    #[test]
    fn a_keyless_read_waits_for_every_write_and_every_write_for_it() {
        let mut o = EffectOrder::default();
        let (a, _) = Req::start(&mut o, true, Some(1));
        let (_b, _) = Req::start(&mut o, true, Some(2));
        let (_stats, n) = Req::start(&mut o, false, None);
        assert_eq!(n, 2);
        a.finish();
        let (_c, n) = Req::start(&mut o, true, Some(7));
        assert_eq!(n, 1, "a write of any key waits for the keyless read");
    }

    #[test]
    fn finished_requests_are_not_waited_for() {
        let mut o = EffectOrder::default();
        let (a, _) = Req::start(&mut o, true, Some(1));
        let (b, _) = Req::start(&mut o, false, Some(1));
        a.finish();
        b.finish();
        let (_c, n) = Req::start(&mut o, true, Some(1));
        assert_eq!(n, 0);
    }
}
