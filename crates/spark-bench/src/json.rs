//! The JSON file: every repetition, not only the medians, so a run can be re-read without re-running it.

use std::path::Path;

use serde_json::{Value, json};

use crate::args::{Args, Counts};
use crate::cases::Results;
use crate::report::{Load, cores};
use crate::stats::{CaseResult, Summary};
use crate::targets::Target;

pub fn json_report(
    a: &Args,
    counts: &Counts,
    res: &Results,
    targets: &[Target],
    sparkd_bin: &Path,
    load: &Load,
) -> Value {
    json!({
        "tool": "spark-bench",
        "smoke": a.smoke,
        "reps": counts.reps,
        "time_limit_ms": a.rep_time_limit_ms(),
        "machine": {
            "cores": cores(),
            "cpu": cpu_model(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "loadavg_before": load.before.trim(),
            "loadavg_after": load.after.trim(),
        },
        "sparkd": {
            "bin": sparkd_bin.display().to_string(),
            "git": sparkd_bin.parent().map(git_rev).unwrap_or_default(),
            "memory_budget_mb": a.memory_budget_mb,
            "extra_args": a.sparkd_args,
        },
        "redis": { "version": res.redis_version, "note": res.redis_note },
        "cases": cases(res),
        "startup": res.startup.as_ref().map(|s| json!({
            "entries": s.entries,
            "value_bytes": s.value_bytes,
            "first_hit_s": Summary::of(&s.reps.iter().map(|r| r.first_hit_s).collect::<Vec<_>>()).json(),
            "rss_at_first_hit_kib": s.reps.iter().map(|r| r.rss_at_first_hit_kib).collect::<Vec<_>>(),
            "cpu_at_first_hit_ms": s.reps.iter().map(|r| r.cpu_at_first_hit_ms).collect::<Vec<_>>(),
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
        "watch": res.watch.as_ref().map(|w| json!({
            "files": w.files, "watchman_version": w.watchman_version,
            "sparkd_latency_us": Summary::of(&w.sparkd_lat_us).json(),
            "sparkd_latency_p50_us": crate::stats::percentile(&w.sparkd_lat_us, 0.5),
            "sparkd_latency_p99_us": crate::stats::percentile(&w.sparkd_lat_us, 0.99),
            "watchman_latency_p50_us": crate::stats::percentile(&w.watchman_lat_us, 0.5),
            "watchman_latency_p99_us": crate::stats::percentile(&w.watchman_lat_us, 0.99),
            "sparkd_bytes_per_file": w.sparkd_bytes_per_file,
            "watchman_bytes_per_file": w.watchman_bytes_per_file,
            "sparkd_setup_s": w.sparkd_setup_s, "watchman_setup_s": w.watchman_setup_s,
        })),
        "watch_note": res.watch_note,
        "compile": res.compile.as_ref().map(crate::compile::json),
        "collab": res.collab.as_ref().map(crate::collab::json),
        "team": res.team.as_ref().map(crate::team::json),
        "targets": targets.iter().map(|t| json!({
            "name": t.name, "measured": t.measured, "goal": t.goal,
            "at_least": t.at_least, "unit": t.unit.trim(), "result": t.verdict(), "note": t.note,
        })).collect::<Vec<_>>(),
    })
}

/// Each sparkd case is followed by its Redis twin, the sparkd one carrying the ratio.
fn cases(res: &Results) -> Vec<Value> {
    let mut cases: Vec<Value> = Vec::new();
    cases.extend(res.floor_echo.iter().map(CaseResult::json));
    cases.extend(res.ping.iter().map(CaseResult::json));
    cases.extend(res.ping_baseline.iter().map(CaseResult::json));
    cases.extend(res.floor_bulk.iter().map(CaseResult::json));
    for (s, r) in &res.kv {
        let mut v = s.json();
        if let Some(r) = r {
            v["ratio_vs_redis_ops"] = json!(s.ops().median / r.ops().median);
        }
        cases.push(v);
        cases.extend(r.iter().map(CaseResult::json));
    }
    cases
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
