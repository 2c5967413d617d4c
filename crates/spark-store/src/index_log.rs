//! The append-only index log: `index.log` = 8-byte magic, then checksummed [`Record`]s. A v1 log is
//! replayed as is; the store rewrites it as v2 before appending to it.
//!
//! Replay stops at nothing: a damaged record is skipped by scanning forward to the next record whose length
//! and checksum hold (a torn tail from a crash is simply cut off). Damage before the tail is reported so the
//! store can recover the lost entries from the blob files themselves.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::backend::Location;
use crate::format::{
    self, INDEX_MAGIC, INDEX_MAGIC_PREFIX, INDEX_MAGIC_V1, MAX_RECORD_LEN, Record, RecordRef,
};
use crate::platform;

pub(crate) struct IndexLog {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    pub len: u64,
    fsync: bool,
    buf: Vec<u8>,
}

/// What replay found (the records themselves go to the caller's closure as they are read).
pub(crate) struct Replay {
    /// Bytes that did not parse (skipped or cut off).
    pub damaged_bytes: u64,
    /// Damage followed by valid records (not just a torn tail): entries may be missing from the index.
    pub damaged_mid_log: bool,
    /// The log is format v1: rewrite it as v2 before appending.
    pub v1: bool,
}

/// The record that says `key` now lives at `loc`: the one place a [`Location`] becomes a log record, so a
/// new kind of location is a new record kind here and nowhere else.
pub(crate) fn put_record(key: &[u8], loc: Location, body_len: u64, checksum: u128) -> Record {
    match loc {
        Location::File { id } => Record::Put {
            key: key.to_vec(),
            file_id: id,
            body_len,
            checksum,
        },
        Location::Pack { pack, offset } => Record::PutPack {
            key: key.to_vec(),
            pack,
            offset,
            body_len,
            checksum,
        },
    }
}

/// Encoded length of [`put_record`]'s record (the store counts its live log bytes by it).
pub(crate) fn put_record_len(key_len: usize, loc: Location) -> u64 {
    match loc {
        Location::File { .. } => format::put_record_len(key_len),
        Location::Pack { .. } => format::put_pack_record_len(key_len),
    }
}

/// The record that says `key` no longer lives at `loc`, which occupied `stored` bytes.
pub(crate) fn del_record(key: &[u8], loc: Location, stored: u64) -> Record {
    match loc {
        Location::File { id } => Record::Del {
            key: key.to_vec(),
            file_id: id,
        },
        Location::Pack { pack, offset } => Record::DelPack {
            key: key.to_vec(),
            pack,
            offset,
            len: stored as u32,
        },
    }
}

/// Whether a record must be on disk before the operation that wrote it is acknowledged, with fsync
/// durability. A Put of a blob file and a Reserve must; a PutPack need not (its pack record was synced,
/// and recovery finds records past the log's marks), nor must removals (the store syncs explicit ones).
fn needs_sync(rec: &Record) -> bool {
    matches!(rec, Record::Put { .. } | Record::Reserve { .. })
}

