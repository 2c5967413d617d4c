//! `spark-bench`: sparkd side by side with the raw socket floor and Redis, measured in one run on one
//! machine. It starts what it needs (a fresh `sparkd`, a `redis-server` without persistence, both on Unix
//! sockets in temporary directories, plus in-process floor servers), runs every case several times, stops
//! what it started by PID, prints a table with ratios and PASS/MISS per target, and writes JSON.
//!
//! A MISS is information, not a failure: the exit status is non-zero only when a case could not run.
//! `--smoke` runs every case with tiny counts (CI keeps the tool working with it; it asserts no timing).

mod floor;
mod kv;
mod procs;
mod startup;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use spark_client::spark_proto::control::Ping;
use spark_client::spark_proto::{Message, service};

use kv::{Op, Shape};
use procs::{Redis, Sparkd, SparkdSpec, status_kib};
use stats::{CaseResult, Rep, Summary};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Benchmarks sparkd against the AF_UNIX floor and Redis; prints a table and writes JSON.
#[derive(Debug, Parser)]
#[command(name = "spark-bench", version, about)]
struct Args {
    /// Tiny counts and one repetition: proves every case still runs, in seconds. Numbers are meaningless.
    #[arg(long)]
    smoke: bool,
    /// Repetitions of each case [default: 5, 1 with --smoke]
    #[arg(long)]
    reps: Option<usize>,
    /// The sparkd binary [default: `sparkd` next to this executable]
    #[arg(long, value_name = "PATH")]
    sparkd: Option<PathBuf>,
    /// The redis-server binary (Debian's package) [default: redis-server on PATH]
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    redis_server: String,
    /// Skip the Redis cases
    #[arg(long)]
    no_redis: bool,
    /// Where the start-up cache directory is kept and the JSON goes [default: TARGET_DIR/bench]
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// JSON output [default: WORK_DIR/spark-bench.json, or spark-bench-smoke.json]
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Only these groups (comma-separated): floor, ping, kv, big, fill, startup
    #[arg(long, value_delimiter = ',', value_name = "GROUPS")]
    only: Option<Vec<String>>,
    /// Only these value sizes in the kv group, in bytes (comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "BYTES")]
    sizes: Option<Vec<usize>>,
    /// Longest time one repetition of a case runs, in ms (each client also stops after its request count)
    /// [default: 1500, 300 with --smoke]
    #[arg(long, value_name = "MS")]
    time_limit_ms: Option<u64>,
    /// Only these operations in the kv and big groups (comma-separated): get, put
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    ops: Option<Vec<String>>,
    /// Memory budget given to every sparkd the bench starts, in MiB
    #[arg(long, default_value_t = 256)]
    memory_budget_mb: u64,
    /// Entries in the start-up cache [default: 100000, 2000 with --smoke]
    #[arg(long)]
    startup_entries: Option<usize>,
    /// Bytes per start-up entry [default: 11000 (1.02 GiB in all), 1000 with --smoke]
    #[arg(long)]
    startup_value_bytes: Option<usize>,
    /// Extra argument for every sparkd the bench starts (repeatable), for experiments
    #[arg(long = "sparkd-arg", value_name = "ARG", allow_hyphen_values = true)]
    sparkd_args: Vec<String>,
}

impl Args {
    fn wants(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|g| g == group))
    }

    fn ops(&self) -> Vec<Op> {
        [Op::Get, Op::Put]
            .into_iter()
            .filter(|op| {
                self.ops
                    .as_ref()
                    .is_none_or(|o| o.iter().any(|x| x.eq_ignore_ascii_case(op.name())))
            })
            .collect()
    }
}

/// Request counts per case (whole case, all clients together).
struct Counts {
    reps: usize,
    ping: usize,
    small_d1: usize,
    small_d16: usize,
    mid_d1: usize,
    mid_d16: usize,
    big: usize,
    startup_entries: usize,
    startup_value_bytes: usize,
    settle: Duration,
}

