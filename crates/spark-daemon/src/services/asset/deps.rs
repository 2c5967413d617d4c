//! Asset dependencies: which source files each variant was built from, their watches, and invalidation.
//!
//! A variant `(path, platform)` declares the absolute paths of its sources. Each source's directory is watched
//! (flat: that directory only, ignore files off) through the Watch service, one internal subscription per
//! directory shared by every variant with a source in it. When a source changes (or its directory's watch
//! overflows or ends), every variant declared with it is dropped from the `asset` namespace at once and every
//! connection that asked for invalidations gets one AssetInvalidated per variant.
//!
//! Declarations are also appended to a log beside the namespace's store ([`super::deps_log`]). After a
//! restart, [`Deps::restore`] re-watches every declared source and drops each variant whose sources changed
//! while no watch was looking; asset requests wait for that check, so no variant declared before a restart
//! is ever served stale after it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use spark_proto::ErrorCode;
use spark_proto::cache::AssetInvalidated;
use spark_proto::service;
use spark_proto::watch::Change;
use tokio::sync::mpsc;

use super::asset_store_key;
use super::deps_log::{DepsLog, Fingerprint, Sources};
use crate::events::{EventSender, Sent};
use crate::namespaces::Namespace;
use crate::registry::HandlerError;
use crate::services::watch::Shared as WatchShared;
use crate::services::watch::root::Internal;

/// A variant: its asset path and platform.
pub type Variant = (String, u8);

#[derive(Default)]
struct Index {
    by_file: HashMap<PathBuf, HashSet<Variant>>,
    by_variant: HashMap<Variant, Vec<PathBuf>>,
    /// Watched directory → (internal subscription id, files in it that variants depend on).
    dirs: HashMap<PathBuf, (u32, usize)>,
}

pub struct Deps {
    ns: Arc<Namespace>,
    watch: Arc<WatchShared>,
    index: Mutex<Index>,
    /// Connections that asked for AssetInvalidated events.
    listeners: Mutex<HashMap<u64, EventSender>>,
    /// Where the watch threads hand changed files to (see [`Deps::start`]).
    tx: OnceLock<mpsc::UnboundedSender<PathBuf>>,
    /// Serialises declarations so a directory is subscribed once.
    declaring: tokio::sync::Mutex<()>,
    /// The persistent record of declarations; `None` for a memory-only namespace.
    log: Mutex<Option<DepsLog>>,
    /// Set once [`Deps::restore`] has checked the declarations of the previous run.
    restored: tokio::sync::watch::Sender<bool>,
    restore_started: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs blocking file work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HandlerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HandlerError::reply(ErrorCode::Internal, e.to_string()))
}

fn parent(f: &Path) -> &Path {
    f.parent().expect("canonical source has a parent")
}

/// Adds `variant`'s sources to the index; their directories are watched already.
fn index_variant(ix: &mut Index, variant: &Variant, files: Vec<PathBuf>) {
    for f in &files {
        if let Some(e) = ix.dirs.get_mut(parent(f)) {
            e.1 += 1;
        }
        ix.by_file
            .entry(f.clone())
            .or_default()
            .insert(variant.clone());
    }
    ix.by_variant.insert(variant.clone(), files);
}

/// The watch-side sink: never blocks the root's thread, only queues the changed paths.
struct Sink(mpsc::UnboundedSender<PathBuf>);

/// Queued instead of a file: everything in this directory changed (overflow, watch ended).
const WHOLE_DIR: &str = "\0dir";

impl Internal for Sink {
    fn changed(&self, root: &Path, changes: &[Change]) {
        for c in changes {
            let _ = self.0.send(root.join(&c.path));
            if !c.to.is_empty() {
                let _ = self.0.send(root.join(&c.to));
            }
        }
    }
    fn lost(&self, root: &Path) {
        let _ = self.0.send(root.join(WHOLE_DIR));
    }
}

/// A source path as the index keys it: canonical directory, then the file name (the file itself may be
/// replaced by a rename at any time, so it is not resolved).
pub fn canonical_source(p: &str) -> Result<PathBuf, HandlerError> {
    let path = Path::new(p);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(HandlerError::reply(
            ErrorCode::InvalidKey,
            format!("dependency {p:?} is not a file path"),
        ));
    };
    if !path.is_absolute() {
        return Err(HandlerError::reply(
            ErrorCode::InvalidKey,
            format!("dependency {p:?} must be an absolute path"),
        ));
    }
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| HandlerError::reply(ErrorCode::Io, format!("dependency {p}: {e}")))?;
    Ok(dir.join(name))
}

