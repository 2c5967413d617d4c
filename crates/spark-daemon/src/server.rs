//! The server: socket ownership, the accept loop, per-connection dispatch, shutdown and lifetime rules.
//!
//! Request path: `accept` → [`serve_conn`] (peer check, then a loop of [`Conn::read_frame`]) → [`dispatch`]
//! → the registered [`Service`]'s handler → replies queued on the [`Conn`] → flushed when no further request
//! is already buffered.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use spark_proto::{ErrorCode, ErrorResponse, msg, service};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::conn::{Conn, ConnError};
use crate::registry::{HandlerError, Registry, Request, unknown_service};

/// How long shutdown waits for in-flight requests before exiting anyway (the promise is 500 ms in total).
const DRAIN_LIMIT: Duration = Duration::from_millis(400);

/// State shared by every connection and service.
pub struct ServerState {
    pub started: Instant,
    pub registry: Registry,
    pub current_connections: AtomicU32,
    pub total_connections: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// Milliseconds since `started` at which the last client disconnected (for `--idle-timeout`).
    last_client_left_ms: AtomicU64,
    sponsors: Mutex<HashSet<u32>>,
    /// Whether any sponsor was ever registered (the sponsor rule applies only then).
    had_sponsor: std::sync::atomic::AtomicBool,
}

impl ServerState {
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(ServerState {
            started: Instant::now(),
            registry,
            current_connections: AtomicU32::new(0),
            total_connections: AtomicU64::new(0),
            shutdown: watch::channel(false).0,
            last_client_left_ms: AtomicU64::new(0),
            sponsors: Mutex::new(HashSet::new()),
            had_sponsor: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Asks the server to stop accepting, finish in-flight requests and exit.
    pub fn request_shutdown(&self, why: &str) {
        if !*self.shutdown.borrow() {
            info!("shutting down: {why}");
        }
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Registers a sponsor process; returns the number of live sponsors.
    pub fn add_sponsor(&self, pid: u32) -> u32 {
        self.sponsors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid);
        self.had_sponsor.store(true, Ordering::Relaxed);
        self.live_sponsors() as u32
    }

    /// Drops dead sponsors; returns how many are alive.
    fn live_sponsors(&self) -> usize {
        let mut s = self.sponsors.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|&pid| process_alive(pid));
        s.len()
    }
}

/// Whether a sponsor pid names a possible process (kill(2) treats 0 and negative values as groups).
pub fn valid_pid(pid: u32) -> bool {
    pid > 0 && pid <= i32::MAX as u32
}

fn process_alive(pid: u32) -> bool {
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

/// Counts a connection for its lifetime.
struct ConnGuard(Arc<ServerState>);
impl ConnGuard {
    fn new(state: &Arc<ServerState>) -> Self {
        state.current_connections.fetch_add(1, Ordering::SeqCst);
        state.total_connections.fetch_add(1, Ordering::Relaxed);
        ConnGuard(state.clone())
    }
}
impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.current_connections.fetch_sub(1, Ordering::SeqCst) == 1 {
            let ms = self.0.started.elapsed().as_millis() as u64;
            self.0.last_client_left_ms.store(ms, Ordering::Relaxed);
        }
    }
}

/// The socket path and the lock that makes this daemon its only owner.
pub struct SocketOwnership {
    pub path: PathBuf,
    _lock: File,
}

/// Why this daemon cannot own the socket path.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "another sparkd already serves {path} (lock {lock} is held); not starting a second one"
    )]
    AlreadyRunning { path: PathBuf, lock: PathBuf },
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

/// Takes the per-socket lock file and clears a stale socket left by a dead daemon.
///
/// The lock (`<socket>.lock`, `flock`ed for the daemon's lifetime) is what makes ownership safe: a socket
/// file found while we hold the lock can only be stale, so it is replaced; a held lock means a live daemon
/// (or one starting right now), so we leave everything alone.
pub fn take_socket(path: &Path, is_default: bool) -> Result<SocketOwnership, OwnershipError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    prepare_dir(dir, is_default)?;
    let lock_path = lock_path(path);
    let lock = std::fs::OpenOptions::new()
        .mode(0o600)
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open lock file {}", lock_path.display()))?;
    if let Err(e) = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            return Err(OwnershipError::AlreadyRunning {
                path: path.to_owned(),
                lock: lock_path,
            });
        }
        return Err(anyhow::anyhow!("cannot lock {}: {e}", lock_path.display()).into());
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            info!(
                "replacing stale socket {} left by a daemon that is gone",
                path.display()
            );
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        Ok(_) => {
            return Err(anyhow::anyhow!(
                "{} exists and is not a socket; refusing to replace it (choose another --socket)",
                path.display()
            )
            .into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("cannot inspect {}: {e}", path.display()).into()),
    }
    Ok(SocketOwnership {
        path: path.to_owned(),
        _lock: lock,
    })
}

