//! The targets sparkd is held to, each a ratio or a limit computed from this run's numbers alone: on a
//! shared machine, a number from another run says more about the neighbours than about sparkd.

use crate::cases::{Results, RssReading};
use crate::kv::Op;
use crate::stats::{CaseResult, Summary};
use crate::{KIB, MIB};

/// One target: a measured value against a goal.
pub struct Target {
    pub name: String,
    pub measured: Option<f64>,
    pub goal: f64,
    /// True: measured must be at least goal; false: at most.
    pub at_least: bool,
    pub unit: &'static str,
    pub note: String,
}

impl Target {
    pub fn verdict(&self) -> &'static str {
        match self.measured {
            None => "SKIP",
            Some(m) if m.is_nan() => "SKIP",
            Some(m) if (self.at_least && m >= self.goal) || (!self.at_least && m <= self.goal) => {
                "PASS"
            }
            Some(_) => "MISS",
        }
    }

    fn ratio(
        name: String,
        measured: Option<f64>,
        goal: f64,
        at_least: bool,
        note: String,
    ) -> Target {
        Target {
            name,
            measured,
            goal,
            at_least,
            unit: "x",
            note,
        }
    }
}

/// Every target whose cases ran, in the order the report prints them.
pub fn targets(res: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    ping(res, &mut t);
    small_kv(res, &mut t);
    big_get(res, &mut t);
    startup(res, &mut t);
    if let Some(w) = &res.watch {
        let p50 = |v: &[f64]| crate::stats::percentile(v, 0.5);
        t.push(Target::ratio(
            "watch write->event p50 vs watchman".into(),
            Some(p50(&w.sparkd_lat_us) / p50(&w.watchman_lat_us)),
            1.0,
            false,
            format!(
                "{} samples each, same writes, same 20 ms settle",
                w.sparkd_lat_us.len()
            ),
        ));
        t.push(Target::ratio(
            format!("memory per watched file vs watchman ({} files)", w.files),
            Some(w.sparkd_bytes_per_file / w.watchman_bytes_per_file.max(1.0)),
            1.0,
            false,
            format!(
                "{:.0} B vs {:.0} B (RSS growth / files)",
                w.sparkd_bytes_per_file, w.watchman_bytes_per_file
            ),
        ));
    }
    compile(res, &mut t);
    if let Some(c) = &res.collab {
        t.extend(crate::collab::targets(c));
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

/// The Compile service, per bench shader: a warm hit from another process against compiling it here with naga
/// (>= 5x) and against running glslangValidator (>= 50x); the cold path through sparkd against naga direct
/// (<= 1.2x).
fn compile(res: &Results, t: &mut Vec<Target>) {
    let Some(c) = &res.compile else { return };
    for s in &c.shaders {
        t.push(Target::ratio(
            format!("compile {}: warm hit (other process) vs naga", s.name),
            Some(s.naga_us / s.warm_hit_us),
            5.0,
            true,
            format!(
                "{:.0} us vs {:.0} us (ping {:.0} us)",
                s.warm_hit_us, s.naga_us, c.ping_us
            ),
        ));
        t.push(Target::ratio(
            format!("compile {}: warm hit vs glslangValidator", s.name),
            s.glslang_us.map(|g| g / s.warm_hit_us),
            50.0,
            true,
            s.glslang_us
                .map_or("glslangValidator not installed".into(), |g| {
                    format!("{:.0} us vs {g:.0} us", s.warm_hit_us)
                }),
        ));
        t.push(Target::ratio(
            format!("compile {}: cold path via sparkd vs naga direct", s.name),
            Some(s.cold_daemon_us / s.cold_naga_us),
            1.2,
            false,
            format!("{:.0} us vs {:.0} us", s.cold_daemon_us, s.cold_naga_us),
        ));
    }
}

pub fn find(
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
    if res.kv_other != "redis" {
        // Compared with another sparkd build (--baseline): the Redis targets do not apply.
        return None;
    }
    let (s, r) = find(res, op, size, clients, depth)?;
    Some(s.ops().median / r.as_ref()?.ops().median)
}

fn ping(res: &Results, t: &mut Vec<Target>) {
    let (Some(p), Some(e)) = (&res.ping, &res.floor_echo) else {
        return;
    };
    t.push(Target::ratio(
        "Ping round trip p50 / raw echo round trip p50".into(),
        Some(p.p50().median / e.p50().median),
        1.2,
        false,
        format!("{:.1} us vs {:.1} us", p.p50().median, e.p50().median),
    ));
}

fn small_kv(res: &Results, t: &mut Vec<Target>) {
    for (depth, goal) in [(1, 1.2), (16, 1.5)] {
        if find(res, Op::Get, 4 * KIB, 8, depth).is_some() {
            t.push(Target::ratio(
                format!("4 KiB GET ops/s, 8 clients, depth {depth}: sparkd / Redis"),
                kv_ratio(res, Op::Get, 4 * KIB, 8, depth),
                goal,
                true,
                String::new(),
            ));
        }
    }
    // Storage v2 (issue 10): small blobs in packs, written by group commit. The durability is whatever the
    // daemon was started with (`--sparkd-arg=--durability --sparkd-arg=fsync` for the fsync case).
    for (size, name) in [(4 * KIB, "4 KiB"), (256 * KIB, "256 KiB")] {
        for depth in [1, 16] {
            if find(res, Op::Put, size, 8, depth).is_some() {
                t.push(Target::ratio(
                    format!("{name} PUT (persisted) / Redis SET ops/s, 8 clients, depth {depth}"),
                    kv_ratio(res, Op::Put, size, 8, depth),
                    1.0,
                    true,
                    String::new(),
                ));
            }
        }
    }
}

/// 32 MiB GETs against the copy floor at one client. `get_into` reads into a reused buffer as the floor's
/// reader does, so it is held closer to the floor than `get()`, whose fresh 32 MiB per blob the kernel must
/// fault in, zero and unmap (BENCHMARKS.md has the profile).
fn big_get(res: &Results, t: &mut Vec<Target>) {
    let Some(f) = res.floor_bulk.iter().find(|c| c.clients == 1) else {
        return;
    };
    let into = res
        .kv
        .iter()
        .find(|(s, _)| s.op == "GET-INTO" && s.clients == 1)
        .map(|(s, _)| s);
    let plain = find(res, Op::Get, 32 * MIB, 1, 1).map(|(s, _)| s);
    for (g, name, goal) in [
        (
            into,
            "32 MiB GET-INTO MB/s / copy floor MB/s, 1 client",
            0.8,
        ),
        (
            plain,
            "32 MiB GET (plain get()) MB/s / copy floor MB/s, 1 client",
            0.6,
        ),
    ] {
        let Some(g) = g else { continue };
        t.push(Target::ratio(
            name.into(),
            Some(g.mbs().median / f.mbs().median),
            goal,
            true,
            format!("{:.0} vs {:.0} MB/s", g.mbs().median, f.mbs().median),
        ));
    }
}

fn startup(res: &Results, t: &mut Vec<Target>) {
    let Some(s) = &res.startup else { return };
    let v: Vec<f64> = s.reps.iter().map(|r| r.first_hit_s).collect();
    t.push(Target {
        name: format!("start -> first hit, {} entries", s.entries),
        measured: Some(Summary::of(&v).median),
        goal: 0.5,
        at_least: false,
        unit: "s",
        note: String::new(),
    });
    // The worst repetition counts: a limit on RSS is a promise about every start, not the typical one.
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
