//! State shared by every connection and service: the shutdown signal, connection counters, the clients that
//! said Hello, and sponsors. It knows nothing of services or sockets.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

/// What a client said about itself in Hello.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub name: String,
    pub pid: u32,
}

pub struct ServerState {
    pub started: Instant,
    pub current_connections: AtomicU32,
    pub total_connections: AtomicU64,
    next_conn_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// Milliseconds since `started` at which the last client disconnected (for `--idle-timeout`).
    last_client_left_ms: AtomicU64,
    sponsors: Mutex<HashSet<u32>>,
    /// Whether any sponsor was ever registered (the sponsor rule applies only then).
    had_sponsor: AtomicBool,
    clients: Mutex<BTreeMap<u64, ClientInfo>>,
    /// Requests, latency and bytes of the connection layer (read by the HTTP front's `/metrics`).
    pub conn_stats: crate::conn::stats::ConnStats,
}

impl Default for ServerState {
    fn default() -> Self {
        ServerState {
            started: Instant::now(),
            current_connections: AtomicU32::new(0),
            total_connections: AtomicU64::new(0),
            next_conn_id: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
            last_client_left_ms: AtomicU64::new(0),
            sponsors: Mutex::new(HashSet::new()),
            had_sponsor: AtomicBool::new(false),
            clients: Mutex::new(BTreeMap::new()),
            conn_stats: Default::default(),
        }
    }
}

impl ServerState {
    /// Asks the server to stop accepting, finish in-flight requests and exit.
    pub fn request_shutdown(&self, why: &str) {
        if !*self.shutdown.borrow() {
            info!("shutting down: {why}");
        }
        self.shutdown.send_replace(true);
    }

    /// A receiver of the shutdown flag, for loops that wait on it many times.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Resolves once shutdown was requested (at once if it already was).
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Counts a new connection and gives it its id.
    pub fn connection_opened(&self) -> u64 {
        self.current_connections.fetch_add(1, Ordering::SeqCst);
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn connection_closed(&self, id: u64) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if self.current_connections.fetch_sub(1, Ordering::SeqCst) == 1 {
            let ms = self.started.elapsed().as_millis() as u64;
            self.last_client_left_ms.store(ms, Ordering::Relaxed);
        }
    }

    pub fn open_connections(&self) -> u32 {
        self.current_connections.load(Ordering::SeqCst)
    }

    /// How long no client has been connected (zero while one is).
    pub fn idle_for(&self) -> Duration {
        if self.open_connections() > 0 {
            return Duration::ZERO;
        }
        let left = self.last_client_left_ms.load(Ordering::Relaxed);
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(left))
    }

    /// Records what a connection's client said in Hello.
    pub fn set_client(&self, conn_id: u64, info: ClientInfo) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conn_id, info);
    }

    /// Clients that said Hello and are still connected, by connection id.
    pub fn clients(&self) -> BTreeMap<u64, ClientInfo> {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

    pub fn had_sponsor(&self) -> bool {
        self.had_sponsor.load(Ordering::Relaxed)
    }

    /// Drops dead sponsors; returns how many are alive.
    pub fn live_sponsors(&self) -> usize {
        let mut s = self.sponsors.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|&pid| crate::platform::process_alive(pid));
        s.len()
    }
}
