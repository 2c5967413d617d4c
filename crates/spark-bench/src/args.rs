//! Command line, and how many requests each case sends.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;

use crate::kv::Op;
use crate::{KIB, MIB};

/// Benchmarks sparkd against the AF_UNIX floor and Redis; prints a table and writes JSON.
#[derive(Debug, Parser)]
#[command(name = "spark-bench", version, about)]
pub struct Args {
    /// Tiny counts and one repetition: proves every case still runs, in seconds. Numbers are meaningless.
    #[arg(long)]
    pub smoke: bool,
    /// Repetitions of each case [default: 5, 1 with --smoke]
    #[arg(long)]
    pub reps: Option<usize>,
    /// The sparkd binary [default: `sparkd` next to this executable]
    #[arg(long, value_name = "PATH")]
    pub sparkd: Option<PathBuf>,
    /// The redis-server binary (Debian's package) [default: redis-server on PATH]
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    pub redis_server: String,
    /// Skip the Redis cases
    #[arg(long)]
    pub no_redis: bool,

    /// A second sparkd build (e.g. the previous release) run beside the first in the ping and kv groups,
    /// repetitions alternating, in place of Redis there (in the collab group beside Redis): before/after
    /// ratios from one run
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Where the start-up cache directory is kept and the JSON goes [default: TARGET_DIR/bench]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// JSON output [default: WORK_DIR/spark-bench.json, or spark-bench-smoke.json]
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Only these groups (comma-separated): floor, ping, kv, big, fill, startup, watch, compile, collab, team
    #[arg(long, value_delimiter = ',', value_name = "GROUPS")]
    pub only: Option<Vec<String>>,
    /// Only these value sizes in the kv group, in bytes (comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "BYTES")]
    pub sizes: Option<Vec<usize>>,
    /// Longest time one repetition of a case runs, in ms (each client also stops after its request count)
    /// [default: 1500, 300 with --smoke]
    #[arg(long, value_name = "MS")]
    pub time_limit_ms: Option<u64>,
    /// Only these operations in the kv and big groups (comma-separated): get, put
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    pub ops: Option<Vec<String>>,
    /// Memory budget given to every sparkd the bench starts, in MiB
    #[arg(long, default_value_t = 256)]
    pub memory_budget_mb: u64,
    /// Entries in the start-up cache [default: 100000, 2000 with --smoke]
    #[arg(long)]
    pub startup_entries: Option<usize>,
    /// Bytes per start-up entry [default: 11000 (1.02 GiB in all), 1000 with --smoke]
    #[arg(long)]
    pub startup_value_bytes: Option<usize>,
    /// Extra argument for every sparkd the bench starts (repeatable), for experiments
    #[arg(long = "sparkd-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sparkd_args: Vec<String>,
    /// Extra argument for redis-server (repeatable), e.g. `--redis-arg=--appendonly --redis-arg=yes
    /// --redis-arg=--appendfsync --redis-arg=always` to hold `--durability fsync` against a durable Redis
    #[arg(long = "redis-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub redis_args: Vec<String>,
}

impl Args {
    pub fn wants(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|g| g == group))
    }

    pub fn ops(&self) -> Vec<Op> {
        [Op::Get, Op::Put]
            .into_iter()
            .filter(|op| {
                self.ops
                    .as_ref()
                    .is_none_or(|o| o.iter().any(|x| x.eq_ignore_ascii_case(op.name())))
            })
            .collect()
    }

    /// `--time-limit-ms` or its default, in one place because the run and the JSON must agree on it.
    pub fn rep_time_limit_ms(&self) -> u64 {
        self.time_limit_ms
            .unwrap_or(if self.smoke { 300 } else { 1500 })
    }
}

/// Request counts per case (whole case, all clients together).
pub struct Counts {
    pub reps: usize,
    pub ping: usize,
    pub small_d1: usize,
    pub small_d16: usize,
    pub mid_d1: usize,
    pub mid_d16: usize,
    pub big: usize,
    pub startup_entries: usize,
    pub startup_value_bytes: usize,
    pub settle: Duration,
}

impl Counts {
    pub fn new(a: &Args) -> Counts {
        let mut c = if a.smoke {
            Counts {
                reps: 1,
                ping: 200,
                small_d1: 400,
                small_d16: 1024,
                mid_d1: 32,
                mid_d16: 256,
                big: 8,
                startup_entries: 2000,
                startup_value_bytes: 1000,
                settle: Duration::from_millis(100),
            }
        } else {
            Counts {
                reps: 5,
                ping: 20_000,
                small_d1: 60_000,
                small_d16: 400_000,
                mid_d1: 8_000,
                mid_d16: 16_000,
                big: 32,
                startup_entries: 100_000,
                startup_value_bytes: 11_000,
                settle: Duration::from_secs(1),
            }
        };
        if let Some(r) = a.reps {
            c.reps = r.max(1);
        }
        if let Some(n) = a.startup_entries {
            c.startup_entries = n.max(1);
        }
        if let Some(n) = a.startup_value_bytes {
            c.startup_value_bytes = n.max(1);
        }
        c
    }

    pub fn total(&self, size: usize, depth: usize) -> usize {
        match (size, depth) {
            (s, 1) if s <= 8 * KIB => self.small_d1,
            (s, _) if s <= 8 * KIB => self.small_d16,
            (s, 1) if s <= MIB => self.mid_d1,
            (s, _) if s <= MIB => self.mid_d16,
            _ => self.big,
        }
    }
}

pub fn default_sparkd() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("sparkd");
    if !p.exists() {
        bail!(
            "no sparkd next to {} (build it: cargo build --release -p spark-daemon -p spark-bench, or pass --sparkd)",
            exe.display()
        );
    }
    Ok(p)
}

pub fn default_work_dir() -> PathBuf {
    // <target>/<profile>/spark-bench → <target>/bench
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(|t| t.join("bench")))
        .unwrap_or_else(|| std::env::temp_dir().join("spark-bench"))
}
