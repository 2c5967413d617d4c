//! Platform code that needs more than `std`: on Windows, the Win32 calls behind the named-pipe transport
//! (owner-only security descriptors, user SIDs, the pipe client's identity), `LockFileEx` locks and process
//! liveness. This crate and `spark-ffi` are the only places in the workspace with `unsafe`; here every
//! block carries a `// SAFETY:` comment (`clippy::undocumented_unsafe_blocks` is denied) and all of it is
//! in the `windows` module, behind safe functions.
//!
//! The path rules below are plain string code, built and unit-tested on every platform, so the daemon, the
//! Rust client and the Python client (`clients/python/sparkdaemon/winpipe.py`) agree on them.

use std::path::{Path, PathBuf};

#[cfg(windows)]
pub mod windows;

/// Every named pipe's path starts with this (the local machine's pipe namespace).
pub const PIPE_PREFIX: &str = r"\\.\pipe\";

/// Whether `p` names a Windows named pipe (`\\.\pipe\NAME`), compared without regard to case as Windows
/// does.
pub fn is_pipe_path(p: &Path) -> bool {
    let s = p.as_os_str().to_string_lossy();
    s.len() > PIPE_PREFIX.len()
        && s.is_char_boundary(PIPE_PREFIX.len())
        && s[..PIPE_PREFIX.len()].eq_ignore_ascii_case(PIPE_PREFIX)
}

/// The default pipe of the user whose SID (`S-1-5-21-…`) is `user_sid`: `\\.\pipe\spark-<SID>-sparkd`.
///
/// The SID, not the user name, because names are not unique across domains (`CORP\alice` and the local
/// `alice`) and may hold any character, while a SID is unique and is exactly what the daemon's security
/// descriptor and peer check compare. Anything but `[A-Za-z0-9-]` is replaced by `_` so that a malformed
/// value can never produce a path outside the pipe namespace.
pub fn default_pipe_path(user_sid: &str) -> PathBuf {
    let user: String = user_sid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from(format!("{PIPE_PREFIX}spark-{user}-sparkd"))
}

/// Where the files that sit next to a Unix socket (`.lock`, `.spawn.lock`, `.log`) live for a pipe, which
/// has no directory: `<local app data>\Spark\run\<pipe name><suffix>`.
pub fn pipe_side_file(local_app_data: &Path, pipe: &Path, suffix: &str) -> PathBuf {
    let s = pipe.as_os_str().to_string_lossy();
    let name = if is_pipe_path(pipe) {
        &s[PIPE_PREFIX.len()..]
    } else {
        &s[..]
    };
    let name: String = name
        .chars()
        .map(|c| {
            if matches!(c, '\\' | '/' | ':') {
                '_'
            } else {
                c
            }
        })
        .collect();
    local_app_data
        .join("Spark")
        .join("run")
        .join(format!("{name}{suffix}"))
}

/// `%LOCALAPPDATA%`, the per-user, non-roaming application data directory; `None` when unset.
pub fn local_app_data() -> Option<PathBuf> {
    std::env::var_os("LOCALAPPDATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_paths_are_recognised_without_case() {
        assert!(is_pipe_path(Path::new(r"\\.\pipe\spark-x-sparkd")));
        assert!(is_pipe_path(Path::new(r"\\.\PIPE\x")));
        assert!(!is_pipe_path(Path::new(r"\\.\pipe\")));
        assert!(!is_pipe_path(Path::new("/run/user/1000/spark/sparkd.sock")));
        assert!(!is_pipe_path(Path::new(r"C:\pipe\x")));
    }

    #[test]
    fn the_default_pipe_is_per_sid_and_cannot_leave_the_namespace() {
        assert_eq!(
            default_pipe_path("S-1-5-21-1004336348-1177238915-682003330-1001"),
            PathBuf::from(r"\\.\pipe\spark-S-1-5-21-1004336348-1177238915-682003330-1001-sparkd")
        );
        assert_ne!(
            default_pipe_path("S-1-5-21-1-2-3-1001"),
            default_pipe_path("S-1-5-21-1-2-3-1002")
        );
        assert_eq!(
            default_pipe_path(r"..\..\x y"),
            PathBuf::from(r"\\.\pipe\spark-______x_y-sparkd")
        );
    }

    #[test]
    fn side_files_live_under_local_app_data() {
        let lad = Path::new("LAD");
        assert_eq!(
            pipe_side_file(lad, Path::new(r"\\.\pipe\spark-S-1-sparkd"), ".lock"),
            Path::new("LAD")
                .join("Spark")
                .join("run")
                .join("spark-S-1-sparkd.lock")
        );
        assert_eq!(
            pipe_side_file(lad, Path::new(r"\\.\pipe\a\b:c"), ".log"),
            Path::new("LAD").join("Spark").join("run").join("a_b_c.log")
        );
    }
}
