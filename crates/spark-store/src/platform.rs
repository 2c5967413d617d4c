//! Every platform-specific file operation of the store, in one place, so the engine and its backends are
//! portable code and each helper exists once.
//!
//! The store's defences against a hostile cache directory rely on two Unix features: `O_NOFOLLOW` (a symlink
//! planted in place of a blob file or `index.log` is refused, not followed) and owner-only modes (0700
//! directories, 0600 blob files). The Windows fallback uses `std` only (the workspace forbids `unsafe`, and
//! adds no Windows API crate); its limits are stated on each function. Deleting a file that another program
//! holds open is retried in the background there ([`remove_file`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
use windows as imp;

/// Opens `path` with `opts` without following a symlink at its last component: a symlink there fails with
/// an error for which [`is_symlink_refused`] is true.
pub(crate) fn open_no_follow(opts: &mut OpenOptions, path: &Path) -> io::Result<File> {
    imp::open_no_follow(opts, path)
}

/// Whether an open failed because [`open_no_follow`] met a symlink.
pub(crate) fn is_symlink_refused(e: &io::Error) -> bool {
    imp::is_symlink_refused(e)
}

/// Makes files created through `opts` readable and writable by their owner only.
pub(crate) fn owner_only(opts: &mut OpenOptions) -> &mut OpenOptions {
    imp::owner_only(opts)
}

/// Creates a directory (and missing parents) accessible to its owner only.
pub(crate) fn create_dir_owner_only(dir: &Path) -> io::Result<()> {
    imp::create_dir_owner_only(dir)
}

/// Best-effort directory fsync: makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) {
    imp::sync_dir(dir)
}

/// Reads exactly `buf.len()` bytes at `offset` without moving a file position (`pread`), so many threads
/// read one pack file at once.
pub(crate) fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    imp::read_exact_at(f, buf, offset)
}

/// Writes all of `buf` at `offset` (`pwrite`).
pub(crate) fn write_all_at(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    imp::write_all_at(f, buf, offset)
}

/// Frees the disk blocks wholly inside `[offset, offset + len)` of `f` without changing its length or any
/// other byte's offset (reads of the range return zeros). Best effort: a no-op where the platform or
/// filesystem cannot (the bytes then stay until their pack is compacted).
pub(crate) fn punch_hole(f: &File, offset: u64, len: u64) {
    // Whole 4 KiB blocks only: a partial block would only be zeroed, not freed.
    const BLOCK: u64 = 4096;
    let start = offset.div_ceil(BLOCK) * BLOCK;
    let end = (offset + len) / BLOCK * BLOCK;
    if end > start {
        imp::punch_hole(f, start, end - start);
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    imp::is_no_space(e)
}

/// Deletes a blob or pack file that the index no longer references. Eviction must never fail because some
/// process holds the file open: on Unix unlinking an open file always works; on Windows the store's own
/// readers open with `FILE_SHARE_DELETE` (std's default share mode), so deleting works too, but another
/// program (an on-access scanner, a backup or indexing tool) may hold it without that flag. Such a delete
/// is retried in the background (see `windows::defer_delete`); whatever is still there at the next start
/// is an orphan and the sweep removes or adopts it. `Err` only for real failures, which callers log.
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    imp::remove_file(path)
}

#[cfg(unix)]
mod unix {
    use std::fs::{DirBuilder, File, OpenOptions};
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::path::Path;

    use rustix::io::Errno;

    pub(super) fn open_no_follow(opts: &mut OpenOptions, path: &Path) -> io::Result<File> {
        opts.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
    }

    pub(super) fn is_symlink_refused(e: &io::Error) -> bool {
        e.raw_os_error() == Some(Errno::LOOP.raw_os_error())
    }

    pub(super) fn owner_only(opts: &mut OpenOptions) -> &mut OpenOptions {
        opts.mode(0o600)
    }

