//! What a root knows about its tree (every non-ignored path, and which are directories), its OS watches, and
//! how a settled batch of raw notifications becomes changes.
//!
//! Raw notifications only say "something happened at this path". The batch is resolved against the tree:
//! whether the path was known before the batch and whether it exists now decides created, modified or
//! removed, so an editor's safe-save (write a temp file, rename it over the real one) is one `modified` of
//! the real path and the temp file, never known, is never reported. A rename whose source was known and whose
//! destination is new is one `renamed` (plus one per path under a renamed directory, so glob filters see them).
//! Ignored directories get no OS watch at all: the `.gitignore`d `target/` or `node_modules/` costs nothing.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use spark_proto::watch::{Change, ChangeKind};

use super::rules::{IGNORE_FILES, IgnoreRules, join, parent};

/// Why a tree could not be kept up to date.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(
        "the OS ran out of file watches while watching {0}: raise the limit with \
         `sysctl fs.inotify.max_user_watches=<more>` (or ignore more directories in .gitignore)"
    )]
    WatchLimit(String),
    #[error("the root {0} no longer exists")]
    RootGone(String),
    #[error("cannot watch {path}: {msg}")]
    Io { path: String, msg: String },
}

/// Raw notifications gathered over one settle period.
#[derive(Default)]
pub struct Raw {
    /// Every path notified, first-seen order, once each.
    pub touched: Vec<PathBuf>,
    seen: HashSet<PathBuf>,
    /// Rename pairs the OS matched (inotify cookies).
    pub renames: Vec<(PathBuf, PathBuf)>,
    /// First halves of renames whose pair has not come yet (a move out of the tree never gets one).
    pub unmatched_from: usize,
    /// The OS dropped notifications (queue overflow) or the daemon did.
    pub overflow: bool,
    /// Adding a watch failed for lack of watches.
    pub limit: bool,
}

impl Raw {
    pub fn is_empty(&self) -> bool {
        self.touched.is_empty() && !self.overflow && !self.limit
    }

    pub fn touch(&mut self, p: PathBuf) {
        if self.seen.insert(p.clone()) {
            self.touched.push(p);
        }
    }

    /// Takes one notification from `notify`.
    pub fn add(&mut self, ev: notify::Result<notify::Event>) {
        use notify::EventKind;
        use notify::event::{ModifyKind, RenameMode};
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                    self.limit = true;
                } else {
                    // An error on the notification thread may have cost events: say so, never guess.
                    tracing::warn!("watch notification error: {e}");
                    self.overflow = true;
                }
                return;
            }
        };
        if ev.need_rescan() {
            self.overflow = true;
        }
        match ev.kind {
            // Opens, reads and closes change nothing; a write also comes as a Modify.
            EventKind::Access(_) => {}
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => {
                self.unmatched_from = self.unmatched_from.saturating_sub(1);
                self.renames
                    .push((ev.paths[0].clone(), ev.paths[1].clone()));
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                self.unmatched_from += 1;
                for p in ev.paths {
                    self.touch(p);
                }
            }
            _ => {
                for p in ev.paths {
                    self.touch(p);
                }
            }
        }
    }
}

pub struct Tree {
    pub root: PathBuf,
    /// Root-relative path → is a directory. Ordered, so a directory's subtree is one range.
    known: BTreeMap<Box<str>, bool>,
    rules: IgnoreRules,
    /// OS watches held: one per known directory plus the root.
    pub watches: u32,
    /// Watch the root directory only, not its subdirectories (dependency watches of the asset service).
    flat: bool,
}

fn rel_of(root: &Path, p: &Path) -> Option<String> {
    let r = p.strip_prefix(root).ok()?;
    let s = r.to_str()?;
    Some(s.replace('\\', "/"))
}

fn watch_err(root: &Path, e: notify::Error) -> TreeError {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => TreeError::WatchLimit(root.display().to_string()),
        _ => TreeError::Io {
            path: e
                .paths
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            msg: e.to_string(),
        },
    }
}

impl Tree {
    pub fn new(root: PathBuf, ignore_files: bool, flat: bool) -> Self {
        Tree {
            root,
            known: BTreeMap::new(),
            rules: IgnoreRules::new(ignore_files),
            watches: 0,
            flat,
        }
    }

    pub fn files(&self) -> u64 {
        self.known.len() as u64
    }

