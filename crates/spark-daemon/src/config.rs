//! Command-line flags and the resolved daemon configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use spark_store::{Durability, StoreConfig};

use crate::namespaces::{NamespaceConfig, decl};

pub mod file;
pub mod layers;
use crate::services::compile::{CompileConfig, default_jobs};

const MB: u64 = 1024 * 1024;

/// sparkd: the SparkDaemon cache daemon. One per user; editors, cookers and tools share it.
#[derive(Debug, Parser)]
#[command(name = "sparkd", version, about, long_about = None)]
pub struct Args {
    /// Unix socket to listen on [default: $XDG_RUNTIME_DIR/spark/sparkd.sock, else /tmp/spark-$UID/sparkd.sock];
    /// on Windows a named pipe [default: \\.\pipe\spark-SID-sparkd, SID = your user SID]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Root of the persistent caches; each namespace gets DIR/NAME [default: $XDG_CACHE_HOME/spark, else
    /// ~/.cache/spark; on Windows %LOCALAPPDATA%\Spark\cache]
    #[arg(long, value_name = "DIR")]
    pub cache_root: Option<PathBuf>,

    /// Shader cache directory [default: CACHE_ROOT/shader]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Asset cache directory [default: CACHE_ROOT/asset]
    #[arg(long, value_name = "DIR")]
    pub asset_cache_dir: Option<PathBuf>,

    /// Keep everything in memory only; nothing is read from or written to disk
    #[arg(long, conflicts_with_all = ["cache_dir", "asset_cache_dir", "cache_root"])]
    pub memory_only: bool,

    /// Hot (memory) tier budget in MiB, shared by every namespace (see --memory-share)
    #[arg(long, value_name = "MB", default_value_t = 512)]
    pub memory_budget_mb: u64,

    /// A namespace's share of the memory budget in percent, e.g. `shader=70` (repeatable). Namespaces without
    /// one split what is left evenly.
    #[arg(long, value_name = "NAME=PERCENT")]
    pub memory_share: Vec<String>,

    /// A namespace's disk budget in MiB, e.g. `asset=20480` (repeatable; 0 = unbounded)
    #[arg(long, value_name = "NAME=MB")]
    pub disk_budget: Vec<String>,

    /// Shader cache disk budget in MiB (0 = unbounded); same as --disk-budget shader=MB
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub shader_cache_max_mb: u64,

    /// Asset cache disk budget in MiB (0 = unbounded); same as --disk-budget asset=MB
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub asset_cache_max_mb: u64,

    /// Largest blob accepted, in MiB
    #[arg(long, value_name = "MB", default_value_t = 4096)]
    pub max_blob_mb: u64,

    /// Blobs up to this many KiB are appended to pack files in batches (storage format v2); larger ones get
    /// a file each. 0 = no packs (a file per blob)
    #[arg(long, value_name = "KB", default_value_t = 128)]
    pub pack_max_kb: u64,

    /// A pack file is sealed, and a new one started, once it holds this many MiB
    #[arg(long, value_name = "MB", default_value_t = 64)]
    pub pack_mb: u64,

    /// fast: a put is acknowledged once written to the OS (survives a daemon crash); fsync: once synced to
    /// disk (survives power loss)
    #[arg(long, value_name = "MODE", default_value = "fast")]
    pub durability: Durability,

    /// Seconds a client may take to finish sending a frame it has started
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub idle_frame_timeout: u64,

    /// Exit after no client has been connected for this many seconds (0 = never)
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub idle_timeout: u64,

    /// Exit once every sponsor process (registered by clients) has exited and no client is connected
    #[arg(long)]
    pub exit_with_sponsors: bool,

    /// Watch service: quiet time in milliseconds after the last file notification before a batch of changes
    /// is sent
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub watch_settle_ms: u64,

    /// Watch service: seconds a watched root nobody subscribes to is kept (with its history) before its OS
    /// watches are released
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub watch_grace_secs: u64,
    /// Compile jobs run at once (the Compile service's pool) [default: cores - 1, at least 1]
    #[arg(long, value_name = "N")]
    pub compile_jobs: Option<usize>,

    /// Seconds one compile job may run before its worker is stopped and the request gets an error
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub compile_timeout: u64,

    /// The glslangValidator executable (Debian package glslang-tools); looked up on PATH by default
    #[arg(long, value_name = "PATH", default_value = "glslangValidator")]
    pub glslang: PathBuf,

    /// Largest source plus included files one compile request may bring, in KiB
    #[arg(long, value_name = "KB", default_value_t = 4096)]
    pub compile_max_input_kb: usize,

    /// Serve HTTP (metrics, status, dashboard, ccache and Bazel caches) on this address, e.g. 127.0.0.1:8420.
    /// Loopback only unless --http-allow-remote; every request needs the token (docs/http.md)
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,

    /// Allow --http on a non-loopback address
    #[arg(long, requires = "http")]
    pub http_allow_remote: bool,

    /// Log level (error, warn, info, debug, trace) or a filter like `spark_daemon=debug`; overrides RUST_LOG
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[command(flatten)]
    pub collab: crate::services::collab::CollabArgs,

