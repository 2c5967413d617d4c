//! Where each setting comes from: flags over the environment over the config file over the defaults.
//!
//! The lower layers are turned into flags and parsed by clap together with the real command line, so a value
//! means the same wherever it was written and is checked by the same code. The environment layer is
//! `SPARKD_<FLAG>` for every flag (`SPARKD_COMPILE_JOBS=4`; a repeatable flag takes a comma-separated list),
//! plus the variables that already meant something before the file existed: `SPARK_DAEMON_SOCKET` (the
//! clients' socket setting) for `--socket` and `RUST_LOG` for `--log-level`.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::file::{self, FileError, LoadedFile, Scalar};
use super::{Args, Config};
use crate::namespaces::decl;

/// The environment variable naming the config file, as `--config` does.
pub const ENV_CONFIG: &str = "SPARKD_CONFIG";

/// Variables that set a flag besides `SPARKD_<FLAG>` (which wins over them).
const ENV_ALIASES: &[(&str, &str)] =
    &[("socket", "SPARK_DAEMON_SOCKET"), ("log_level", "RUST_LOG")];

/// Flags a lower layer must not add when a higher layer set the other side (clap would refuse the pair).
const CONFLICTS: &[(&str, &[&str])] = &[(
    "memory_only",
    &["cache_root", "cache_dir", "asset_cache_dir"],
)];

/// Flags that are about this run, not settings.
const NOT_SETTINGS: &[&str] = &["help", "version", "config", "print_config"];

/// Where one value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(String),
    File { path: PathBuf, line: usize },
    Default,
}