    /// Watches `rel_dir` and everything under it that is not ignored, learning every path. Paths not known
    /// before are appended to `created` (when given), parents before children.
    pub fn scan<W: Watcher + ?Sized>(
        &mut self,
        w: &mut W,
        rel_dir: &str,
        mut created: Option<&mut Vec<Change>>,
    ) -> Result<(), TreeError> {
        let mut stack = vec![rel_dir.to_string()];
        while let Some(dir) = stack.pop() {
            let abs = join(&self.root, &dir);
            match w.watch(&abs, RecursiveMode::NonRecursive) {
                Ok(()) => self.watches += 1,
                // The directory went away meanwhile: its removal is (or will be) notified.
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => continue,
                Err(e) => return Err(watch_err(&self.root, e)),
            }
            self.rules.load_dir(&self.root, &dir);
            let Ok(entries) = std::fs::read_dir(&abs) else {
                continue;
            };
            let mut names: Vec<(String, bool)> = entries
                .filter_map(|e| {
                    let e = e.ok()?;
                    let name = e.file_name().into_string().ok()?;
                    // Symlinks are reported, never followed (no cycles, no watches outside the root).
                    let is_dir = e.file_type().ok()?.is_dir();
                    Some((name, is_dir))
                })
                .collect();
            names.sort();
            for (name, is_dir) in names.into_iter().rev() {
                let rel = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                if self.rules.is_ignored(&self.root, &rel, is_dir) {
                    continue;
                }
                let new = self.known.insert(rel.clone().into(), is_dir).is_none();
                if let (true, Some(out)) = (new, created.as_deref_mut()) {
                    out.push(Change::new(ChangeKind::Created, rel.clone()));
                }
                if is_dir && !self.flat {
                    stack.push(rel);
                }
            }
        }
        Ok(())
    }

    /// Forgets everything and scans again (after an overflow).
    pub fn rescan<W: Watcher + ?Sized>(&mut self, w: &mut W) -> Result<(), TreeError> {
        if !self.root.is_dir() {
            return Err(TreeError::RootGone(self.root.display().to_string()));
        }
        self.known.clear();
        self.watches = 0;
        self.scan(w, "", None)
    }