    /// Config file [default: $XDG_CONFIG_HOME/spark/sparkd.toml when it exists]; flags and SPARKD_* variables
    /// override it. See docs/sparkd.example.toml
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print every effective setting and where it came from (flag, environment, file:line, default), then exit
    #[arg(long)]
    pub print_config: bool,
}

/// Everything the server needs, resolved from flags and environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// True when the socket path is the default one (its directory is then ours to create and tighten).
    pub default_socket: bool,
    /// One entry per declared namespace, in declaration order.
    pub namespaces: Vec<NamespaceConfig>,
    pub frame_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub exit_with_sponsors: bool,
    pub watch: crate::services::watch::WatchConfig,
    /// The Compile service's pool, timeout, backends and limits.
    pub compile: CompileConfig,
    /// The HTTP front, when `--http` is given.
    pub http: Option<crate::http::HttpConfig>,
    /// The Collab service's queues, feed and NATS bridge.
    pub collab: crate::services::collab::CollabConfig,
    /// Namespaces' upstreams (the team tier), from the config file ([`Config::with_file`]).
    pub team: Vec<crate::team::TeamConfig>,
}

impl Config {
    pub fn from_args(a: &Args) -> anyhow::Result<Config> {
        let (socket, default_socket) = match &a.socket {
            Some(p) => (p.clone(), false),
            None => (default_socket_path(), true),
        };
        let root = if a.memory_only {
            None
        } else {
            match a.cache_root.clone().or_else(default_cache_root) {
                Some(r) => Some(r),
                None => bail!(
                    "cannot find a cache directory: set XDG_CACHE_HOME or HOME (LOCALAPPDATA on Windows), or pass --cache-root"
                ),
            }
        };
        let shares = memory_shares(a)?;
        let disk = disk_budgets(a)?;
        let namespaces = decl::DECLARED
            .iter()
            .map(|d| {
                let mut s = StoreConfig::memory(d.name, shares[d.name]);
                if let Some(root) = &root {
                    s.dir = Some(dir_override(a, d.name).unwrap_or_else(|| root.join(d.name)));
                }
                s.disk_budget = disk.get(d.name).copied().unwrap_or(0);
                s.max_blob = a.max_blob_mb.saturating_mul(MB);
                s.durability = a.durability;
                s.pack_max_blob = a.pack_max_kb.saturating_mul(1024);
                s.pack_size = a.pack_mb.max(1).saturating_mul(MB);
                NamespaceConfig { decl: *d, store: s }
            })
            .collect();
        Ok(Config {
            socket,
            default_socket,
            namespaces,
            frame_timeout: Duration::from_secs(a.idle_frame_timeout.max(1)),
            idle_timeout: (a.idle_timeout > 0).then(|| Duration::from_secs(a.idle_timeout)),
            exit_with_sponsors: a.exit_with_sponsors,
            watch: crate::services::watch::WatchConfig {
                settle: Duration::from_millis(a.watch_settle_ms.max(1)),
                grace: Duration::from_secs(a.watch_grace_secs),
            },
            compile: CompileConfig {
                jobs: a.compile_jobs.unwrap_or_else(default_jobs).max(1),
                timeout: Duration::from_secs(a.compile_timeout.max(1)),
                glslang: a.glslang.clone(),
                max_input: a.compile_max_input_kb.saturating_mul(1024),
            },
            http: a
                .http
                .as_deref()
                .map(|h| crate::http::HttpConfig::parse(h, a.http_allow_remote))
                .transpose()?,
            collab: crate::services::collab::CollabConfig::from_args(&a.collab),
            team: Vec::new(),
        })
    }

    /// Adds what only the config file sets: each namespace's upstream.
    pub fn with_file(mut self, file: Option<&file::LoadedFile>) -> anyhow::Result<Config> {
        let Some(f) = file else { return Ok(self) };
        for (name, ns) in &f.config.namespaces {
            if let Some(u) = &ns.upstream {
                let t = crate::team::TeamConfig::from_file(name.get_ref(), u)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", f.path.display()))?;
                self.team.push(t);
            }
        }
        Ok(self)
    }

    /// The configuration of namespace `name`.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceConfig> {
        self.namespaces.iter().find(|n| n.decl.name == name)
    }
}

fn dir_override(a: &Args, name: &str) -> Option<PathBuf> {
    match name {
        "shader" => a.cache_dir.clone(),
        "asset" => a.asset_cache_dir.clone(),
        _ => None,
    }
}

/// Parses `NAME=NUMBER` for a declared namespace.
fn parse_pair(flag: &str, s: &str) -> anyhow::Result<(&'static str, u64)> {
    let (name, v) = s
        .split_once('=')
        .with_context(|| format!("--{flag} takes NAME=NUMBER, not '{s}'"))?;
    let Some(d) = decl::find(name) else {
        let known: Vec<_> = decl::DECLARED.iter().map(|d| d.name).collect();
        bail!(
            "--{flag}: no namespace '{name}'; the namespaces are {}",
            known.join(", ")
        );
    };
    let v: u64 = v
        .parse()
        .with_context(|| format!("--{flag} {s}: '{v}' is not a whole number"))?;
    Ok((d.name, v))
}

