//! Opening a store and cleaning up after earlier runs: index replay, recovery from a damaged index before
//! serving, trimming to the disk budget, and the sweep that adopts or removes blobs the index does not name.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{info, warn};

use crate::backend::packs::PackBackend;
use crate::backend::{BlobBackend, Found, Location, Recovered};
use crate::format::RecordRef;
use crate::format::pack::record_len;
use crate::index::Index;
use crate::index_log::IndexLog;
use crate::load::{self, Loader, Totals};
use crate::stats::Counters;
use crate::store::{BlobIds, Disk, Inner, NewEntry, OpenReport, Store, SweepReport, Writer};
use crate::{Durability, StoreConfig, StoreError};

/// What opening the disk tier produced.
struct OpenedDisk {
    disk: Disk,
    log: IndexLog,
    /// Entries may be missing from the index: recover them from the blobs before serving.
    damaged_mid_log: bool,
    /// The log is format v1: rewrite it as v2 before serving.
    v1: bool,
    /// What replay learnt about packs, for their recovery.
    packs: PackReplay,
    /// Totals over the replayed index.
    totals: Totals,
}

/// Per pack, the end of what the log accounts for (recovery looks for records past it), and the records
/// the log says were removed.
#[derive(Default, Clone)]
struct PackReplay {
    marks: HashMap<u64, u32>,
    removed: HashSet<Location>,
}

/// Orphans found by a sweep: the newest verified blob per unindexed key, and the rest (to remove).
#[derive(Default)]
struct Orphans {
    newest: HashMap<Vec<u8>, (Location, Found)>,
    losers: Vec<Location>,
}

impl Store {
    /// Opens a store: creates its directories, replays the index log (never reading blob bodies) and trims
    /// to the disk budget.
    pub fn open(cfg: StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        let t0 = Instant::now();
        let index = Index::new(cfg.key_hasher);
        let mut report = OpenReport::default();
        let opened = match &cfg.dir {
            None => None,
            Some(dir) => Some(open_disk(dir, &cfg, &index, &mut report)?),
        };
        let damaged_mid_log = opened.as_ref().is_some_and(|o| o.damaged_mid_log);
        let v1 = opened.as_ref().is_some_and(|o| o.v1);
        let packs = opened.as_ref().map(|o| {
            (
                o.packs.clone(),
                o.totals.pack_live.clone().into_iter().collect(),
            )
        });
        let store = Store::assemble(cfg, index, opened);
        if v1 {
            // Migration of a v1 directory: its blob files are read as they are; only the log is rewritten
            // (as v2) before anything is appended to it.
            store.compact()?;
        }
        if let Some((packs, live)) = packs {
            store.recover_packs(&packs, &live, damaged_mid_log, &mut report)?;
        }
        report.entries = store.inner.entries.load(Ordering::Relaxed);
        report.bytes_on_disk = store.inner.disk_used.load(Ordering::Relaxed);
        report.index_load_time = t0.elapsed();
        if damaged_mid_log {
            // Entries may be missing from the index: recover them from the blob files before serving, then
            // write a clean log.
            report.recovered = Some(store.sweep_files(true));
            store.compact()?;
            report.entries = store.inner.entries.load(Ordering::Relaxed);
            report.bytes_on_disk = store.inner.disk_used.load(Ordering::Relaxed);
        }
        report.trimmed_at_start = store.trim_at_start();
        store.maybe_compact_packs();
        Ok((store, report))
    }