impl Source {
    fn rank(&self) -> u8 {
        match self {
            Source::Flag => 0,
            Source::Env(_) => 1,
            Source::File { .. } => 2,
            Source::Default => 3,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(v) => write!(f, "env {v}"),
            Source::File { path, line } => write!(f, "file {}:{line}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One value a lower layer contributes: `--<flag> <value>` (no value: a boolean flag switched on).
#[derive(Debug, Clone)]
struct Layered {
    id: String,
    value: Option<String>,
    /// A boolean layer that said `false`: recorded for the report, adds no flag.
    off: bool,
    source: Source,
}

/// Why the configuration could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Usage errors, `--help`, `--version`: clap prints and exits.
    #[error("{0}")]
    Clap(#[from] clap::Error),
    #[error("{0}")]
    File(#[from] FileError),
    #[error("{0}")]
    Invalid(String),
}

/// The parsed flags plus what `--print-config` needs to say where each came from.
pub struct Resolved {
    pub args: Args,
    pub file: Option<LoadedFile>,
    /// The file looked for when none was given (reported when absent).
    pub looked_for: Option<PathBuf>,
    matches: ArgMatches,
    layered: Vec<Layered>,
}

/// Parses `argv` (program name first) with the environment and the config file under it.
pub fn resolve(argv: Vec<OsString>) -> Result<Resolved, ResolveError> {
    resolve_with_env(argv, |k| std::env::var(k).ok())
}

/// As [`resolve`], reading the environment through `env` (tests pass a map).
pub fn resolve_with_env(
    argv: Vec<OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Resolved, ResolveError> {
    let cmd = Args::command();
    let first = cmd.clone().try_get_matches_from(&argv)?;
    let on_cli = |id: &str| first.value_source(id) == Some(ValueSource::CommandLine);
    let (file, looked_for) = find_file(&first, &env)?;
    let mut layered = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let append = matches!(arg.get_action(), ArgAction::Append);
        if NOT_SETTINGS.contains(&id) || (on_cli(id) && !append) {
            continue;
        }
        let boolean = matches!(arg.get_action(), ArgAction::SetTrue);
        let from_env = env_layer(id, append, boolean, &env)?;
        let env_set = !from_env.is_empty();
        layered.extend(from_env);
        if env_set && !append {
            continue;
        }
        if let Some(f) = &file {
            for e in f.entries.iter().filter(|e| e.arg == id) {
                let value = match &e.namespace {
                    Some(ns) => format!("{ns}={}", e.value),
                    None => e.value.to_string(),
                };
                let source = Source::File {
                    path: f.path.clone(),
                    line: e.line,
                };
                layered.push(layer(id, boolean, value, source, &e.key)?);
            }
        }
    }
    drop_conflicts(&mut layered, &on_cli);
    let long = |id: &str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_long())
            .unwrap_or(id)
            .to_string()
    };
    let mut full: Vec<OsString> = argv.iter().take(1).cloned().collect();
    for l in layered.iter().filter(|l| !l.off) {
        let flag = long(&l.id);
        let one = match &l.value {
            Some(v) => format!("--{flag}={v}"),
            None => format!("--{flag}"),
        };
        // Checked alone first, so a bad value is reported against its file line or variable.
        if let Err(e) = cmd.clone().try_get_matches_from(["sparkd", one.as_str()]) {
            let why = e.kind().as_str().unwrap_or("invalid value").to_string();
            return Err(ResolveError::Invalid(format!("{}: {one}: {why}", l.source)));
        }
        full.push(one.into());
    }
    full.extend(argv.iter().skip(1).cloned());
    let matches = cmd.try_get_matches_from(full)?;
    let args = Args::from_arg_matches(&matches)?;
    Ok(Resolved {
        args,
        file,
        looked_for,
        matches,
        layered,
    })
}

/// `--config`, else `$SPARKD_CONFIG` (either must exist), else the default path if it exists.
fn find_file(
    first: &ArgMatches,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(Option<LoadedFile>, Option<PathBuf>), ResolveError> {
    let names: Vec<&str> = decl::DECLARED.iter().map(|d| d.name).collect();
    let explicit = first
        .get_one::<PathBuf>("config")
        .cloned()
        .or_else(|| env(ENV_CONFIG).filter(|s| !s.is_empty()).map(PathBuf::from));
    if let Some(p) = explicit {
        return Ok((Some(file::load(&p, &names)?), None));
    }
    match file::default_path(env) {
        Some(p) if p.exists() => Ok((Some(file::load(&p, &names)?), None)),
        other => Ok((None, other)),
    }
}

fn env_layer(
    id: &str,
    append: bool,
    boolean: bool,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<Layered>, ResolveError> {
    let own = format!("SPARKD_{}", id.to_uppercase());
    let names = std::iter::once(own.as_str()).chain(
        ENV_ALIASES
            .iter()
            .filter(|(a, _)| *a == id)
            .map(|(_, v)| *v),
    );
    for name in names {
        let Some(v) = env(name).filter(|v| !v.is_empty()) else {
            continue;
        };
        let parts: Vec<&str> = if append {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        } else {
            vec![v.as_str()]
        };
        return parts
            .into_iter()
            .map(|p| layer(id, boolean, p.to_string(), Source::Env(name.into()), name))
            .collect();
    }
    Ok(Vec::new())
}

fn layer(
    id: &str,
    boolean: bool,
    value: String,
    source: Source,
    what: &str,
) -> Result<Layered, ResolveError> {
    let (value, off) = if boolean {
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => (None, false),
            "false" | "0" | "no" | "off" => (None, true),
            _ => {
                return Err(ResolveError::Invalid(format!(
                    "{source}: {what} = '{value}': expected true or false"
                )));
            }
        }
    } else {
        (Some(value), false)
    };
    Ok(Layered {
        id: id.to_string(),
        value,
        off,
        source,
    })
}

/// Of two flags clap refuses together, keeps the one from the higher layer (a flag beats the file).
fn drop_conflicts(layered: &mut Vec<Layered>, on_cli: &impl Fn(&str) -> bool) {
    let best = |ls: &[Layered], id: &str| -> u8 {
        if on_cli(id) {
            return 0;
        }
        ls.iter()
            .filter(|l| l.id == id && !l.off)
            .map(|l| l.source.rank())
            .min()
            .unwrap_or(u8::MAX)
    };
    for (a, others) in CONFLICTS {
        let ra = best(layered, a);
        let rb = others
            .iter()
            .map(|o| best(layered, o))
            .min()
            .unwrap_or(u8::MAX);
        if ra < rb {
            layered.retain(|l| !others.contains(&l.id.as_str()));
        } else if rb < ra {
            layered.retain(|l| l.id != *a);
        }
    }
}

impl Resolved {
    /// Where the effective value of flag `id` came from (the last layer that set it wins).
    pub fn source(&self, id: &str) -> Source {
        // A single-valued flag on the command line is never layered, so a layered value is the effective one.
        if let Some(l) = self.layered.iter().rev().find(|l| l.id == id) {
            return l.source.clone();
        }
        if self.matches.value_source(id) == Some(ValueSource::CommandLine) {
            Source::Flag
        } else {
            Source::Default
        }
    }

    /// The source of namespace `ns`'s value of repeatable `NAME=VALUE` flag `id`.
    fn pair_source(&self, id: &str, ns: &str) -> Source {
        let prefix = format!("{ns}=");
        let raw: Vec<String> = self
            .matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let from_layers = self.layered.iter().filter(|l| l.id == id && !l.off).count();
        if raw[from_layers.min(raw.len())..]
            .iter()
            .any(|v| v.starts_with(&prefix))
        {
            return Source::Flag;
        }
        self.layered
            .iter()
            .rev()
            .find(|l| l.id == id && l.value.as_deref().is_some_and(|v| v.starts_with(&prefix)))
            .map(|l| l.source.clone())
            .unwrap_or(Source::Default)
    }

    /// `--print-config`: every effective setting as `key = value  # source`, in file-key names.
    pub fn report(&self, config: &Config) -> String {
        let mut rows: Vec<(String, String, String)> = Vec::new();
        let file_note = match (&self.file, &self.looked_for) {
            (Some(f), _) => format!("{}", f.path.display()),
            (None, Some(p)) => format!("none ({} does not exist)", p.display()),
            (None, None) => "none (no XDG_CONFIG_HOME or HOME)".into(),
        };
        let cmd = Args::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_SETTINGS.contains(&id) || matches!(arg.get_action(), ArgAction::Append) {
                continue;
            }
            let key = file::KEYS
                .iter()
                .find(|(k, a)| *a == id && !k.starts_with("namespaces."))
                .map(|(k, _)| k.to_string())
                .unwrap_or_else(|| format!("--{}", arg.get_long().unwrap_or(id)));
            let (value, note) = self.value_of(id, config);
            let src = self.source(id);
            rows.push((key, value, format!("{src}{note}")));
        }
        self.namespace_rows(config, &mut rows);
        self.unwired_rows(&cmd, &mut rows);
        // Aligned comments, but a long value (an upstream table) does not push every row to the right.
        let width = rows
            .iter()
            .map(|(k, v, _)| k.len() + v.len() + 3)
            .filter(|w| *w <= 56)
            .max()
            .unwrap_or(0);
        let mut out = format!("# sparkd effective configuration; config file: {file_note}\n");
        for (k, v, s) in rows {
            let kv = format!("{k} = {v}");
            let _ = writeln!(out, "{kv:width$}  # {s}");
        }
        out
    }

    fn value_of(&self, id: &str, config: &Config) -> (String, String) {
        match id {
            "socket" => return (quote(&config.socket.display().to_string()), String::new()),
            "cache_root" if self.matches.get_raw(id).is_none() => {
                let dir = config.namespaces.first().and_then(|n| n.store.dir.as_ref());
                return match dir.and_then(|d| d.parent()) {
                    Some(root) => (quote(&root.display().to_string()), String::new()),
                    None => ("(none: memory only)".into(), String::new()),
                };
            }
            "compile_jobs" => return (config.compile.jobs.to_string(), String::new()),
            "log_level" if self.matches.get_raw(id).is_none() => {
                return (quote("info"), " (RUST_LOG unset)".into());
            }
            _ => {}
        }
        if let Ok(Some(b)) = self.matches.try_get_one::<bool>(id) {
            return (b.to_string(), String::new());
        }
        match self.matches.get_raw(id) {
            Some(mut v) => {
                let s = v
                    .next()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (scalar_text(&s), String::new())
            }
            None => ("(unset)".into(), String::new()),
        }
    }

    fn namespace_rows(&self, config: &Config, rows: &mut Vec<(String, String, String)>) {
        for n in &config.namespaces {
            let name = n.decl.name;
            let p = format!("namespaces.{name}");
            let dir = n
                .store
                .dir
                .as_ref()
                .map_or("(memory only)".into(), |d| quote(&d.display().to_string()));
            rows.push((format!("{p}.dir"), dir, "derived from cache_root".into()));
            let share = self.pair_source("memory_share", name);
            let note = if share == Source::Default {
                "default (even split)".to_string()
            } else {
                share.to_string()
            };
            rows.push((
                format!("{p}.memory_budget_mb"),
                (n.store.memory_budget / (1024 * 1024)).to_string(),
                note,
            ));
            let mut disk = self.pair_source("disk_budget", name);
            if disk == Source::Default && name == "shader" {
                disk = self.source("shader_cache_max_mb");
            } else if disk == Source::Default && name == "asset" {
                disk = self.source("asset_cache_max_mb");
            }
            rows.push((
                format!("{p}.disk_budget_mb"),
                (n.store.disk_budget / (1024 * 1024)).to_string(),
                disk.to_string(),
            ));
            let up = self.file.as_ref().and_then(|f| {
                let u = f
                    .config
                    .namespaces
                    .iter()
                    .find(|(k, _)| k.get_ref() == name)?
                    .1
                    .upstream
                    .as_ref()?;
                let line = f.upstream_lines.get(name).copied().unwrap_or(0);
                Some((
                    u.clone(),
                    Source::File {
                        path: f.path.clone(),
                        line,
                    },
                ))
            });
            if let Some((u, src)) = up {
                let policy = u.policy.as_deref().unwrap_or("read-write");
                let t = u
                    .timeout_ms
                    .unwrap_or(crate::team::config::DEFAULT_TIMEOUT.as_millis() as u64);
                let q = u.queue.unwrap_or(crate::team::config::DEFAULT_QUEUE as u64);
                let v = format!(
                    "{{ url = {}, policy = {}, timeout_ms = {t}, queue = {q} }}",
                    quote(&u.url),
                    quote(policy)
                );
                rows.push((format!("{p}.upstream"), v, src.to_string()));
            } else {
                rows.push((format!("{p}.upstream"), "(none)".into(), "default".into()));
            }
        }
    }

    /// File keys whose flag this build does not have: parsed and shown, not in effect.
    fn unwired_rows(&self, cmd: &clap::Command, rows: &mut Vec<(String, String, String)>) {
        for (key, id) in file::KEYS {
            if cmd.get_arguments().any(|a| a.get_id() == *id) {
                continue;
            }
            let entry = self
                .file
                .as_ref()
                .and_then(|f| f.entries.iter().find(|e| e.key == *key).map(|e| (e, f)));
            let (value, src) = match entry {
                Some((e, f)) => {
                    let v = match &e.value {
                        Scalar::Str(s) => quote(s),
                        other => other.to_string(),
                    };
                    (
                        v,
                        Source::File {
                            path: f.path.clone(),
                            line: e.line,
                        }
                        .to_string(),
                    )
                }
                None => ("(unset)".into(), "default".into()),
            };
            let flag = id.replace('_', "-");
            rows.push((
                key.to_string(),
                value,
                format!("{src}; not in effect: this sparkd has no --{flag} yet"),
            ));
        }
    }
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Numbers and booleans as they are, anything else quoted (so the output reads as TOML).
fn scalar_text(s: &str) -> String {
    if s.parse::<i64>().is_ok() || s == "true" || s == "false" {
        s.to_string()
    } else {
        quote(s)
    }
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
