//! Everything the lifecycle code needs from the operating system, in one place: private file modes, the
//! spawn lock, detaching the daemon, the user id in the default socket path.
//!
//! Unix is the real implementation. Elsewhere these are the nearest portable behaviour (no modes, no lock,
//! a plain child process), which is enough to build: the Windows transport does not exist yet, so no
//! Windows process ever reaches a daemon to spawn or lock against.

#[cfg(unix)]
mod imp {
    use std::fs::{DirBuilder, File, OpenOptions};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The effective uid: the default socket path is per user.
    pub(crate) fn current_uid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    /// Creates `dir` and its parents, readable by this user only: the socket's directory is the
    /// daemon's access control.
    pub(crate) fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }

    /// Open options for a file only this user may read (logs, locks).
    pub(crate) fn private_file() -> OpenOptions {
        let mut o = OpenOptions::new();
        o.mode(0o600);
        o
    }

    pub(crate) fn is_executable(p: &Path) -> bool {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }

    /// Takes `f`'s exclusive advisory lock without waiting; false when another process holds it.
    pub(crate) fn try_lock_exclusive(f: &File) -> bool {
        rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
    }

    /// A command that starts `bin` outside our session, so the terminal's SIGHUP or ^C cannot stop it.
    ///
    /// No `unsafe` (no `pre_exec`): with the util-linux `setsid` program (`setsid`, when found) we run
    /// `setsid bin`, which calls setsid(2) and execs in place — a new session with no controlling terminal,
    /// and still our child's pid, so we can reap it. Without it, `process_group(0)`: a new process group,
    /// which ^C and job control no longer reach, though it stays in our session.
    pub(crate) fn detached_command(bin: &Path, setsid: Option<PathBuf>) -> Command {
        match setsid {
            Some(setsid) => {
                let mut c = Command::new(setsid);
                c.arg(bin);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.process_group(0);
                c
            }
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use std::fs::{File, OpenOptions};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// No uid: the default path rule only uses it for the `/tmp/spark-<uid>` fallback.
    pub(crate) fn current_uid() -> u32 {
        0
    }

    pub(crate) fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    pub(crate) fn private_file() -> OpenOptions {
        OpenOptions::new()
    }

    pub(crate) fn is_executable(p: &Path) -> bool {
        p.is_file()
    }

    /// No advisory lock here yet: every caller may spawn, and the daemon's own socket lock keeps one.
    pub(crate) fn try_lock_exclusive(_f: &File) -> bool {
        true
    }

    pub(crate) fn detached_command(bin: &Path, _setsid: Option<PathBuf>) -> Command {
        Command::new(bin)
    }
}

pub(crate) use imp::*;
