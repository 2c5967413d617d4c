//! `#include` expansion, confined to the include directories and include map a request names.
//!
//! Includes are expanded here, before any compiler sees the text, for every backend and language: so the
//! cache key can hash exactly the content that was compiled, a backend never opens a file itself, and the
//! confinement rule is enforced in one place. A directive is a line `#include "name"` or `#include <name>`
//! (whitespace allowed around `#`); it is replaced by the file's expanded content. Expansion is textual and
//! unconditional (it runs before the preprocessor, so an `#include` inside `#ifdef` is expanded either way).
//!
//! Resolution of `name`, first match wins:
//! 1. relative to the including file (for a file from a directory: its directory; for an include-map file: its
//!    virtual directory);
//! 2. each include directory, in order;
//! 3. the include map (virtual paths, `/`-separated).
//!
//! A directory candidate is canonicalised (symlinks resolved) and must lie inside one of the canonicalised
//! include directories, else the include is refused, even if the file exists: `../../etc/passwd` and absolute
//! paths outside are errors, never reads. Virtual paths may not climb above the map's root.

use std::path::{Component, Path, PathBuf};

use spark_proto::compile::IncludeFile;

/// Deepest include nesting accepted (also what stops a cycle).
pub const MAX_DEPTH: usize = 32;

/// Name used in diagnostics for the request's own source.
pub const SOURCE_NAME: &str = "<source>";

/// Where includes come from.
#[derive(Debug, Clone, Default)]
pub struct IncludeSources {
    dirs: Vec<PathBuf>,
    map: Vec<IncludeFile>,
}

/// One included file as resolved: the name as written and the content read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFile {
    pub name: String,
    pub content: String,
}

/// The expanded text with, per line, where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    pub source: String,
    pub text: String,
    /// Per line of `text` (0-based): (index into [`Expanded::file_names`], 1-based line in that file).
    pub lines: Vec<(u32, u32)>,
    /// `<source>` first, then each include occurrence's name as written.
    pub file_names: Vec<String>,
    /// Every include occurrence, in expansion order (depth first): what the cache key hashes.
    pub files: Vec<ResolvedFile>,
}

impl Expanded {
    /// Maps a 1-based line of the expanded text to (file name, 1-based line there).
    pub fn locate(&self, line: u32) -> (String, u32) {
        match line.checked_sub(1).and_then(|l| self.lines.get(l as usize)) {
            Some(&(f, l)) => (self.file_names[f as usize].clone(), l),
            None => (SOURCE_NAME.to_string(), line),
        }
    }

    /// Source plus includes, in bytes.
    pub fn input_len(&self) -> usize {
        self.source.len() + self.files.iter().map(|f| f.content.len()).sum::<usize>()
    }
}

/// Why an include could not be expanded. Not a property of the source alone (files may appear later), so
/// never cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncludeError {
    #[error("{file}:{line}: include \"{name}\" refused: {why}")]
    Refused {
        file: String,
        line: u32,
        name: String,
        why: String,
    },
    #[error(
        "{file}:{line}: include \"{name}\" not found in the include directories or include map"
    )]
    NotFound {
        file: String,
        line: u32,
        name: String,
    },
    #[error("{file}:{line}: include \"{name}\": {why}")]
    Unreadable {
        file: String,
        line: u32,
        name: String,
        why: String,
    },
    #[error("{file}:{line}: includes nested deeper than {MAX_DEPTH} (a cycle?)")]
    TooDeep { file: String, line: u32 },
    #[error("source plus includes exceed {limit} bytes")]
    TooLarge { limit: usize },
}

impl IncludeError {
    /// (file, line) the error is about, for a diagnostic.
    pub fn position(&self) -> (&str, u32) {
        match self {
            IncludeError::Refused { file, line, .. }
            | IncludeError::NotFound { file, line, .. }
            | IncludeError::Unreadable { file, line, .. }
            | IncludeError::TooDeep { file, line } => (file, *line),
            IncludeError::TooLarge { .. } => (SOURCE_NAME, 0),
        }
    }
}

/// Where an including file lives, for relative resolution.
#[derive(Clone)]
enum Origin {
    /// The request's source: no directory of its own.
    Source,
    /// A file read from disk (canonical directory).
    Dir(PathBuf),
    /// An include-map file (virtual directory components).
    Virtual(Vec<String>),
}

impl IncludeSources {
    /// Include directories that do not exist are skipped (a request may name optional ones); the rest are
    /// canonicalised once, so confinement compares real paths.
    pub fn new(dirs: &[String], map: &[IncludeFile]) -> IncludeSources {
        IncludeSources {
            dirs: dirs
                .iter()
                .filter_map(|d| std::fs::canonicalize(d).ok())
                .collect(),
            map: map.to_vec(),
        }
    }

