//! One runner per group of cases (`--only`): what each starts, in what order, and what it records.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use spark_client::spark_proto::control::Ping;
use spark_client::spark_proto::{Message, service};

use crate::args::{Args, Counts};
use crate::cases::{Other, Results, RssReading, StartupResult, case, side_by_side};
use crate::kv::{self, Op, Shape};
use crate::procs::{self, Redis, Sparkd, SparkdSpec, status_kib};
use crate::{KIB, MIB, floor, progress, startup, stats};

/// What every group needs and none changes.
pub struct Ctx<'a> {
    pub a: &'a Args,
    pub counts: &'a Counts,
    pub spec: SparkdSpec<'a>,
}

/// Starts Redis unless told not to; a missing `redis-server` is shouted about but does not stop the run,
/// so a machine without it still gets the sparkd and floor numbers.
pub fn start_redis(a: &Args, res: &mut Results) -> Result<Option<Redis>> {
    if a.no_redis {
        res.redis_note = Some("skipped (--no-redis)".into());
        return Ok(None);
    }
    let Some(bin) = procs::which(&a.redis_server) else {
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
        return Ok(None);
    };
    let r = Redis::start(&bin, &a.redis_args)?;
    res.redis_version = Some(r.version());
    Ok(Some(r))
}

/// The echo floor is sized like a Ping frame so that ping's ratio to it compares equal payloads.
fn ping_frame_len() -> Result<usize> {
    Ok(Ping {
        data: bytes::Bytes::from_static(b"spark"),
    }
    .to_frame(service::CONTROL)?
    .to_bytes()
    .len())
}

/// 1. The floor: what a bare AF_UNIX socket does on this machine, in this run.
pub fn floor(cx: &Ctx, res: &mut Results) -> Result<()> {
    let (a, counts) = (cx.a, cx.counts);
    if a.wants("floor") || a.wants("ping") {
        progress("floor: AF_UNIX echo round trip");
        let len = ping_frame_len()?;
        res.floor_echo = Some(case(
            "floor-echo",
            "floor",
            "ECHO",
            len,
            1,
            1,
            counts.reps,
            || floor::echo_rtt(len, counts.ping),
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
    Ok(())
}

/// 2-4. Ping, then small and medium values, on one daemon.
pub fn ping_and_kv(cx: &Ctx, redis: Option<&Redis>, res: &mut Results) -> Result<()> {
    let a = cx.a;
    if !(a.wants("ping") || a.wants("kv")) {
        return Ok(());
    }
    let d = Sparkd::start(&cx.spec)?;
    let baseline = match &a.baseline {
        Some(bin) => Some(Sparkd::start(&SparkdSpec {
            bin,
            ..cx.spec.clone()
        })?),
        None => None,
    };
    if a.wants("ping") {
        ping(cx, &d, baseline.as_ref(), res)?;
    }
    let other = match (&baseline, redis) {
        (Some(b), _) => Some(Other::Baseline(b)),
        (None, Some(r)) => Some(Other::Redis(r)),
        (None, None) => None,
    };
    res.kv_other = if baseline.is_some() {
        "baseline"
    } else {
        "redis"
    };
    if a.wants("kv") {
        kv_sizes(cx, &d, other, res)?;
    }
    Ok(())
}

/// Ping on one client, alternating repetitions with the baseline build when there is one.
fn ping(cx: &Ctx, d: &Sparkd, baseline: Option<&Sparkd>, res: &mut Results) -> Result<()> {
    progress("sparkd: ping");
    let len = ping_frame_len()?;
    let one = |d: &Sparkd| {
        stats::run_clients(
            1,
            cx.counts.ping,
            |_| d.client(),
            |c, _, _| {
                c.ping()?;
                Ok((1, 0))
            },
        )
    };
    let (mut new, mut old) = (Vec::new(), Vec::new());
    for _ in 0..cx.counts.reps {
        new.push(one(d)?);
        if let Some(b) = baseline {
            old.push(one(b)?);
        }
    }
    let mk = |id: &str, system: &'static str, reps| crate::stats::CaseResult {
        id: id.into(),
        system,
        op: "PING",
        size: len,
        clients: 1,
        depth: 1,
        reps,
    };
    res.ping = Some(mk("sparkd-ping", "sparkd", new));
    if baseline.is_some() {
        res.ping_baseline = Some(mk("baseline-ping", "baseline", old));
    }
    Ok(())
}

fn kv_sizes(cx: &Ctx, d: &Sparkd, other: Option<Other>, res: &mut Results) -> Result<()> {
    let (a, counts) = (cx.a, cx.counts);
    let sizes: Vec<usize> = a.sizes.clone().unwrap_or(vec![4 * KIB, 256 * KIB]);
    // Values this large belong to the big group, on a daemon of their own.
    for &size in sizes.iter().filter(|&&s| s < 16 * MIB) {
        kv::sparkd_populate(d, size)?;
        match other {
            Some(Other::Redis(r)) => kv::redis_populate(r, size)?,
            Some(Other::Baseline(b)) => kv::sparkd_populate(b, size)?,
            None => {}
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
                    res.kv.push(side_by_side(d, other, shape, counts.reps)?);
                }
            }
        }
    }
    Ok(())
}

