//! Which paths under a root are ignored (`.gitignore`, `.ignore`, the global excludes file, `.git`) and which
//! paths a subscription wants (its include and exclude globs).
//!
//! Ignore files are honoured without a git repository around the root (unlike `git` itself), because a watched
//! asset folder is often not one. A path is ignored when the deepest ignore file with an opinion on it says so;
//! `.ignore` takes precedence over `.gitignore` in the same directory, as in ripgrep.

use std::collections::HashMap;
use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The file names whose change reloads a directory's rules.
pub const IGNORE_FILES: [&str; 2] = [".gitignore", ".ignore"];

/// The ignore rules of one root: one matcher per directory that has ignore files, plus the global one.
pub struct IgnoreRules {
    enabled: bool,
    global: Gitignore,
    /// Root-relative directory ("" for the root) → its matcher.
    per_dir: HashMap<String, Gitignore>,
}

impl IgnoreRules {
    pub fn new(enabled: bool) -> Self {
        let global = if enabled {
            Gitignore::global().0
        } else {
            Gitignore::empty()
        };
        IgnoreRules {
            enabled,
            global,
            per_dir: HashMap::new(),
        }
    }

    /// (Re)reads the ignore files of `rel_dir`. Returns whether the directory has any rules.
    pub fn load_dir(&mut self, root: &Path, rel_dir: &str) -> bool {
        if !self.enabled {
            return false;
        }
        let dir = join(root, rel_dir);
        let mut b = GitignoreBuilder::new(&dir);
        let mut any = false;
        for name in IGNORE_FILES {
            let f = dir.join(name);
            if f.is_file() {
                // A malformed line is skipped by the builder; the rest of the file still applies.
                let _ = b.add(&f);
                any = true;
            }
        }
        match (any, b.build()) {
            (true, Ok(gi)) if gi.num_ignores() + gi.num_whitelists() > 0 => {
                self.per_dir.insert(rel_dir.to_string(), gi);
                true
            }
            _ => {
                self.per_dir.remove(rel_dir);
                false
            }
        }
    }

    /// Forgets the rules of `rel_dir` and every directory under it.
    pub fn forget_tree(&mut self, rel_dir: &str) {
        let prefix = format!("{rel_dir}/");
        self.per_dir
            .retain(|d, _| d != rel_dir && !d.starts_with(&prefix));
    }

    /// Whether `rel` (root-relative, `/`-separated, not empty) is ignored.
    pub fn is_ignored(&self, root: &Path, rel: &str, is_dir: bool) -> bool {
        if rel.split('/').any(|c| c == ".git") {
            return true;
        }
        if !self.enabled {
            return false;
        }
        let abs = join(root, rel);
        // Deepest directory first: the closest ignore file decides.
        let mut dir = parent(rel);
        loop {
            if let Some(gi) = self.per_dir.get(dir) {
                match gi.matched_path_or_any_parents(&abs, is_dir) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
            if dir.is_empty() {
                break;
            }
            dir = parent(dir);
        }
        matches!(
            self.global.matched_path_or_any_parents(&abs, is_dir),
            Match::Ignore(_)
        )
    }
}

/// The directory part of a root-relative path ("" for a top-level entry).
pub fn parent(rel: &str) -> &str {
    rel.rfind('/').map_or("", |i| &rel[..i])
}

pub fn join(root: &Path, rel: &str) -> std::path::PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// A subscription's filter. A glob without `/` matches a file name anywhere (like `.gitignore`: `*.png`);
/// one with `/` matches the whole root-relative path, `*` not crossing `/` (`src/**/*.rs`).
#[derive(Clone)]
pub struct Filter {
    include: Option<(GlobSet, GlobSet)>,
    exclude: Option<(GlobSet, GlobSet)>,
}

fn compile(globs: &[String]) -> Result<Option<(GlobSet, GlobSet)>, globset::Error> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    for g in globs {
        let glob: Glob = GlobBuilder::new(g).literal_separator(true).build()?;
        if g.contains('/') {
            paths.add(glob);
        } else {
            names.add(glob);
        }
    }
    Ok(Some((names.build()?, paths.build()?)))
}

fn matches(set: &(GlobSet, GlobSet), rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    set.0.is_match(name) || set.1.is_match(rel)
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, globset::Error> {
        Ok(Filter {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    pub fn wants(&self, rel: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|ex| matches(ex, rel)) {
            return false;
        }
        self.include.as_ref().is_none_or(|inc| matches(inc, rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_name_and_path_globs() {
        let f = Filter::new(&["*.png".into(), "src/**/*.rs".into()], &["tmp/**".into()]).unwrap();
        assert!(f.wants("a.png"));
        assert!(f.wants("deep/er/a.png"));
        assert!(f.wants("src/x/y.rs"));
        assert!(!f.wants("lib/y.rs"));
        assert!(!f.wants("tmp/a.png"));
        let all = Filter::new(&[], &[]).unwrap();
        assert!(all.wants("anything/at/all"));
    }

    #[test]
    fn gitignore_nested_and_whitelist() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".gitignore"), "*.log\nbuild/\n").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/.gitignore"), "!keep.log\n").unwrap();
        let mut r = IgnoreRules::new(true);
        r.load_dir(d.path(), "");
        r.load_dir(d.path(), "sub");
        assert!(r.is_ignored(d.path(), "a.log", false));
        assert!(r.is_ignored(d.path(), "build", true));
        assert!(r.is_ignored(d.path(), "build/x.txt", false));
        assert!(!r.is_ignored(d.path(), "sub/keep.log", false));
        assert!(r.is_ignored(d.path(), "sub/other.log", false));
        assert!(!r.is_ignored(d.path(), "a.txt", false));
        assert!(r.is_ignored(d.path(), ".git/HEAD", false));
        let off = IgnoreRules::new(false);
        assert!(!off.is_ignored(d.path(), "a.log", false));
    }
}