impl IndexLog {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("index.log")
    }

    /// Opens (creating if needed) and replays the log, handing each record to `apply` in log order (its
    /// key borrowed from the log's bytes: no allocation per record).
    pub fn open(
        dir: &Path,
        fsync: bool,
        apply: impl FnMut(RecordRef<'_>),
    ) -> Result<(IndexLog, Replay), StoreError> {
        let path = Self::path(dir);
        let planted = remove_planted_symlink(&path)?;
        let mut window = Window::open(&path)?;
        let (mut replay, read) = replay_bytes(&path, &mut window, apply)?;
        drop(window);
        replay.damaged_mid_log |= planted;
        let file = open_for_append(&path, &read, &replay, fsync)?;
        let len = file.len;
        Ok((
            IndexLog {
                path,
                file: file.file,
                len,
                fsync,
                buf: Vec::with_capacity(256),
            },
            replay,
        ))
    }

    /// Appends one record; with fsync durability, a Put or Reserve is synced before returning.
    pub fn append(&mut self, rec: &Record) -> Result<(), StoreError> {
        self.append_many(std::slice::from_ref(rec))
    }

    /// Appends records in one write (a batch's Puts); with fsync durability, synced if any needs it.
    pub fn append_many(&mut self, recs: &[Record]) -> Result<(), StoreError> {
        self.buf.clear();
        for rec in recs {
            rec.encode(&mut self.buf);
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            // A partial append would be a torn record in the middle of the log: cut it off again.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(StoreError::io("append to", &self.path, e));
        }
        self.len += self.buf.len() as u64;
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::with_capacity(256);
        }
        if self.fsync && recs.iter().any(needs_sync) {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("fsync", &self.path, e))
    }

    /// Replaces the log with exactly `records` (atomically: temp file, fsync, rename).
    pub fn rewrite(&mut self, records: impl Iterator<Item = Record>) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("log.tmp");
        let mut out = Vec::with_capacity(1 << 20);
        out.extend_from_slice(INDEX_MAGIC);
        for r in records {
            r.encode(&mut out);
        }
        // Never write through whatever is already at the temp path (a planted symlink would redirect the
        // rewrite outside the cache): remove it and create the file afresh.
        let _ = std::fs::remove_file(&tmp);
        let mut f = platform::open_no_follow(
            OpenOptions::new().create_new(true).write(true).read(true),
            &tmp,
        )
        .map_err(|e| StoreError::io("create", &tmp, e))?;
        f.write_all(&out)
            .map_err(|e| StoreError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io("fsync", &tmp, e))?;
        // Windows refuses to rename over a file that is open (Wine always; Windows unless the volume
        // supports POSIX rename semantics), and ours is: close it first. Nothing on disk changes before the
        // rename, so the replacement stays atomic.
        drop(std::mem::replace(&mut self.file, f));
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            // Go on appending to the old log, as if no rewrite had been tried.
            let mut old =
                platform::open_no_follow(OpenOptions::new().read(true).write(true), &self.path)
                    .map_err(|e| StoreError::io("reopen", &self.path, e))?;
            old.seek(SeekFrom::Start(self.len))
                .map_err(|e| StoreError::io("seek", &self.path, e))?;
            self.file = old;
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io("rename", &tmp, e));
        }
        if let Some(dir) = self.path.parent() {
            platform::sync_dir(dir);
        }
        self.len = out.len() as u64;
        Ok(())
    }
}

/// A symlink at the log's path was planted: never read or append through it. Drops it (the index is then
/// rebuilt from the blob files, as for a damaged log); returns whether there was one.
fn remove_planted_symlink(path: &Path) -> Result<bool, StoreError> {
    let planted = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if planted {
        tracing::warn!(
            "{} is a symlink; removing it and recovering the index from the blob files",
            path.display()
        );
        std::fs::remove_file(path).map_err(|e| StoreError::io("remove symlink", path, e))?;
    }
    Ok(planted)
}

/// The log read front to back through a window of a few hundred KiB, not into one buffer as big as the log:
/// a million-entry log is 63 MB, which start-up would otherwise fault in, copy and hold while the index is
/// built (it was a quarter of the peak RSS).
struct Window {
    path: PathBuf,
    /// `None` once the end is reached (or when there is no log).
    file: Option<File>,
    buf: Vec<u8>,
    /// Offset in the log of `buf[0]`.
    start: usize,
}

/// Bytes read at a time (at most).
const WINDOW_CHUNK: usize = 256 << 10;
/// The window's fixed size: the longest record plus a chunk.
const WINDOW_LEN: usize = MAX_RECORD_LEN + WINDOW_CHUNK;

impl Window {
    fn open(path: &Path) -> Result<Window, StoreError> {
        let file = match platform::open_no_follow(OpenOptions::new().read(true), path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::io("open", path, e)),
        };
        Ok(Window {
            path: path.to_path_buf(),
            file,
            buf: Vec::with_capacity(WINDOW_LEN),
            start: 0,
        })
    }

    /// The log's bytes from `pos` on: at least [`MAX_RECORD_LEN`] of them unless the log ends sooner, so a
    /// record decodes from them exactly as from the whole log. `pos` never goes backwards: bytes before it
    /// are dropped.
    fn at(&mut self, pos: usize) -> Result<&[u8], StoreError> {
        debug_assert!(pos >= self.start);
        if self.start + self.buf.len() < pos + MAX_RECORD_LEN && self.file.is_some() {
            let consumed = (pos - self.start).min(self.buf.len());
            self.buf.drain(..consumed);
            self.start += consumed;
            self.fill()?;
        }
        let from = (pos - self.start).min(self.buf.len());
        Ok(&self.buf[from..])
    }

    /// Fills the window (its size never changes), or reads to the log's end.
    fn fill(&mut self) -> Result<(), StoreError> {
        while self.buf.len() < WINDOW_LEN {
            let Some(f) = self.file.as_mut() else {
                break;
            };
            let have = self.buf.len();
            self.buf.resize(WINDOW_LEN, 0);
            let read = f.read(&mut self.buf[have..]);
            self.buf.truncate(have + read.as_ref().map_or(0, |n| *n));
            match read {
                Ok(0) => self.file = None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::io("read", &self.path, e)),
            }
        }
        Ok(())
    }

    /// The log's length (reading what is left of it).
    fn len(&mut self) -> Result<usize, StoreError> {
        while self.file.is_some() {
            let end = self.start + self.buf.len();
            self.at(end)?;
        }
        Ok(self.start + self.buf.len())
    }
}

