//! The pack backend (format v2): blobs up to a threshold are appended, a batch at a time, to the active
//! pack `packs/<id>.pack` (byte layout in [`crate::format::pack`]); larger blobs and streamed puts go to a
//! [`FileBackend`], one file each, as in v1.
//!
//! One batch is one `pwrite` of the batch's records joined in one buffer at the pack's end (the copy is of
//! small blobs only, and one syscall either way), plus one `fdatasync` with fsync durability. A pack is
//! sealed once it holds `pack_size` bytes; the next batch starts a new one (fsyncing the directory with
//! fsync durability). A failed write cuts the pack back to where the batch began, so a failed batch leaves
//! no record behind for recovery to find.
//!
//! Packs are not preallocated (`fallocate`): a preallocated pack counts whole against the disk from its
//! first record, which the disk budget and a nearly full disk would both feel, and on ext4/XFS the first
//! write into a preallocated (unwritten) extent still needs a metadata update that `fdatasync` commits, so
//! the fsync path would not gain from it.
//!
//! Reads are positioned (`pread`) into a buffer of exactly the record's length: no file position is
//! shared, so any number of threads read one pack at once, and there is no mmap (a page fault would stall
//! an async runtime thread). Every read checks the magic, both lengths, the full key and the checksum.
//!
//! Space: each pack tracks its live bytes (records the index uses); a removed or replaced record's bytes
//! are dead, and the whole filesystem blocks inside them are freed at once by punching a hole (Linux
//! `fallocate(PUNCH_HOLE)`; elsewhere they wait for compaction), so an eviction makes room on a full disk
//! even before its pack is compacted. A sealed pack is offered for compaction when half of it is dead, or when the dead bytes of
//! all packs pass one pack's size (then the pack with the most dead bytes), so dead bytes stay within
//! about one pack.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tracing::warn;

use super::files::{FileBackend, ensure_real_dir};
use super::{
    BatchItem, BlobBackend, BlobRead, BlobSink, Found, Location, Opened, PackRecovery, Recovered,
    Scan, Written,
};
use crate::format::pack::{
    self, MAX_PACKED_BODY, PACK_HEADER_LEN, RECORD_HEADER_LEN, encode_pack_header,
    encode_record_as, parse_record, record_len, scan_records, scan_records_resync,
};
use crate::{StoreError, SweepReport, platform};

/// Largest pack: offsets are `u32`, and a batch may overrun `pack_size` by its own size.
const MAX_PACK_SIZE: u64 = 1 << 30;

pub(crate) struct PackBackend {
    files: FileBackend,
    dir: PathBuf,
    fsync: bool,
    /// Blobs up to this many bytes go into packs; 0 = none do (every blob gets a file, as in v1).
    max_blob: u64,
    pack_size: u64,
    /// The pack being appended to. Its lock is held for a whole batch write: one batch at a time.
    active: Mutex<Option<Arc<Pack>>>,
    packs: RwLock<HashMap<u64, Arc<Pack>>>,
}

struct Pack {
    id: u64,
    file: File,
    path: PathBuf,
    /// Where the next record goes: the end of the data.
    end: AtomicU64,
    /// Bytes of records the index uses.
    live: AtomicU64,
    sealed: AtomicBool,
}

impl Pack {
    fn data_len(&self) -> u64 {
        self.end
            .load(Ordering::Relaxed)
            .saturating_sub(PACK_HEADER_LEN as u64)
    }

    fn dead(&self) -> u64 {
        self.data_len()
            .saturating_sub(self.live.load(Ordering::Relaxed))
    }
}

impl PackBackend {
    pub fn open(
        dir: &Path,
        fsync: bool,
        max_blob: u64,
        pack_size: u64,
    ) -> Result<Self, StoreError> {
        let files = FileBackend::open(dir, fsync)?;
        let packs_dir = dir.join("packs");
        ensure_real_dir(&packs_dir)?;
        Ok(PackBackend {
            files,
            dir: packs_dir,
            fsync,
            max_blob: max_blob.min(MAX_PACKED_BODY),
            pack_size: pack_size.clamp(PACK_HEADER_LEN as u64 + 1, MAX_PACK_SIZE),
            active: Mutex::new(None),
            packs: RwLock::new(HashMap::new()),
        })
    }

