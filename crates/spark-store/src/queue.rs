//! The store's writer thread: the permanent group-commit leader for small puts.
//!
//! A put the backend batches is queued with a completion callback and never waits on a thread of its own:
//! the writer thread takes everything queued (up to the batch limits), writes it as one batch with one
//! index append (and one `fdatasync` with fsync durability), then calls each put's callback. An async
//! caller passes a callback that completes a oneshot channel, so a put costs one wake-up of the writer
//! (only when it was idle) and one of the caller's task, instead of a blocking-pool hand-off plus a
//! leader/follower condvar that woke every waiting put after each batch. The callback is a plain
//! `FnOnce`, so the store stays free of any async runtime.
//!
//! No timer: a lone put is written as soon as the writer sees it, and under load batches grow by
//! themselves with the time one batch takes. With fast durability a put that finds the writer idle and
//! nothing queued is written by its caller (a `pwrite` into the page cache and an index append, under the
//! batch lock only if it is free): the writer thread is for batches and fsyncs, not for lone puts. The thread starts with the first queued put, holds only a
//! weak reference to the store between batches, and ends when the store is dropped.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tracing::warn;

use crate::store::{Inner, Store};
use crate::{Durability, StoreError};

/// A batch stops growing at this many bytes of bodies (or [`BATCH_MAX_PUTS`] puts).
const BATCH_MAX_BYTES: usize = 8 << 20;
const BATCH_MAX_PUTS: usize = 1024;

/// What a queued put calls with its result: `Ok(true)` once its batch is written and indexed.
pub type PutDone = Box<dyn FnOnce(Result<bool, StoreError>) + Send>;

/// One queued put.
pub(crate) struct Job {
    pub key: Box<[u8]>,
    pub body: Bytes,
    pub hot: Option<Bytes>,
    pub done: PutDone,
}

#[derive(Default)]
pub(crate) struct PutQueue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

#[derive(Default)]
pub(crate) struct QueueState {
    pub jobs: Vec<Job>,
    /// Puts taken by the writer and not yet completed (tests watch it).
    pub in_flight: usize,
    started: bool,
    /// Whether the writer is waiting for work (only then does a push need to wake it).
    idle: bool,
    /// A put is being written by its caller (`Store::try_write_alone`); others queue meanwhile.
    writing_alone: bool,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PutQueue {
    pub(crate) fn state(&self) -> MutexGuard<'_, QueueState> {
        lock(&self.state)
    }

    /// Ends the writer thread once the queue is empty (the store is being dropped).
    pub(crate) fn close(&self) {
        let mut st = self.state();
        st.closed = true;
        drop(st);
        self.cv.notify_one();
    }
}

/// The store's end of the queue: dropping the store ends the writer thread.
#[derive(Default)]
pub(crate) struct QueueHandle(pub Arc<PutQueue>);

impl Drop for QueueHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Store {
    /// Queues one small put for the writer thread; `done` is called from that thread with the result. With
    /// fast durability, a put that finds the writer with nothing to do is written here instead (see
    /// [`Store::try_write_alone`]) and `done` is called before this returns.
    pub(crate) fn enqueue(&self, job: Job, may_write_alone: bool) {
        let q = &self.inner.queue.0;
        let mut st = q.state();
        let alone = may_write_alone
            && self.inner.cfg.durability == Durability::Fast
            && st.jobs.is_empty()
            && st.in_flight == 0
            && !st.writing_alone;
        let job = if alone {
            st.writing_alone = true;
            drop(st);
            let r = self.try_write_alone(job);
            st = q.state();
            st.writing_alone = false;
            match r {
                Ok((done, res)) => {
                    drop(st);
                    done(res.map(|()| true));
                    return;
                }
                Err(job) => job,
            }
        } else {
            job
        };
        st.jobs.push(job);
        if st.started {
            let wake = st.idle;
            drop(st);
            if wake {
                q.cv.notify_one();
            }
            return;
        }
        st.started = true;
        let weak = Arc::downgrade(&self.inner);
        let queue = q.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("store-{}", self.inner.cfg.name))
            .spawn(move || writer_loop(&queue, &weak));
        if let Err(e) = spawned {
            st.started = false;
            let jobs = std::mem::take(&mut st.jobs);
            drop(st);
            warn!(store = %self.inner.cfg.name, "cannot start the writer thread: {e}");
            for j in jobs {
                (j.done)(Err(StoreError::Io {
                    op: "start the store's writer thread",
                    path: Default::default(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                }));
            }
        }
    }
}