pub fn lock_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Creates the socket directory 0700. The default directory is ours by name, so an existing one is also
/// checked for ownership and tightened; a directory the user named is created if missing but otherwise
/// left as it is.
fn prepare_dir(dir: &Path, is_default: bool) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create socket directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        return Ok(());
    }
    if is_default {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(dir)?;
        let me = rustix::process::geteuid().as_raw();
        if !m.is_dir() || m.uid() != me {
            bail!(
                "socket directory {} is not a directory owned by uid {me}; remove it or pass --socket",
                dir.display()
            );
        }
        if m.mode() & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Binds the listening socket with mode 0600 from the start (umask), so there is no window in which
/// another user could connect.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let r = UnixListener::bind(path);
    rustix::process::umask(old);
    let l = r.with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Runs the daemon until shutdown. Returns an error (non-zero exit) on a fatal accept failure.
pub async fn run(
    config: Config,
    ownership: SocketOwnership,
    state: Arc<ServerState>,
) -> anyhow::Result<()> {
    let listener = bind(&ownership.path)?;
    info!(
        socket = %ownership.path.display(),
        pid = std::process::id(),
        services = ?state.registry.ids(),
        "sparkd ready"
    );
    spawn_signal_handlers(&state);
    spawn_lifetime_monitor(&state, &config);
    let result = accept_loop(&listener, &state, &config).await;
    // New clients must see "not running" at once, not a socket that never answers.
    let _ = std::fs::remove_file(&ownership.path);
    drop(listener);
    state.request_shutdown("stopping");
    let deadline = Instant::now() + DRAIN_LIMIT;
    while state.current_connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let left = state.current_connections.load(Ordering::SeqCst);
    if left > 0 {
        warn!("{left} connection(s) still busy at exit");
    }
    result
}

async fn accept_loop(
    listener: &UnixListener,
    state: &Arc<ServerState>,
    config: &Config,
) -> anyhow::Result<()> {
    let mut shutdown = state.shutdown.subscribe();
    let mut transient_errors = 0u32;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        };
        match accepted {
            Ok((stream, _)) => {
                transient_errors = 0;
                let state = state.clone();
                let frame_timeout = config.frame_timeout;
                tokio::spawn(async move {
                    let guard = ConnGuard::new(&state);
                    serve_conn(stream, &state, frame_timeout).await;
                    drop(guard);
                });
            }
            Err(e) if is_transient_accept_error(&e) => {
                // Out of fds or an aborted handshake: back off instead of spinning, keep serving.
                transient_errors += 1;
                warn!("accept failed (transient, attempt {transient_errors}): {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                error!("accept failed fatally: {e}");
                return Err(anyhow::Error::new(e).context("accept on the daemon socket failed"));
            }
        }
    }
}

fn is_transient_accept_error(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(
            Errno::MFILE
                | Errno::NFILE
                | Errno::NOBUFS
                | Errno::NOMEM
                | Errno::CONNABORTED
                | Errno::INTR
        )
    )
}

