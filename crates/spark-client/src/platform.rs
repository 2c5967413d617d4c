//! Everything the lifecycle code needs from the operating system, in one place: private file modes, the
//! spawn lock, detaching the daemon, the default socket path and where the files beside it go.
//!
//! Unix and Windows are real implementations (Windows: `LockFileEx`, a detached process with no console,
//! side files under `%LOCALAPPDATA%\Spark\run` since a pipe has no directory). Elsewhere these are the
//! nearest portable behaviour (no modes, no lock, a plain child process).

use std::path::{Path, PathBuf};

/// `socket` with `suffix` appended: `<socket>.spawn.lock`, `<socket>.log`.
fn suffixed(socket: &Path, suffix: &str) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The file beside the daemon's socket named by `suffix` (`.spawn.lock`, `.log`). For a Windows pipe,
/// which has no directory: `%LOCALAPPDATA%\Spark\run\<pipe name><suffix>`.
pub(crate) fn side_file(socket: &Path, suffix: &str) -> PathBuf {
    #[cfg(windows)]
    if spark_platform::is_pipe_path(socket) {
        let base = spark_platform::local_app_data().unwrap_or_else(std::env::temp_dir);
        return spark_platform::pipe_side_file(&base, socket, suffix);
    }
    suffixed(socket, suffix)
}

/// Whether a daemon may be listening at `socket`, answered without connecting: a Unix socket is a file,
/// so a missing one costs a `stat`. A pipe cannot be probed without taking an instance (opening it *is*
/// connecting), and connecting to a missing pipe fails at once anyway.
pub(crate) fn endpoint_may_exist(socket: &Path) -> bool {
    #[cfg(windows)]
    if spark_platform::is_pipe_path(socket) {
        return true;
    }
    std::fs::symlink_metadata(socket).is_ok()
}

/// The platform's executable name for `bin` (`sparkd` → `sparkd.exe` on Windows).
pub(crate) fn exe_name(bin: &str) -> String {
    format!("{bin}{}", std::env::consts::EXE_SUFFIX)
}

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

#[cfg(windows)]
mod imp {
    use std::fs::{File, OpenOptions};
    use std::os::windows::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// `DETACHED_PROCESS`: no console at all (the daemon must not share or open a console window).
    const DETACHED_PROCESS: u32 = 0x0000_0008;
    /// `CREATE_NEW_PROCESS_GROUP`: Ctrl+C / Ctrl+Break in the parent's console do not reach it.
    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    /// `CREATE_NO_WINDOW`: no window even if something later allocates a console.
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;

    /// Directories under `%LOCALAPPDATA%` inherit an ACL that grants this user (and administrators) only.
    pub(crate) fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    pub(crate) fn private_file() -> OpenOptions {
        OpenOptions::new()
    }

    pub(crate) fn is_executable(p: &Path) -> bool {
        p.is_file()
    }

    /// `LockFileEx`, exclusive, failing immediately when another process holds it.
    pub(crate) fn try_lock_exclusive(f: &File) -> bool {
        spark_platform::windows::try_lock_exclusive(f).unwrap_or(false)
    }

    /// The daemon survives its parent and never shows a console window.
    pub(crate) fn detached_command(bin: &Path, _setsid: Option<PathBuf>) -> Command {
        let mut c = Command::new(bin);
        c.creation_flags(DETACHED_PROCESS | CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP);
        c
    }
}

#[cfg(not(any(unix, windows)))]
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
