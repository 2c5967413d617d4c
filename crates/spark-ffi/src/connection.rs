//! The process-wide daemon connection: configuration, connect and shutdown, ping and stats.

use std::ffi::{OsString, c_char};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spark_client::{DaemonConfig, DaemonConnection};

use crate::memory::{opt_str, write_opt, write_out};
use crate::status::{SparkStatus, fail, from_client_error, guard, status_guard};

/// How [`spark_init`] sets the process up. Zero-initialise it (or use [`spark_config_default`]): every NULL
/// string and zero number means "the default".
#[repr(C)]
#[derive(Debug)]
pub struct SparkConfig {
    /// Use the daemon at all. Off by default.
    pub enabled: bool,
    /// The daemon's socket; NULL = `$XDG_RUNTIME_DIR/spark/sparkd.sock` (else `/tmp/spark-$UID/sparkd.sock`);
    /// on Windows a named pipe, NULL = `\\.\pipe\spark-<SID>-sparkd`.
    pub socket_path: *const c_char,
    /// Start the daemon when none answers. Off by default.
    pub auto_spawn: bool,
    /// The daemon binary for auto-spawn; NULL = `sparkd` (`sparkd.exe`) next to the executable, else on `PATH`.
    pub daemon_bin: *const c_char,
    /// Extra flags for an auto-spawned daemon, separated by spaces; NULL = none.
    pub daemon_args: *const c_char,
    /// How long auto-spawn waits for the daemon; 0 = 2000 ms.
    pub spawn_timeout_ms: u32,
    /// Register this process as a sponsor (a daemon started with --exit-with-sponsors outlives it only
    /// while other sponsors remain).
    pub sponsor: bool,
    /// Shown in the daemon's logs; NULL = the executable's name.
    pub client_name: *const c_char,
}

/// Daemon-wide statistics.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SparkDaemonStats {
    pub uptime_secs: u64,
    pub total_connections: u64,
    pub current_connections: u32,
    pub daemon_pid: u32,
    pub protocol_version: u16,
    pub service_count: u16,
}

pub(crate) fn conn() -> Arc<DaemonConnection> {
    DaemonConnection::global()
}

/// Calls the daemon; an unavailable one is NotConnected, as the engine expects.
pub(crate) fn daemon_call<T>(
    f: impl Fn(&spark_client::Client) -> spark_client::Result<T>,
) -> Result<T, SparkStatus> {
    conn().call(f).map_err(|e| from_client_error(&e))
}

/// Auto-spawn settings made with [`spark_set_auto_spawn`], applied by later connects: the binary (None =
/// default) and the wait. (Inside a function so cbindgen, which sees every top-level static, skips it.)
fn auto_spawn_setting() -> std::sync::MutexGuard<'static, Option<(Option<PathBuf>, Duration)>> {
    static AUTO_SPAWN: Mutex<Option<(Option<PathBuf>, Duration)>> = Mutex::new(None);
    AUTO_SPAWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fills `out` with the defaults (daemon off, default socket, no auto-spawn).
///
/// # Safety
/// `out` is NULL or valid for writing a `SparkConfig`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_config_default(out: *mut SparkConfig) -> SparkStatus {
    status_guard(|| {
        let c = SparkConfig {
            enabled: false,
            socket_path: std::ptr::null(),
            auto_spawn: false,
            daemon_bin: std::ptr::null(),
            daemon_args: std::ptr::null(),
            spawn_timeout_ms: 0,
            sponsor: false,
            client_name: std::ptr::null(),
        };
        // SAFETY: forwarded caller guarantee on `out`.
        unsafe { write_out(out, c, "out") }?;
        Ok(SparkStatus::Ok)
    })
}

/// Sets up the process-wide connection and, when enabled, connects (auto-spawning if configured). Returns
/// `SPARK_STATUS_OK` when connected, `SPARK_STATUS_NOT_CONNECTED` when disabled or unreachable — not a
/// failure: the engine simply runs without the daemon. Idempotent: a second call without
/// [`spark_shutdown`] changes nothing. NULL `config` means [`spark_init_from_env`].
///
/// # Safety
/// `config` is NULL or points to a valid `SparkConfig` whose non-NULL strings are NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_init(config: *const SparkConfig) -> SparkStatus {
    status_guard(|| {
        if config.is_null() {
            return Ok(connected_status(conn().init_from_env()));
        }
        // SAFETY: non-NULL and valid per the caller.
        let c = unsafe { &*config };
        let mut cfg = DaemonConfig {
            enabled: c.enabled,
            auto_spawn: c.auto_spawn,
            ..DaemonConfig::default()
        };
        // SAFETY: each string is NULL or NUL-terminated per the caller.
        unsafe {
            if let Some(s) = opt_str(c.socket_path, "socket_path")? {
                cfg.socket = s.into();
            }
            if let Some(s) = opt_str(c.daemon_bin, "daemon_bin")? {
                cfg.daemon_bin = s.into();
            }
            if let Some(s) = opt_str(c.daemon_args, "daemon_args")? {
                cfg.daemon_args = s.split_whitespace().map(OsString::from).collect();
            }
            if let Some(s) = opt_str(c.client_name, "client_name")? {
                cfg.client.client_name = s.into();
            }
        }
        if c.spawn_timeout_ms > 0 {
            cfg.spawn_timeout = Duration::from_millis(c.spawn_timeout_ms.into());
        }
        cfg.client.sponsor = c.sponsor;
        Ok(connected_status(conn().init(cfg)))
    })
}