    fn pack(&self, id: u64) -> Option<Arc<Pack>> {
        self.packs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Creates pack `id` with its header (and, with fsync durability, makes it and its name durable).
    fn create_pack(&self, id: u64) -> Result<Arc<Pack>, StoreError> {
        let path = self.dir.join(pack::pack_file_name(id));
        let file = platform::open_no_follow(
            platform::owner_only(OpenOptions::new().read(true).write(true).create_new(true)),
            &path,
        )
        .map_err(|e| StoreError::io("create", &path, e))?;
        let res = platform::write_all_at(&file, &encode_pack_header(id), 0).and_then(|()| {
            if self.fsync {
                file.sync_data()?;
            }
            Ok(())
        });
        if let Err(e) = res {
            let _ = std::fs::remove_file(&path);
            return Err(StoreError::io("write", &path, e));
        }
        if self.fsync {
            platform::sync_dir(&self.dir);
        }
        let p = Arc::new(Pack {
            id,
            file,
            path,
            end: AtomicU64::new(PACK_HEADER_LEN as u64),
            live: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
        });
        self.packs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, p.clone());
        Ok(p)
    }

    /// The pack a batch of `len` bytes goes to: the active one if it has room (or is empty), else a new
    /// one (the old one is sealed).
    fn pack_for(
        &self,
        active: &mut Option<Arc<Pack>>,
        len: u64,
        new_id: u64,
    ) -> Result<Arc<Pack>, StoreError> {
        if let Some(p) = active.as_ref() {
            let end = p.end.load(Ordering::Relaxed);
            if end + len <= self.pack_size || end == PACK_HEADER_LEN as u64 {
                return Ok(p.clone());
            }
            p.sealed.store(true, Ordering::Relaxed);
        }
        *active = None;
        let p = self.create_pack(new_id)?;
        *active = Some(p.clone());
        Ok(p)
    }

    /// Opens one pack file found at recovery and scans it past `mark`.
    fn recover_one(
        &self,
        id: u64,
        path: PathBuf,
        mark: u64,
        damaged: bool,
        out: &mut PackRecovery,
    ) -> Result<Option<Arc<Pack>>, StoreError> {
        let file = match platform::open_no_follow(OpenOptions::new().read(true).write(true), &path)
        {
            Ok(f) => f,
            Err(e) if platform::is_symlink_refused(&e) => {
                warn!("removing planted symlink {}", path.display());
                let _ = std::fs::remove_file(&path);
                return Ok(None);
            }
            Err(e) => return Err(StoreError::io("open", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("inspect", &path, e))?
            .len();
        let mut head = [0u8; PACK_HEADER_LEN];
        let header_ok = len >= PACK_HEADER_LEN as u64
            && platform::read_exact_at(&file, &mut head, 0).is_ok()
            && pack::decode_pack_header(&head) == Ok(id);
        if !header_ok {
            // Cut short while being created (nothing was appended before its header was whole), or
            // damaged: records in it that the index names fail their own checks when read.
            if len < PACK_HEADER_LEN as u64 {
                let _ = std::fs::remove_file(&path);
                return Ok(None);
            }
            warn!("{}: damaged pack header; not scanned", path.display());
        }
        let header = PACK_HEADER_LEN as u64;
        let start = if damaged { header } else { mark.max(header) };
        let end = if header_ok && start < len {
            let tail = Tail {
                id,
                file: &file,
                path: &path,
                start,
                mark,
                len,
            };
            tail.scan(damaged, out)?
        } else {
            len
        };
        Ok(Some(Arc::new(Pack {
            id,
            file,
            path,
            end: AtomicU64::new(end),
            live: AtomicU64::new(0),
            sealed: AtomicBool::new(true),
        })))
    }
}

/// The part of a pack recovery reads: from `start` (its mark, or its header when the index is damaged) to
/// the file's end.
struct Tail<'a> {
    id: u64,
    file: &'a File,
    path: &'a Path,
    start: u64,
    mark: u64,
    len: u64,
}

impl Tail<'_> {
    /// Adds the whole records found to `out`, cuts what follows the last good one (never before the mark),
    /// and returns where the pack's data now ends.
    fn scan(&self, damaged: bool, out: &mut PackRecovery) -> Result<u64, StoreError> {
        let mut data = vec![0u8; (self.len - self.start) as usize];
        platform::read_exact_at(self.file, &mut data, self.start)
            .map_err(|e| StoreError::io("read", self.path, e))?;
        let (recs, good) = if damaged {
            let recs = scan_records_resync(&data, 0);
            let good = recs.last().map_or(0, |(off, r)| {
                off + record_len(r.key.len(), r.body.len() as u64) as usize
            });
            // Only a tail past the mark is cut: before it lie records the index still names.
            let good = good
                .max(self.mark.saturating_sub(self.start) as usize)
                .min(data.len());
            (recs, good)
        } else {
            scan_records(&data, 0)
        };
        for (off, r) in recs {
            out.found.push(Recovered {
                key: r.key.to_vec(),
                loc: Location::Pack {
                    pack: self.id,
                    offset: (self.start + off as u64) as u32,
                },
                body_len: r.body.len() as u64,
                checksum: r.checksum,
                copy: r.copy,
            });
        }
        if good == data.len() {
            return Ok(self.len);
        }
        let end = self.start + good as u64;
        out.truncated_bytes += self.len - end;
        warn!(
            "{}: cut {} byte(s) of torn or damaged records at offset {end}",
            self.path.display(),
            self.len - end
        );
        self.file
            .set_len(end)
            .map_err(|e| StoreError::io("truncate", self.path, e))?;
        Ok(end)
    }
}