impl Deps {
    pub fn new(ns: Arc<Namespace>, watch: Arc<WatchShared>) -> Arc<Deps> {
        Arc::new(Deps {
            ns,
            watch,
            index: Mutex::new(Index::default()),
            listeners: Mutex::new(HashMap::new()),
            tx: OnceLock::new(),
            declaring: tokio::sync::Mutex::new(()),
            log: Mutex::new(None),
            restored: tokio::sync::watch::channel(false).0,
            restore_started: AtomicBool::new(false),
        })
    }

    /// Starts [`Deps::restore`] once, in a task of its own (the service's `start`, or the first request).
    pub fn start_restore(self: &Arc<Self>) {
        if !self.restore_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().restore());
        }
    }

    /// Waits until the previous run's declarations have been checked: until then a variant could be stale.
    pub async fn wait_restored(self: &Arc<Self>) {
        if *self.restored.borrow() {
            return;
        }
        self.start_restore();
        let mut rx = self.restored.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// The channel the watch sinks feed, with its consumer task (started on first use, inside the runtime).
    fn sender(self: &Arc<Self>) -> mpsc::UnboundedSender<PathBuf> {
        self.tx
            .get_or_init(|| {
                let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
                let me = Arc::downgrade(self);
                tokio::spawn(async move {
                    while let Some(first) = rx.recv().await {
                        let mut files = vec![first];
                        while let Ok(more) = rx.try_recv() {
                            files.push(more);
                        }
                        let Some(me) = me.upgrade() else { return };
                        me.invalidate_files(files).await;
                    }
                });
                tx
            })
            .clone()
    }

    pub fn listen(&self, conn: u64, events: EventSender) {
        lock(&self.listeners).insert(conn, events);
    }

    pub fn on_disconnect(&self, conn: u64) {
        lock(&self.listeners).remove(&conn);
    }

    /// Replaces the sources of `variant`; returns how many are watched.
    pub async fn declare(
        self: &Arc<Self>,
        variant: Variant,
        sources: &[String],
    ) -> Result<u32, HandlerError> {
        let mut files = Vec::with_capacity(sources.len());
        for s in sources {
            let s = s.clone();
            let f = blocking(move || canonical_source(&s)).await??;
            if !files.contains(&f) {
                files.push(f);
            }
        }
        let _one = self.declaring.lock().await;
        let released = self.forget_variant(&variant);
        self.release_dirs(released);
        // Watch every directory first (an await per new one), then index: a failure leaves nothing half-done.
        let mut new_dirs: Vec<(PathBuf, u32)> = Vec::new();
        for f in &files {
            let dir = parent(f).to_path_buf();
            let watched = lock(&self.index).dirs.contains_key(&dir)
                || new_dirs.iter().any(|(d, _)| d == &dir);
            if !watched {
                match self.watch_dir(&dir).await {
                    Ok(id) => new_dirs.push((dir, id)),
                    Err(e) => {
                        for (_, id) in new_dirs {
                            self.watch.unsubscribe_internal(id);
                        }
                        return Err(e);
                    }
                }
            }
        }
        // Fingerprinted once the watches are in place: a change after this point is theirs to see.
        let listed = files.clone();
        let sources: Sources = blocking(move || {
            listed
                .into_iter()
                .map(|f| {
                    let fp = Fingerprint::of(&f);
                    (f, fp)
                })
                .collect()
        })
        .await?;
        {
            let mut ix = lock(&self.index);
            for (dir, id) in new_dirs {
                ix.dirs.insert(dir, (id, 0));
            }
            index_variant(&mut ix, &variant, files.clone());
        }
        let logged = variant.clone();
        if let Err(e) = self
            .persist(move |log| log.declare(&logged, &sources))
            .await
        {
            // Unrecorded, it would outlive a restart unwatched: drop it instead of risking a stale hit.
            let released = self.forget_variant(&variant);
            self.release_dirs(released);
            let _ = self.ns.remove(asset_store_key(&variant.0, variant.1)).await;
            return Err(HandlerError::reply(
                ErrorCode::Io,
                format!(
                    "recording the dependencies of {} failed ({e}); the variant was dropped so that it \
                     cannot go stale: free disk space in the asset cache and put it again",
                    variant.0
                ),
            ));
        }
        Ok(files.len() as u32)
    }

    fn watch_dir(
        self: &Arc<Self>,
        dir: &Path,
    ) -> impl Future<Output = Result<u32, HandlerError>> + Send + 'static {
        let (watch, dir, sink) = (
            self.watch.clone(),
            dir.to_path_buf(),
            Arc::new(Sink(self.sender())),
        );
        async move { watch.subscribe_internal(&dir, sink).await }
    }

    /// Appends to the dependency log off the runtime; a memory-only namespace has none.
    async fn persist(
        self: &Arc<Self>,
        f: impl FnOnce(&mut DepsLog) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<()> {
        let me = self.clone();
        blocking(move || match lock(&me.log).as_mut() {
            Some(log) => f(log),
            None => Ok(()),
        })
        .await
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?
    }

    /// Reads the previous run's declarations, re-watches their sources and drops every variant whose
    /// sources changed meanwhile (or whose directory cannot be watched any more). Then asset requests go on.
    pub async fn restore(self: Arc<Self>) {
        let one = self.declaring.lock().await;
        self.restore_locked().await;
        drop(one);
        self.restored.send_replace(true);
    }

    async fn restore_locked(self: &Arc<Self>) {
        let Some(dir) = self.ns.store().config().dir.clone() else {
            return;
        };
        let shown = dir.display().to_string();
        let opened = blocking(move || DepsLog::open(&dir)).await;
        let (log, replayed) = match opened {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return self.distrust_all(&shown, &e.to_string()).await,
            Err(e) => return self.distrust_all(&shown, &format!("{e:?}")).await,
        };
        if replayed.torn {
            *lock(&self.log) = Some(log);
            return self
                .distrust_all(&shown, "its last record is torn (a crash while writing it)")
                .await;
        }
        let mut live = replayed.live;
        live.retain(|v, _| self.ns.exists(&asset_store_key(&v.0, v.1)).is_some());
        let dirs: HashSet<PathBuf> = live
            .values()
            .flatten()
            .map(|(p, _)| parent(p).to_path_buf())
            .collect();
        let mut watched = HashMap::new();
        for d in dirs {
            match self.watch_dir(&d).await {
                Ok(id) => {
                    watched.insert(d, id);
                }
                Err(e) => tracing::info!("{}: no longer watchable ({e:?})", d.display()),
            }
        }
        let check = live.clone();
        let changed: HashSet<Variant> = blocking(move || {
            check
                .into_iter()
                .filter(|(_, srcs)| srcs.iter().any(|(p, fp)| Fingerprint::of(p) != *fp))
                .map(|(v, _)| v)
                .collect()
        })
        .await
        .unwrap_or_else(|_| live.keys().cloned().collect());
        let stale: Vec<Variant> = live
            .iter()
            .filter(|(v, srcs)| {
                changed.contains(*v) || srcs.iter().any(|(p, _)| !watched.contains_key(parent(p)))
            })
            .map(|(v, _)| v.clone())
            .collect();
        for v in &stale {
            live.remove(v);
        }
        self.index_restored(&live, watched);
        let keys = stale
            .iter()
            .map(|(p, pl)| asset_store_key(p, *pl))
            .collect();
        if let Err(e) = self.ns.remove_many(keys).await {
            tracing::warn!("dropping asset variants whose sources changed failed: {e}");
        }
        let survivors = live.clone();
        let reset = blocking(move || {
            let mut log = log;
            log.reset(&survivors).map(|()| log)
        })
        .await;
        match reset {
            Ok(Ok(log)) => *lock(&self.log) = Some(log),
            Ok(Err(e)) => tracing::warn!("rewriting the asset dependency log failed: {e}"),
            Err(e) => tracing::warn!("rewriting the asset dependency log failed: {e:?}"),
        }
        tracing::info!(
            kept = live.len(),
            dropped = stale.len(),
            "asset dependencies of the previous run checked"
        );
    }

    fn index_restored(&self, live: &HashMap<Variant, Sources>, watched: HashMap<PathBuf, u32>) {
        let mut ix = lock(&self.index);
        for (dir, id) in watched {
            ix.dirs.insert(dir, (id, 0));
        }
        for (v, srcs) in live {
            index_variant(&mut ix, v, srcs.iter().map(|(p, _)| p.clone()).collect());
        }
        let unused: Vec<PathBuf> = ix
            .dirs
            .iter()
            .filter(|(_, (_, n))| *n == 0)
            .map(|(d, _)| d.clone())
            .collect();
        for d in unused {
            if let Some((id, _)) = ix.dirs.remove(&d) {
                self.watch.unsubscribe_internal(id);
            }
        }
    }

    /// Which variants declared dependencies before the restart is unknown: drop the whole namespace rather
    /// than serve one of them stale. Rare (a crash mid-append, an unreadable file); it costs re-imports.
    async fn distrust_all(&self, dir: &str, why: &str) {
        tracing::warn!(
            "the asset dependency log in {dir} cannot be trusted: {why}; the asset cache is cleared so that no \
             variant built from a since-changed source is served"
        );
        if let Err(e) = self.ns.clear().await {
            tracing::warn!("clearing the asset cache failed: {e}");
        }
    }

    /// Removes a variant's declaration; returns the directories whose last dependency it was.
    fn forget_variant(&self, variant: &Variant) -> Vec<u32> {
        let mut ix = lock(&self.index);
        let Some(files) = ix.by_variant.remove(variant) else {
            return Vec::new();
        };
        let mut released = Vec::new();
        for f in files {
            if let Some(set) = ix.by_file.get_mut(&f) {
                set.remove(variant);
                if set.is_empty() {
                    ix.by_file.remove(&f);
                }
            }
            let dir = f
                .parent()
                .expect("canonical source has a parent")
                .to_path_buf();
            if let Some(e) = ix.dirs.get_mut(&dir) {
                e.1 = e.1.saturating_sub(1);
                if e.1 == 0 {
                    released.push(e.0);
                    ix.dirs.remove(&dir);
                }
            }
        }
        released
    }

    fn release_dirs(&self, ids: Vec<u32>) {
        for id in ids {
            self.watch.unsubscribe_internal(id);
        }
    }

    /// Drops every variant built from any of `files` and tells the listeners.
    async fn invalidate_files(self: &Arc<Self>, files: Vec<PathBuf>) {
        // The index and the log change together, in one order, with declarations.
        let _one = self.declaring.lock().await;
        let mut hit: Vec<(Variant, PathBuf)> = Vec::new();
        {
            let ix = lock(&self.index);
            let mut seen = HashSet::new();
            for f in &files {
                let sources: Vec<&PathBuf> = if f.file_name().is_some_and(|n| n == WHOLE_DIR) {
                    let dir = f.parent().expect("joined");
                    ix.by_file
                        .keys()
                        .filter(|k| k.parent() == Some(dir))
                        .collect()
                } else {
                    ix.by_file
                        .get_key_value(f)
                        .map(|(k, _)| k)
                        .into_iter()
                        .collect()
                };
                for src in sources {
                    for v in &ix.by_file[src] {
                        if seen.insert(v.clone()) {
                            hit.push((v.clone(), src.clone()));
                        }
                    }
                }
            }
        }
        if hit.is_empty() {
            return;
        }
        let keys = hit
            .iter()
            .map(|((p, pl), _)| asset_store_key(p, *pl))
            .collect();
        if let Err(e) = self.ns.remove_many(keys).await {
            tracing::warn!("dropping invalidated asset variants failed: {e}");
        }
        let mut released = Vec::new();
        for (v, _) in &hit {
            released.extend(self.forget_variant(v));
        }
        self.release_dirs(released);
        let forgotten: Vec<Variant> = hit.iter().map(|(v, _)| v.clone()).collect();
        let logged = self
            .persist(move |log| forgotten.iter().try_for_each(|v| log.forget(v)))
            .await;
        if let Err(e) = logged {
            // Harmless: a restart finds the variants gone from the store and skips their declarations.
            tracing::warn!("recording dropped asset variants in the dependency log failed: {e}");
        }
        let mut listeners = lock(&self.listeners);
        listeners.retain(|_, ev| {
            hit.iter().all(|((path, platform), src)| {
                ev.send_msg(
                    service::ASSET,
                    &AssetInvalidated {
                        path: path.clone(),
                        platform: *platform,
                        source: src.display().to_string(),
                    },
                ) != Sent::Closed
            })
        });
    }
}
