//! The Watch service (`0x0007`): file-system watches shared across every connection, pushing settled batches
//! of changes as events, with clocks, `since` queries, overflow rescans and ignore-file support.
//!
//! Layout: [`rules`] (ignore files, subscription globs), [`tree`] (known paths, OS watches, turning raw
//! notifications into changes), [`history`] (clock, `since`), [`root`] (one shared watch per root: its
//! settling thread, subscriptions, delivery), and this file (the service: messages, root table, lifetimes).
//!
//! A root is keyed by its canonical path and its flags. Subscriptions reference-count it across
//! connections; when the last one goes (unsubscribe or disconnect) the root is kept for a grace period, so a
//! tool that reconnects finds its history, then released with every OS watch it held.

pub mod history;
pub mod root;
pub mod rules;
pub mod tree;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spark_proto::watch::{
    FLAG_NO_IGNORE_FILES, LIST, ListResponse, QUERY, Query, QueryResponse, SUBSCRIBE, Subscribe,
    SubscribeResponse, UNSUBSCRIBE, Unsubscribe, UnsubscribeResponse,
};
use spark_proto::{ErrorCode, Frame, service};

use crate::registry::{
    BoxFuture, HandlerError, HandlerResult, Reply, Request, Service, unknown_message,
};
use history::Since;
use root::{Root, Sub};
use rules::Filter;
use tree::TreeError;

/// Frame payload a QueryResponse may take before it answers `fresh_instance` instead.
const MAX_QUERY_BYTES: usize = 15 << 20;

/// The service's settings (`--watch-settle-ms`, `--watch-grace-secs`).
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// Quiet time after the last notification before a batch is sent.
    pub settle: Duration,
    /// How long a root nobody subscribes to is kept before its watches are released.
    pub grace: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            settle: Duration::from_millis(20),
            grace: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RootKey {
    pub path: PathBuf,
    pub flags: u8,
}

/// Root flag inside the daemon only (never on the wire): watch the directory itself, not its subdirectories.
pub const FLAG_FLAT: u8 = 0x80;

impl RootKey {
    pub fn ignore_files(&self) -> bool {
        self.flags & FLAG_NO_IGNORE_FILES == 0
    }
    pub fn flat(&self) -> bool {
        self.flags & FLAG_FLAT != 0
    }
}

/// The connection id internal subscriptions are filed under (connection ids start at 1 and never wrap).
const INTERNAL_CONN: u64 = u64::MAX;