/// Serves one client until it leaves, misbehaves or the daemon shuts down.
async fn serve_conn(stream: UnixStream, state: &Arc<ServerState>, frame_timeout: Duration) {
    let mut conn = Conn::new(stream, frame_timeout);
    if let Err(why) = check_peer(&conn) {
        warn!("refused a connection: {why}");
        let e = ErrorResponse::new(ErrorCode::PermissionDenied, why);
        let _ = conn.send_error(service::CONTROL, &e).await;
        let _ = conn.flush().await;
        drain_refused(&conn).await;
        return;
    }
    let mut shutdown = state.shutdown.subscribe();
    loop {
        let read = tokio::select! {
            biased;
            r = conn.read_frame() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let frame = match read {
            Ok(f) => f,
            Err(ConnError::Closed) => break,
            Err(ConnError::Proto(e)) => {
                // An oversize or undecodable header: the stream cannot be resynchronised.
                debug!("closing connection: {e}");
                let err =
                    ErrorResponse::new(ErrorCode::TooLarge, format!("{e}; closing the connection"));
                let _ = conn.send_error(service::CONTROL, &err).await;
                break;
            }
            Err(e) => {
                debug!("connection ended: {e}");
                break;
            }
        };
        match dispatch(frame, &mut conn, state).await {
            Ok(()) => {}
            Err(()) => break,
        }
        if !conn.has_buffered_frame() && conn.flush().await.is_err() {
            break;
        }
    }
    let _ = conn.flush().await;
}

/// Discards what a refused client sends, for at most a second, until it hangs up. Closing with its request
/// still unread would reset the connection, and the client would never see the reason it was refused.
async fn drain_refused(conn: &Conn) {
    let s = conn.stream();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if s.readable().await.is_err() {
                return;
            }
            match s.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// Routes one frame to its service and turns handler errors into ErrorResponses. `Err` closes the connection.
async fn dispatch(
    frame: spark_proto::Frame,
    conn: &mut Conn,
    state: &Arc<ServerState>,
) -> Result<(), ()> {
    let service_id = frame.service;
    if frame.msg_type == msg::STREAM_CHUNK || frame.msg_type == msg::STREAM_END {
        // Outside an upload these belong to a PutStream that was already answered (refused before the
        // stream began: unknown service, malformed header). Dropping them keeps one reply per request.
        debug!("dropping a stream frame that belongs to no upload (service 0x{service_id:04x})");
        return Ok(());
    }
    let Some(svc) = state.registry.get(service_id).cloned() else {
        return conn
            .send_error(service_id, &unknown_service(service_id))
            .await
            .map_err(|_| ());
    };
    match svc.handle(Request { frame, conn, state }).await {
        Ok(()) => Ok(()),
        Err(HandlerError::Reply(e)) => conn.send_error(service_id, &e).await.map_err(|_| ()),
        Err(HandlerError::Close(e)) => {
            debug!("closing connection after error: {e}");
            let _ = conn.send_error(service_id, &e).await;
            let _ = conn.flush().await;
            Err(())
        }
        Err(HandlerError::Conn(e)) => {
            debug!("connection failed mid-request: {e}");
            Err(())
        }
    }
}

/// Only the daemon's own user may talk to it, whatever the socket file's mode says.
fn check_peer(conn: &Conn) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    match conn.stream().peer_cred() {
        Ok(c) if c.uid() == me => Ok(()),
        Ok(c) => Err(format!(
            "peer uid {} is not this daemon's uid {me}; each user runs their own sparkd",
            c.uid()
        )),
        Err(e) => Err(format!("cannot read peer credentials: {e}")),
    }
}

fn spawn_signal_handlers(state: &Arc<ServerState>) {
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
            Err(e) => warn!("cannot install {name} handler: {e}"),
        }
    }
}

/// Applies `--idle-timeout` and `--exit-with-sponsors`.
fn spawn_lifetime_monitor(state: &Arc<ServerState>, config: &Config) {
    let idle = config.idle_timeout;
    let sponsors = config.exit_with_sponsors;
    if idle.is_none() && !sponsors {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut shutdown = state.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let no_clients = state.current_connections.load(Ordering::SeqCst) == 0;
            if let (Some(idle), true) = (idle, no_clients) {
                let left = state.last_client_left_ms.load(Ordering::Relaxed);
                let idle_for = state
                    .started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(left));
                if idle_for >= idle {
                    state.request_shutdown(&format!(
                        "no client for {}s (--idle-timeout)",
                        idle.as_secs()
                    ));
                    return;
                }
            }
            if sponsors
                && state.had_sponsor.load(Ordering::Relaxed)
                && state.live_sponsors() == 0
                && no_clients
            {
                state.request_shutdown("every sponsor process has exited (--exit-with-sponsors)");
                return;
            }
        }
    });
}
