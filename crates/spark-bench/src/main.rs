//! `spark-bench`: sparkd side by side with the raw socket floor and Redis, measured in one run on one
//! machine. It starts what it needs (a fresh `sparkd`, a `redis-server` without persistence, both on Unix
//! sockets in temporary directories, plus in-process floor servers), runs every case several times, stops
//! what it started by PID, prints a table with ratios and PASS/MISS per target, and writes JSON.
//!
//! A MISS is information, not a failure: the exit status is non-zero only when a case could not run.
//! `--smoke` runs every case with tiny counts (CI keeps the tool working with it; it asserts no timing).

mod args;
mod cases;
mod collab;
mod compile;
mod floor;
mod groups;
mod json;
mod kv;
mod procs;
mod report;
mod startup;
mod stats;
mod targets;
mod team;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use args::{Args, Counts};
use cases::Results;
use groups::Ctx;
use procs::SparkdSpec;
use report::{Load, loadavg};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

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

fn run(a: &Args) -> Result<()> {
    let counts = Counts::new(a);
    stats::set_time_limit(Duration::from_millis(a.rep_time_limit_ms()));
    let sparkd_bin = match &a.sparkd {
        Some(p) => p.clone(),
        None => args::default_sparkd()?,
    };
    let work_dir = a.work_dir.clone().unwrap_or_else(args::default_work_dir);
    std::fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let load_before = loadavg();
    let mut res = Results {
        kv_other: "redis",
        ..Results::default()
    };
    let cx = Ctx {
        a,
        counts: &counts,
        spec: SparkdSpec {
            bin: &sparkd_bin,
            cache_root: None,
            scratch: &work_dir,
            memory_budget_mb: a.memory_budget_mb,
            extra_args: &a.sparkd_args,
        },
    };

    let redis = groups::start_redis(a, &mut res)?;
    groups::floor(&cx, &mut res)?;
    groups::ping_and_kv(&cx, redis.as_ref(), &mut res)?;
    groups::big(&cx, redis.as_ref(), &mut res)?;
    res.collab = collab::run(&cx, redis.as_ref())?;
    if a.wants("team") {
        match redis.as_ref() {
            Some(r) => res.team = Some(team::run(&cx, r)?),
            None => eprintln!("!!! spark-bench: the team group is SKIPPED: it needs redis-server"),
        }
    }
    // Redis has nothing left to do; it should not hold memory or CPU while the fill and start-up cases run.
    drop(redis);
    groups::fill(&cx, &mut res)?;
    groups::startup(&cx, &mut res)?;
    if a.wants("watch") {
        progress("watch: sparkd vs watchman");
        match watch::run(&cx.spec, &work_dir, a.smoke)? {
            Ok(w) => res.watch = Some(w),
            Err(why) => {
                eprintln!("!!! spark-bench: the watch group is SKIPPED: {why}");
                res.watch_note = Some(why);
            }
        }
    }
    res.compile = compile::run(&cx)?;

    let load = Load {
        before: load_before,
        after: loadavg(),
    };
    let targets = targets::targets(&res);
    report::print_report(a, &counts, &res, &targets, &load);
    let doc = json::json_report(a, &counts, &res, &targets, &sparkd_bin, &load);
    write_json(&json_path(a, &work_dir), &doc)
}

fn json_path(a: &Args, work_dir: &std::path::Path) -> PathBuf {
    a.json.clone().unwrap_or_else(|| {
        // A smoke run must not overwrite the numbers of the last real one.
        work_dir.join(if a.smoke {
            "spark-bench-smoke.json"
        } else {
            "spark-bench.json"
        })
    })
}

fn write_json(path: &std::path::Path, doc: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(doc)? + "\n")?;
    println!("\nJSON: {}", path.display());
    Ok(())
}

fn progress(what: &str) {
    eprintln!("spark-bench: {what}");
}
