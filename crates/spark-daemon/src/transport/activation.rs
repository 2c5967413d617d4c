//! Socket activation: the listening socket a service manager passed (systemd's `LISTEN_FDS` convention,
//! launchd through the same variables via a wrapper, `systemd-socket-activate` in the tests).
//!
//! The service manager owns the socket file and keeps listening while sparkd is not running, so the first
//! client to connect starts the daemon. sparkd therefore adopts the socket as it is: it never creates,
//! re-moves or re-modes the file. The fd is turned into a listener by `listenfd`, which keeps the one
//! `from_raw_fd` out of this crate (sparkd forbids `unsafe`).

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// The passed listening Unix socket and its path, or `None` when sparkd was started the ordinary way.
///
/// Must run before any other thread exists: it clears `LISTEN_FDS`/`LISTEN_PID` from the environment (so
/// compile workers do not believe they were activated), and the fd is marked close-on-exec.
pub fn passed_listener() -> anyhow::Result<Option<(UnixListener, PathBuf)>> {
    let mut fds = listenfd::ListenFd::from_env();
    match fds.len() {
        0 => return Ok(None),
        1 => {}
        n => tracing::warn!(
            "{n} sockets were passed (LISTEN_FDS); using the first, ignoring the rest"
        ),
    }
    let listener = fds
        .take_unix_listener(0)
        .context("the socket passed in LISTEN_FDS (fd 3) is not a listening Unix stream socket")?
        .context("LISTEN_FDS named fd 3, but it was already taken")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let Some(path) = addr.as_pathname() else {
        bail!(
            "the passed socket has no path (abstract or unnamed); give the socket unit a ListenStream=PATH"
        );
    };
    Ok(Some((listener, path.to_owned())))
}