/// Each namespace's memory budget in bytes: explicit shares first, the rest split evenly among the others.
fn memory_shares(a: &Args) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let total = a.memory_budget_mb.saturating_mul(MB);
    let mut explicit = BTreeMap::new();
    for s in &a.memory_share {
        let (name, pct) = parse_pair("memory-share", s)?;
        explicit.insert(name, pct);
    }
    let claimed: u64 = explicit.values().sum();
    if claimed > 100 {
        bail!("--memory-share adds up to {claimed}%; the shares must total at most 100%");
    }
    // The HTTP front's namespaces take no memory unless it is on (or they are given a share).
    let idle = |name: &str| a.http.is_none() && crate::http::NAMESPACES.contains(&name);
    let rest = decl::DECLARED
        .iter()
        .filter(|d| !explicit.contains_key(d.name) && !idle(d.name))
        .count();
    let each_rest = if rest == 0 {
        0
    } else {
        total / 100 * (100 - claimed) / rest as u64
    };
    Ok(decl::DECLARED
        .iter()
        .map(|d| {
            let b = match explicit.get(d.name) {
                Some(p) => total / 100 * p,
                None if idle(d.name) => 0,
                None => each_rest,
            };
            (d.name, b)
        })
        .collect())
}

fn disk_budgets(a: &Args) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let mut m = BTreeMap::new();
    m.insert("shader", a.shader_cache_max_mb.saturating_mul(MB));
    m.insert("asset", a.asset_cache_max_mb.saturating_mul(MB));
    for s in &a.disk_budget {
        let (name, mb) = parse_pair("disk-budget", s)?;
        m.insert(name, mb.saturating_mul(MB));
    }
    Ok(m)
}

#[cfg(unix)]
fn default_socket_path() -> PathBuf {
    spark_proto::default_socket_path(
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        rustix::process::geteuid().as_raw(),
    )
}

/// `\\.\pipe\spark-<SID>-sparkd`: per user, the same rule as the clients'.
#[cfg(windows)]
fn default_socket_path() -> PathBuf {
    spark_platform::windows::default_pipe()
}

/// `%LOCALAPPDATA%\Spark\cache`: per user, not roaming (a cache has no business in a roaming profile).
#[cfg(windows)]
fn default_cache_root() -> Option<PathBuf> {
    spark_platform::local_app_data().map(|d| d.join("Spark").join("cache"))
}

/// `$XDG_CACHE_HOME/spark`, else `~/.cache/spark`.
#[cfg(not(windows))]
fn default_cache_root() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("spark"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("spark"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["sparkd", "--memory-only", "--memory-budget-mb", "100"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    fn budgets(c: &Config) -> Vec<(&str, u64)> {
        c.namespaces
            .iter()
            .map(|n| (n.decl.name, n.store.memory_budget / MB))
            .collect()
    }

    #[test]
    fn memory_is_split_evenly_unless_shares_say_otherwise() {
        let c = Config::from_args(&args(&[])).unwrap();
        assert_eq!(
            budgets(&c),
            [
                ("shader", 33),
                ("asset", 33),
                ("compile", 33),
                ("ccache", 0),
                ("bazel-ac", 0),
                ("bazel-cas", 0)
            ]
        );
        // With --http, the HTTP front's namespaces share the rest too.
        let c = Config::from_args(&args(&["--http", "127.0.0.1:1"])).unwrap();
        assert_eq!(
            budgets(&c),
            [
                ("shader", 16),
                ("asset", 16),
                ("compile", 16),
                ("ccache", 16),
                ("bazel-ac", 16),
                ("bazel-cas", 16)
            ]
        );
        let c = Config::from_args(&args(&["--memory-share", "shader=70"])).unwrap();
        assert_eq!(
            budgets(&c)[..3],
            [("shader", 70), ("asset", 15), ("compile", 15)]
        );
        let c = Config::from_args(&args(&[
            "--memory-share",
            "asset=10",
            "--memory-share",
            "shader=20",
        ]))
        .unwrap();
        assert_eq!(
            budgets(&c)[..3],
            [("shader", 20), ("asset", 10), ("compile", 70)]
        );
    }

    #[test]
    fn bad_shares_and_budgets_are_refused_with_the_reason() {
        let e = Config::from_args(&args(&[
            "--memory-share",
            "shader=80",
            "--memory-share",
            "asset=30",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("110%"), "{e}");
        let e = Config::from_args(&args(&["--memory-share", "textures=10"])).unwrap_err();
        assert!(e.to_string().contains("no namespace 'textures'"), "{e}");
        let e = Config::from_args(&args(&["--disk-budget", "asset"])).unwrap_err();
        assert!(e.to_string().contains("NAME=NUMBER"), "{e}");
        let c = Config::from_args(&args(&["--disk-budget", "asset=3"])).unwrap();
        assert_eq!(c.namespace("asset").unwrap().store.disk_budget, 3 * MB);
    }
}
