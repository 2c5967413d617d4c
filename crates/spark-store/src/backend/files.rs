//! The first backend: one file per blob, `blobs/<ff>/<id>.blob` (format v1, `docs/storage.md`), written as
//! `tmp/<id>.tmp` and renamed into place, so a file under `blobs/` is always complete.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;
use xxhash_rust::xxh3::Xxh3;

use super::{BlobBackend, BlobRead, BlobSink, Found, Location, Opened, Scan, Written};
use crate::format::{self, BLOB_HEADER_LEN, BLOB_TRAILER_LEN, BlobFrame, BlobHeader};
use crate::{StoreError, SweepReport, platform};

/// Whole-blob writes up to this size go out in one write call.
const ONE_WRITE_MAX: usize = 64 * 1024;

pub(crate) struct FileBackend {
    dirs: Arc<Dirs>,
}

/// Shared with streamed writes in progress, which outlive the call that started them.
struct Dirs {
    blobs: PathBuf,
    tmp: PathBuf,
    fsync: bool,
}

impl FileBackend {
    /// Creates (or checks) the cache directory and the backend's directories under it, refusing symlinks.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, StoreError> {
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        for d in [dir, &blobs, &tmp] {
            ensure_real_dir(d)?;
        }
        // Before serving, not in the background sweep: reads and writes would go through a planted
        // symlink in the meantime.
        remove_symlinks_in(&blobs);
        Ok(FileBackend {
            dirs: Arc::new(Dirs { blobs, tmp, fsync }),
        })
    }

    /// The blob id of a file location; `None` for a location of another backend.
    fn id(loc: Location) -> Option<u64> {
        match loc {
            Location::File { id } => Some(id),
            Location::Pack { .. } => None,
        }
    }

    /// Removes temp files of earlier runs (or all of them, before serving).
    fn sweep_tmp(&self, own_from: Option<u64>, rep: &mut SweepReport) {
        let Ok(rd) = std::fs::read_dir(&self.dirs.tmp) else {
            return;
        };
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(".tmp")
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            if id.is_some_and(|id| own_from.is_some_and(|own| id >= own)) {
                continue;
            }
            if std::fs::remove_file(ent.path()).is_ok() {
                rep.temp_files_removed += 1;
            }
        }
    }

    /// Lists the blob files of one fan-out directory.
    fn scan_fan(&self, fan: &Path, own_from: Option<u64>, rep: &mut SweepReport, scan: &mut Scan) {
        let Ok(files) = std::fs::read_dir(fan) else {
            return;
        };
        for f in files.flatten() {
            if f.file_type().is_ok_and(|t| t.is_symlink()) {
                if std::fs::remove_file(f.path()).is_ok() {
                    rep.symlinks_removed += 1;
                }
                continue;
            }
            let Some(id) = format::parse_blob_file_name(&f.file_name().to_string_lossy()) else {
                rep.unknown_skipped += 1;
                continue;
            };
            scan.max_id = scan.max_id.max(id);
            if own_from.is_none_or(|own| id < own) {
                scan.blobs.push(Location::File { id });
            }
        }
    }
}

impl Dirs {
    fn fan_dir(&self, id: u64) -> PathBuf {
        self.blobs.join(format::blob_dir_name(id))
    }

    fn blob_path(&self, id: u64) -> PathBuf {
        self.fan_dir(id).join(format::blob_file_name(id))
    }

    fn create_tmp(&self, id: u64) -> Result<(File, PathBuf), StoreError> {
        let tmp = self.tmp.join(format!("{id:016x}.tmp"));
        let f = platform::open_no_follow(
            platform::owner_only(OpenOptions::new().write(true).create_new(true)),
            &tmp,
        )
        .map_err(|e| StoreError::io("create", &tmp, e))?;
        Ok((f, tmp))
    }

    /// Renames a complete temp file to its final name.
    fn install(&self, tmp: &Path, id: u64) -> Result<(), StoreError> {
        let dst = self.blob_path(id);
        let fan = self.fan_dir(id);
        let r = match std::fs::rename(tmp, &dst) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ensure_real_dir(&fan)?;
                if self.fsync {
                    platform::sync_dir(&self.blobs);
                }
                std::fs::rename(tmp, &dst)
            }
            r => r,
        };
        if let Err(e) = r {
            let _ = std::fs::remove_file(tmp);
            return Err(StoreError::io("rename", tmp, e));
        }
        if self.fsync {
            platform::sync_dir(&fan);
        }
        Ok(())
    }
}