pub struct Shared {
    pub config: WatchConfig,
    roots: Mutex<HashMap<RootKey, Arc<Root>>>,
    /// Subscription id → (connection, root).
    subs: Mutex<HashMap<u32, (u64, Arc<Root>)>>,
    /// Serialises root creation so two first subscribers of a root share one watch.
    opening: tokio::sync::Mutex<()>,
    next_sub: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The live root for `path` and `flags`, opening it (a scan; blocking pool) when there is none.
    async fn root(self: &Arc<Self>, path: &str, flags: u8) -> Result<Arc<Root>, HandlerError> {
        let p = PathBuf::from(path);
        if !p.is_absolute() {
            return Err(HandlerError::reply(
                ErrorCode::InvalidKey,
                format!("watch root must be an absolute path, got {path:?}"),
            ));
        }
        let canon = tokio::task::spawn_blocking(move || std::fs::canonicalize(&p))
            .await
            .map_err(|e| HandlerError::reply(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| HandlerError::reply(ErrorCode::Io, format!("cannot watch {path}: {e}")))?;
        if !canon.is_dir() {
            return Err(HandlerError::reply(
                ErrorCode::Io,
                format!("cannot watch {path}: not a directory"),
            ));
        }
        let key = RootKey { path: canon, flags };
        let _opening = self.opening.lock().await;
        if let Some(r) = lock(&self.roots).get(&key) {
            return Ok(r.clone());
        }
        let shared = self.clone();
        let k = key.clone();
        let root = tokio::task::spawn_blocking(move || Root::open(k, &shared))
            .await
            .map_err(|e| HandlerError::reply(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| {
                if let TreeError::WatchLimit(_) = e {
                    tracing::error!("{e}");
                }
                let code = match e {
                    TreeError::WatchLimit(_) => ErrorCode::NoSpace,
                    _ => ErrorCode::Io,
                };
                HandlerError::reply(code, e.to_string())
            })?;
        lock(&self.roots).insert(key, root.clone());
        Ok(root)
    }

    /// Subscribes a daemon-internal sink to `dir` (not recursive, ignore files off): the asset service's
    /// dependency watches. Returns the subscription id for [`Shared::unsubscribe_internal`].
    pub async fn subscribe_internal(
        self: &Arc<Self>,
        dir: &std::path::Path,
        sink: Arc<dyn root::Internal>,
    ) -> Result<u32, HandlerError> {
        let path = dir.to_str().ok_or_else(|| {
            HandlerError::reply(
                ErrorCode::InvalidKey,
                format!("{} is not UTF-8", dir.display()),
            )
        })?;
        let root = self.root(path, FLAG_NO_IGNORE_FILES | FLAG_FLAT).await?;
        let id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        let mut subs = lock(&self.subs);
        let mut s = root.state();
        if s.ended {
            return Err(HandlerError::reply(
                ErrorCode::Io,
                format!("the watch of {path} just ended"),
            ));
        }
        subs.insert(id, (INTERNAL_CONN, root.clone()));
        s.subscribe(
            Sub {
                id,
                conn: INTERNAL_CONN,
                filter: Filter::new(&[], &[]).expect("no globs"),
                sink: root::Sink::Internal(sink),
            },
            None,
        );
        Ok(id)
    }

    pub fn unsubscribe_internal(&self, id: u32) {
        let mut subs = lock(&self.subs);
        if let Some((_, root)) = subs.remove(&id) {
            root.state().remove_subs(|s| s.id == id);
        }
    }

    /// Removes `root` from the table (it ended).
    pub fn forget_root(&self, root: &Arc<Root>) {
        let mut roots = lock(&self.roots);
        if roots.get(&root.key).is_some_and(|r| Arc::ptr_eq(r, root)) {
            roots.remove(&root.key);
        }
        lock(&self.subs).retain(|_, (_, r)| !Arc::ptr_eq(r, root));
    }

    /// Removes `root` if it is still unused after the grace period; true when removed.
    pub fn release_if_idle(&self, root: &Arc<Root>, grace: Duration) -> bool {
        let mut roots = lock(&self.roots);
        let s = root.state();
        if !s.subs.is_empty() || s.idle_since.is_none_or(|t| t.elapsed() < grace) {
            return false;
        }
        if roots.get(&root.key).is_some_and(|r| Arc::ptr_eq(r, root)) {
            roots.remove(&root.key);
        }
        true
    }
}

pub struct WatchService {
    shared: Arc<Shared>,
}

impl WatchService {
    /// What the asset service uses to watch dependencies.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn new(config: WatchConfig) -> Self {
        WatchService {
            shared: Arc::new(Shared {
                config,
                roots: Mutex::new(HashMap::new()),
                subs: Mutex::new(HashMap::new()),
                opening: tokio::sync::Mutex::new(()),
                next_sub: AtomicU32::new(1),
            }),
        }
    }

    async fn subscribe(&self, req: &Request) -> HandlerResult {
        let m: Subscribe = req.decode()?;
        let filter = Filter::new(&m.include, &m.exclude)
            .map_err(|e| HandlerError::reply(ErrorCode::Malformed, format!("bad glob: {e}")))?;
        let root = self
            .shared
            .root(&m.root, m.flags & FLAG_NO_IGNORE_FILES)
            .await?;
        let id = self.shared.next_sub.fetch_add(1, Ordering::Relaxed);
        let conn = req.ctx.conn.id;
        let since = (m.since_instance != 0).then_some((m.since_instance, m.since_seq));
        // Lock order everywhere: the subscription table, then a root's state.
        let mut subs = lock(&self.shared.subs);
        let mut s = root.state();
        if s.ended {
            return Err(HandlerError::reply(
                ErrorCode::Io,
                format!("the watch of {} just ended", root.key.path.display()),
            ));
        }
        subs.insert(id, (conn, root.clone()));
        s.subscribe(
            Sub {
                id,
                conn,
                filter,
                sink: root::Sink::Conn(req.ctx.conn.events.clone()),
            },
            since,
        );
        Ok(Reply::msg(SubscribeResponse {
            subscription: id,
            instance: s.history.instance,
            seq: s.history.seq,
            watched_dirs: s.tree.watches,
            watched_files: s.tree.files(),
        }))
    }

    fn unsubscribe(&self, req: &Request) -> HandlerResult {
        let m: Unsubscribe = req.decode()?;
        let conn = req.ctx.conn.id;
        let mut subs = lock(&self.shared.subs);
        let existed = match subs.get(&m.subscription) {
            Some((c, root)) if *c == conn => {
                root.state().remove_subs(|s| s.id == m.subscription);
                subs.remove(&m.subscription);
                true
            }
            _ => false,
        };
        Ok(Reply::msg(UnsubscribeResponse { existed }))
    }

    async fn query(&self, req: &Request) -> HandlerResult {
        let m: Query = req.decode()?;
        let filter = Filter::new(&m.include, &m.exclude)
            .map_err(|e| HandlerError::reply(ErrorCode::Malformed, format!("bad glob: {e}")))?;
        let root = self
            .shared
            .root(&m.root, m.flags & FLAG_NO_IGNORE_FILES)
            .await?;
        let mut s = root.state();
        if s.subs.is_empty() {
            // A query counts as use: the root stays for another grace period.
            s.idle_since = Some(std::time::Instant::now());
        }
        let (instance, seq) = (s.history.instance, s.history.seq);
        let mut resp = QueryResponse {
            instance,
            seq,
            fresh_instance: true,
            changes: Vec::new(),
        };
        if m.since_instance != 0
            && let Since::Changes(c) = s.history.since(m.since_instance, m.since_seq)
        {
            let c = root::filtered(c, &filter);
            let bytes: usize = c.iter().map(|c| c.wire_len()).sum();
            if bytes <= MAX_QUERY_BYTES {
                resp.fresh_instance = false;
                resp.changes = c;
            }
        }
        Ok(Reply::msg(resp))
    }

    fn list(&self) -> HandlerResult {
        let roots: Vec<Arc<Root>> = lock(&self.shared.roots).values().cloned().collect();
        let mut infos: Vec<_> = roots.iter().map(|r| r.info()).collect();
        infos.sort_by(|a, b| a.root.cmp(&b.root).then(a.flags.cmp(&b.flags)));
        Ok(Reply::msg(ListResponse { roots: infos }))
    }
}

impl Service for WatchService {
    fn id(&self) -> u16 {
        service::WATCH
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["watch"]
    }

    fn is_write(&self, frame: &Frame) -> bool {
        // A subscription must be in place before a later request of the connection changes files.
        matches!(frame.msg_type, SUBSCRIBE | UNSUBSCRIBE)
    }

    fn handle(self: Arc<Self>, req: Request) -> BoxFuture<HandlerResult> {
        Box::pin(async move {
            match req.frame.msg_type {
                SUBSCRIBE => self.subscribe(&req).await,
                UNSUBSCRIBE => self.unsubscribe(&req),
                QUERY => self.query(&req).await,
                LIST => self.list(),
                _ => Err(unknown_message(&req.frame)),
            }
        })
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("roots", lock(&self.shared.roots).len() as u64),
            ("subscriptions", lock(&self.shared.subs).len() as u64),
        ]
    }

    fn on_disconnect(&self, conn_id: u64) {
        let mut subs = lock(&self.shared.subs);
        subs.retain(|_, (c, root)| {
            if *c == conn_id {
                root.state().remove_subs(|s| s.conn == conn_id);
                false
            } else {
                true
            }
        });
    }
}