    /// Expands `source`; `max_input` bounds source plus every include occurrence.
    pub fn expand(&self, source: &str, max_input: usize) -> Result<Expanded, IncludeError> {
        let mut ex = Expanded {
            source: source.to_string(),
            file_names: vec![SOURCE_NAME.to_string()],
            ..Expanded::default()
        };
        if source.len() > max_input {
            return Err(IncludeError::TooLarge { limit: max_input });
        }
        let mut budget = max_input - source.len();
        self.expand_into(source, 0, &Origin::Source, 0, &mut ex, &mut budget)?;
        Ok(ex)
    }

    fn expand_into(
        &self,
        text: &str,
        file_idx: u32,
        origin: &Origin,
        depth: usize,
        ex: &mut Expanded,
        budget: &mut usize,
    ) -> Result<(), IncludeError> {
        for (i, line) in text.lines().enumerate() {
            let line_no = i as u32 + 1;
            let Some(name) = directive(line) else {
                ex.text.push_str(line);
                ex.text.push('\n');
                ex.lines.push((file_idx, line_no));
                continue;
            };
            let here = ex.file_names[file_idx as usize].clone();
            if depth >= MAX_DEPTH {
                return Err(IncludeError::TooDeep {
                    file: here,
                    line: line_no,
                });
            }
            let (content, child) = self.resolve(name, origin).map_err(|e| match e {
                Resolve::Refused(why) => IncludeError::Refused {
                    file: here.clone(),
                    line: line_no,
                    name: name.to_string(),
                    why,
                },
                Resolve::NotFound => IncludeError::NotFound {
                    file: here.clone(),
                    line: line_no,
                    name: name.to_string(),
                },
                Resolve::Unreadable(why) => IncludeError::Unreadable {
                    file: here.clone(),
                    line: line_no,
                    name: name.to_string(),
                    why,
                },
            })?;
            *budget = budget
                .checked_sub(content.len())
                .ok_or(IncludeError::TooLarge {
                    limit: ex.source.len() + *budget,
                })?;
            ex.files.push(ResolvedFile {
                name: name.to_string(),
                content: content.clone(),
            });
            ex.file_names.push(name.to_string());
            let idx = ex.file_names.len() as u32 - 1;
            self.expand_into(&content, idx, &child, depth + 1, ex, budget)?;
        }
        Ok(())
    }

    fn resolve(&self, name: &str, from: &Origin) -> Result<(String, Origin), Resolve> {
        if name.is_empty() || name.contains('\0') {
            return Err(Resolve::Refused("empty or invalid name".into()));
        }
        let path = Path::new(name);
        if path.is_absolute() {
            return self.read_confined(path);
        }
        // 1. Relative to the including file.
        match from {
            Origin::Dir(dir) => {
                if let Some(found) = self.try_dir(&dir.join(path))? {
                    return Ok(found);
                }
            }
            Origin::Virtual(vdir) => {
                if let Some(found) = self.try_map(vdir, name)? {
                    return Ok(found);
                }
            }
            Origin::Source => {}
        }
        // 2. The include directories.
        for dir in &self.dirs {
            if let Some(found) = self.try_dir(&dir.join(path))? {
                return Ok(found);
            }
        }
        // 3. The include map, from its root.
        if let Some(found) = self.try_map(&[], name)? {
            return Ok(found);
        }
        Err(Resolve::NotFound)
    }

    /// A disk candidate: `None` when absent, refused when it names or resolves to a place outside every
    /// include directory (checked on the path as written first, so a traversal is refused whether or not its
    /// target exists, then on the real path, so a symlink cannot lead out).
    fn try_dir(&self, candidate: &Path) -> Result<Option<(String, Origin)>, Resolve> {
        self.check_lexically_inside(candidate)?;
        match std::fs::symlink_metadata(candidate) {
            Err(_) => Ok(None),
            Ok(_) => self.read_confined(candidate).map(Some),
        }
    }

    fn check_lexically_inside(&self, candidate: &Path) -> Result<(), Resolve> {
        let mut norm = PathBuf::new();
        for c in candidate.components() {
            match c {
                Component::ParentDir => {
                    norm.pop();
                }
                Component::CurDir => {}
                other => norm.push(other),
            }
        }
        if self.dirs.iter().any(|d| norm.starts_with(d)) {
            Ok(())
        } else {
            Err(Resolve::Refused(
                "it names a place outside the request's include directories".into(),
            ))
        }
    }

    fn read_confined(&self, candidate: &Path) -> Result<(String, Origin), Resolve> {
        self.check_lexically_inside(candidate)?;
        let real = std::fs::canonicalize(candidate).map_err(|_| {
            if self.dirs.is_empty() {
                Resolve::Refused("the request names no include directories".into())
            } else {
                Resolve::NotFound
            }
        })?;
        if !self.dirs.iter().any(|d| real.starts_with(d)) {
            return Err(Resolve::Refused(
                "it resolves outside the request's include directories".into(),
            ));
        }
        if !real.is_file() {
            return Err(Resolve::Unreadable("not a regular file".into()));
        }
        let content = std::fs::read_to_string(&real)
            .map_err(|e| Resolve::Unreadable(format!("cannot read it: {e}")))?;
        let dir = real.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok((content, Origin::Dir(dir)))
    }

