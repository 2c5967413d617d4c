//! The config file, `$XDG_CONFIG_HOME/spark/sparkd.toml` (or `--config FILE`): its schema and how its keys map
//! onto sparkd's flags.
//!
//! The file is a lower layer under the flags, not a second configuration system: every key that has a flag is
//! turned into that flag's value (see [`KEYS`]) and resolved by the same code as the command line, so a key
//! cannot mean something different in the file. Adding a key is one field in the schema below and one line
//! in [`KEYS`]. Keys whose feature has no flag in this build yet (the table names one that clap does not
//! know) are still parsed, type-checked and reported by `--print-config`, marked as not in effect.
//!
//! The schema is `deny_unknown_fields` throughout, so a misspelt key is an error naming the key and its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// `sparkd.toml`. Every key is optional; absent keys fall through to the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub socket: Option<PathBuf>,
    pub cache_root: Option<PathBuf>,
    pub memory_only: Option<bool>,
    pub log_level: Option<String>,
    #[serde(default)]
    pub memory: MemoryFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub lifetime: LifetimeFile,
    #[serde(default)]
    pub watch: WatchFile,
    #[serde(default)]
    pub compile: CompileFile,
    #[serde(default)]
    pub http: HttpFile,
    #[serde(default)]
    pub collab: CollabFile,
    /// Per declared namespace (`shader`, `asset`, `compile`, …); a name that is not declared is an error.
    #[serde(default)]
    pub namespaces: BTreeMap<Spanned<String>, NamespaceFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryFile {
    pub budget_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub durability: Option<String>,
    pub max_blob_mb: Option<u64>,
    pub pack_max_kb: Option<u64>,
    pub pack_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeFile {
    pub idle_timeout_secs: Option<u64>,
    pub exit_with_sponsors: Option<bool>,
    pub frame_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchFile {
    pub settle_ms: Option<u64>,
    pub grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompileFile {
    pub jobs: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub glslang: Option<PathBuf>,
    pub max_input_kb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub listen: Option<String>,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollabFile {
    pub nats_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceFile {
    pub memory_share: Option<u64>,
    pub disk_budget_mb: Option<u64>,
    pub upstream: Option<UpstreamFile>,
}

/// A namespace's team-tier upstream (`[namespaces.NAME.upstream]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// `redis+unix:///path/to/redis.sock`, `redis://host:port`, …
    pub url: String,
    /// `read-write` (default), `read-only` or `off`.
    pub policy: Option<String>,
    pub timeout_ms: Option<u64>,
    pub queue: Option<u64>,
}

/// File key → flag id (clap's id: the long flag with `_` for `-`). `namespaces.*.K` keys become `NAME=VALUE`
/// values of a repeatable flag. A flag this build does not have leaves the key reported but not in effect.
pub const KEYS: &[(&str, &str)] = &[
    ("socket", "socket"),
    ("cache_root", "cache_root"),
    ("memory_only", "memory_only"),
    ("log_level", "log_level"),
    ("memory.budget_mb", "memory_budget_mb"),
    ("store.durability", "durability"),
    ("store.max_blob_mb", "max_blob_mb"),
    ("store.pack_max_kb", "pack_max_kb"),
    ("store.pack_mb", "pack_mb"),
    ("lifetime.idle_timeout_secs", "idle_timeout"),
    ("lifetime.exit_with_sponsors", "exit_with_sponsors"),
    ("lifetime.frame_timeout_secs", "idle_frame_timeout"),
    ("watch.settle_ms", "watch_settle_ms"),
    ("watch.grace_secs", "watch_grace_secs"),
    ("compile.jobs", "compile_jobs"),
    ("compile.timeout_secs", "compile_timeout"),
    ("compile.glslang", "glslang"),
    ("compile.max_input_kb", "compile_max_input_kb"),
    ("http.listen", "http"),
    ("http.allow_remote", "http_allow_remote"),
    ("collab.nats_url", "collab_nats"),
    ("namespaces.*.memory_share", "memory_share"),
    ("namespaces.*.disk_budget_mb", "disk_budget"),
];

/// One scalar value found in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A key of the file that maps to a flag.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// The key as written, e.g. `compile.jobs` or `namespaces.shader.memory_share`.
    pub key: String,
    /// The flag id it feeds.
    pub arg: &'static str,
    /// For `namespaces.*` keys: the namespace (the flag's value is `NAME=VALUE`).
    pub namespace: Option<String>,
    pub value: Scalar,
    pub line: usize,
}

/// A parsed, validated config file.
#[derive(Debug)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub config: FileConfig,
    pub entries: Vec<FileEntry>,
    /// Line of every upstream table, by namespace (for `--print-config`).
    pub upstream_lines: BTreeMap<String, usize>,
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read config file {path}: {source} (pass --config FILE, or create it)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax, type or unknown-key errors; toml's message names the key, line and column.
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// `$XDG_CONFIG_HOME/spark/sparkd.toml`, else `~/.config/spark/sparkd.toml`.
pub fn default_path(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("spark").join("sparkd.toml"))
}

/// Reads and validates `path`. `namespaces` are the declared namespace names.
pub fn load(path: &Path, namespaces: &[&str]) -> Result<LoadedFile, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, namespaces)
}