impl BlobBackend for FileBackend {
    fn stored_len(&self, key_len: usize, body_len: u64) -> u64 {
        format::file_len(key_len, body_len)
    }

    /// Temp file, (fsync), rename into place.
    fn write(&self, id: u64, key: &[u8], body: &[u8]) -> Result<Written, StoreError> {
        let frame = BlobFrame::new(key, body);
        let (mut f, tmp) = self.dirs.create_tmp(id)?;
        let res = (|| {
            let parts = frame.parts(key, body);
            if body.len() <= ONE_WRITE_MAX {
                f.write_all(&parts.concat())?;
            } else {
                for p in parts {
                    f.write_all(p)?;
                }
            }
            if self.dirs.fsync {
                f.sync_data()?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io("write", &tmp, e));
        }
        drop(f);
        self.dirs.install(&tmp, id)?;
        Ok(Written {
            loc: Location::File { id },
            checksum: frame.checksum(),
        })
    }

    fn begin(&self, id: u64, key: &[u8], body_len: u64) -> Result<Box<dyn BlobSink>, StoreError> {
        let (file, tmp) = self.dirs.create_tmp(id)?;
        let mut pending = PendingFile {
            file,
            tmp,
            id,
            hasher: Xxh3::new(),
            done: false,
            dirs: self.dirs.clone(),
        };
        let header = BlobHeader {
            key_len: key.len() as u32,
            body_len,
        }
        .encode();
        pending.write(&header)?;
        pending.write(key)?;
        Ok(Box::new(pending))
    }

    fn open(&self, loc: Location, key: &[u8], body_len: u64) -> Result<Opened, StoreError> {
        let Some(id) = Self::id(loc) else {
            return Ok(Opened::Missing);
        };
        let path = self.dirs.blob_path(id);
        let mut file = match platform::open_no_follow(OpenOptions::new().read(true), &path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Opened::Missing),
            // Planted in place of the blob file: never followed; dropped (and deleted) like any damage.
            Err(e) if platform::is_symlink_refused(&e) => {
                return Ok(Opened::Damaged("blob file is a symlink"));
            }
            Err(e) => return Err(StoreError::io("open", &path, e)),
        };
        let mut head = vec![0u8; BLOB_HEADER_LEN + key.len()];
        let header_ok = match file.read_exact(&mut head) {
            Ok(()) => BlobHeader::decode(&head).is_ok_and(|h| {
                h.key_len as usize == key.len()
                    && h.body_len == body_len
                    && head[BLOB_HEADER_LEN..] == key[..]
            }),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        if !header_ok {
            return Ok(Opened::Damaged("header or key does not match the index"));
        }
        let mut hasher = Xxh3::new();
        hasher.update(&head);
        Ok(Opened::Ready(Box::new(FileReader { file, path, hasher })))
    }

    fn remove(&self, loc: Location, _stored: u64) {
        let Some(id) = Self::id(loc) else { return };
        let p = self.dirs.blob_path(id);
        if let Err(e) = platform::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!("cannot delete {}: {e}", p.display());
        }
    }

    /// Also removes symlinks among fan-out directories and blob files, and counts files it does not know.
    fn scan(&self, own_from: Option<u64>, rep: &mut SweepReport) -> Scan {
        self.sweep_tmp(own_from, rep);
        let mut scan = Scan::default();
        let Ok(rd) = std::fs::read_dir(&self.dirs.blobs) else {
            return scan;
        };
        for sub in rd.flatten() {
            let Ok(ft) = sub.file_type() else { continue };
            if ft.is_symlink() {
                if std::fs::remove_file(sub.path()).is_ok() {
                    rep.symlinks_removed += 1;
                }
                continue;
            }
            if !ft.is_dir() || !is_fan_dir_name(&sub.file_name().to_string_lossy()) {
                rep.unknown_skipped += 1;
                continue;
            }
            self.scan_fan(&sub.path(), own_from, rep, &mut scan);
        }
        scan
    }