/// Where replay left the log: its length, where its last valid record ends, and whether it must start
/// afresh (missing, cut short, or a damaged header).
struct ReadLog {
    len: usize,
    good_end: usize,
    fresh: bool,
}

/// Checks the magic and replays the records after it.
fn replay_bytes(
    path: &Path,
    log: &mut Window,
    apply: impl FnMut(RecordRef<'_>),
) -> Result<(Replay, ReadLog), StoreError> {
    let mut replay = Replay {
        damaged_bytes: 0,
        damaged_mid_log: false,
        v1: false,
    };
    let head = log.at(0)?;
    let magic = head.get(..INDEX_MAGIC.len());
    let mut good_end = INDEX_MAGIC.len();
    let fresh = match magic {
        // Missing, or cut short while being created: start afresh.
        None => {
            replay.damaged_bytes = head.len() as u64;
            true
        }
        Some(m) if m == INDEX_MAGIC || m == INDEX_MAGIC_V1 => {
            replay.v1 = m == INDEX_MAGIC_V1;
            good_end = replay_records(log, &mut replay, apply)?;
            false
        }
        Some(m)
            if claims_newer_version(m)
                && !starts_with_current_record(&head[INDEX_MAGIC.len()..]) =>
        {
            return Err(StoreError::NewerFormat {
                path: path.to_path_buf(),
                found: String::from_utf8_lossy(m).into_owned(),
            });
        }
        // A damaged header (bytes that name no later version, or a later version followed by records of
        // this one: a flipped version digit): everything in it is suspect, recover from the blob files.
        Some(_) => {
            replay.damaged_bytes = log.len()? as u64;
            replay.damaged_mid_log = true;
            true
        }
    };
    let len = log.len()?;
    Ok((
        replay,
        ReadLog {
            len,
            good_end,
            fresh,
        },
    ))
}

/// Whether a magic names a later version of this log (`SPKIDX` and two digits above ours): refused with
/// "upgrade sparkd" rather than rebuilt, so an older sparkd never rewrites a newer one's directory.
fn claims_newer_version(magic: &[u8]) -> bool {
    let Some(digits) = magic.strip_prefix(INDEX_MAGIC_PREFIX.as_slice()) else {
        return false;
    };
    let version = |m: &[u8]| std::str::from_utf8(m).ok()?.parse::<u32>().ok();
    let ours = version(&INDEX_MAGIC[INDEX_MAGIC_PREFIX.len()..]);
    digits.iter().all(u8::is_ascii_digit) && version(digits) > ours
}

/// Whether the bytes after a magic begin with a whole, checksummed record of this version: then the magic,
/// not the log, is what changed (a later format's records do not pass this version's checksum).
fn starts_with_current_record(body: &[u8]) -> bool {
    matches!(Record::decode(body), Ok((Some(_), _)))
}

/// Applies every valid record after the magic, skipping damage; returns where the last valid record ends.
fn replay_records(
    log: &mut Window,
    replay: &mut Replay,
    mut apply: impl FnMut(RecordRef<'_>),
) -> Result<usize, StoreError> {
    let mut off = INDEX_MAGIC.len();
    let mut good_end = off;
    loop {
        let data = log.at(off)?;
        if data.is_empty() {
            break;
        }
        match RecordRef::decode(data) {
            Ok((rec, n)) => {
                if let Some(rec) = rec {
                    apply(rec);
                }
                off += n;
                good_end = off;
            }
            Err(_) => match resync(log, off + 1)? {
                Some(next) => {
                    replay.damaged_bytes += (next - off) as u64;
                    replay.damaged_mid_log = true;
                    off = next;
                }
                None => {
                    replay.damaged_bytes += (log.len()? - off) as u64;
                    break;
                }
            },
        }
    }
    Ok(good_end)
}

struct Appendable {
    file: File,
    len: u64,
}

/// Opens the log for appending after the last valid record: writes the magic into a fresh log and cuts off
/// a torn tail, so new records never follow garbage.
fn open_for_append(
    path: &Path,
    read: &ReadLog,
    replay: &Replay,
    fsync: bool,
) -> Result<Appendable, StoreError> {
    let mut good_end = read.good_end;
    let mut file = platform::open_no_follow(
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true),
        path,
    )
    .map_err(|e| StoreError::io("open", path, e))?;
    if read.fresh {
        file.set_len(0)
            .map_err(|e| StoreError::io("truncate", path, e))?;
        file.write_all(INDEX_MAGIC)
            .map_err(|e| StoreError::io("write", path, e))?;
        good_end = INDEX_MAGIC.len();
    } else if good_end < read.len {
        // Mid-log damage stays until the store rewrites the log (it recovers from the blob files first).
        if !replay.damaged_mid_log {
            file.set_len(good_end as u64)
                .map_err(|e| StoreError::io("truncate", path, e))?;
        } else {
            good_end = read.len;
        }
    }
    file.seek(SeekFrom::Start(good_end as u64))
        .map_err(|e| StoreError::io("seek", path, e))?;
    if fsync {
        file.sync_all()
            .map_err(|e| StoreError::io("fsync", path, e))?;
    }
    Ok(Appendable {
        file,
        len: good_end as u64,
    })
}

/// Finds the next offset at or after `from` where a whole valid record starts.
fn resync(log: &mut Window, from: usize) -> Result<Option<usize>, StoreError> {
    let mut o = from;
    loop {
        let data = log.at(o)?;
        if data.is_empty() {
            return Ok(None);
        }
        if RecordRef::decode(data).is_ok() {
            return Ok(Some(o));
        }
        o += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MAX_KEY_LEN;

    /// Replay over the whole log in one buffer, as it was before the window: what the window must equal.
    fn replay_whole(data: &[u8]) -> (Vec<Record>, u64, bool, usize) {
        let (mut recs, mut damaged, mut mid) = (Vec::new(), 0u64, false);
        let mut off = INDEX_MAGIC.len();
        let mut good_end = off;
        while off < data.len() {
            match RecordRef::decode(&data[off..]) {
                Ok((rec, n)) => {
                    recs.extend(rec.map(RecordRef::to_owned));
                    off += n;
                    good_end = off;
                }
                Err(_) => {
                    let next =
                        (off + 1..data.len()).find(|&o| RecordRef::decode(&data[o..]).is_ok());
                    damaged += (next.unwrap_or(data.len()) - off) as u64;
                    mid |= next.is_some();
                    match next {
                        Some(n) => off = n,
                        None => break,
                    }
                }
            }
        }
        (recs, damaged, mid, good_end)
    }

    fn replay_windowed(path: &Path) -> (Vec<Record>, u64, bool, usize, usize) {
        let mut w = Window::open(path).unwrap();
        let mut recs = Vec::new();
        let (replay, read) = replay_bytes(path, &mut w, |r| recs.push(r.to_owned())).unwrap();
        assert!(!read.fresh);
        (
            recs,
            replay.damaged_bytes,
            replay.damaged_mid_log,
            read.good_end,
            read.len,
        )
    }

    /// A log of several windows, damaged at window boundaries, inside a long record, and torn at the end,
    /// replays through the window exactly as through one buffer.
    #[test]
    fn a_log_read_through_the_window_replays_as_read_whole() {
        let mut log = INDEX_MAGIC.to_vec();
        let mut i = 0u64;
        while log.len() < 3 * WINDOW_CHUNK + 5000 {
            i += 1;
            // Mostly short keys, some near the longest, so records straddle every window edge.
            let key_len = if i.is_multiple_of(97) {
                MAX_KEY_LEN - (i as usize % 50)
            } else {
                8 + (i as usize % 30)
            };
            Record::PutPack {
                key: vec![i as u8; key_len],
                pack: 1 + i % 3,
                offset: 4096 + i as u32,
                body_len: i,
                checksum: u128::from(i),
            }
            .encode(&mut log);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.log");
        let clean = log.clone();
        let flips = [
            WINDOW_CHUNK - 3,
            WINDOW_CHUNK + MAX_RECORD_LEN,
            2 * WINDOW_CHUNK + 10,
            2 * WINDOW_CHUNK + 11,
            2 * WINDOW_CHUNK + 40_000,
        ];
        for (case, damage) in [vec![], flips.to_vec()].into_iter().enumerate() {
            for torn in [0, 7] {
                let mut data = clean.clone();
                for &at in &damage {
                    data[at] ^= 0x5a;
                }
                data.truncate(data.len() - torn);
                std::fs::write(&path, &data).unwrap();
                let (recs, damaged, mid, good_end) = replay_whole(&data);
                let got = replay_windowed(&path);
                assert_eq!(
                    got,
                    (recs.clone(), damaged, mid, good_end, data.len()),
                    "case {case}, torn {torn}"
                );
                assert!(recs.len() > 1000);
                assert_eq!(mid, !damage.is_empty());
                assert_eq!(damaged > 0, !damage.is_empty() || torn > 0);
            }
        }
    }
}
