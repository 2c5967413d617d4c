//! Asset dependencies: which source files each variant was built from, their watches, and invalidation.
//!
//! A variant `(path, platform)` declares the absolute paths of its sources. Each source's directory is watched
//! (flat: that directory only, ignore files off) through the Watch service, one internal subscription per
//! directory shared by every variant with a source in it. When a source changes (or its directory's watch
//! overflows or ends), every variant declared with it is dropped from the `asset` namespace at once and every
//! connection that asked for invalidations gets one AssetInvalidated per variant.
//!
//! Declarations live in memory only: after a daemon restart the variants are still cached but no longer
//! watched. That is safe because `get_or_import` keys variants on the sources' contents, so a changed source
//! never finds the stale variant; invalidation frees the space early and tells editors to reload.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use spark_proto::ErrorCode;
use spark_proto::cache::AssetInvalidated;
use spark_proto::service;
use spark_proto::watch::Change;
use tokio::sync::mpsc;

use super::asset_store_key;
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        })
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
            let f = tokio::task::spawn_blocking(move || canonical_source(&s))
                .await
                .map_err(|e| HandlerError::reply(ErrorCode::Internal, e.to_string()))??;
            if !files.contains(&f) {
                files.push(f);
            }
        }
        let _one = self.declaring.lock().await;
        let released = self.forget_variant(&variant);
        self.release_dirs(released);
        // Watch every directory first (an await per new one), then index: a failure leaves nothing half-done.
        let mut new_dirs = Vec::new();
        for f in &files {
            let dir = f
                .parent()
                .expect("canonical source has a parent")
                .to_path_buf();
            let watched = lock(&self.index).dirs.contains_key(&dir)
                || new_dirs.iter().any(|(d, _)| d == &dir);
            if !watched {
                match self
                    .watch
                    .subscribe_internal(&dir, Arc::new(Sink(self.sender())))
                    .await
                {
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
        let mut ix = lock(&self.index);
        for (dir, id) in new_dirs {
            ix.dirs.insert(dir, (id, 0));
        }
        for f in &files {
            let dir = f.parent().expect("canonical source has a parent");
            if let Some(e) = ix.dirs.get_mut(dir) {
                e.1 += 1;
            }
            ix.by_file
                .entry(f.clone())
                .or_default()
                .insert(variant.clone());
        }
        ix.by_variant.insert(variant, files.clone());
        Ok(files.len() as u32)
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
    async fn invalidate_files(&self, files: Vec<PathBuf>) {
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
