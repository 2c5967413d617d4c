//! The table on stdout: every case with its median and range, the ratios beside it, then the targets.

use crate::MIB;
use crate::args::{Args, Counts};
use crate::cases::{Results, size_name};
use crate::stats::{CaseResult, Summary};
use crate::targets::Target;

/// `/proc/loadavg` before and after the cases: how busy the shared machine was says how far to trust a run.
pub struct Load {
    pub before: String,
    pub after: String,
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
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

pub fn print_report(a: &Args, counts: &Counts, res: &Results, targets: &[Target], load: &Load) {
    header(a, counts, res, load);
    case_rows(res);
    memory_lines(res);
    watch_lines(res);
    if let Some(c) = &res.compile {
        crate::compile::print(c);
    }
    if let Some(c) = &res.collab {
        crate::collab::print(c);
    }
    if let Some(t) = &res.team {
        crate::team::print(t);
    }
    target_table(targets);
}

fn header(a: &Args, counts: &Counts, res: &Results, load: &Load) {
    let first3 = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
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
        first3(&load.before),
        first3(&load.after),
    );
    if let Some(n) = &res.redis_note {
        println!("!!! Redis: {n}");
    }
    println!(
        "{:<26} {:<7} {:>32} {:>9} {:>9} {:>9}  ratio",
        "case", "system", "ops/s median [min..max]", "MB/s", "p50 us", "p99 us"
    );
}

fn case_rows(res: &Results) {
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
        if let Some(b) = &res.ping_baseline {
            let ratio = format!("{:.2}x baseline ops/s", p.ops().median / b.ops().median);
            row("", b, &ratio);
        }
    }
    for f in &res.floor_bulk {
        row(&format!("copy 32MiB c{} d1", f.clients), f, "");
    }
    for (s, r) in &res.kv {
        let label = format!("{} {} c{} d{}", s.op, size_name(s.size), s.clients, s.depth);
        let mut ratio = match r {
            Some(r) => format!("{:.2}x {}", s.ops().median / r.ops().median, res.kv_other),
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
}

/// Start-up time and the three RSS readings, which have no ops/s and so no row of their own.
fn memory_lines(res: &Results) {
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
        let cpu: Vec<f64> = s
            .reps
            .iter()
            .filter_map(|r| r.cpu_at_first_hit_ms)
            .collect();
        let cpu = if cpu.is_empty() {
            String::new()
        } else {
            format!("; CPU to first hit {} ms", fmt_range(Summary::of(&cpu)))
        };
        println!(
            "start-up, {} entries x {} B: first hit {} ms{cpu}; RSS at first hit {} MiB; VmHWM after settling {} MiB",
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
}

fn target_table(targets: &[Target]) {
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

fn watch_lines(res: &Results) {
    if let Some(n) = &res.watch_note {
        println!("!!! watch group SKIPPED: {n}");
    }
    let Some(w) = &res.watch else { return };
    let p = |v: &[f64], q: f64| crate::stats::percentile(v, q);
    println!(
        "watch, {} files, settle 20 ms, vs watchman {}: write->event p50 {:.0} us / p99 {:.0} us (watchman {:.0} / {:.0}); \
         memory per watched file {:.0} B (watchman {:.0} B); watch set-up {:.2} s (watchman {:.2} s)",
        w.files,
        w.watchman_version,
        p(&w.sparkd_lat_us, 0.5),
        p(&w.sparkd_lat_us, 0.99),
        p(&w.watchman_lat_us, 0.5),
        p(&w.watchman_lat_us, 0.99),
        w.sparkd_bytes_per_file,
        w.watchman_bytes_per_file,
        w.sparkd_setup_s,
        w.watchman_setup_s,
    );
}