/// [`spark_init`] with the settings from `SPARK_DAEMON_ENABLED`, `SPARK_DAEMON_SOCKET`,
/// `SPARK_DAEMON_AUTO_SPAWN` and `SPARK_DAEMON_BIN`.
#[unsafe(no_mangle)]
pub extern "C" fn spark_init_from_env() -> SparkStatus {
    status_guard(|| Ok(connected_status(conn().init_from_env())))
}

fn connected_status(connected: bool) -> SparkStatus {
    if connected {
        SparkStatus::Ok
    } else {
        let cfg = conn().config();
        let why = match &cfg {
            Some(c) if !c.enabled => "the daemon integration is disabled".to_string(),
            Some(c) => format!("no daemon is reachable at {}", c.socket.display()),
            None => "not initialised".to_string(),
        };
        fail(SparkStatus::NotConnected, why)
    }
}

/// Sets auto-spawn for the next [`spark_connect`] / [`spark_try_connect`]: `enabled`, the binary (NULL =
/// default) and the wait in milliseconds (0 = 2000).
///
/// # Safety
/// `daemon_bin` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_set_auto_spawn(
    enabled: bool,
    daemon_bin: *const c_char,
    timeout_ms: u32,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee.
        let bin = unsafe { opt_str(daemon_bin, "daemon_bin") }?.map(PathBuf::from);
        let wait = if timeout_ms == 0 {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(timeout_ms.into())
        };
        *auto_spawn_setting() = enabled.then_some((bin, wait));
        Ok(SparkStatus::Ok)
    })
}

fn connect_to(socket: Option<&str>) -> bool {
    let mut cfg = DaemonConfig {
        enabled: true,
        ..DaemonConfig::default()
    };
    if let Some(s) = socket {
        cfg.socket = s.into();
    }
    let setting = auto_spawn_setting().clone();
    if let Some((bin, wait)) = setting {
        cfg.auto_spawn = true;
        if let Some(b) = bin {
            cfg.daemon_bin = b;
        }
        cfg.spawn_timeout = wait;
    }
    let c = conn();
    c.shutdown();
    c.init(cfg)
}

/// (Re)connects the process-wide connection to `socket_path` (NULL = default path), replacing any previous
/// one, auto-spawning if [`spark_set_auto_spawn`] enabled it. `SPARK_STATUS_NOT_CONNECTED` (with a
/// message) when no daemon answers.
///
/// # Safety
/// `socket_path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_connect(socket_path: *const c_char) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee.
        let socket = unsafe { opt_str(socket_path, "socket_path") }?;
        Ok(connected_status(connect_to(socket)))
    })
}

/// As [`spark_connect`], but costs nothing when the socket file is absent (one `stat`, no connect attempt)
/// and leaves no error message: for engines probing for an optional daemon.
///
/// # Safety
/// `socket_path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_try_connect(socket_path: *const c_char) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee.
        let socket = unsafe { opt_str(socket_path, "socket_path") }?;
        Ok(if connect_to(socket) {
            SparkStatus::Ok
        } else {
            SparkStatus::NotConnected
        })
    })
}

/// Disconnects and forgets the configuration. Idempotent; call it after detaching (closing) tiered caches.
#[unsafe(no_mangle)]
pub extern "C" fn spark_shutdown() {
    guard((), || conn().shutdown())
}

/// Whether a daemon connection is held right now.
#[unsafe(no_mangle)]
pub extern "C" fn spark_is_connected() -> bool {
    guard(false, || conn().is_connected())
}

/// Round trip to the daemon; the time in microseconds goes to `rtt_us` unless it is NULL.
///
/// # Safety
/// `rtt_us` is NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_ping(rtt_us: *mut u64) -> SparkStatus {
    status_guard(|| {
        let rtt = daemon_call(|c| c.ping())?;
        // SAFETY: forwarded caller guarantee on `rtt_us`.
        unsafe { write_opt(rtt_us, rtt.as_micros() as u64) };
        Ok(SparkStatus::Ok)
    })
}

/// Daemon-wide statistics.
///
/// # Safety
/// `out` is valid for writing a `SparkDaemonStats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_stats(out: *mut SparkDaemonStats) -> SparkStatus {
    status_guard(|| {
        let (s, pid) = daemon_call(|c| Ok((c.stats()?, c.hello().daemon_pid)))?;
        let st = SparkDaemonStats {
            uptime_secs: s.uptime_secs,
            total_connections: s.total_connections,
            current_connections: s.current_connections,
            daemon_pid: pid,
            protocol_version: s.protocol_version,
            service_count: s.services.len() as u16,
        };
        // SAFETY: forwarded caller guarantee on `out`.
        unsafe { write_out(out, st, "out") }?;
        Ok(SparkStatus::Ok)
    })
}
