//! The daemon's platform-specific helpers that are not part of a transport: process liveness and signals.

use std::sync::Arc;

use crate::state::ServerState;

/// Whether a sponsor pid names a possible process (kill(2) treats 0 and negative values as groups).
pub fn valid_pid(pid: u32) -> bool {
    pid > 0 && pid <= i32::MAX as u32
}

/// Whether process `pid` exists.
#[cfg(unix)]
pub fn process_alive(pid: u32) -> bool {
    if !valid_pid(pid) {
        return false;
    }
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    // EPERM means it exists but belongs to someone else: alive.
    !matches!(
        rustix::process::test_kill_process(p),
        Err(rustix::io::Errno::SRCH)
    )
}

/// `OpenProcess` + `GetExitCodeProcess` (see `spark_platform::windows::process_alive`).
#[cfg(windows)]
pub fn process_alive(pid: u32) -> bool {
    valid_pid(pid) && spark_platform::windows::process_alive(pid)
}

/// Without a process API here a sponsor is taken to be alive, so `--exit-with-sponsors` never exits early.
#[cfg(not(any(unix, windows)))]
pub fn process_alive(pid: u32) -> bool {
    valid_pid(pid)
}

/// SIGTERM and SIGINT request a clean shutdown.
#[cfg(unix)]
pub fn spawn_signal_handlers(state: &Arc<ServerState>) {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
    ] {
        let state = state.clone();
        match signal(kind) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    if s.recv().await.is_some() {
                        state.request_shutdown(&format!("received {name}"));
                    }
                });
            }
            Err(e) => tracing::warn!("cannot install {name} handler: {e}"),
        }
    }
}

/// Ctrl-C requests a clean shutdown.
#[cfg(not(unix))]
pub fn spawn_signal_handlers(state: &Arc<ServerState>) {
    let state = state.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            state.request_shutdown("received Ctrl-C");
        }
    });
}

/// Lowers the calling thread's CPU priority to `nice` (Linux nice values are per thread), best effort: a
/// compile thread that cannot be niced still compiles.
#[cfg(unix)]
pub fn lower_thread_priority(nice: i32) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::debug!("cannot lower the compile thread's priority: {e}");
    }
}

#[cfg(not(unix))]
pub fn lower_thread_priority(_nice: i32) {}

/// Lowers process `pid`'s CPU priority to `nice`, best effort (a compile worker just started).
#[cfg(unix)]
pub fn lower_process_priority(pid: u32, nice: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32)
        && let Err(e) = rustix::process::setpriority_process(Some(p), nice)
    {
        tracing::debug!("cannot lower worker {pid}'s priority: {e}");
    }
}

#[cfg(not(unix))]
pub fn lower_process_priority(_pid: u32, _nice: i32) {}

/// The signal that ended a child, if one did.
#[cfg(unix)]
pub fn exit_signal(status: &std::process::ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(status)
}

#[cfg(not(unix))]
pub fn exit_signal(_status: &std::process::ExitStatus) -> Option<i32> {
    None
}
