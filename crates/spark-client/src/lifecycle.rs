//! The engine-side lifecycle: configuration, a cheap `try_connect`, auto-spawn, and [`DaemonConnection`], the
//! process-wide connection that engines share.
//!
//! The daemon is an optimisation. Nothing here ever makes an engine fail: an absent, dead or misbehaving
//! daemon turns every call into "unavailable", which callers treat as a cache miss.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::client::{Client, ClientOptions};
use crate::error::{Error, Result};
use crate::platform;

/// `1`/`true`/`yes`/`on` (any case) turns the daemon integration on; it is off by default.
pub const ENV_ENABLED: &str = "SPARK_DAEMON_ENABLED";
/// The socket to connect to (default: [`crate::default_socket_path`]).
pub const ENV_SOCKET: &str = "SPARK_DAEMON_SOCKET";
/// `1`/`true`/`yes`/`on` lets the client start the daemon when none answers; off by default.
pub const ENV_AUTO_SPAWN: &str = "SPARK_DAEMON_AUTO_SPAWN";
/// The `sparkd` binary to auto-spawn.
pub const ENV_BIN: &str = "SPARK_DAEMON_BIN";

/// How an engine uses the daemon. Mirrors the original engine settings `spark.daemon.*`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Off by default: an engine that did not ask for the daemon never touches it.
    pub enabled: bool,
    pub socket: PathBuf,
    /// Start the daemon when none answers. Off by default.
    pub auto_spawn: bool,
    /// The binary to auto-spawn. A bare name is looked up in `PATH`.
    pub daemon_bin: PathBuf,
    /// Extra flags for an auto-spawned daemon (its `--socket` is always set to [`Self::socket`]).
    pub daemon_args: Vec<OsString>,
    /// How long an auto-spawn waits for the daemon to answer.
    pub spawn_timeout: Duration,
    /// After a failed connect, no new attempt is made for this long, so a dead daemon costs engines
    /// nothing per call.
    pub retry_interval: Duration,
    pub client: ClientOptions,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            enabled: false,
            socket: crate::default_socket_path(),
            auto_spawn: false,
            daemon_bin: default_daemon_bin(),
            daemon_args: Vec::new(),
            spawn_timeout: Duration::from_secs(2),
            retry_interval: Duration::from_secs(1),
            client: ClientOptions {
                // An engine would rather miss than stall a frame for long on a wedged daemon.
                io_timeout: Some(Duration::from_secs(10)),
                ..ClientOptions::default()
            },
        }
    }
}

impl DaemonConfig {
    /// Defaults overlaid with `SPARK_DAEMON_ENABLED`, `SPARK_DAEMON_SOCKET`, `SPARK_DAEMON_AUTO_SPAWN` and
    /// `SPARK_DAEMON_BIN`.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// [`Self::from_env`] with the environment supplied by the caller (tests, or an engine's own settings
    /// store using the same names).
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Self {
        let mut c = DaemonConfig::default();
        let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(v) = non_empty(ENV_ENABLED) {
            c.enabled = parse_bool(ENV_ENABLED, &v).unwrap_or(c.enabled);
        }
        if let Some(v) = non_empty(ENV_SOCKET) {
            c.socket = PathBuf::from(v);
        }
        if let Some(v) = non_empty(ENV_AUTO_SPAWN) {
            c.auto_spawn = parse_bool(ENV_AUTO_SPAWN, &v).unwrap_or(c.auto_spawn);
        }
        if let Some(v) = non_empty(ENV_BIN) {
            c.daemon_bin = PathBuf::from(v);
        }
        c
    }

    /// An enabled configuration for `socket`, everything else default (no auto-spawn).
    pub fn for_socket(socket: impl Into<PathBuf>) -> Self {
        DaemonConfig {
            enabled: true,
            socket: socket.into(),
            ..DaemonConfig::default()
        }
    }
}

fn parse_bool(name: &str, v: &std::ffi::OsStr) -> Option<bool> {
    match v.to_string_lossy().trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        other => {
            warn!("ignoring {name}={other:?}: expected 1/0, true/false, yes/no or on/off");
            None
        }
    }
}

/// `sparkd` next to the running executable when it is there (engines ship it alongside), else `sparkd`
/// from `PATH`.
pub fn default_daemon_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(platform::exe_name("sparkd"))))
        .filter(|p| platform::is_executable(p))
        .unwrap_or_else(|| PathBuf::from("sparkd"))
}