    fn try_map(&self, vdir: &[String], name: &str) -> Result<Option<(String, Origin)>, Resolve> {
        if self.map.is_empty() {
            return Ok(None);
        }
        let Some(parts) = normalize_virtual(vdir, name) else {
            return Err(Resolve::Refused(
                "it climbs above the include map's root".into(),
            ));
        };
        let wanted = parts.join("/");
        let found = self
            .map
            .iter()
            .find(|f| normalize_virtual(&[], &f.path).is_some_and(|p| p.join("/") == wanted));
        Ok(found.map(|f| {
            let mut dir = parts.clone();
            dir.pop();
            (f.content.clone(), Origin::Virtual(dir))
        }))
    }
}

enum Resolve {
    Refused(String),
    NotFound,
    Unreadable(String),
}

/// `vdir` joined with `name`, with `.` and `..` applied; `None` when it climbs above the root.
fn normalize_virtual(vdir: &[String], name: &str) -> Option<Vec<String>> {
    let mut parts: Vec<String> = vdir.to_vec();
    for c in Path::new(name.trim_start_matches('/')).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts)
}

/// The name an `#include` line names, if the line is one.
fn directive(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start();
    let rest = rest.strip_prefix("include")?.trim();
    let (open, close) = match rest.chars().next()? {
        '"' => ('"', '"'),
        '<' => ('<', '>'),
        _ => return None,
    };
    let inner = rest.strip_prefix(open)?;
    let end = inner.find(close)?;
    Some(&inner[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(files: &[(&str, &str)]) -> Vec<IncludeFile> {
        files
            .iter()
            .map(|(p, c)| IncludeFile {
                path: p.to_string(),
                content: c.to_string(),
            })
            .collect()
    }

    #[test]
    fn directives_are_recognised() {
        assert_eq!(directive("#include \"a/b.glsl\""), Some("a/b.glsl"));
        assert_eq!(directive("  #  include <c.h>  // x"), Some("c.h"));
        assert_eq!(directive("#includes \"x\""), None);
        assert_eq!(directive("// #include \"x\""), None);
    }

    #[test]
    fn map_includes_expand_with_a_line_map() {
        let inc = IncludeSources::new(
            &[],
            &map(&[
                ("lib/a.glsl", "A1\n#include \"b.glsl\"\nA3"),
                ("lib/b.glsl", "B1"),
            ]),
        );
        let ex = inc
            .expand("S1\n#include \"lib/a.glsl\"\nS3\n", 1 << 20)
            .unwrap();
        assert_eq!(ex.text, "S1\nA1\nB1\nA3\nS3\n");
        assert_eq!(ex.locate(3), ("b.glsl".to_string(), 1));
        assert_eq!(ex.locate(4), ("lib/a.glsl".to_string(), 3));
        assert_eq!(ex.locate(5), (SOURCE_NAME.to_string(), 3));
        assert_eq!(ex.files.len(), 2);
    }

    #[test]
    fn traversal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("inc")).unwrap();
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        let inc = IncludeSources::new(
            &[dir.path().join("inc").to_string_lossy().into_owned()],
            &[],
        );
        for name in [
            "../secret.txt",
            "../../../../../../etc/passwd",
            "/etc/passwd",
        ] {
            let e = inc
                .expand(&format!("#include \"{name}\"\n"), 1 << 20)
                .unwrap_err();
            assert!(matches!(e, IncludeError::Refused { .. }), "{name}: {e}");
        }
        let vmap = IncludeSources::new(&[], &map(&[("a.glsl", "x")]));
        let e = vmap
            .expand("#include \"../a.glsl\"\n", 1 << 20)
            .unwrap_err();
        assert!(matches!(e, IncludeError::Refused { .. }), "{e}");
    }

    #[test]
    fn cycles_and_size_are_bounded() {
        let inc = IncludeSources::new(&[], &map(&[("a", "#include \"a\"")]));
        assert!(matches!(
            inc.expand("#include \"a\"", 1 << 20),
            Err(IncludeError::TooDeep { .. })
        ));
        let inc = IncludeSources::new(&[], &map(&[("a", &"x".repeat(100))]));
        assert!(matches!(
            inc.expand("#include \"a\"", 50),
            Err(IncludeError::TooLarge { .. })
        ));
        assert!(matches!(
            inc.expand("#include \"b\"", 500),
            Err(IncludeError::NotFound { .. })
        ));
    }
}