    fn inspect(&self, loc: Location) -> Option<Found> {
        read_verified(&self.dirs.blob_path(Self::id(loc)?))
    }

    fn path(&self, loc: Location) -> Option<PathBuf> {
        Some(self.dirs.blob_path(Self::id(loc)?))
    }
}

/// A fan-out directory name: exactly two lowercase hex digits.
fn is_fan_dir_name(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Reads a blob file's key, header and checksum, verifying the whole file.
fn read_verified(path: &Path) -> Option<Found> {
    let mut f = platform::open_no_follow(OpenOptions::new().read(true), path).ok()?;
    let mut hb = [0u8; BLOB_HEADER_LEN];
    f.read_exact(&mut hb).ok()?;
    let h = BlobHeader::decode(&hb).ok()?;
    if f.metadata().ok()?.len() != h.file_len() {
        return None;
    }
    let mut key = vec![0u8; h.key_len as usize];
    f.read_exact(&mut key).ok()?;
    let mut hasher = format::blob_hasher(&hb, &key);
    let mut left = h.body_len;
    let mut buf = vec![0u8; (1 << 20).min(left as usize)];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        f.read_exact(&mut buf[..n]).ok()?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut t = [0u8; BLOB_TRAILER_LEN];
    f.read_exact(&mut t).ok()?;
    let checksum = u128::from_le_bytes(t);
    (hasher.digest128() == checksum).then_some(Found {
        key,
        body_len: h.body_len,
        checksum,
    })
}

/// Deletes symlinks among the fan-out directories (a symlinked fan-out would be followed by every open).
fn remove_symlinks_in(blobs: &Path) {
    let Ok(rd) = std::fs::read_dir(blobs) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_symlink()) {
            warn!("removing planted symlink {}", e.path().display());
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Creates a directory if missing and refuses to go through a symlink.
pub(crate) fn ensure_real_dir(d: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(d) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::io(
            "use",
            d,
            std::io::Error::other("exists but is not a directory (symlinks are not followed)"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            platform::create_dir_owner_only(d).map_err(|e| StoreError::io("create directory", d, e))
        }
        Err(e) => Err(StoreError::io("inspect", d, e)),
    }
}

/// A blob file being read: the header and key are checked, the checksum runs over what is read.
struct FileReader {
    file: File,
    path: PathBuf,
    hasher: Xxh3,
}

impl FileReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.file.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StoreError::Corrupt("file is shorter than its header says".into())
            } else {
                StoreError::io("read", &self.path, e)
            }
        })
    }
}

impl BlobRead for FileReader {
    fn read_body(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.read(buf)?;
        self.hasher.update(buf);
        Ok(())
    }

    fn verify(&mut self, expected: u128) -> Result<(), StoreError> {
        let mut t = [0u8; BLOB_TRAILER_LEN];
        self.read(&mut t)?;
        let stored = u128::from_le_bytes(t);
        let mut extra = [0u8; 1];
        let longer = matches!(self.file.read(&mut extra), Ok(n) if n > 0);
        if stored != self.hasher.digest128() || stored != expected || longer {
            return Err(StoreError::Corrupt("checksum mismatch".into()));
        }
        Ok(())
    }
}

/// A temp file being filled by a streamed put.
struct PendingFile {
    file: File,
    tmp: PathBuf,
    id: u64,
    hasher: Xxh3,
    done: bool,
    dirs: Arc<Dirs>,
}

impl PendingFile {
    fn write(&mut self, b: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(b);
        self.file
            .write_all(b)
            .map_err(|e| StoreError::io("write", &self.tmp, e))
    }
}

impl BlobSink for PendingFile {
    fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        PendingFile::write(self, chunk)
    }

    fn finish(mut self: Box<Self>) -> Result<Written, StoreError> {
        let checksum = self.hasher.digest128();
        self.file
            .write_all(&checksum.to_le_bytes())
            .map_err(|e| StoreError::io("write", &self.tmp, e))?;
        if self.dirs.fsync {
            self.file
                .sync_data()
                .map_err(|e| StoreError::io("fsync", &self.tmp, e))?;
        }
        self.dirs.install(&self.tmp, self.id)?;
        self.done = true;
        Ok(Written {
            loc: Location::File { id: self.id },
            checksum,
        })
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
