//! One watched root: one OS watcher shared by every subscriber of the root, a thread that settles its
//! notifications into batches, the tree, the clock and history, and the subscriptions.
//!
//! Notifications go from the OS watcher's thread into a bounded channel; when it is full they are dropped and
//! the batch becomes an overflow, like an inotify queue overflow: one `Rescan` per root, repeated overflows
//! backing off (at most one rescan per backoff period, doubling to [`MAX_BACKOFF`]), each once the storm has
//! passed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use notify::RecommendedWatcher;
use spark_proto::service;
use spark_proto::watch::{
    CHANGES_FRESH_INSTANCE, CHANGES_MORE, Change, ChangeKind, Changes, ENDED_ERROR,
    ENDED_ROOT_DELETED, ENDED_WATCH_LIMIT, Ended, Rescan, RootInfo,
};

use super::history::{History, Since};
use super::rules::Filter;
use super::tree::{Raw, Tree, TreeError, dedup};
use super::{RootKey, Shared};
use crate::events::{EventSender, Sent};

/// Notifications queued between the OS watcher and the settling thread at most.
const RAW_QUEUE: usize = 65_536;
/// A batch never waits longer than this many settle periods, however busy the tree.
const MAX_SETTLES_PER_BATCH: u32 = 25;

/// Adds notifications from `rx` to `raw` until none came for `settle` or `budget` is spent. A batch cut by
/// the budget right after the first half of a rename waits (one more settle period at most) for the second
/// half, so one rename is never reported as a removal in one batch and a creation in the next.
fn gather(
    rx: &Receiver<notify::Result<notify::Event>>,
    raw: &mut Raw,
    settle: Duration,
    budget: Duration,
) {
    let mut deadline = Instant::now() + budget;
    let mut extended = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            if raw.unmatched_from == 0 || extended {
                return;
            }
            extended = true;
            deadline = now + settle;
            continue;
        }
        match rx.recv_timeout(settle.min(deadline - now)) {
            Ok(ev) => {
                raw.add(ev);
                if extended && raw.unmatched_from == 0 {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}
/// Changes per Changes event at most (a larger batch is split, flagged `more`).
const CHANGES_PER_EVENT: usize = 2048;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A subscriber inside the daemon (the asset service's dependency watches). Called with the root's state
/// locked, from the root's thread: it must only queue work, never call back into the Watch service.
pub trait Internal: Send + Sync {
    /// A settled batch under `root`.
    fn changed(&self, root: &Path, changes: &[Change]);
    /// Changes under `root` were missed, or the watch ended: treat everything under it as changed.
    fn lost(&self, root: &Path);
}

/// Where a subscription's events go.
pub enum Sink {
    Conn(EventSender),
    Internal(Arc<dyn Internal>),
}

pub struct Sub {
    pub id: u32,
    pub conn: u64,
    pub filter: Filter,
    pub sink: Sink,
}

impl Sub {
    fn send<M: spark_proto::Message>(&self, m: &M, root: &Path) -> Sent {
        match &self.sink {
            Sink::Conn(ev) => ev.send_msg(service::WATCH, m),
            Sink::Internal(i) => {
                i.lost(root);
                Sent::Queued
            }
        }
    }
}

pub struct State {
    pub tree: Tree,
    pub history: History,
    pub subs: Vec<Sub>,
    pub rescans: u64,
    /// When the last subscriber left (or the last query touched an unsubscribed root).
    pub idle_since: Option<Instant>,
    /// The root ended (deleted, limit): it takes no new subscribers.
    pub ended: bool,
}

pub struct Root {
    pub key: RootKey,
    state: Mutex<State>,
    watcher: Mutex<RecommendedWatcher>,
    stop: AtomicBool,
}

/// The notification handler: never blocks the OS watcher's thread.
struct Feed {
    tx: SyncSender<notify::Result<notify::Event>>,
    dropped: Arc<AtomicBool>,
}

impl notify::EventHandler for Feed {
    fn handle_event(&mut self, ev: notify::Result<notify::Event>) {
        match self.tx.try_send(ev) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => self.dropped.store(true, Ordering::Release),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Root {
    /// Starts watching: scans the tree (adding one OS watch per non-ignored directory) and starts the
    /// settling thread. Blocking: call from the blocking pool.
    pub fn open(key: RootKey, shared: &Arc<Shared>) -> Result<Arc<Root>, TreeError> {
        let (tx, rx) = sync_channel(RAW_QUEUE);
        let dropped = Arc::new(AtomicBool::new(false));
        let feed = Feed {
            tx,
            dropped: dropped.clone(),
        };
        let mut watcher = notify::recommended_watcher(feed).map_err(|e| TreeError::Io {
            path: key.path.display().to_string(),
            msg: e.to_string(),
        })?;
        let mut tree = Tree::new(key.path.clone(), key.ignore_files(), key.flat());
        tree.scan(&mut watcher, "", None)?;
        let root = Arc::new(Root {
            key,
            state: Mutex::new(State {
                tree,
                history: History::new(),
                subs: Vec::new(),
                rescans: 0,
                idle_since: Some(Instant::now()),
                ended: false,
            }),
            watcher: Mutex::new(watcher),
            stop: AtomicBool::new(false),
        });
        let worker = Worker {
            root: root.clone(),
            shared: Arc::downgrade(shared),
            rx,
            dropped,
            settle: shared.config.settle,
            grace: shared.config.grace,
            backoff: Duration::ZERO,
            last_rescan: None,
        };
        std::thread::Builder::new()
            .name("sparkd-watch".into())
            .spawn(move || worker.run())
            .map_err(|e| TreeError::Io {
                path: root.key.path.display().to_string(),
                msg: format!("cannot start the watch thread: {e}"),
            })?;
        Ok(root)
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn info(&self) -> RootInfo {
        let s = self.state();
        RootInfo {
            root: self.key.path.display().to_string(),
            flags: self.key.flags,
            subscribers: s.subs.len() as u32,
            watches: s.tree.watches,
            files: s.tree.files(),
            seq: s.history.seq,
            rescans: s.rescans,
        }
    }
}

impl State {
    /// Adds a subscription; with a clock, first sends what changed since it (or `fresh_instance`).
    pub fn subscribe(&mut self, sub: Sub, since: Option<(u64, u64)>) {
        if let Some((instance, seq)) = since {
            let _ = match self.history.since(instance, seq) {
                Since::Changes(c) => {
                    send_changes(&sub, self.history.instance, self.history.seq, 0, c)
                }
                Since::Fresh => send_changes(
                    &sub,
                    self.history.instance,
                    self.history.seq,
                    CHANGES_FRESH_INSTANCE,
                    Vec::new(),
                ),
            };
        }
        self.subs.push(sub);
        self.idle_since = None;
    }

    pub fn remove_subs(&mut self, pred: impl Fn(&Sub) -> bool) -> usize {
        let before = self.subs.len();
        self.subs.retain(|s| !pred(s));
        if self.subs.is_empty() && self.idle_since.is_none() {
            self.idle_since = Some(Instant::now());
        }
        before - self.subs.len()
    }

    fn deliver(&mut self, changes: &[Change]) {
        let (instance, seq) = (self.history.instance, self.history.seq);
        let root = self.tree.root.clone();
        self.subs.retain(|s| {
            if let Sink::Internal(i) = &s.sink {
                i.changed(&root, changes);
                return true;
            }
            let mine: Vec<Change> = changes
                .iter()
                .filter(|c| s.filter.wants(&c.path) || (!c.to.is_empty() && s.filter.wants(&c.to)))
                .cloned()
                .collect();
            mine.is_empty() || send_changes(s, instance, seq, 0, mine) != Sent::Closed
        });
    }

    fn end_all(&mut self, root: &str, reason: u8, message: &str) {
        let path = self.tree.root.clone();
        for s in self.subs.drain(..) {
            s.send(
                &Ended {
                    subscription: s.id,
                    root: root.to_string(),
                    reason,
                    message: message.to_string(),
                },
                &path,
            );
        }
        self.ended = true;
    }
}

/// Sends one batch to one subscriber, split into events of at most [`CHANGES_PER_EVENT`] changes.
fn send_changes(sub: &Sub, instance: u64, seq: u64, flags: u8, changes: Vec<Change>) -> Sent {
    let Sink::Conn(events) = &sub.sink else {
        return Sent::Queued;
    };
    let mut chunks: Vec<Vec<Change>> = changes
        .chunks(CHANGES_PER_EVENT)
        .map(|c| c.to_vec())
        .collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let n = chunks.len();
    let mut last = Sent::Queued;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let more = if i + 1 < n { CHANGES_MORE } else { 0 };
        last = events.send_msg(
            service::WATCH,
            &Changes {
                subscription: sub.id,
                instance,
                seq,
                flags: flags | more,
                changes: chunk,
            },
        );
        if last == Sent::Closed {
            break;
        }
    }
    last
}

struct Worker {
    root: Arc<Root>,
    shared: Weak<Shared>,
    rx: Receiver<notify::Result<notify::Event>>,
    dropped: Arc<AtomicBool>,
    settle: Duration,
    grace: Duration,
    backoff: Duration,
    last_rescan: Option<Instant>,
}

impl Worker {
    fn run(mut self) {
        let tick = self
            .settle
            .max(Duration::from_millis(5))
            .min(Duration::from_millis(250));
        loop {
            if self.root.stop.load(Ordering::Acquire) {
                return;
            }
            let first = match self.rx.recv_timeout(tick.max(Duration::from_millis(100))) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => {
                    if self.reap() {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut raw = Raw::default();
            raw.add(first);
            self.settle_batch(&mut raw);
            if self.dropped.swap(false, Ordering::AcqRel) {
                raw.overflow = true;
            }
            if !self.process(raw) {
                return;
            }
        }
    }

    /// Gathers notifications until the tree has been quiet for one settle period (bounded).
    fn settle_batch(&mut self, raw: &mut Raw) {
        gather(
            &self.rx,
            raw,
            self.settle,
            self.settle * MAX_SETTLES_PER_BATCH,
        );
    }

    /// Handles one batch; false when the root ended.
    fn process(&mut self, raw: Raw) -> bool {
        if raw.is_empty() {
            return true;
        }
        let root_name = self.root.key.path.display().to_string();
        let result = if raw.limit {
            Err(TreeError::WatchLimit(root_name.clone()))
        } else if raw.overflow {
            self.overflow(&root_name)
        } else {
            let mut w = lock(&self.root.watcher);
            let mut s = self.root.state();
            match s.tree.resolve(&mut *w, &raw) {
                Ok(changes) => {
                    let changes = dedup(changes);
                    if !changes.is_empty() {
                        s.history.push(changes.clone());
                        s.deliver(&changes);
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                self.end(&e);
                false
            }
        }
    }

    /// Events were missed: back off if overflows repeat, then rescan and tell every subscriber once.
    fn overflow(&mut self, root_name: &str) -> Result<(), TreeError> {
        if let Some(last) = self.last_rescan {
            let since = last.elapsed();
            if since > MAX_BACKOFF * 2 {
                self.backoff = Duration::ZERO;
            } else if since < self.backoff {
                // Let the storm pass: what arrives meanwhile is covered by the rescan.
                let until = Instant::now() + (self.backoff - since);
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    if self.rx.recv_timeout(left).is_err() && Instant::now() >= until {
                        break;
                    }
                }
            }
        }
        self.backoff = if self.backoff.is_zero() {
            FIRST_BACKOFF
        } else {
            (self.backoff * 2).min(MAX_BACKOFF)
        };
        // Let the storm finish first (the tree quiet for a few settle periods, bounded): rescanning while it
        // still rages would overflow again at once and cost a second rescan for one storm. What arrives
        // meanwhile is covered by the rescan.
        let quiet = (self.settle * 5).max(Duration::from_millis(100));
        let give_up = Instant::now() + MAX_BACKOFF;
        while Instant::now() < give_up && self.rx.recv_timeout(quiet).is_ok() {}
        self.last_rescan = Some(Instant::now());
        while self.rx.try_recv().is_ok() {}
        self.dropped.store(false, Ordering::Release);
        let mut w = lock(&self.root.watcher);
        let mut s = self.root.state();
        s.tree.rescan(&mut *w)?;
        s.rescans += 1;
        let seq = s.history.lose();
        let instance = s.history.instance;
        tracing::warn!(
            root = root_name,
            rescans = s.rescans,
            "watch overflowed (events were missed); rescanned, subscribers told to rescan"
        );
        let path = s.tree.root.clone();
        s.subs.retain(|sub| {
            sub.send(
                &Rescan {
                    subscription: sub.id,
                    root: root_name.to_string(),
                    instance,
                    seq,
                    reason: "overflow: events were missed".into(),
                },
                &path,
            ) != Sent::Closed
        });
        Ok(())
    }

    fn end(&self, e: &TreeError) {
        let root_name = self.root.key.path.display().to_string();
        let reason = match e {
            TreeError::RootGone(_) => ENDED_ROOT_DELETED,
            TreeError::WatchLimit(_) => ENDED_WATCH_LIMIT,
            TreeError::Io { .. } => ENDED_ERROR,
        };
        match e {
            TreeError::RootGone(_) => tracing::info!(root = root_name, "watched root deleted"),
            _ => tracing::error!(root = root_name, "watch ended: {e}"),
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.forget_root(&self.root);
        }
        self.root
            .state()
            .end_all(&root_name, reason, &e.to_string());
        self.root.stop();
    }

    /// Releases the root once nobody has used it for the grace period; true when released.
    fn reap(&self) -> bool {
        let idle = {
            let s = self.root.state();
            s.subs.is_empty() && s.idle_since.is_some_and(|t| t.elapsed() >= self.grace)
        };
        if !idle {
            return false;
        }
        let Some(shared) = self.shared.upgrade() else {
            return true;
        };
        if shared.release_if_idle(&self.root, self.grace) {
            tracing::info!(root = %self.root.key.path.display(), "released unused watch");
            self.root.stop();
            return true;
        }
        false
    }
}

/// Changes matching `filter` (for queries).
pub fn filtered(changes: Vec<Change>, filter: &Filter) -> Vec<Change> {
    changes
        .into_iter()
        .filter(|c| filter.wants(&c.path) || (c.kind == ChangeKind::Renamed && filter.wants(&c.to)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{ModifyKind, RenameMode};
    use notify::{Event, EventKind};
    use std::path::PathBuf;

    fn rename(mode: RenameMode, paths: &[&str]) -> notify::Result<Event> {
        let mut ev = Event::new(EventKind::Modify(ModifyKind::Name(mode)));
        for p in paths {
            ev = ev.add_path(PathBuf::from(p));
        }
        Ok(ev)
    }

    #[test]
    fn a_batch_cut_after_half_a_rename_waits_for_the_other_half() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut raw = Raw::default();
        raw.add(rename(RenameMode::From, &["/r/a"]));
        tx.send(rename(RenameMode::To, &["/r/b"])).unwrap();
        tx.send(rename(RenameMode::Both, &["/r/a", "/r/b"]))
            .unwrap();
        // The budget is already spent: only the pending rename keeps the batch open.
        gather(&rx, &mut raw, Duration::from_secs(5), Duration::ZERO);
        assert_eq!(
            raw.renames,
            vec![(PathBuf::from("/r/a"), PathBuf::from("/r/b"))]
        );
        assert_eq!(raw.unmatched_from, 0);
    }

    #[test]
    fn a_spent_budget_without_a_pending_rename_ends_the_batch_at_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut raw = Raw::default();
        tx.send(rename(RenameMode::Both, &["/r/a", "/r/b"]))
            .unwrap();
        gather(&rx, &mut raw, Duration::from_secs(5), Duration::ZERO);
        assert!(raw.renames.is_empty());
        assert!(rx.try_recv().is_ok(), "left for the next batch");
    }
}