/// The writer: batches until the store is dropped. It holds the store only while it writes a batch and
/// lets go of it before completing the batch's puts, so a caller that drops the store right after its
/// put returns really closes it.
fn writer_loop(q: &PutQueue, weak: &Weak<Inner>) {
    loop {
        let mut st = q.state();
        while st.jobs.is_empty() {
            if st.closed {
                return;
            }
            st.idle = true;
            st = q.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            st.idle = false;
        }
        let jobs = take_batch(&mut st.jobs);
        st.in_flight = jobs.len();
        drop(st);
        let (dones, results) = match weak.upgrade() {
            Some(inner) => Store { inner }.run_batch(jobs),
            // Only a put queued while the last handle was being dropped gets here.
            None => jobs.into_iter().map(|j| (j.done, Err(closed()))).unzip(),
        };
        q.state().in_flight = 0;
        for (done, r) in dones.into_iter().zip(results) {
            done(r.map(|()| true));
        }
    }
}

/// The error of a put queued while its store was closing.
fn closed() -> StoreError {
    StoreError::Io {
        op: "put into",
        path: "a store that was closed meanwhile".into(),
        source: std::io::Error::other("the store was dropped; retry the put"),
    }
}

/// The next batch: a prefix of the queue within the batch limits (at least one put).
fn take_batch(queue: &mut Vec<Job>) -> Vec<Job> {
    let mut bytes = 0;
    let mut n = 0;
    for j in queue.iter() {
        if n > 0 && (bytes + j.body.len() > BATCH_MAX_BYTES || n >= BATCH_MAX_PUTS) {
            break;
        }
        bytes += j.body.len();
        n += 1;
    }
    if n == queue.len() {
        std::mem::take(queue)
    } else {
        queue.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;
    use std::sync::atomic::Ordering;

    /// A queued put completes through its callback with the blob indexed; dropping the store ends the
    /// writer thread (it lets go of the queue), so the store is really closed.
    #[test]
    fn queued_puts_complete_and_the_writer_ends_with_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        // fsync durability: every put goes through the writer (fast durability writes lone puts inline).
        let mut cfg = StoreConfig::on_disk("q", tmp.path(), 1 << 20);
        cfg.durability = Durability::Fsync;
        let (s, _) = Store::open(cfg).unwrap();
        assert!(s.queues_put(b"k", 4096));
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..16u8 {
            let tx = tx.clone();
            s.put_queued(&[i], Bytes::from(vec![i; 4096]), move |r| {
                tx.send((i, r.unwrap())).unwrap()
            });
        }
        let mut done: Vec<(u8, bool)> = (0..16).map(|_| rx.recv().unwrap()).collect();
        done.sort();
        assert_eq!(done, (0..16u8).map(|i| (i, true)).collect::<Vec<_>>());
        for i in 0..16u8 {
            assert_eq!(s.get(&[i]).unwrap().unwrap(), vec![i; 4096]);
        }
        let queue = s.inner.queue.0.clone();
        assert_eq!(
            Arc::strong_count(&queue),
            3,
            "the store, the writer and this test"
        );
        drop(s);
        while Arc::strong_count(&queue) > 1 {
            std::thread::yield_now();
        }
        assert!(queue.state().closed);
    }

    /// Puts `v` under `key` through `put_queued`; returns whether it completed before `put_queued` returned
    /// (written by its caller), after waiting for it either way.
    fn put_alone(s: &Store, key: &[u8], v: u8) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        s.put_queued(key, Bytes::from(vec![v; 4096]), move |r| {
            tx.send(r.unwrap()).unwrap()
        });
        let inline = rx.try_recv().is_ok();
        if !inline {
            assert!(rx.recv().unwrap());
        }
        inline
    }

    /// With fast durability a put that finds the writer idle is written by its caller, before `put_queued`
    /// returns, once a pack is open; the first put (which creates the pack), a put that would need a new
    /// pack and a put that would need an eviction go to the writer thread instead, as does a put while a
    /// batch (or a compaction) holds the batch lock. Every one of them is stored and survives a reopen.
    #[test]
    fn a_lone_fast_put_is_written_by_its_caller_unless_it_needs_a_new_pack_an_eviction_or_the_lock()
    {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::on_disk("q", tmp.path(), 64 << 20);
        cfg.pack_size = 64 << 10;
        cfg.disk_budget = 1 << 20;
        let (s, _) = Store::open(cfg.clone()).unwrap();
        assert!(
            !put_alone(&s, b"first", 1),
            "the first put creates the pack"
        );
        assert!(
            put_alone(&s, b"alone", 2),
            "a pack is open: written by the caller"
        );

        let held = s.inner.group.batch.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        s.put_queued(b"queued", Bytes::from(vec![3; 4096]), move |r| {
            tx.send(r.unwrap()).unwrap()
        });
        assert!(
            rx.try_recv().is_err(),
            "it must wait for the batch lock on the writer, not here"
        );
        drop(held);
        assert!(rx.recv().unwrap());
        // Written by the caller or by the writer, both are in the pack and the index log.
        drop(s);
        let (s, _) = Store::open(cfg.clone()).unwrap();
        assert_eq!(s.get(b"alone").unwrap().unwrap(), vec![2; 4096]);
        assert_eq!(s.get(b"queued").unwrap().unwrap(), vec![3; 4096]);
        assert!(
            put_alone(&s, b"reopened", 6),
            "recovery reopens the last pack for appending"
        );

        // Fill the 64 KiB pack: the put that does not fit goes to the writer, which opens the next pack.
        let mut rolled = false;
        for i in 0..16u8 {
            rolled |= !put_alone(&s, &[b'f', i], 4);
        }
        assert!(rolled, "a put needing a new pack went to the writer");
        // Up to the 1 MiB budget: the put that needs an eviction goes to the writer, which evicts.
        let mut evicting = false;
        for i in 0..300u16 {
            let k = [b'e', (i >> 8) as u8, i as u8];
            if s.inner.disk_used.load(Ordering::Relaxed) + 4200 > cfg.disk_budget {
                evicting |= !put_alone(&s, &k, 5);
            } else {
                put_alone(&s, &k, 5);
            }
        }
        assert!(evicting, "puts past the budget went to the writer");
        assert!(s.inner.disk_used.load(Ordering::Relaxed) <= cfg.disk_budget);

        assert_eq!(s.get(&[b'e', 1, 43]).unwrap().unwrap(), vec![5; 4096]);
    }

    /// A put the writer does not take (larger than packs hold) runs in the caller and still completes.
    #[test]
    fn a_put_the_queue_does_not_take_runs_inline() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(StoreConfig::on_disk("q", tmp.path(), 64 << 20)).unwrap();
        let big = (s.config().pack_max_blob + 1) as usize;
        assert!(!s.queues_put(b"big", big as u64));
        let (tx, rx) = std::sync::mpsc::channel();
        s.put_queued(b"big", Bytes::from(vec![7; big]), move |r| {
            tx.send(r.unwrap()).unwrap()
        });
        assert!(
            rx.try_recv().unwrap(),
            "completed before put_queued returned"
        );
        assert_eq!(s.get(b"big").unwrap().unwrap().len(), big);
        assert!(!s.inner.queue.0.state().started, "no writer thread for it");
    }
}
