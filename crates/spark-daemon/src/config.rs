//! Command-line flags and the resolved daemon configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use spark_store::{Durability, StoreConfig};

const MB: u64 = 1024 * 1024;

/// sparkd: the SparkDaemon cache daemon. One per user; editors, cookers and tools share it.
#[derive(Debug, Parser)]
#[command(name = "sparkd", version, about, long_about = None)]
pub struct Args {
    /// Unix socket to listen on [default: $XDG_RUNTIME_DIR/spark/sparkd.sock, else /tmp/spark-$UID/sparkd.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Root of the persistent caches [default: $XDG_CACHE_HOME/spark, else ~/.cache/spark]
    #[arg(long, value_name = "DIR")]
    pub cache_root: Option<PathBuf>,

    /// Shader cache directory [default: <cache-root>/shader]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Asset cache directory [default: <cache-root>/asset]
    #[arg(long, value_name = "DIR")]
    pub asset_cache_dir: Option<PathBuf>,

    /// Keep everything in memory only; nothing is read from or written to disk
    #[arg(long, conflicts_with_all = ["cache_dir", "asset_cache_dir", "cache_root"])]
    pub memory_only: bool,

    /// Hot (memory) tier budget in MiB, shared evenly by the shader and asset caches
    #[arg(long, value_name = "MB", default_value_t = 512)]
    pub memory_budget_mb: u64,

    /// Shader cache disk budget in MiB (0 = unbounded)
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub shader_cache_max_mb: u64,

    /// Asset cache disk budget in MiB (0 = unbounded)
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub asset_cache_max_mb: u64,

    /// Largest blob accepted, in MiB
    #[arg(long, value_name = "MB", default_value_t = 4096)]
    pub max_blob_mb: u64,

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

    /// Log level (error, warn, info, debug, trace) or a filter like `spark_daemon=debug`; overrides RUST_LOG
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// Everything the server needs, resolved from flags and environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// True when the socket path is the default one (its directory is then ours to create and tighten).
    pub default_socket: bool,
    pub shader: StoreConfig,
    pub asset: StoreConfig,
    pub frame_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub exit_with_sponsors: bool,
}

impl Config {
    pub fn from_args(a: &Args) -> anyhow::Result<Config> {
        let uid = rustix::process::geteuid().as_raw();
        let (socket, default_socket) = match &a.socket {
            Some(p) => (p.clone(), false),
            None => (
                spark_proto::default_socket_path(
                    std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
                    uid,
                ),
                true,
            ),
        };
        let mem_each = a.memory_budget_mb.saturating_mul(MB) / 2;
        let mut shader = StoreConfig::memory("shader", mem_each);
        let mut asset = StoreConfig::memory("asset", mem_each);
        if !a.memory_only {
            let root = match &a.cache_root {
                Some(r) => Some(r.clone()),
                None => default_cache_root(),
            };
            shader.dir = a
                .cache_dir
                .clone()
                .or_else(|| root.as_ref().map(|r| r.join("shader")));
            asset.dir = a
                .asset_cache_dir
                .clone()
                .or_else(|| root.as_ref().map(|r| r.join("asset")));
            if shader.dir.is_none() || asset.dir.is_none() {
                anyhow::bail!(
                    "cannot find a cache directory: set XDG_CACHE_HOME or HOME, or pass --cache-root"
                );
            }
        }
        shader.disk_budget = a.shader_cache_max_mb.saturating_mul(MB);
        asset.disk_budget = a.asset_cache_max_mb.saturating_mul(MB);
        for s in [&mut shader, &mut asset] {
            s.max_blob = a.max_blob_mb.saturating_mul(MB);
            s.durability = a.durability;
        }
        Ok(Config {
            socket,
            default_socket,
            shader,
            asset,
            frame_timeout: Duration::from_secs(a.idle_frame_timeout.max(1)),
            idle_timeout: (a.idle_timeout > 0).then(|| Duration::from_secs(a.idle_timeout)),
            exit_with_sponsors: a.exit_with_sponsors,
        })
    }
}

/// `$XDG_CACHE_HOME/spark`, else `~/.cache/spark`.
fn default_cache_root() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("spark"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("spark"))
}