    /// The known paths under `rel_dir` (not itself), in order.
    fn subtree(&self, rel_dir: &str) -> Vec<(String, bool)> {
        let prefix = format!("{rel_dir}/");
        self.known
            .range::<str, _>((
                std::ops::Bound::Excluded(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, d)| (k.to_string(), *d))
            .collect()
    }

    fn forget<W: Watcher + ?Sized>(&mut self, w: &mut W, rel: &str, was_dir: bool) -> Vec<String> {
        self.known.remove(rel);
        let mut gone = Vec::new();
        if was_dir {
            for (k, d) in self.subtree(rel) {
                self.known.remove(k.as_str());
                if d {
                    // notify drops watches of deleted or moved-away directories itself; this is for a
                    // directory that became ignored or was replaced. "Not watched" is fine.
                    let _ = w.unwatch(&join(&self.root, &k));
                    self.watches = self.watches.saturating_sub(1);
                }
                gone.push(k);
            }
            let _ = w.unwatch(&join(&self.root, rel));
            self.watches = self.watches.saturating_sub(1);
            self.rules.forget_tree(rel);
        }
        gone
    }

    fn stat(&self, rel: &str) -> Option<bool> {
        std::fs::symlink_metadata(join(&self.root, rel))
            .ok()
            .map(|m| m.is_dir())
    }

    /// Turns one settled batch into changes, keeping the tree and its watches up to date.
    pub fn resolve<W: Watcher + ?Sized>(
        &mut self,
        w: &mut W,
        raw: &Raw,
    ) -> Result<Vec<Change>, TreeError> {
        if !self.root.is_dir() {
            return Err(TreeError::RootGone(self.root.display().to_string()));
        }
        let mut out = Vec::new();
        let mut done: HashSet<String> = HashSet::new();
        for (from, to) in &raw.renames {
            let (Some(f), Some(t)) = (rel_of(&self.root, from), rel_of(&self.root, to)) else {
                continue;
            };
            if self.rename(w, &f, &t, &mut out)? {
                done.insert(f);
                done.insert(t);
            }
        }
        for p in &raw.touched {
            let Some(rel) = rel_of(&self.root, p) else {
                continue;
            };
            if rel.is_empty() || done.contains(&rel) {
                continue;
            }
            self.settle_path(w, &rel, &mut out)?;
            done.insert(rel);
        }
        // A rename pair whose halves were not a plain move (e.g. a rename over an existing file) is decided
        // path by path, like any other touched path.
        for (from, to) in &raw.renames {
            for p in [from, to] {
                if let Some(rel) = rel_of(&self.root, p).filter(|r| !r.is_empty())
                    && done.insert(rel.clone())
                {
                    self.settle_path(w, &rel, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    /// A plain move: the source was known and is gone, the destination is new and not ignored.
    fn rename<W: Watcher + ?Sized>(
        &mut self,
        w: &mut W,
        f: &str,
        t: &str,
        out: &mut Vec<Change>,
    ) -> Result<bool, TreeError> {
        let Some(was_dir) = self.known.get(f).copied() else {
            return Ok(false);
        };
        if f.is_empty() || t.is_empty() || self.stat(f).is_some() || self.known.contains_key(t) {
            return Ok(false);
        }
        let Some(is_dir) = self.stat(t) else {
            return Ok(false);
        };
        if is_dir != was_dir || self.rules.is_ignored(&self.root, t, is_dir) {
            return Ok(false);
        }
        out.push(Change::renamed(f, t));
        let moved = self.forget(w, f, was_dir);
        self.known.insert(t.into(), is_dir);
        if is_dir && !self.flat {
            for old in &moved {
                let new = format!("{t}{}", &old[f.len()..]);
                out.push(Change::renamed(old.clone(), new));
            }
            // Learn the new subtree as it is now and watch it (same inodes, new paths).
            let mut extra = Vec::new();
            self.scan(w, t, Some(&mut extra))?;
            let renamed: HashSet<String> = moved
                .iter()
                .map(|o| format!("{t}{}", &o[f.len()..]))
                .collect();
            out.extend(extra.into_iter().filter(|c| !renamed.contains(&c.path)));
        }
        Ok(true)
    }

    fn settle_path<W: Watcher + ?Sized>(
        &mut self,
        w: &mut W,
        rel: &str,
        out: &mut Vec<Change>,
    ) -> Result<(), TreeError> {
        let before = self.known.get(rel).copied();
        let now = self.stat(rel);
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if IGNORE_FILES.contains(&name) {
            self.rules.load_dir(&self.root, parent(rel));
        }
        if let Some(d) = now
            && self.rules.is_ignored(&self.root, rel, d)
        {
            // Newly ignored (an ignore file changed): forget it quietly.
            if let Some(bd) = before {
                self.forget(w, rel, bd);
            }
            return Ok(());
        }
        match (before, now) {
            (None, None) => {}
            (None, Some(d)) => self.learn(w, rel, d, out)?,
            (Some(bd), None) => self.removed(w, rel, bd, out),
            (Some(bd), Some(d)) if bd != d => {
                self.removed(w, rel, bd, out);
                self.learn(w, rel, d, out)?;
            }
            // A directory's own notifications (attributes, entries) are not changes of the directory.
            (Some(_), Some(true)) => {}
            (Some(_), Some(false)) => out.push(Change::new(ChangeKind::Modified, rel)),
        }
        Ok(())
    }

    fn learn<W: Watcher + ?Sized>(
        &mut self,
        w: &mut W,
        rel: &str,
        is_dir: bool,
        out: &mut Vec<Change>,
    ) -> Result<(), TreeError> {
        // A path under an unknown (ignored or not yet scanned) directory is not ours to report.
        let p = parent(rel);
        if !p.is_empty() && self.known.get(p) != Some(&true) {
            return Ok(());
        }
        self.known.insert(rel.into(), is_dir);
        out.push(Change::new(ChangeKind::Created, rel));
        if is_dir && !self.flat {
            self.scan(w, rel, Some(out))?;
        }
        Ok(())
    }

    fn removed<W: Watcher + ?Sized>(
        &mut self,
        w: &mut W,
        rel: &str,
        was_dir: bool,
        out: &mut Vec<Change>,
    ) {
        // Everything under a removed directory is removed too (a directory moved out of the root notifies
        // nothing for its contents), children first.
        for k in self.forget(w, rel, was_dir).into_iter().rev() {
            out.push(Change::new(ChangeKind::Removed, k));
        }
        out.push(Change::new(ChangeKind::Removed, rel));
    }
}

/// Drops repeated changes of one path within a batch, keeping the first position and the last kind, and
/// drops "removed" of paths whose removal was already emitted.
pub fn dedup(changes: Vec<Change>) -> Vec<Change> {
    let mut seen: HashSet<(ChangeKind, String, String)> = HashSet::new();
    changes
        .into_iter()
        .filter(|c| seen.insert((c.kind, c.path.clone(), c.to.clone())))
        .collect()
}