    pub(super) fn create_dir_owner_only(dir: &Path) -> io::Result<()> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }

    pub(super) fn sync_dir(dir: &Path) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }

    pub(super) fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
    }

    pub(super) fn write_all_at(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(f, buf, offset)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn punch_hole(f: &File, offset: u64, len: u64) {
        use rustix::fs::FallocateFlags;
        let _ = rustix::fs::fallocate(
            f,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        );
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn punch_hole(_f: &File, _offset: u64, _len: u64) {}

    pub(super) fn is_no_space(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error().map(Errno::from_raw_os_error),
            Some(Errno::NOSPC | Errno::DQUOT)
        )
    }

    pub(super) fn remove_file(path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

#[cfg(windows)]
mod windows {
    use std::fs::{DirBuilder, File, OpenOptions};
    use std::io;
    use std::os::windows::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
    use std::time::{Duration, Instant};

    /// `FILE_FLAG_OPEN_REPARSE_POINT`: open a symlink itself instead of its target.
    const OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    /// `FILE_FLAG_BACKUP_SEMANTICS`: needed to open a directory handle at all.
    const BACKUP_SEMANTICS: u32 = 0x0200_0000;
    const ERROR_HANDLE_DISK_FULL: i32 = 39;
    const ERROR_DISK_FULL: i32 = 112;
    const ERROR_DISK_QUOTA_EXCEEDED: i32 = 1295;

    /// Marks the error [`open_no_follow`] returns for a symlink.
    #[derive(Debug)]
    struct SymlinkRefused;
    impl std::fmt::Display for SymlinkRefused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("is a symlink (not followed)")
        }
    }
    impl std::error::Error for SymlinkRefused {}

    /// Windows has no `O_NOFOLLOW`: the file is opened as the reparse point itself, then refused if the
    /// handle is a symlink. Checking the opened handle (not the path) leaves no window for a swap. Only the
    /// last component is covered: a directory junction higher up is followed, as it is by every Windows
    /// program; the store's directories are checked for symlinks when they are opened.
    pub(super) fn open_no_follow(opts: &mut OpenOptions, path: &Path) -> io::Result<File> {
        let f = opts.custom_flags(OPEN_REPARSE_POINT).open(path)?;
        if f.metadata()?.file_type().is_symlink() {
            return Err(io::Error::other(SymlinkRefused));
        }
        Ok(f)
    }

    pub(super) fn is_symlink_refused(e: &io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<SymlinkRefused>())
    }

    /// No-op: Windows has no mode bits. New files inherit the ACL of their directory, which under the
    /// user's profile (`%LOCALAPPDATA%`) grants access to that user (and administrators) only; a cache
    /// directory placed elsewhere gets whatever that place grants.
    pub(super) fn owner_only(opts: &mut OpenOptions) -> &mut OpenOptions {
        opts
    }

    /// As [`owner_only`]: the directory inherits its parent's ACL.
    pub(super) fn create_dir_owner_only(dir: &Path) -> io::Result<()> {
        DirBuilder::new().recursive(true).create(dir)
    }

    /// Flushes a directory handle; NTFS journals renames, so this is belt and braces, and a filesystem that
    /// refuses it (FAT, some network shares) just makes `--durability fsync` weaker there.
    pub(super) fn sync_dir(dir: &Path) {
        if let Ok(d) = OpenOptions::new()
            .write(true)
            .custom_flags(BACKUP_SEMANTICS)
            .open(dir)
        {
            let _ = d.sync_all();
        }
    }

    /// `seek_read` moves the handle's position, which no caller relies on (packs are only read at offsets).
    pub(super) fn read_exact_at(f: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match f.seek_read(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) fn write_all_at(f: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match f.seek_write(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// No-op: NTFS can free a range only of a file marked sparse, which needs the Windows API; the dead
    /// bytes stay until their pack is compacted.
    pub(super) fn punch_hole(_f: &File, _offset: u64, _len: u64) {}

    pub(super) fn is_no_space(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(ERROR_HANDLE_DISK_FULL | ERROR_DISK_FULL | ERROR_DISK_QUOTA_EXCEEDED)
        )
    }

    /// `ERROR_ACCESS_DENIED` (also what a delete-pending or read-only file gives) and
    /// `ERROR_SHARING_VIOLATION`: someone holds the file without `FILE_SHARE_DELETE`.
    const ERROR_ACCESS_DENIED: i32 = 5;
    const ERROR_SHARING_VIOLATION: i32 = 32;
    /// Retries back off from 10 ms to this, for at most [`DEFER_FOR`] per file.
    const DEFER_MAX_PAUSE: Duration = Duration::from_secs(2);
    const DEFER_FOR: Duration = Duration::from_secs(600);

    pub(super) fn remove_file(path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(ERROR_SHARING_VIOLATION | ERROR_ACCESS_DENIED)
                ) =>
            {
                defer_delete(path.to_path_buf());
                Ok(())
            }
            r => r,
        }
    }

    /// Files whose delete is being retried, and the thread retrying them (started on first use).
    static DEFERRED: Mutex<Option<Sender<PathBuf>>> = Mutex::new(None);

    /// Hands `path` to the retry thread. The file's name is unique and never reused (blob and pack ids
    /// only grow), so a late delete can never hit a newer file.
    fn defer_delete(path: PathBuf) {
        tracing::debug!(
            "{} is held open by another program; deleting it once it is released",
            path.display()
        );
        let mut g = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
        let path = match g.as_ref() {
            Some(tx) => match tx.send(path) {
                Ok(()) => return,
                // The thread is gone (it never exits while a sender lives; belt and braces): start anew.
                Err(e) => e.0,
            },
            None => path,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = tx.send(path);
        let started = std::thread::Builder::new()
            .name("spark-store-deferred-delete".into())
            .spawn(move || retry_deletes(rx));
        if started.is_ok() {
            *g = Some(tx);
        }
    }

    fn retry_deletes(rx: Receiver<PathBuf>) {
        let mut pending: Vec<(PathBuf, Instant)> = Vec::new();
        let mut pause = Duration::from_millis(10);
        loop {
            let next = if pending.is_empty() {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(pause)
            };
            match next {
                Ok(p) => {
                    pending.push((p, Instant::now()));
                    pause = Duration::from_millis(10);
                }
                Err(RecvTimeoutError::Timeout) => pause = (pause * 2).min(DEFER_MAX_PAUSE),
                Err(RecvTimeoutError::Disconnected) if pending.is_empty() => return,
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(pause),
            }
            pending.retain(|(p, since)| match std::fs::remove_file(p) {
                Ok(()) => false,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) if since.elapsed() > DEFER_FOR => {
                    tracing::warn!(
                        "giving up deleting {} ({e}); the next start's sweep removes it",
                        p.display()
                    );
                    false
                }
                Err(_) => true,
            });
        }
    }
}