/// Connects when a daemon is there; `None` otherwise. An absent socket file costs one `stat`, no connect
/// attempt and no waiting.
pub fn try_connect(socket: &Path, opts: &ClientOptions) -> Option<Client> {
    if !platform::endpoint_may_exist(socket) {
        return None;
    }
    match Client::connect_with(socket, opts) {
        Ok(c) => Some(c),
        Err(e) => {
            debug!("no daemon at {}: {e}", socket.display());
            None
        }
    }
}

/// Why [`connect_or_spawn`] found no daemon.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no daemon answers at {0} and auto-spawn is off")]
    NotRunning(PathBuf),
    #[error("cannot auto-spawn the daemon: binary {0} not found or not executable")]
    MissingBinary(PathBuf),
    #[error("cannot auto-spawn the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the auto-spawned daemon exited at start-up ({0}); see {1}")]
    DaemonExited(std::process::ExitStatus, PathBuf),
    #[error("no daemon answered at {0} within {1:?} of auto-spawning it")]
    Timeout(PathBuf, Duration),
}

/// Warns about a missing binary once per process, so an engine with a wrong path logs one line, not one
/// per reconnect attempt.
static WARNED_MISSING_BIN: AtomicBool = AtomicBool::new(false);

/// Connects to the configured daemon, starting it first when it is absent and `auto_spawn` is on.
///
/// Many processes may do this at the same moment: the one holding `<socket>.spawn.lock` starts the daemon,
/// the others keep trying to connect. Should two daemons start anyway, the daemon's own `<socket>.lock` lets
/// exactly one serve; the other exits at once with status 3.
pub fn connect_or_spawn(cfg: &DaemonConfig) -> Result<Client, SpawnError> {
    if let Some(c) = try_connect(&cfg.socket, &cfg.client) {
        return Ok(c);
    }
    if !cfg.auto_spawn {
        return Err(SpawnError::NotRunning(cfg.socket.clone()));
    }
    let Some(bin) = resolve_bin(&cfg.daemon_bin) else {
        if !WARNED_MISSING_BIN.swap(true, Ordering::Relaxed) {
            warn!(
                "sparkd auto-spawn: {} not found or not executable; continuing without the daemon",
                cfg.daemon_bin.display()
            );
        }
        return Err(SpawnError::MissingBinary(cfg.daemon_bin.clone()));
    };
    let lock_path = platform::side_file(&cfg.socket, ".spawn.lock");
    platform::create_private_dir_all(parent_dir(&lock_path))?;
    let lock = platform::private_file()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    let deadline = Instant::now() + cfg.spawn_timeout;
    let mut child: Option<Child> = None;
    // At most one spawn per call: a daemon that lost the socket to one we cannot see must not be retried
    // in a loop.
    let mut spawned = false;
    let log = platform::side_file(&cfg.socket, ".log");
    let result = loop {
        if let Some(c) = try_connect(&cfg.socket, &cfg.client) {
            break Ok(c);
        }
        if let Some(ch) = child.as_mut()
            && let Ok(Some(st)) = ch.try_wait()
        {
            child = None;
            // Status 3: another daemon won the socket; it will answer shortly.
            if st.code() != Some(3) {
                break Err(SpawnError::DaemonExited(st, log.clone()));
            }
        }
        // Only the lock holder spawns; it keeps the lock (until this function returns) while the daemon
        // starts, so the others wait for that daemon instead of starting their own.
        if !spawned && platform::try_lock_exclusive(&lock) {
            if let Some(c) = try_connect(&cfg.socket, &cfg.client) {
                break Ok(c);
            }
            spawned = true;
            match spawn_detached(&bin, cfg, &log) {
                Ok(ch) => child = Some(ch),
                Err(e) => break Err(e.into()),
            }
        }
        if Instant::now() >= deadline {
            break Err(SpawnError::Timeout(cfg.socket.clone(), cfg.spawn_timeout));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(ch) = child {
        reap_in_background(ch);
    }
    result
}

/// Launches the daemon in its own session with stdio on `log` (see [`platform::detached_command`]).
fn spawn_detached(bin: &Path, cfg: &DaemonConfig, log: &Path) -> std::io::Result<Child> {
    let mut cmd = platform::detached_command(bin, resolve_bin(Path::new("setsid")));
    // The daemon treats its default socket specially (it owns and tightens that directory), so only pass
    // --socket when it differs.
    if cfg.socket != crate::default_socket_path() {
        cmd.arg("--socket").arg(&cfg.socket);
    }
    cmd.args(&cfg.daemon_args);
    let (out, err) = match open_log(log) {
        Ok(f) => {
            let f2 = f.try_clone()?;
            (Stdio::from(f), Stdio::from(f2))
        }
        Err(e) => {
            warn!(
                "sparkd auto-spawn: cannot open log {}: {e}; daemon output is discarded",
                log.display()
            );
            (Stdio::null(), Stdio::null())
        }
    };
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd.spawn()?;
    info!(pid = child.id(), bin = %bin.display(), socket = %cfg.socket.display(), "auto-spawned sparkd");
    Ok(child)
}

fn open_log(path: &Path) -> std::io::Result<File> {
    platform::private_file()
        .create(true)
        .append(true)
        .open(path)
}

/// The daemon outlives the spawn call; a thread waits for it so it never lingers as a zombie while this
/// process runs. (If this process exits first, the daemon is re-parented as any orphan is.)
fn reap_in_background(mut child: Child) {
    let spawned = std::thread::Builder::new()
        .name("sparkd-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = spawned {
        debug!("cannot start the reaper thread: {e}");
    }
}

fn resolve_bin(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 || bin.is_absolute() {
        return platform::is_executable(bin).then(|| bin.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    // `sparkd` is `sparkd.exe` on Windows.
    let exe = platform::exe_name(&bin.to_string_lossy());
    std::env::split_paths(&path)
        .flat_map(|d| [d.join(bin), d.join(&exe)])
        .find(|p| platform::is_executable(p))
}

fn parent_dir(file: &Path) -> &Path {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The process-wide connection an engine shares between its systems (the original's `DaemonConnection`).
///
/// - [`init`](Self::init) and [`shutdown`](Self::shutdown) are idempotent and silent: disabled or
///   unreachable simply means "not connected".
/// - [`call`](Self::call) snapshots the client under a short lock and runs the request unlocked, so
///   threads never queue behind each other's round trips here.
/// - A broken connection is dropped and reconnected once, straight away (a restarted daemon is picked up by
///   the very next call); if that fails, no further attempt is made for `retry_interval`, so a dead daemon
///   causes no retry storm.
#[derive(Debug, Default)]
pub struct DaemonConnection {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `Some` between `init` and `shutdown`.
    config: Option<DaemonConfig>,
    client: Option<Arc<Client>>,
    /// A thread is connecting (possibly spawning) right now; others do not wait for it.
    connecting: bool,
    last_failure: Option<Instant>,
    /// Bumped by `shutdown`, so a connect that was in flight across it is discarded.
    epoch: u64,
}

static GLOBAL: LazyLock<Arc<DaemonConnection>> =
    LazyLock::new(|| Arc::new(DaemonConnection::new()));

impl DaemonConnection {
    /// A connection that is not initialised yet. Most engines use [`Self::global`] instead.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide instance.
    pub fn global() -> Arc<DaemonConnection> {
        GLOBAL.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `config` and, when enabled, connects (auto-spawning if configured). Returns whether a daemon
    /// is connected. A second `init` without `shutdown` in between changes nothing.
    pub fn init(&self, config: DaemonConfig) -> bool {
        {
            let mut s = self.state();
            if s.config.is_some() {
                return s.client.is_some();
            }
            let enabled = config.enabled;
            s.config = Some(config);
            s.last_failure = None;
            if !enabled {
                return false;
            }
        }
        self.client().is_some()
    }

    /// [`Self::init`] with [`DaemonConfig::from_env`].
    pub fn init_from_env(&self) -> bool {
        self.init(DaemonConfig::from_env())
    }

    /// Disconnects and forgets the configuration. Safe to call any number of times, initialised or not.
    pub fn shutdown(&self) {
        let mut s = self.state();
        s.config = None;
        s.client = None;
        s.last_failure = None;
        s.connecting = false;
        s.epoch += 1;
    }

    pub fn is_initialised(&self) -> bool {
        self.state().config.is_some()
    }

    pub fn is_enabled(&self) -> bool {
        self.state().config.as_ref().is_some_and(|c| c.enabled)
    }

    /// Whether a connection is currently held (it may still turn out broken on the next call).
    pub fn is_connected(&self) -> bool {
        self.state().client.is_some()
    }

    /// The configuration in force, if initialised.
    pub fn config(&self) -> Option<DaemonConfig> {
        self.state().config.clone()
    }

    /// The current client, connecting first if there is none and a retry is due. `None` when disabled,
    /// uninitialised, unreachable or another thread is connecting right now.
    pub fn client(&self) -> Option<Arc<Client>> {
        self.connect_if(false)
    }

    /// `force` skips the retry interval (used for the one immediate retry after a broken connection).
    fn connect_if(&self, force: bool) -> Option<Arc<Client>> {
        let (cfg, epoch) = {
            let mut s = self.state();
            if let Some(c) = &s.client {
                return Some(c.clone());
            }
            let cfg = s.config.as_ref().filter(|c| c.enabled)?;
            if s.connecting {
                return None;
            }
            if !force
                && s.last_failure
                    .is_some_and(|t| t.elapsed() < cfg.retry_interval)
            {
                return None;
            }
            let cfg = cfg.clone();
            s.connecting = true;
            (cfg, s.epoch)
        };
        // Unlocked: an auto-spawn may take up to `spawn_timeout`, and nobody should wait for it.
        let result = connect_or_spawn(&cfg);
        let mut s = self.state();
        if s.epoch != epoch {
            // shutdown() ran meanwhile (perhaps another init too): this connection belongs to the past.
            return None;
        }
        s.connecting = false;
        match result {
            Ok(c) => {
                debug!(pid = c.hello().daemon_pid, "connected to sparkd");
                let c = Arc::new(c);
                s.client = Some(c.clone());
                s.last_failure = None;
                Some(c)
            }
            Err(e) => {
                debug!("sparkd unavailable: {e}");
                s.last_failure = Some(Instant::now());
                None
            }
        }
    }

    /// Drops `broken` if it is still the current client (another thread may have replaced it already).
    fn drop_client(&self, broken: &Arc<Client>) {
        let mut s = self.state();
        if s.client.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            s.client = None;
        }
    }

    /// Runs `f` against the daemon. A broken connection is replaced and `f` retried once; when no daemon is
    /// available the result is an [`Error::is_unavailable`] error, which engines treat as a miss. An
    /// ErrorResponse from the daemon, or the caller's own reader/writer failing ([`Error::Local`]), is
    /// returned as is without a retry: running `f` again would not help. (If a `Local` failure left a
    /// stream half-done, the next call finds the connection broken and reconnects then.)
    pub fn call<T>(&self, f: impl Fn(&Client) -> Result<T>) -> Result<T> {
        let Some(c) = self.client() else {
            return Err(self.unavailable());
        };
        match f(&c) {
            Err(e) if !e.blames_the_caller_or_daemon() => {
                debug!("sparkd connection broke ({e}); reconnecting once");
                self.drop_client(&c);
                let Some(c2) = self.connect_if(true) else {
                    return Err(e);
                };
                let r = f(&c2);
                if let Err(e) = &r
                    && !e.blames_the_caller_or_daemon()
                {
                    self.drop_client(&c2);
                    self.state().last_failure = Some(Instant::now());
                }
                r
            }
            r => r,
        }
    }

    /// [`Self::call`] with every failure folded into `None`, for paths where the daemon is only a cache.
    pub fn call_or_miss<T>(&self, f: impl Fn(&Client) -> Result<T>) -> Option<T> {
        match self.call(f) {
            Ok(v) => Some(v),
            Err(e) => {
                debug!("sparkd call failed, treating as a miss: {e}");
                None
            }
        }
    }

    fn unavailable(&self) -> Error {
        let s = self.state();
        let (path, why) = match &s.config {
            None => (PathBuf::new(), "the daemon connection is not initialised"),
            Some(c) if !c.enabled => (c.socket.clone(), "the daemon integration is disabled"),
            Some(c) => (
                c.socket.clone(),
                "no daemon is reachable (waiting before the next attempt)",
            ),
        };
        Error::NotRunning {
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotConnected, why),
        }
    }
}