/// 3, 4 and 6. 32 MiB values on a fresh daemon, so its peak RSS belongs to these cases alone.
pub fn big(cx: &Ctx, redis: Option<&Redis>, res: &mut Results) -> Result<()> {
    if !cx.a.wants("big") {
        return Ok(());
    }
    let d = Sparkd::start(&cx.spec)?;
    kv::sparkd_populate(&d, 32 * MIB)?;
    if let Some(r) = redis {
        kv::redis_populate(r, 32 * MIB)?;
    }
    let monitor = RssMonitor::start(d.proc.pid());
    let r = big_cases(cx, &d, redis, res);
    // Stop the poller even when a case failed: it must not outlive the daemon it reads.
    let peak_vmrss_kib = monitor.stop();
    r?;
    let st = d.client()?;
    let entries = st.shader().stats()?.entries + st.asset().stats()?.entries;
    res.big_rss = Some(RssReading {
        peak_vmrss_kib,
        vmhwm_kib: status_kib(d.proc.pid(), "VmHWM"),
        entries,
        budget_mb: cx.a.memory_budget_mb,
        memory_tier_bytes: 0,
    });
    Ok(())
}

fn big_cases(cx: &Ctx, d: &Sparkd, redis: Option<&Redis>, res: &mut Results) -> Result<()> {
    let counts = cx.counts;
    if cx.a.ops().contains(&Op::Get) {
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
                || kv::sparkd_get_into(d, 32 * MIB, clients, batches),
            )?;
            res.kv.push((c, None));
        }
    }
    for op in cx.a.ops() {
        for clients in [1, 8] {
            let shape = Shape {
                op,
                size: 32 * MIB,
                clients,
                depth: 1,
                batches: (counts.big / clients).max(1),
            };
            res.kv.push(side_by_side(
                d,
                redis.map(Other::Redis),
                shape,
                counts.reps,
            )?);
        }
    }
    Ok(())
}

/// The highest VmRSS seen while the 32 MiB cases run, polled every 2 ms: a cross-check on the kernel's
/// VmHWM, which the report prints beside it.
struct RssMonitor {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl RssMonitor {
    fn start(pid: u32) -> RssMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(status_kib(pid, "VmRSS"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        RssMonitor { stop, peak, thread }
    }

    /// The highest VmRSS seen, in KiB.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// 6, for small blobs: RSS with both memory tiers filled past their budgets with 4 KiB blobs. (A budget
/// is only a promise about RSS if the bytes it counts are the bytes the process holds.)
pub fn fill(cx: &Ctx, res: &mut Results) -> Result<()> {
    let a = cx.a;
    if !a.wants("fill") {
        return Ok(());
    }
    // Smoke only proves the case runs; a small budget fills in a fraction of the time.
    let budget_mb = if a.smoke { 16 } else { a.memory_budget_mb };
    let d = Sparkd::start(&SparkdSpec {
        memory_budget_mb: budget_mb,
        ..cx.spec
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
    Ok(())
}

/// 5. Start-up with a large persisted cache.
pub fn startup(cx: &Ctx, res: &mut Results) -> Result<()> {
    let (a, counts) = (cx.a, cx.counts);
    if !a.wants("startup") {
        return Ok(());
    }
    let (n, vb) = (counts.startup_entries, counts.startup_value_bytes);
    let root = startup::prepare(cx.spec.scratch, cx.spec.bin, n, vb, a.memory_budget_mb)?;
    let mut reps = Vec::new();
    for i in 0..counts.reps {
        progress(&format!(
            "start-up: {n} entries, run {}/{}",
            i + 1,
            counts.reps
        ));
        reps.push(startup::run_once(
            cx.spec.bin,
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
    Ok(())
}