impl BlobBackend for PackBackend {
    fn stored_len(&self, key_len: usize, body_len: u64) -> u64 {
        if self.batches(body_len) {
            record_len(key_len, body_len)
        } else {
            self.files.stored_len(key_len, body_len)
        }
    }

    fn write(&self, id: u64, key: &[u8], body: &[u8]) -> Result<Written, StoreError> {
        if self.batches(body.len() as u64) {
            let w = self.write_batch(&[BatchItem {
                id,
                key,
                body,
                copy: false,
            }])?;
            return Ok(w[0]);
        }
        self.files.write(id, key, body)
    }

    fn begin(&self, id: u64, key: &[u8], body_len: u64) -> Result<Box<dyn BlobSink>, StoreError> {
        self.files.begin(id, key, body_len)
    }

    fn open(&self, loc: Location, key: &[u8], body_len: u64) -> Result<Opened, StoreError> {
        let Location::Pack { pack, offset } = loc else {
            return self.files.open(loc, key, body_len);
        };
        let Some(p) = self.pack(pack) else {
            return Ok(Opened::Missing);
        };
        if body_len > MAX_PACKED_BODY {
            return Ok(Opened::Damaged(
                "index names a packed blob too large for a pack",
            ));
        }
        let mut buf = vec![0u8; record_len(key.len(), body_len) as usize];
        match platform::read_exact_at(&p.file, &mut buf, u64::from(offset)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(Opened::Damaged("pack record cut short"));
            }
            Err(e) => return Err(StoreError::io("read", &p.path, e)),
        }
        let checksum = match parse_record(&buf) {
            Ok((r, n)) if n == buf.len() && r.key == key && r.body.len() as u64 == body_len => {
                r.checksum
            }
            _ => {
                return Ok(Opened::Damaged(
                    "pack record does not verify or match the index",
                ));
            }
        };
        let start = RECORD_HEADER_LEN + key.len();
        Ok(Opened::Ready(Box::new(RecordReader {
            buf,
            pos: start,
            body_end: start + body_len as usize,
            checksum,
        })))
    }

    fn remove(&self, loc: Location, stored: u64) {
        match loc {
            Location::Pack { pack, offset } => {
                if let Some(p) = self.pack(pack) {
                    let _ = p
                        .live
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                            Some(v.saturating_sub(stored))
                        });
                    // The blocks go back to the filesystem at once (a full disk gets room from an
                    // eviction); offsets stay, and compaction later reclaims the rest of the pack.
                    platform::punch_hole(&p.file, u64::from(offset), stored);
                }
            }
            Location::File { .. } => self.files.remove(loc, stored),
        }
    }

    fn scan(&self, own_from: Option<u64>, report: &mut SweepReport) -> Scan {
        self.files.scan(own_from, report)
    }

    fn inspect(&self, loc: Location) -> Option<Found> {
        self.files.inspect(loc)
    }

    fn path(&self, loc: Location) -> Option<PathBuf> {
        match loc {
            Location::Pack { pack, .. } => Some(self.dir.join(pack::pack_file_name(pack))),
            Location::File { .. } => self.files.path(loc),
        }
    }

    fn batches(&self, body_len: u64) -> bool {
        body_len <= self.max_blob
    }

    fn write_batch(&self, items: &[BatchItem<'_>]) -> Result<Vec<Written>, StoreError> {
        let Some(first) = items.first() else {
            return Ok(Vec::new());
        };
        let total: u64 = items
            .iter()
            .map(|i| record_len(i.key.len(), i.body.len() as u64))
            .sum();
        let mut buf = Vec::with_capacity(total as usize);
        let mut at = Vec::with_capacity(items.len());
        for i in items {
            let off = buf.len() as u64;
            at.push((off, encode_record_as(i.key, i.body, i.copy, &mut buf)));
        }
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.pack_for(&mut active, total, first.id)?;
        let start = p.end.load(Ordering::Relaxed);
        let res = platform::write_all_at(&p.file, &buf, start).and_then(|()| {
            if self.fsync {
                p.file.sync_data()?;
            }
            Ok(())
        });
        if let Err(e) = res {
            // Nothing of a failed batch may be found by recovery: cut the pack back to where it began.
            let _ = p.file.set_len(start);
            return Err(StoreError::io("write", &p.path, e));
        }
        p.end.store(start + total, Ordering::Relaxed);
        p.live.fetch_add(total, Ordering::Relaxed);
        Ok(at
            .into_iter()
            .map(|(off, checksum)| Written {
                loc: Location::Pack {
                    pack: p.id,
                    offset: (start + off) as u32,
                },
                checksum,
            })
            .collect())
    }

    fn appends_in_place(&self, stored: u64) -> bool {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active
            .as_ref()
            .is_some_and(|p| p.end.load(Ordering::Relaxed) + stored <= self.pack_size)
    }

    fn recover_packs(
        &self,
        marks: &HashMap<u64, u32>,
        live: &HashMap<u64, u64>,
        damaged: bool,
    ) -> Result<PackRecovery, StoreError> {
        let mut out = PackRecovery::default();
        let mut found = Vec::new();
        for ent in std::fs::read_dir(&self.dir)
            .map_err(|e| StoreError::io("list", &self.dir, e))?
            .flatten()
        {
            if let Some(id) = pack::parse_pack_file_name(&ent.file_name().to_string_lossy()) {
                found.push((id, ent.path()));
            }
        }
        found.sort_unstable();
        let mut packs = HashMap::new();
        for (id, path) in found {
            let mark = u64::from(marks.get(&id).copied().unwrap_or(0));
            if let Some(p) = self.recover_one(id, path, mark, damaged, &mut out)? {
                packs.insert(id, p);
            }
        }
        for (pack, bytes) in live {
            if let Some(p) = packs.get(pack) {
                p.live.fetch_add(*bytes, Ordering::Relaxed);
            }
        }
        // Appending goes on in the newest pack, if it has room.
        let newest = packs.values().max_by_key(|p| p.id).cloned();
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        *active = newest.filter(|p| p.end.load(Ordering::Relaxed) < self.pack_size);
        if let Some(p) = active.as_ref() {
            p.sealed.store(false, Ordering::Relaxed);
        }
        *self.packs.write().unwrap_or_else(|e| e.into_inner()) = packs;
        Ok(out)
    }

    fn stored_len_at(&self, loc: Location, key_len: usize, body_len: u64) -> u64 {
        match loc {
            Location::Pack { .. } => record_len(key_len, body_len),
            Location::File { .. } => self.files.stored_len(key_len, body_len),
        }
    }

    fn revive(&self, loc: Location, stored: u64) {
        if let Location::Pack { pack, .. } = loc
            && let Some(p) = self.pack(pack)
        {
            p.live.fetch_add(stored, Ordering::Relaxed);
        }
    }

    fn pack_ends(&self) -> Vec<(u64, u32)> {
        self.packs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|p| (p.id, p.end.load(Ordering::Relaxed) as u32))
            .collect()
    }

    fn compaction_candidate(&self) -> Option<u64> {
        let packs = self.packs.read().unwrap_or_else(|e| e.into_inner());
        let sealed = || packs.values().filter(|p| p.sealed.load(Ordering::Relaxed));
        let half_dead = sealed()
            .filter(|p| p.data_len() > 0 && p.dead() * 2 >= p.data_len())
            .max_by_key(|p| p.dead());
        if let Some(p) = half_dead {
            return Some(p.id);
        }
        let all_dead: u64 = packs.values().map(|p| p.dead()).sum();
        if all_dead > self.pack_size {
            return sealed().max_by_key(|p| p.dead()).map(|p| p.id);
        }
        None
    }

    fn drop_pack(&self, pack: u64) {
        let removed = self
            .packs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pack);
        if let Some(p) = removed {
            if let Err(e) = platform::remove_file(&p.path) {
                warn!("cannot delete {}: {e}", p.path.display());
            }
            if self.fsync {
                platform::sync_dir(&self.dir);
            }
        }
    }

    fn clear_packs(&self) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        *active = None;
        let all: Vec<_> = self
            .packs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in all {
            if let Err(e) = platform::remove_file(&p.path) {
                warn!("cannot delete {}: {e}", p.path.display());
            }
        }
        platform::sync_dir(&self.dir);
    }

    fn dead_bytes(&self) -> u64 {
        self.packs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|p| p.dead())
            .sum()
    }
}

/// A packed blob read whole and verified by [`BlobBackend::open`]; serves its body from the buffer.
struct RecordReader {
    buf: Vec<u8>,
    pos: usize,
    body_end: usize,
    checksum: u128,
}

impl BlobRead for RecordReader {
    fn read_body(&mut self, out: &mut [u8]) -> Result<(), StoreError> {
        let end = self.pos + out.len();
        if end > self.body_end {
            return Err(StoreError::Corrupt("read past a packed blob's body".into()));
        }
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(())
    }

    fn verify(&mut self, expected: u128) -> Result<(), StoreError> {
        if self.pos != self.body_end || self.checksum != expected {
            return Err(StoreError::Corrupt("checksum mismatch".into()));
        }
        Ok(())
    }
}