impl Counts {
    fn new(a: &Args) -> Counts {
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

    fn total(&self, size: usize, depth: usize) -> usize {
        match (size, depth) {
            (s, 1) if s <= 8 * KIB => self.small_d1,
            (s, _) if s <= 8 * KIB => self.small_d16,
            (s, 1) if s <= MIB => self.mid_d1,
            (s, _) if s <= MIB => self.mid_d16,
            _ => self.big,
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spark-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn default_sparkd() -> Result<PathBuf> {
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

fn default_work_dir() -> PathBuf {
    // <target>/<profile>/spark-bench → <target>/bench
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(|t| t.join("bench")))
        .unwrap_or_else(|| std::env::temp_dir().join("spark-bench"))
}

/// Everything measured, for the table and the JSON.
#[derive(Default)]
struct Results {
    floor_echo: Option<CaseResult>,
    floor_bulk: Vec<CaseResult>,
    ping: Option<CaseResult>,
    /// (sparkd, redis) per shape.
    kv: Vec<(CaseResult, Option<CaseResult>)>,
    big_rss: Option<RssReading>,
    fill_rss: Option<RssReading>,
    startup: Option<StartupResult>,
    redis_note: Option<String>,
    redis_version: Option<String>,
}

struct RssReading {
    peak_vmrss_kib: u64,
    vmhwm_kib: u64,
    entries: u64,
    budget_mb: u64,
    /// What the stores count in their memory tiers (fill case).
    memory_tier_bytes: u64,
}

impl RssReading {
    fn limit_kib(&self) -> u64 {
        self.budget_mb * 1024 + 64 * 1024 + (256 * self.entries).div_ceil(1024)
    }
}

struct StartupResult {
    reps: Vec<startup::StartupRep>,
    entries: usize,
    value_bytes: usize,
    budget_mb: u64,
}

fn run(a: &Args) -> Result<()> {
    let counts = Counts::new(a);
    let limit = a.time_limit_ms.unwrap_or(if a.smoke { 300 } else { 1500 });
    stats::set_time_limit(Duration::from_millis(limit));
    let sparkd_bin = match &a.sparkd {
        Some(p) => p.clone(),
        None => default_sparkd()?,
    };
    let work_dir = a.work_dir.clone().unwrap_or_else(default_work_dir);
    std::fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let json_path = a.json.clone().unwrap_or_else(|| {
        work_dir.join(if a.smoke {
            "spark-bench-smoke.json"
        } else {
            "spark-bench.json"
        })
    });
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut res = Results::default();
    let spec = SparkdSpec {
        bin: &sparkd_bin,
        cache_root: None,
        scratch: &work_dir,
        memory_budget_mb: a.memory_budget_mb,
        extra_args: &a.sparkd_args,
    };

    let redis = if a.no_redis {
        res.redis_note = Some("skipped (--no-redis)".into());
        None
    } else {
        match procs::which(&a.redis_server) {
            None => {
                let msg = format!(
                    "redis-server not found ('{}'): the Redis cases are SKIPPED. Install Debian's redis-server \
                     (scripts/bench does) to compare.",
                    a.redis_server
                );
                eprintln!(
                    "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
                );
                eprintln!("!!! spark-bench: {msg}");
                eprintln!(
                    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
                );
                res.redis_note = Some(msg);
                None
            }
            Some(bin) => {
                let r = Redis::start(&bin)?;
                res.redis_version = Some(r.version());
                Some(r)
            }
        }
    };

    // 1. The floor.
    let ping_frame_len = Ping {
        data: bytes::Bytes::from_static(b"spark"),
    }
    .to_frame(service::CONTROL)?
    .to_bytes()
    .len();
    if a.wants("floor") || a.wants("ping") {
        progress("floor: AF_UNIX echo round trip");
        res.floor_echo = Some(case(
            "floor-echo",
            "floor",
            "ECHO",
            ping_frame_len,
            1,
            1,
            counts.reps,
            || floor::echo_rtt(ping_frame_len, counts.ping),
        )?);
    }
    if a.wants("floor") || a.wants("big") {
        for clients in [1, 8] {
            progress(&format!("floor: 32 MiB socket copy, {clients} client(s)"));
            let batches = (counts.big / clients).max(1);
            res.floor_bulk.push(case(
                &format!("floor-bulk-32m-c{clients}"),
                "floor",
                "COPY",
                32 * MIB,
                clients,
                1,
                counts.reps,
                || floor::bulk(32 * MIB, clients, batches),
            )?);
        }
    }

    // 2-4. Ping, then small and medium values, on one daemon.
    if a.wants("ping") || a.wants("kv") {
        let d = Sparkd::start(&spec)?;
        if a.wants("ping") {
            progress("sparkd: ping");
            res.ping = Some(case(
                "sparkd-ping",
                "sparkd",
                "PING",
                ping_frame_len,
                1,
                1,
                counts.reps,
                || {
                    let n = counts.ping;
                    stats::run_clients(
                        1,
                        n,
                        |_| d.client(),
                        |c, _, _| {
                            c.ping()?;
                            Ok((1, 0))
                        },
                    )
                },
            )?);
        }
        if a.wants("kv") {
            let sizes: Vec<usize> = a.sizes.clone().unwrap_or(vec![4 * KIB, 256 * KIB]);
            for &size in sizes.iter().filter(|&&s| s < 16 * MIB) {
                kv::sparkd_populate(&d, size)?;
                if let Some(r) = &redis {
                    kv::redis_populate(r, size)?;
                }
                for op in a.ops() {
                    for clients in [1, 8] {
                        for depth in [1, 16] {
                            let total = counts.total(size, depth);
                            let shape = Shape {
                                op,
                                size,
                                clients,
                                depth,
                                batches: (total / depth / clients).max(1),
                            };
                            res.kv
                                .push(side_by_side(&d, redis.as_ref(), shape, counts.reps)?);
                        }
                    }
                }
            }
        }
    }

    // 3, 4 and 6. 32 MiB values on a fresh daemon, so its peak RSS belongs to these cases alone.
    if a.wants("big") {
        let d = Sparkd::start(&spec)?;
        kv::sparkd_populate(&d, 32 * MIB)?;
        if let Some(r) = &redis {
            kv::redis_populate(r, 32 * MIB)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let monitor = {
            let (stop, peak, pid) = (stop.clone(), peak.clone(), d.proc.pid());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(status_kib(pid, "VmRSS"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let mut run = || -> Result<()> {
            if a.ops().contains(&Op::Get) {
                for clients in [1, 8] {
                    let batches = (counts.big / clients).max(1);
                    progress(&format!(
                        "get-into-32MiB-c{clients}-d1: sparkd, reused buffer"
                    ));
                    let c = case(
                        &format!("sparkd-get-into-32MiB-c{clients}-d1"),
                        "sparkd",
                        "GET-INTO",
                        32 * MIB,
                        clients,
                        1,
                        counts.reps,
                        || kv::sparkd_get_into(&d, 32 * MIB, clients, batches),
                    )?;
                    res.kv.push((c, None));
                }
            }
            for op in a.ops() {
                for clients in [1, 8] {
                    let shape = Shape {
                        op,
                        size: 32 * MIB,
                        clients,
                        depth: 1,
                        batches: (counts.big / clients).max(1),
                    };
                    res.kv
                        .push(side_by_side(&d, redis.as_ref(), shape, counts.reps)?);
                }
            }
            Ok(())
        };
        let r = run();
        stop.store(true, Ordering::Relaxed);
        let _ = monitor.join();
        r?;
        let st = d.client()?;
        let entries = st.shader().stats()?.entries + st.asset().stats()?.entries;
        res.big_rss = Some(RssReading {
            peak_vmrss_kib: peak.load(Ordering::Relaxed),
            vmhwm_kib: status_kib(d.proc.pid(), "VmHWM"),
            entries,
            budget_mb: a.memory_budget_mb,
            memory_tier_bytes: 0,
        });
    }
    drop(redis);

    // 6, for small blobs: RSS with both memory tiers filled past their budgets with 4 KiB blobs. (A budget
    // is only a promise about RSS if the bytes it counts are the bytes the process holds.)
    if a.wants("fill") {
        let budget_mb = if a.smoke { 16 } else { a.memory_budget_mb };
        let d = Sparkd::start(&SparkdSpec {
            memory_budget_mb: budget_mb,
            ..spec
        })?;
        let per_cache = (budget_mb as usize * MIB / 2 / (4 * KIB)) * 5 / 4;
        progress(&format!(
            "fill: {per_cache} x 4 KiB into each cache, budget {budget_mb} MiB"
        ));
        kv::sparkd_fill(&d, 4 * KIB, per_cache, 32)?;
        let c = d.client()?;
        let (sh, asset) = (c.shader().stats()?, c.asset().stats()?);
        res.fill_rss = Some(RssReading {
            peak_vmrss_kib: status_kib(d.proc.pid(), "VmRSS"),
            vmhwm_kib: status_kib(d.proc.pid(), "VmHWM"),
            entries: sh.entries + asset.entries,
            budget_mb,
            memory_tier_bytes: sh.bytes_in_memory + asset.bytes_in_memory,
        });
    }

    // 5. Start-up with a large persisted cache.
    if a.wants("startup") {
        let (n, vb) = (counts.startup_entries, counts.startup_value_bytes);
        let root = startup::prepare(&work_dir, &sparkd_bin, n, vb, a.memory_budget_mb)?;
        let mut reps = Vec::new();
        for i in 0..counts.reps {
            progress(&format!(
                "start-up: {n} entries, run {}/{}",
                i + 1,
                counts.reps
            ));
            reps.push(startup::run_once(
                &sparkd_bin,
                &root,
                n,
                vb,
                a.memory_budget_mb,
                counts.settle,
            )?);
        }
        res.startup = Some(StartupResult {
            reps,
            entries: n,
            value_bytes: vb,
            budget_mb: a.memory_budget_mb,
        });
    }

    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let targets = targets(&res);
    print_report(a, &counts, &res, &targets, &load_before, &load_after);
    let doc = json_report(
        a,
        &counts,
        &res,
        &targets,
        &sparkd_bin,
        &load_before,
        &load_after,
    );
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("\nJSON: {}", json_path.display());
    Ok(())
}

fn progress(what: &str) {
    eprintln!("spark-bench: {what}");
}

#[allow(clippy::too_many_arguments)]
fn case(
    id: &str,
    system: &'static str,
    op: &'static str,
    size: usize,
    clients: usize,
    depth: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<Rep>,
) -> Result<CaseResult> {
    let reps = (0..reps)
        .map(|_| f())
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("case {id}"))?;
    Ok(CaseResult {
        id: id.into(),
        system,
        op,
        size,
        clients,
        depth,
        reps,
    })
}

/// Runs one shape on both systems, alternating repetitions so that noise from the shared machine falls on
/// both alike.
fn side_by_side(
    d: &Sparkd,
    r: Option<&Redis>,
    s: Shape,
    reps: usize,
) -> Result<(CaseResult, Option<CaseResult>)> {
    let id = format!(
        "{}-{}-c{}-d{}",
        s.op.name().to_lowercase(),
        size_name(s.size),
        s.clients,
        s.depth
    );
    progress(&format!(
        "{id}: sparkd{}",
        if r.is_some() { " vs redis" } else { "" }
    ));
    let mut sp = Vec::new();
    let mut rd = Vec::new();
    for _ in 0..reps {
        sp.push(kv::sparkd_run(d, s).with_context(|| format!("sparkd {id}"))?);
        if let Some(r) = r {
            rd.push(kv::redis_run(r, s).with_context(|| format!("redis {id}"))?);
        }
    }
    let mk = |system: &'static str, reps: Vec<Rep>, op: &'static str| CaseResult {
        id: format!("{system}-{id}"),
        system,
        op,
        size: s.size,
        clients: s.clients,
        depth: s.depth,
        reps,
    };
    let redis_op = match s.op {
        Op::Get => "GET",
        Op::Put => "SET",
    };
    Ok((
        mk("sparkd", sp, s.op.name()),
        r.map(|_| mk("redis", rd, redis_op)),
    ))
}

fn size_name(size: usize) -> String {
    if size >= MIB && size % MIB == 0 {
        format!("{}MiB", size / MIB)
    } else if size >= KIB && size % KIB == 0 {
        format!("{}KiB", size / KIB)
    } else {
        format!("{size}B")
    }
}

/// One target: a measured value against a goal.
struct Target {
    name: String,
    measured: Option<f64>,
    goal: f64,
    /// True: measured must be at least goal; false: at most.
    at_least: bool,
    unit: &'static str,
    note: String,
}

impl Target {
    fn verdict(&self) -> &'static str {
        match self.measured {
            None => "SKIP",
            Some(m) if m.is_nan() => "SKIP",
            Some(m) if (self.at_least && m >= self.goal) || (!self.at_least && m <= self.goal) => {
                "PASS"
            }
            Some(_) => "MISS",
        }
    }
}

fn find(
    res: &Results,
    op: Op,
    size: usize,
    clients: usize,
    depth: usize,
) -> Option<&(CaseResult, Option<CaseResult>)> {
    res.kv.iter().find(|(s, _)| {
        s.op == op.name() && s.size == size && s.clients == clients && s.depth == depth
    })
}

fn kv_ratio(res: &Results, op: Op, size: usize, clients: usize, depth: usize) -> Option<f64> {
    let (s, r) = find(res, op, size, clients, depth)?;
    Some(s.ops().median / r.as_ref()?.ops().median)
}

fn targets(res: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    if let (Some(p), Some(e)) = (&res.ping, &res.floor_echo) {
        t.push(Target {
            name: "Ping round trip / raw echo round trip (p50)".into(),
            measured: Some(p.p50().median / e.p50().median),
            goal: 1.5,
            at_least: false,
            unit: "x",
            note: format!("{:.1} us vs {:.1} us", p.p50().median, e.p50().median),
        });
    }
    for depth in [1, 16] {
        if find(res, Op::Get, 4 * KIB, 8, depth).is_some() {
            t.push(Target {
                name: format!("4 KiB GET ops/s, 8 clients, depth {depth}: sparkd / Redis"),
                measured: kv_ratio(res, Op::Get, 4 * KIB, 8, depth),
                goal: 1.2,
                at_least: true,
                unit: "x",
                note: String::new(),
            });
        }
    }
    for depth in [1, 16] {
        if find(res, Op::Put, 4 * KIB, 8, depth).is_some() {
            t.push(Target {
                name: format!(
                    "4 KiB PUT (persisted, fast) / Redis SET ops/s, 8 clients, depth {depth}"
                ),
                measured: kv_ratio(res, Op::Put, 4 * KIB, 8, depth),
                goal: 1.0,
                at_least: true,
                unit: "x",
                note: String::new(),
            });
        }
    }
    if let Some(f) = res.floor_bulk.iter().find(|c| c.clients == 1) {
        let into = res
            .kv
            .iter()
            .find(|(s, _)| s.op == "GET-INTO" && s.clients == 1)
            .map(|(s, _)| s);
        let plain = find(res, Op::Get, 32 * MIB, 1, 1).map(|(s, _)| s);
        for (g, what) in [
            (into, "get_into, reused buffer"),
            (plain, "get, fresh buffer per blob"),
        ] {
            let Some(g) = g else { continue };
            t.push(Target {
                name: format!("32 MiB GET MB/s / raw socket copy MB/s (1 client, {what})"),
                measured: Some(g.mbs().median / f.mbs().median),
                goal: 0.6,
                at_least: true,
                unit: "x",
                note: format!("{:.0} vs {:.0} MB/s", g.mbs().median, f.mbs().median),
            });
        }
    }
    if let Some(s) = &res.startup {
        let v: Vec<f64> = s.reps.iter().map(|r| r.first_hit_s).collect();
        t.push(Target {
            name: format!("start -> first hit, {} entries", s.entries),
            measured: Some(Summary::of(&v).median),
            goal: 0.5,
            at_least: false,
            unit: "s",
            note: String::new(),
        });
        let peak = s
            .reps
            .iter()
            .map(|r| r.hwm_after_settle_kib)
            .max()
            .unwrap_or(0);
        let entries = s.reps.iter().map(|r| r.entries).max().unwrap_or(0);
        let rd = RssReading {
            peak_vmrss_kib: peak,
            vmhwm_kib: peak,
            entries,
            budget_mb: s.budget_mb,
            memory_tier_bytes: 0,
        };
        t.push(rss_target(
            &format!("RSS after loading {} entries (VmHWM)", s.entries),
            &rd,
        ));
    }
    if let Some(r) = &res.big_rss {
        t.push(rss_target("RSS during the 32 MiB cases (VmHWM)", r));
    }
    if let Some(r) = &res.fill_rss {
        t.push(rss_target(
            "RSS, memory tiers full of 4 KiB blobs (VmHWM)",
            r,
        ));
    }
    t
}

fn rss_target(name: &str, r: &RssReading) -> Target {
    Target {
        name: name.into(),
        measured: Some(r.vmhwm_kib.max(r.peak_vmrss_kib) as f64 / 1024.0),
        goal: r.limit_kib() as f64 / 1024.0,
        at_least: false,
        unit: " MiB",
        note: format!(
            "budget {} MiB + 64 MiB + 256 B x {} entries",
            r.budget_mb, r.entries
        ),
    }
}

fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        return "-".into();
    }
    if x >= 100.0 {
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_range(s: Summary) -> String {
    format!(
        "{} [{}..{}]",
        fmt_num(s.median),
        fmt_num(s.min),
        fmt_num(s.max)
    )
}

fn row(label: &str, c: &CaseResult, ratio: &str) {
    println!(
        "{:<26} {:<7} {:>32} {:>9} {:>9} {:>9}  {}",
        label,
        c.system,
        fmt_range(c.ops()),
        fmt_num(c.mbs().median),
        fmt_num(c.p50().median),
        fmt_num(c.p99().median),
        ratio
    );
}

fn print_report(
    a: &Args,
    counts: &Counts,
    res: &Results,
    targets: &[Target],
    load_before: &str,
    load_after: &str,
) {
    println!();
    println!(
        "spark-bench{}: {} repetition(s) per case, medians with [min..max]; {} cores; load average before {} after {}",
        if a.smoke {
            " --smoke (tiny counts: numbers mean nothing)"
        } else {
            ""
        },
        counts.reps,
        cores(),
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    if let Some(n) = &res.redis_note {
        println!("!!! Redis: {n}");
    }
    println!(
        "{:<26} {:<7} {:>32} {:>9} {:>9} {:>9}  ratio",
        "case", "system", "ops/s median [min..max]", "MB/s", "p50 us", "p99 us"
    );
    if let Some(e) = &res.floor_echo {
        row(&format!("echo {} B c1 d1", e.size), e, "");
    }
    if let Some(p) = &res.ping {
        let ratio = res
            .floor_echo
            .as_ref()
            .map(|e| format!("{:.2}x echo p50", p.p50().median / e.p50().median))
            .unwrap_or_default();
        row("ping c1 d1", p, &ratio);
    }
    for f in &res.floor_bulk {
        row(&format!("copy 32MiB c{} d1", f.clients), f, "");
    }
    for (s, r) in &res.kv {
        let label = format!("{} {} c{} d{}", s.op, size_name(s.size), s.clients, s.depth);
        let mut ratio = match r {
            Some(r) => format!("{:.2}x redis", s.ops().median / r.ops().median),
            None if s.op == "GET-INTO" => "(no Redis equivalent)".into(),
            None => "redis skipped".into(),
        };
        if s.size >= 16 * MIB
            && s.op.starts_with("GET")
            && let Some(f) = res.floor_bulk.iter().find(|f| f.clients == s.clients)
        {
            ratio += &format!(", {:.2}x floor", s.mbs().median / f.mbs().median);
        }
        row(&label, s, &ratio);
        if let Some(r) = r {
            row("", r, "");
        }
    }
    if let Some(s) = &res.startup {
        let v: Vec<f64> = s.reps.iter().map(|r| r.first_hit_s * 1000.0).collect();
        let hwm: Vec<f64> = s
            .reps
            .iter()
            .map(|r| r.hwm_after_settle_kib as f64 / 1024.0)
            .collect();
        let rss: Vec<f64> = s
            .reps
            .iter()
            .map(|r| r.rss_at_first_hit_kib as f64 / 1024.0)
            .collect();
        println!(
            "start-up, {} entries x {} B: first hit {} ms; RSS at first hit {} MiB; VmHWM after settling {} MiB",
            s.entries,
            s.value_bytes,
            fmt_range(Summary::of(&v)),
            fmt_range(Summary::of(&rss)),
            fmt_range(Summary::of(&hwm)),
        );
    }
    if let Some(r) = &res.big_rss {
        println!(
            "32 MiB cases: sparkd peak VmRSS {:.0} MiB (polled), VmHWM {:.0} MiB, {} entries",
            r.peak_vmrss_kib as f64 / 1024.0,
            r.vmhwm_kib as f64 / 1024.0,
            r.entries
        );
    }
    if let Some(r) = &res.fill_rss {
        println!(
            "memory tiers full of 4 KiB blobs: {:.0} MiB counted against a {} MiB budget; VmRSS {:.0} MiB, VmHWM {:.0} MiB, {} entries",
            r.memory_tier_bytes as f64 / MIB as f64,
            r.budget_mb,
            r.peak_vmrss_kib as f64 / 1024.0,
            r.vmhwm_kib as f64 / 1024.0,
            r.entries
        );
    }
    println!();
    println!("{:<66} {:>12} {:>12}  result", "target", "measured", "goal");
    for t in targets {
        let m = t
            .measured
            .map(|m| format!("{m:.3}{}", t.unit))
            .unwrap_or_else(|| "-".into());
        let g = format!(
            "{}{:.2}{}",
            if t.at_least { ">= " } else { "<= " },
            t.goal,
            t.unit
        );
        println!(
            "{:<66} {:>12} {:>12}  {}  {}",
            t.name,
            m,
            g,
            t.verdict(),
            t.note
        );
    }
    println!("(a MISS is information, not a failure)");
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn git_rev(dir: &Path) -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn json_report(
    a: &Args,
    counts: &Counts,
    res: &Results,
    targets: &[Target],
    sparkd_bin: &Path,
    load_before: &str,
    load_after: &str,
) -> Value {
    let mut cases: Vec<Value> = Vec::new();
    cases.extend(res.floor_echo.iter().map(CaseResult::json));
    cases.extend(res.ping.iter().map(CaseResult::json));
    cases.extend(res.floor_bulk.iter().map(CaseResult::json));
    for (s, r) in &res.kv {
        let mut v = s.json();
        if let Some(r) = r {
            v["ratio_vs_redis_ops"] = json!(s.ops().median / r.ops().median);
        }
        cases.push(v);
        cases.extend(r.iter().map(CaseResult::json));
    }
    json!({
        "tool": "spark-bench",
        "smoke": a.smoke,
        "reps": counts.reps,
        "time_limit_ms": a.time_limit_ms.unwrap_or(if a.smoke { 300 } else { 1500 }),
        "machine": {
            "cores": cores(),
            "cpu": cpu_model(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "loadavg_before": load_before.trim(),
            "loadavg_after": load_after.trim(),
        },
        "sparkd": {
            "bin": sparkd_bin.display().to_string(),
            "git": sparkd_bin.parent().map(git_rev).unwrap_or_default(),
            "memory_budget_mb": a.memory_budget_mb,
            "extra_args": a.sparkd_args,
        },
        "redis": { "version": res.redis_version, "note": res.redis_note },
        "cases": cases,
        "startup": res.startup.as_ref().map(|s| json!({
            "entries": s.entries,
            "value_bytes": s.value_bytes,
            "first_hit_s": Summary::of(&s.reps.iter().map(|r| r.first_hit_s).collect::<Vec<_>>()).json(),
            "rss_at_first_hit_kib": s.reps.iter().map(|r| r.rss_at_first_hit_kib).collect::<Vec<_>>(),
            "vmhwm_after_settle_kib": s.reps.iter().map(|r| r.hwm_after_settle_kib).collect::<Vec<_>>(),
        })),
        "big_rss": res.big_rss.as_ref().map(|r| json!({
            "peak_vmrss_kib": r.peak_vmrss_kib, "vmhwm_kib": r.vmhwm_kib, "entries": r.entries,
            "limit_kib": r.limit_kib(),
        })),
        "fill_rss": res.fill_rss.as_ref().map(|r| json!({
            "vmrss_kib": r.peak_vmrss_kib, "vmhwm_kib": r.vmhwm_kib, "entries": r.entries,
            "budget_mb": r.budget_mb, "memory_tier_bytes": r.memory_tier_bytes, "limit_kib": r.limit_kib(),
        })),
        "targets": targets.iter().map(|t| json!({
            "name": t.name, "measured": t.measured, "goal": t.goal,
            "at_least": t.at_least, "unit": t.unit.trim(), "result": t.verdict(), "note": t.note,
        })).collect::<Vec<_>>(),
    })
}