/// Validates `text` (the contents of `path`) against the schema and flattens it into [`FileEntry`]s.
pub fn parse(path: &Path, text: &str, namespaces: &[&str]) -> Result<LoadedFile, FileError> {
    let invalid = |message: String| FileError::Invalid {
        path: path.to_owned(),
        message,
    };
    let config: FileConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    for name in config.namespaces.keys() {
        if !namespaces.contains(&name.get_ref().as_str()) {
            return Err(invalid(format!(
                "line {}: no namespace '{}'; the namespaces are {}",
                line_of(text, name.span().start),
                name.get_ref(),
                namespaces.join(", ")
            )));
        }
    }
    let doc = toml::de::DeTable::parse(text).map_err(|e| invalid(e.to_string()))?;
    let mut entries = Vec::new();
    let mut upstream_lines = BTreeMap::new();
    for (key, arg) in KEYS {
        match key.strip_prefix("namespaces.*.") {
            None => {
                if let Some((value, line)) = lookup(&doc, text, &key.split('.').collect::<Vec<_>>())
                {
                    entries.push(FileEntry {
                        key: key.to_string(),
                        arg,
                        namespace: None,
                        value,
                        line,
                    });
                }
            }
            Some(leaf) => {
                for ns in config.namespaces.keys() {
                    let ns = ns.get_ref();
                    if let Some((value, line)) = lookup(&doc, text, &["namespaces", ns, leaf]) {
                        entries.push(FileEntry {
                            key: format!("namespaces.{ns}.{leaf}"),
                            arg,
                            namespace: Some(ns.clone()),
                            value,
                            line,
                        });
                    }
                }
            }
        }
    }
    for ns in config.namespaces.keys() {
        if let Some(line) = table_line(&doc, text, &["namespaces", ns.get_ref(), "upstream"]) {
            upstream_lines.insert(ns.get_ref().clone(), line);
        }
    }
    Ok(LoadedFile {
        path: path.to_owned(),
        config,
        entries,
        upstream_lines,
    })
}

type Doc<'i> = Spanned<toml::de::DeTable<'i>>;

fn find<'a, 'i>(doc: &'a Doc<'i>, path: &[&str]) -> Option<&'a Spanned<toml::de::DeValue<'i>>> {
    let (first, rest) = path.split_first()?;
    let mut v = doc.get_ref().get(*first)?;
    for p in rest {
        v = v.get_ref().get(*p)?;
    }
    Some(v)
}

/// The scalar at `path` and its line. The schema has already checked the types.
fn lookup(doc: &Doc<'_>, text: &str, path: &[&str]) -> Option<(Scalar, usize)> {
    use toml::de::DeValue;
    let v = find(doc, path)?;
    let s = match v.get_ref() {
        DeValue::String(s) => Scalar::Str(s.to_string()),
        DeValue::Boolean(b) => Scalar::Bool(*b),
        DeValue::Integer(i) => {
            // DeInteger keeps its digits and radix private; its Display is valid TOML again.
            let n: i64 = toml::from_str::<toml::Table>(&format!("v = {i}"))
                .ok()?
                .get("v")?
                .as_integer()?;
            Scalar::Int(n)
        }
        _ => return None,
    };
    Some((s, line_of(text, v.span().start)))
}

fn table_line(doc: &Doc<'_>, text: &str, path: &[&str]) -> Option<usize> {
    find(doc, path).map(|v| line_of(text, v.span().start))
}

/// The 1-based line holding byte `offset`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &[&str] = &["shader", "asset", "compile"];

    fn parse_str(t: &str) -> Result<LoadedFile, FileError> {
        parse(Path::new("/x/sparkd.toml"), t, NS)
    }

    #[test]
    fn keys_flatten_to_flags_with_their_lines() {
        let f = parse_str(
            "socket = \"/s\"\n\n[compile]\njobs = 3\n[namespaces.shader]\nmemory_share = 70\n",
        )
        .unwrap();
        let got: Vec<_> = f
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.arg, e.value.to_string(), e.line))
            .collect();
        assert_eq!(
            got,
            [
                ("socket", "socket", "/s".to_string(), 1),
                ("compile.jobs", "compile_jobs", "3".to_string(), 4),
                (
                    "namespaces.shader.memory_share",
                    "memory_share",
                    "70".to_string(),
                    6
                ),
            ]
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = parse_str("socket = \"/s\"\n[compile]\njobs = 2\njbos = 3\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("jbos") && m.contains("line 4"), "{m}");
        assert!(m.contains("/x/sparkd.toml"), "{m}");
        let e = parse_str("[namespaces.textures]\nmemory_share = 1\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("line 1") && m.contains("'textures'"), "{m}");
    }

    #[test]
    fn wrong_types_are_refused() {
        let m = parse_str("[compile]\njobs = \"four\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("line 2") && m.contains("jobs"), "{m}");
        let m = parse_str("[compile]\njobs = -1\n").unwrap_err().to_string();
        assert!(m.contains("line 2"), "{m}");
    }

    #[test]
    fn the_shipped_example_parses_and_sets_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sparkd.example.toml");
        let f = load(&path, NS).unwrap_or_else(|e| panic!("{e}"));
        for key in [
            "memory.budget_mb",
            "compile.jobs",
            "http.listen",
            "collab.nats_url",
        ] {
            assert!(
                f.entries.iter().any(|e| e.key == key),
                "example lacks {key}"
            );
        }
        let up = f
            .config
            .namespaces
            .iter()
            .find_map(|(_, n)| n.upstream.as_ref());
        assert!(up.is_some(), "the example shows an upstream");
    }
}
