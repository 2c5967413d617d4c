//! Group commit of small puts, and pack compaction.
//!
//! The writer thread (`queue.rs`) hands each batch of queued puts to [`Store::run_batch`]: one
//! [`BlobBackend::write_batch`](crate::backend::BlobBackend::write_batch) (one write, one `fdatasync` with
//! fsync durability) and one index append for all of them.
//!
//! At most one batch is between its pack write and its index append at any time (the `batch` lock, which
//! compaction takes too): recovery relies on it, since a record is only looked for past the highest
//! offset the index accounts for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use bytes::Bytes;
use tracing::warn;

use crate::StoreError;
use crate::backend::{BatchItem, Location, Opened, Written};
use crate::index::Entry;
use crate::index_log;
use crate::queue::{Job, PutDone};
use crate::store::{Disk, NewEntry, Store};

/// Pack compaction moves live records this many at a time.
const COMPACT_CHUNK: usize = 256;

#[derive(Default)]
pub(crate) struct GroupCommit {
    /// Held from a batch's pack write to its index append.
    pub(crate) batch: Mutex<()>,
    compacting: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The same failure for every put of a failed batch (`StoreError` is not `Clone`: `io::Error` is not).
fn dup(e: &StoreError) -> StoreError {
    match e {
        StoreError::NoSpace { path } => StoreError::NoSpace { path: path.clone() },
        StoreError::Io { op, path, source } => StoreError::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => StoreError::Corrupt(other.to_string()),
    }
}

impl Store {
    /// Puts one small blob through the writer thread and waits for its batch (blocking).
    pub(crate) fn put_grouped(
        &self,
        key: &[u8],
        body: Bytes,
        hot: Option<Bytes>,
    ) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.enqueue(
            Job {
                key: key.into(),
                body,
                hot,
                done: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            },
            true,
        );
        let r = rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Corrupt(
                "the store's writer thread ended without an answer".into(),
            ))
        });
        self.maybe_compact_packs();
        r.map(|_| ())
    }

    /// Writes one batch and commits it; returns each put's callback and result, in order.
    pub(crate) fn run_batch(&self, jobs: Vec<Job>) -> (Vec<PutDone>, Vec<Result<(), StoreError>>) {
        let disk = self
            .inner
            .disk
            .as_ref()
            .expect("group commit needs a disk tier");
        let mut dones = Vec::with_capacity(jobs.len());
        let mut parts = Vec::with_capacity(jobs.len());
        for j in jobs {
            dones.push(j.done);
            parts.push((j.key, j.body, j.hot));
        }
        let n = parts.len();
        let res = self.write_and_commit(disk, parts);
        let results = match res {
            Ok(()) => (0..n).map(|_| Ok(())).collect(),
            Err(e) => (0..n).map(|_| Err(dup(&e))).collect(),
        };
        (dones, results)
    }

    /// Writes one put in the calling thread as a batch of its own, if no batch or compaction holds the batch
    /// lock, the record goes into the open pack, and the disk budget has room for it; otherwise gives the job
    /// back untouched (the caller queues it for the writer thread). With fast durability and an idle writer
    /// this is the put the writer would have taken alone, minus the two thread hand-offs (to the writer and
    /// back) that cost more than its `pwrite` into the page cache. Creating a pack or evicting (unlinking
    /// files) is left to the writer thread: the caller may be an async runtime's thread.
    pub(crate) fn try_write_alone(
        &self,
        job: Job,
    ) -> Result<(PutDone, Result<(), StoreError>), Job> {
        let guard = match self.inner.group.batch.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(job),
        };
        let disk = self
            .inner
            .disk
            .as_ref()
            .expect("group commit needs a disk tier");
        let stored = disk
            .backend
            .stored_len(job.key.len(), job.body.len() as u64);
        let budget = self.inner.cfg.disk_budget;
        let room = budget == 0 || self.inner.disk_used.load(Ordering::Relaxed) + stored <= budget;
        if !room || !disk.backend.appends_in_place(stored) {
            return Err(job);
        }
        let Job {
            key,
            body,
            hot,
            done,
        } = job;
        // The batch lock before the writer lock (alloc_id), as in every batch.
        let r = self
            .alloc_id(disk)
            .and_then(|id| self.write_locked(disk, vec![(key, body, hot)], vec![id], guard));
        Ok((done, r))
    }

    fn write_and_commit(
        &self,
        disk: &Disk,
        parts: Vec<(Box<[u8]>, Bytes, Option<Bytes>)>,
    ) -> Result<(), StoreError> {
        let ids = parts
            .iter()
            .map(|_| self.alloc_id(disk))
            .collect::<Result<Vec<u64>, _>>()?;
        let batch = lock(&self.inner.group.batch);
        self.write_locked(disk, parts, ids, batch)
    }

    /// The batch's pack write, index append and commit, under the batch lock (`_batch`).
    fn write_locked(
        &self,
        disk: &Disk,
        parts: Vec<(Box<[u8]>, Bytes, Option<Bytes>)>,
        ids: Vec<u64>,
        _batch: MutexGuard<'_, ()>,
    ) -> Result<(), StoreError> {
        self.inner.counters.batches.fetch_add(1, Ordering::Relaxed);
        let need = parts
            .iter()
            .map(|(k, b, _)| disk.backend.stored_len(k.len(), b.len() as u64))
            .sum();
        let written = self.retry_on_full(need, || {
            let items: Vec<BatchItem<'_>> = parts
                .iter()
                .zip(&ids)
                .map(|((key, body, _), id)| BatchItem {
                    id: *id,
                    key,
                    body,
                    copy: false,
                })
                .collect();
            disk.backend.write_batch(&items)
        })?;
        let news = parts
            .into_iter()
            .zip(written)
            .map(|((key, body, hot), w)| NewEntry {
                size: body.len() as u64,
                key,
                loc: Some(w.loc),
                checksum: w.checksum,
                hot,
            })
            .collect();
        self.commit_many(news)
    }

    /// Compacts every pack the backend offers (one caller at a time; others return at once). Failures are
    /// logged and retried on a later call.
    pub(crate) fn maybe_compact_packs(&self) {
        let Some(disk) = &self.inner.disk else { return };
        let g = &self.inner.group;
        if disk.backend.compaction_candidate().is_none()
            || g.compacting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        while let Some(pack) = disk.backend.compaction_candidate() {
            if let Err(e) = self.compact_pack(disk, pack) {
                warn!(store = %self.inner.cfg.name, pack, "pack compaction failed (will retry later): {e}");
                break;
            }
        }
        g.compacting.store(false, Ordering::Release);
    }

    /// Compacts all packs worth it now (blocking); for tests, tools and the bench. Returns how many.
    pub fn compact_packs(&self) -> u64 {
        let Some(disk) = &self.inner.disk else {
            return 0;
        };
        let mut n = 0;
        while let Some(pack) = disk.backend.compaction_candidate() {
            if self.compact_pack(disk, pack).is_err() {
                break;
            }
            n += 1;
        }
        n
    }

    /// Moves the live records of `pack` to the active pack, then deletes it. The new Puts are in the log
    /// before the pack goes, so a crash in between leaves both copies, never neither.
    fn compact_pack(&self, disk: &Disk, pack: u64) -> Result<(), StoreError> {
        let mut live: Vec<(Box<[u8]>, Arc<Entry>)> = Vec::new();
        for s in self.inner.index.each_shard() {
            for (k, e) in s.iter() {
                if matches!(e.loc, Some(Location::Pack { pack: p, .. }) if p == pack) {
                    live.push((k.into(), e.clone()));
                }
            }
        }
        for chunk in live.chunks(COMPACT_CHUNK) {
            let mut moving = Vec::with_capacity(chunk.len());
            for (k, e) in chunk {
                if let Some(body) = self.read_packed(disk, k, e)? {
                    moving.push((k, e, body, self.alloc_id(disk)?));
                }
            }
            let _batch = lock(&self.inner.group.batch);
            let items: Vec<BatchItem<'_>> = moving
                .iter()
                .map(|(k, _, b, id)| BatchItem {
                    id: *id,
                    key: k,
                    body: b,
                    copy: true,
                })
                .collect();
            let written = disk.backend.write_batch(&items)?;
            let moved = moving.iter().map(|(k, e, _, _)| (&***k, *e)).zip(written);
            self.commit_moved(disk, moved.collect())?;
        }
        // With fsync durability the copies' index records must be on disk before the originals go.
        if self.inner.cfg.durability == crate::Durability::Fsync
            && let Some(log) = self.writer().log.as_mut()
        {
            log.sync()?;
        }
        disk.backend.drop_pack(pack);
        Ok(())
    }

    /// A packed blob's body, verified; `None` when it is gone or damaged (then dropped and counted).
    fn read_packed(
        &self,
        disk: &Disk,
        key: &[u8],
        e: &Arc<Entry>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(loc) = e.loc else { return Ok(None) };
        let mut r = match disk.backend.open(loc, key, e.size)? {
            Opened::Ready(r) => r,
            Opened::Missing => return Ok(None),
            Opened::Damaged(why) => {
                self.drop_corrupt(key, e, why);
                return Ok(None);
            }
        };
        let mut body = vec![0u8; e.size as usize];
        match r.read_body(&mut body).and_then(|()| r.verify(e.checksum())) {
            Ok(()) => Ok(Some(body)),
            Err(StoreError::Corrupt(why)) => {
                self.drop_corrupt(key, e, &why);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Points each moved key at its new record if it still maps to the entry that was moved (its Put goes
    /// to the log only then: a Put for a key changed meanwhile would win over the newer value at replay);
    /// the records of keys that changed are dead at once.
    fn commit_moved(
        &self,
        disk: &Disk,
        moved: Vec<(Moving<'_>, Written)>,
    ) -> Result<(), StoreError> {
        let mut w = self.writer();
        let (keep, stale): (Vec<_>, Vec<_>) = moved
            .into_iter()
            .partition(|((k, e), _)| self.find(k).is_some_and(|cur| Arc::ptr_eq(&cur, e)));
        for ((k, e), wr) in &stale {
            disk.backend
                .remove(wr.loc, disk.backend.stored_len_at(wr.loc, k.len(), e.size));
        }
        let recs: Vec<_> = keep
            .iter()
            .map(|((k, e), wr)| index_log::put_record(k, wr.loc, e.size, wr.checksum))
            .collect();
        if let Some(log) = w.log.as_mut()
            && !recs.is_empty()
            && let Err(e) = log.append_many(&recs)
        {
            for ((k, e), wr) in &keep {
                disk.backend
                    .remove(wr.loc, disk.backend.stored_len_at(wr.loc, k.len(), e.size));
            }
            return Err(e);
        }
        for ((k, old), wr) in keep {
            let tick = old.tick.load(Ordering::Relaxed);
            let hot = old.mark_removed().map(|b| *b);
            let new = Entry::new(k, old.size, Some(wr.loc), wr.checksum, tick, hot);
            self.inner.index.replace_if(old, new);
        }
        Ok(())
    }
}

/// A key and the entry whose record compaction moved.
type Moving<'a> = (&'a [u8], &'a Arc<Entry>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    /// Puts that arrive while a batch is being written form the next batch, all of them together.
    #[test]
    fn puts_waiting_behind_a_batch_are_written_as_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(StoreConfig::on_disk("g", tmp.path(), 1 << 20)).unwrap();
        let held = lock(&s.inner.group.batch);
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || s.put(&[i], Bytes::from(vec![i; 4096])).unwrap())
            })
            .collect();
        // The writer takes what is queued and waits for the batch lock; the rest queue behind it.
        let taken = loop {
            let st = s.inner.queue.0.state();
            if st.in_flight > 0 && st.in_flight + st.jobs.len() == 8 {
                break st.in_flight;
            }
            drop(st);
            std::thread::yield_now();
        };
        drop(held);
        for t in threads {
            assert!(t.join().unwrap());
        }
        let batches = if taken == 8 { 1 } else { 2 };
        assert_eq!(s.inner.counters.batches.load(Ordering::Relaxed), batches);
        for i in 0..8u8 {
            assert_eq!(s.get(&[i]).unwrap().unwrap(), vec![i; 4096]);
        }
        let packs = std::fs::read_dir(tmp.path().join("packs")).unwrap().count();
        assert_eq!(packs, 1, "both batches went to one pack");
    }
}
