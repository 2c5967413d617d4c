//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sparkctl", version, about = "Talk to a running sparkd")]
pub struct Cli {
    /// Daemon socket [default: $XDG_RUNTIME_DIR/spark/sparkd.sock, else /tmp/spark-$UID/sparkd.sock; on Windows \\.\pipe\spark-SID-sparkd]
    #[arg(long, global = true, value_name = "PATH", env = "SPARK_DAEMON_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Print machine-readable JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Check the daemon answers; prints the round-trip time
    Ping {
        /// Number of pings (the median is reported)
        #[arg(short, long, default_value_t = 1)]
        count: u32,
    },
    /// Daemon and protocol version
    Version,
    /// Daemon statistics and the counters of every namespace it serves
    Stats,
    /// Ask the daemon to finish in-flight requests and exit
    Shutdown,
    /// The compiled-shader cache
    #[command(subcommand)]
    Shader(ShaderCmd),
    /// Watch a directory: print changes live (`watch ROOT`), query changes since a clock
    /// (`watch --since CLOCK ROOT`), or show the daemon's watches (`watch list`)
    Watch(WatchArgs),
    /// The asset-variant cache
    #[command(subcommand)]
    Asset(AssetCmd),
    /// Compile a shader through the daemon (cached, shared with every other client); prints diagnostics like
    /// a compiler and exits 5 on a compile error
    Compile(Box<CompileArgs>),
    /// The Compile service's counters
    CompileStats,
    /// Collaboration sessions: members, locks, publish, live subscribe, activity, force-unlock
    #[command(subcommand)]
    Collab(crate::collab::CollabCmd),
    /// Read every entry of a namespace (all by default), check every checksum, drop the corrupt ones
    Verify {
        /// The namespace (shader, asset, compile, …) [default: every namespace]
        namespace: Option<String>,
    },
    /// Evict least recently used entries of a namespace now, down to a size
    Trim {
        namespace: String,
        /// The size to trim to: bytes, or with a unit: 512M, 10G
        #[arg(long, value_name = "SIZE")]
        to: String,
    },
    /// Live view: per-namespace hit rate, ops/s, entries and bytes, the daemon's clients
    Top {
        /// Redraw interval in milliseconds
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many redraws (0 = until interrupted)
        #[arg(long, value_name = "N", default_value_t = 0)]
        iterations: u64,
    },
}

#[derive(clap::Args)]
pub struct CompileArgs {
    /// Source file (GLSL, WGSL or HLSL; the language follows the extension unless --lang says)
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub file: Option<PathBuf>,
    /// Stage: vert, frag or comp [default: from the extension: .vert, .frag, .comp]
    #[arg(long, short = 'S')]
    pub stage: Option<String>,
    /// Source language: glsl, wgsl or hlsl [default: from the extension]
    #[arg(long)]
    pub lang: Option<String>,
    /// Output: spirv, msl, hlsl or glsl
    #[arg(long, short = 't', default_value = "spirv")]
    pub target: String,
    /// Backend: auto, naga or glslang
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Entry point
    #[arg(long, short = 'e', default_value = "main")]
    pub entry: String,
    /// A define, NAME or NAME=VALUE (repeatable)
    #[arg(short = 'D', value_name = "NAME[=VAL]")]
    pub define: Vec<String>,
    /// An include directory (repeatable); the source file's own directory is always searched first
    #[arg(short = 'I', value_name = "DIR")]
    pub include: Vec<PathBuf>,
    /// Where to write the output (a file; with --batch, a directory) [default: FILE's name with the target's
    /// extension; with --batch, the JSON's output_dir]
    #[arg(short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Emit debug information
    #[arg(short = 'g')]
    pub debug: bool,
    /// SPIR-V version, e.g. 1.3 [default: the backend's]
    #[arg(long, value_name = "MAJOR.MINOR")]
    pub spirv_version: Option<String>,
    /// Compile every permutation a JSON file lists, in one request (see the README for the format)
    #[arg(long, value_name = "JSON")]
    pub batch: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
pub struct ShaderKeyArgs {
    /// Source hash, 64-bit hex (e.g. 0123456789abcdef)
    pub hash: String,
    /// Target byte (0-255)
    pub target: u8,
    /// Stage byte (0-255)
    pub stage: u8,
}

#[derive(Subcommand)]
pub enum ShaderCmd {
    /// Fetch a blob to stdout or a file (exit 3 on a miss)
    Get {
        #[command(flatten)]
        key: ShaderKeyArgs,
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Store a blob from a file or stdin (`-` or nothing)
    Put {
        #[command(flatten)]
        key: ShaderKeyArgs,
        file: Option<PathBuf>,
    },
    /// Whether a blob is cached (exit 3 if not)
    Exists {
        #[command(flatten)]
        key: ShaderKeyArgs,
    },
    /// Cache statistics
    Stats,
    /// Remove every shader blob
    Clear,
}

#[derive(Subcommand)]
pub enum AssetCmd {
    /// Fetch a variant to stdout or a file (exit 3 on a miss)
    Get {
        path: String,
        platform: u8,
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Store a variant from a file or stdin (`-` or nothing)
    Put {
        path: String,
        platform: u8,
        file: Option<PathBuf>,
    },
    /// Whether a variant is cached (exit 3 if not)
    Exists { path: String, platform: u8 },
    /// Drop every platform variant of a path
    Invalidate { path: String },
    /// Cache statistics
    Stats,
    /// Remove every asset variant
    Clear,
}

#[derive(clap::Args)]
pub struct WatchArgs {
    /// The directory to watch, or `list` for every watched root with its subscribers and watch counts (a
    /// directory named `list` is `./list`)
    pub root: String,
    /// Only paths matching this glob (repeatable); without `/` it matches file names anywhere (`*.png`)
    #[arg(long = "glob", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out paths matching this glob (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Print what changed since this clock (`c:<hex>:<seq>`, printed by every batch) and exit
    #[arg(long, value_name = "CLOCK")]
    pub since: Option<String>,
    /// Do not honour .gitignore, .ignore and the global excludes file
    #[arg(long)]
    pub no_ignore: bool,
    /// Exit after this many batches (0 = run until interrupted)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub count: u64,
}