    /// Finds pack records the log does not account for (written, then the log lost them or never got
    /// them), adopting them before serving: a record past the log's marks was written after everything
    /// the log holds, so it wins over an indexed value of its key. With a damaged log (`damaged`), the
    /// marks may be too low or lost, so every record is looked at: one before its pack's mark is adopted
    /// only for a key the index lost, newest per key, and never when the log says it was removed.
    fn recover_packs(
        &self,
        replay: &PackReplay,
        live: &HashMap<u64, u64>,
        damaged: bool,
        report: &mut OpenReport,
    ) -> Result<(), StoreError> {
        let Some(disk) = &self.inner.disk else {
            return Ok(());
        };
        // `live` was counted while the index loaded (a pass over a million entries here cost 9% of start-up).
        let rec = disk.backend.recover_packs(&replay.marks, live, damaged)?;
        report.pack_bytes_truncated = rec.truncated_bytes;
        let past_mark = |loc: &Location| match loc {
            Location::Pack { pack, offset } => replay.marks.get(pack).is_none_or(|m| offset >= m),
            Location::File { .. } => false,
        };
        // Before-mark candidates (damaged log only): the newest per key, later ones replacing earlier.
        let mut lost: HashMap<Vec<u8>, Recovered> = HashMap::new();
        let mut adopt = Vec::new();
        for r in rec.found {
            if past_mark(&r.loc) {
                // Newer than everything the log holds, unless it is a compaction copy (its original is
                // indexed, or was removed), or the log was damaged and its key is indexed at a later place.
                let newer_indexed = self
                    .find(&r.key)
                    .is_some_and(|e| matches!(e.loc, Some(l @ Location::Pack { .. }) if l > r.loc));
                if !r.copy && !newer_indexed {
                    adopt.push(r);
                }
            } else if !replay.removed.contains(&r.loc) && self.find(&r.key).is_none() {
                lost.insert(r.key.clone(), r);
            }
        }
        adopt.extend(lost.into_values());
        adopt.sort_unstable_by_key(|r| r.loc);
        // What is not adopted stays dead (compaction reclaims it); records the index names are untouched.
        let mut news = Vec::new();
        for r in adopt.into_iter().filter(|r| self.fits(&r.key, r.body_len)) {
            disk.backend
                .revive(r.loc, record_len(r.key.len(), r.body_len));
            news.push(NewEntry {
                key: r.key.into_boxed_slice(),
                size: r.body_len,
                loc: Some(r.loc),
                checksum: r.checksum,
                hot: None,
            });
        }
        report.pack_records_recovered = news.len() as u64;
        if !news.is_empty() {
            info!(store = %self.inner.cfg.name, records = news.len(), "adopted pack records the index did not name");
            self.commit_many(news)?;
            report.entries = self.inner.entries.load(Ordering::Relaxed);
            report.bytes_on_disk = self.inner.disk_used.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// The store around a replayed index, with the totals its load counted. Recency is the blob-id order
    /// (ids grow with time), so the clock starts above every replayed id.
    fn assemble(cfg: StoreConfig, index: Index, opened: Option<OpenedDisk>) -> Store {
        let (disk, log, totals) = match opened {
            Some(o) => (Some(o.disk), Some(o.log), o.totals),
            None => (None, None, Totals::default()),
        };
        let Totals {
            entries,
            disk_used,
            live_log_bytes,
            ..
        } = totals;
        let first = disk.as_ref().map_or(1, |d| d.ids.first_session);
        Store {
            inner: Arc::new(Inner {
                index,
                clock: AtomicU64::new(first),
                mem_used: AtomicU64::new(0),
                disk_used: AtomicU64::new(disk_used),
                entries: AtomicU64::new(entries),
                entries_mem: AtomicU64::new(0),
                counters: Counters::default(),
                disk,
                writer: Mutex::new(Writer {
                    log,
                    live_log_bytes,
                    disk_victims: VecDeque::new(),
                }),
                mem_victims: Mutex::new(VecDeque::new()),
                group: Default::default(),
                queue: Default::default(),
                cfg,
            }),
        }
    }

    /// Evicts at once what exceeds a disk budget that shrank since the last run; returns how many.
    fn trim_at_start(&self) -> u64 {
        let mut w = self.writer();
        let before = self.inner.counters.evictions.load(Ordering::Relaxed);
        self.evict_disk_locked(&mut w);
        self.inner.counters.evictions.load(Ordering::Relaxed) - before
    }

    /// Cleans the disk tier of what the index does not name (blocking; the daemon runs it in the background
    /// after it starts serving): removes temp files of earlier runs and symlinks, adopts complete blob files
    /// the index lost (newest per key, only for keys not indexed), removes other unindexed blob files, and
    /// skips unknown files (counted). Files written by this run are never touched.
    pub fn sweep(&self) -> SweepReport {
        self.sweep_files(false)
    }

    /// `before_serving`: no blob of this run exists yet, so every one is examined (recovery from a damaged
    /// index, whose Reserve records may be lost too).
    pub(crate) fn sweep_files(&self, before_serving: bool) -> SweepReport {
        let mut rep = SweepReport::default();
        let Some(disk) = &self.inner.disk else {
            return rep;
        };
        let own_from = (!before_serving).then_some(disk.ids.first_session);
        let scan = disk.backend.scan(own_from, &mut rep);
        // The scan lists blob files only: packed entries (most of a large index) need not be collected, and
        // with no blob file to look up (a store of small blobs) nothing is: that pass visits every entry,
        // on a core the first requests after start-up need.
        let indexed: HashSet<Location> = if scan.blobs.is_empty() {
            HashSet::new()
        } else {
            self.inner
                .index
                .each_shard()
                .flat_map(|s| {
                    s.values()
                        .filter_map(|e| e.loc.filter(|l| matches!(l, Location::File { .. })))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let unindexed = scan.blobs.into_iter().filter(|l| !indexed.contains(l));
        let orphans = self.sort_orphans(disk, unindexed);
        if before_serving {
            disk.ids.ensure_above(scan.max_id);
        }
        for loc in orphans.losers {
            disk.backend.remove(loc, 0);
            rep.orphans_removed += 1;
        }
        self.adopt_orphans(disk, orphans.newest, &mut rep);
        if rep.temp_files_removed
            + rep.orphans_adopted
            + rep.orphans_removed
            + rep.unknown_skipped
            + rep.symlinks_removed
            > 0
        {
            info!(store = %self.inner.cfg.name, ?rep, "cache directory swept");
        }
        rep
    }

    /// Verifies each unindexed blob and keeps the newest per key whose key is not indexed; the rest lose.
    fn sort_orphans(&self, disk: &Disk, blobs: impl Iterator<Item = Location>) -> Orphans {
        let mut o = Orphans::default();
        for loc in blobs {
            match disk.backend.inspect(loc) {
                Some(found) if self.find(&found.key).is_none() => {
                    let newer = o.newest.get(&found.key).is_none_or(|(old, _)| *old < loc);
                    if newer {
                        if let Some((old, _)) = o.newest.insert(found.key.clone(), (loc, found)) {
                            o.losers.push(old);
                        }
                    } else {
                        o.losers.push(loc);
                    }
                }
                Some(_) => o.losers.push(loc),
                None => {
                    // Named like a blob but unreadable or failing its checksum: damage (blobs become
                    // visible only when complete), counted like a damaged entry.
                    self.inner
                        .counters
                        .corrupt_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(store = %self.inner.cfg.name, location = ?loc, "dropped a corrupt unindexed blob");
                    o.losers.push(loc);
                }
            }
        }
        o
    }

    fn adopt_orphans(
        &self,
        disk: &Disk,
        newest: HashMap<Vec<u8>, (Location, Found)>,
        rep: &mut SweepReport,
    ) {
        for (key, (loc, found)) in newest {
            let fits = self.fits(&key, found.body_len);
            if fits && self.adopt(&key, loc, &found) {
                rep.orphans_adopted += 1;
            } else {
                disk.backend.remove(loc, 0);
                rep.orphans_removed += 1;
            }
        }
    }

    /// Indexes a complete blob found on disk, unless the key got a value meanwhile.
    fn adopt(&self, key: &[u8], loc: Location, found: &Found) -> bool {
        if self.find(key).is_some() {
            return false;
        }
        self.commit(key, found.body_len, Some(loc), found.checksum, None)
            .is_ok()
    }
}

/// Opens the backend and replays the index log into `index` ([`Loader`]: entries are made as records are
/// read, then loaded shard by shard on a few threads).
fn open_disk(
    dir: &Path,
    cfg: &StoreConfig,
    index: &Index,
    report: &mut OpenReport,
) -> Result<OpenedDisk, StoreError> {
    let fsync = cfg.durability == Durability::Fsync;
    let backend = PackBackend::open(dir, fsync, cfg.pack_max_blob, cfg.pack_size)?;
    // Ids of earlier runs are all below every Put and Reserve they recorded (pack ids are blob ids).
    let mut first = 1u64;
    let mut packs = PackReplay::default();
    // Records come in runs of one pack: the last pack's mark is kept aside, so most records cost a compare
    // rather than a hash-map update.
    let mut last: Option<(u64, u32)> = None;
    let mut mark = |pack: u64, end: u64| {
        let end = end.min(u64::from(u32::MAX)) as u32;
        match &mut last {
            Some((p, m)) if *p == pack => *m = (*m).max(end),
            _ => {
                if let Some((p, m)) = last.replace((pack, end)) {
                    let e = packs.marks.entry(p).or_default();
                    *e = (*e).max(m);
                }
            }
        }
    };
    let mut removed = HashSet::new();
    let stored_len = |loc, key_len, size| backend.stored_len_at(loc, key_len, size);
    let mut loader = Loader::new(index, &stored_len);
    let (log, replay) = IndexLog::open(dir, fsync, |rec| {
        first = first.max(match &rec {
            RecordRef::Put { file_id, .. } => file_id.saturating_add(1),
            RecordRef::Reserve { up_to } => *up_to,
            RecordRef::PutPack { pack, .. } | RecordRef::PackEnd { pack, .. } => {
                pack.saturating_add(1)
            }
            RecordRef::Del { .. } | RecordRef::DelPack { .. } => 0,
        });
        match &rec {
            RecordRef::PutPack {
                key,
                pack,
                offset,
                body_len,
                ..
            } => mark(*pack, u64::from(*offset) + record_len(key.len(), *body_len)),
            RecordRef::DelPack {
                pack, offset, len, ..
            } => {
                mark(*pack, u64::from(*offset) + u64::from(*len));
                removed.insert(Location::Pack {
                    pack: *pack,
                    offset: *offset,
                });
            }
            RecordRef::PackEnd { pack, end } => mark(*pack, u64::from(*end)),
            _ => {}
        }
        loader.add(rec);
    })?;
    // The log's bytes are freed by now: the load's peak memory is the index and the shards' lists.
    let totals = loader.finish(load::load_threads());
    if let Some((p, m)) = last {
        let e = packs.marks.entry(p).or_default();
        *e = (*e).max(m);
    }
    report.damaged_index_bytes = replay.damaged_bytes;
    if replay.damaged_bytes > 0 {
        warn!(
            store = %cfg.name,
            "index log {}: {} damaged byte(s) skipped",
            IndexLog::path(dir).display(),
            replay.damaged_bytes
        );
    }
    Ok(OpenedDisk {
        disk: Disk {
            backend: Box::new(backend),
            ids: BlobIds::starting_at(first),
        },
        log,
        damaged_mid_log: replay.damaged_mid_log,
        v1: replay.v1,
        packs: PackReplay { removed, ..packs },
        totals,
    })
}
