//! Group `team`: the team tier (a Redis upstream). GET at 8 clients of 4 KiB and 256 KiB values from a cold
//! local cache whose upstream holds them (every GET a read-through), against a warm local cache and against
//! Redis GET directly; and what a dead upstream (a socket that accepts and never answers, so every request
//! runs into the timeout) costs a local hit and a local miss.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use spark_client::{Client, ShaderKey};

use crate::cases::size_name;
use crate::groups::Ctx;
use crate::kv::{key, key_bytes, value};
use crate::procs::{Redis, Sparkd, SparkdSpec};
use crate::stats::{CaseResult, Rep, percentile, run_clients};
use crate::{KIB, progress};

const CLIENTS: usize = 8;
/// The upstream timeout of the dead-upstream cases (sparkd's default).
const TIMEOUT_MS: u64 = 200;

/// What the team group measured.
pub struct TeamBench {
    pub cases: Vec<CaseResult>,
    /// Local misses, one client, microseconds: no upstream; dead upstream (every one, in order).
    pub miss_no_upstream_us: Vec<f64>,
    pub miss_dead_us: Vec<f64>,
}

fn config(dir: &Path, name: &str, url: &str, queue: usize) -> Result<PathBuf> {
    let p = dir.join(format!("{name}.toml"));
    let text = format!(
        "[namespaces.shader.upstream]\nurl = \"{url}\"\ntimeout_ms = {TIMEOUT_MS}\nqueue = {queue}\n"
    );
    std::fs::write(&p, text)?;
    Ok(p)
}

fn start_with(spec: &SparkdSpec<'_>, cfg: Option<&Path>) -> Result<Sparkd> {
    let mut extra = spec.extra_args.to_vec();
    if let Some(c) = cfg {
        extra.extend(["--config".to_string(), c.display().to_string()]);
    }
    let s = SparkdSpec {
        extra_args: &extra,
        ..spec.clone()
    };
    Sparkd::start(&s)
}

fn counter(c: &Client, name: &str) -> Result<u64> {
    let spaces = c.namespaces()?;
    let ns = spaces
        .iter()
        .find(|n| n.name == "shader")
        .context("no shader namespace")?;
    ns.counters
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .with_context(|| format!("no counter {name}: is the upstream configured?"))
}

fn keys(size: usize, n: usize) -> Vec<ShaderKey> {
    let ns = (7u64 << 56) | ((size as u64) << 8);
    (0..n).map(|i| key(ns, i)).collect()
}

/// GETs of every key once, spread over the clients: each is a miss locally when the cache is cold.
fn get_each_once(d: &Sparkd, ks: &[ShaderKey], size: usize) -> Result<Rep> {
    let per = ks.len() / CLIENTS;
    run_clients(
        CLIENTS,
        per,
        |_| d.client(),
        |c: &mut Client, ci, b| match c.shader().get(&ks[ci * per + b])? {
            Some(v) if v.len() == size => Ok((1, size as u64)),
            other => bail!("expected {size} bytes, got {:?}", other.map(|v| v.len())),
        },
    )
}

fn redis_get_each(r: &Redis, ks: &[ShaderKey], size: usize) -> Result<Rep> {
    let per = ks.len() / CLIENTS;
    let raw: Vec<Vec<u8>> = ks.iter().map(key_bytes).collect();
    run_clients(
        CLIENTS,
        per,
        |_| r.connect(),
        |c: &mut redis::Connection, ci, b| {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(&raw[ci * per + b][..]).query(c)?;
            match v {
                Some(v) if v.len() == size => Ok((1, size as u64)),
                other => bail!("redis GET: got {:?}", other.map(|v| v.len())),
            }
        },
    )
}

fn mk(id: String, system: &'static str, size: usize, reps: Vec<Rep>) -> CaseResult {
    CaseResult {
        id,
        system,
        op: "GET",
        size,
        clients: CLIENTS,
        depth: 1,
        reps,
    }
}

/// Publishes every key through a read-write daemon and waits until all are uploaded.
fn publish(spec: &SparkdSpec<'_>, cfg: &Path, ks: &[ShaderKey], size: usize) -> Result<()> {
    let d = start_with(spec, Some(cfg))?;
    let c = d.client()?;
    for (i, k) in ks.iter().enumerate() {
        c.shader().put(k, &value(size, i as u64))?;
    }
    let t = Instant::now();
    while counter(&c, "uploads")? < ks.len() as u64 {
        if counter(&c, "uploads_dropped")? > 0 || t.elapsed() > Duration::from_secs(120) {
            bail!("the publishing daemon could not upload every blob");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub fn run(cx: &Ctx, redis: &Redis) -> Result<TeamBench> {
    let reps = cx.counts.reps;
    let dir = tempfile::tempdir()?;
    let url = format!("redis+unix://{}", redis.socket.display());
    let mut cases = Vec::new();
    for size in [4 * KIB, 256 * KIB] {
        let n = match (cx.a.smoke, size) {
            (true, _) => 64,
            (false, s) if s <= 4 * KIB => 4096,
            _ => 512,
        };
        let ks = keys(size, n);
        let name = size_name(size);
        progress(&format!(
            "team: GET {name} x{CLIENTS}: cold local + Redis upstream, warm local, Redis"
        ));
        publish(
            &cx.spec,
            &config(dir.path(), "publish", &url, n + 64)?,
            &ks,
            size,
        )?;
        let cold_cfg = config(dir.path(), "cold", &url, 16)?;
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        let mut direct = Vec::new();
        {
            let mut c = redis.connect()?;
            for (i, k) in ks.iter().enumerate() {
                redis::cmd("SET")
                    .arg(key_bytes(k))
                    .arg(&value(size, i as u64)[..])
                    .query::<()>(&mut c)?;
            }
        }
        for _ in 0..reps {
            // A fresh daemon each repetition: an empty local cache, every GET a read-through.
            let d = start_with(&cx.spec, Some(&cold_cfg))?;
            cold.push(get_each_once(&d, &ks, size)?);
            let hits = counter(&d.client()?, "upstream_hits")?;
            if hits != n as u64 {
                bail!("cold run: {hits} upstream hits for {n} keys");
            }
            // The same daemon, now warm: the same GETs are local hits.
            warm.push(get_each_once(&d, &ks, size)?);
            direct.push(redis_get_each(redis, &ks, size)?);
        }
        cases.push(mk(
            format!("sparkd-cold-upstream-get-{name}-c8"),
            "sparkd+redis",
            size,
            cold,
        ));
        cases.push(mk(
            format!("sparkd-warm-get-{name}-c8"),
            "sparkd",
            size,
            warm,
        ));
        cases.push(mk(format!("redis-get-{name}-c8"), "redis", size, direct));
    }
    let (dead_hits, no_up_hits, miss_no, miss_dead) = dead_upstream(cx, dir.path())?;
    cases.push(no_up_hits);
    cases.push(dead_hits);
    Ok(TeamBench {
        cases,
        miss_no_upstream_us: miss_no,
        miss_dead_us: miss_dead,
    })
}

/// A Unix socket that accepts connections (the kernel's backlog) and never answers: the worst upstream.
fn blackhole(dir: &Path) -> Result<(UnixListener, String)> {
    let p = dir.join("blackhole.sock");
    let l = UnixListener::bind(&p)?;
    Ok((l, format!("redis+unix://{}", p.display())))
}

fn misses(d: &Sparkd, n: usize) -> Result<Vec<f64>> {
    let c = d.client()?;
    let ks = keys(3, n);
    let mut out = Vec::with_capacity(n);
    for k in &ks {
        let t = Instant::now();
        if c.shader().get(k)?.is_some() {
            bail!("a miss found something");
        }
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

type DeadResult = (CaseResult, CaseResult, Vec<f64>, Vec<f64>);

fn dead_upstream(cx: &Ctx, dir: &Path) -> Result<DeadResult> {
    progress("team: a dead upstream's cost to local hits and misses");
    let (_hole, url) = blackhole(dir)?;
    let dead_cfg = config(dir, "dead", &url, 16)?;
    let size = 4 * KIB;
    let ks = keys(size + 1, if cx.a.smoke { 64 } else { 4096 });
    let n_miss = if cx.a.smoke { 20 } else { 400 };
    // Both daemons up at once, repetitions alternating, so load drift on a shared machine hits both alike.
    let none = start_with(&cx.spec, None)?;
    let dead = start_with(&cx.spec, Some(&dead_cfg))?;
    for d in [&none, &dead] {
        let c = d.client()?;
        for (i, k) in ks.iter().enumerate() {
            c.shader().put(k, &value(size, i as u64))?;
        }
    }
    let miss = (misses(&none, n_miss)?, misses(&dead, n_miss)?);
    let mut hit_reps = (Vec::new(), Vec::new());
    for _ in 0..cx.counts.reps {
        hit_reps.0.push(get_each_once(&none, &ks, size)?);
        hit_reps.1.push(get_each_once(&dead, &ks, size)?);
    }
    Ok((
        mk(
            "sparkd-dead-upstream-hit-4KiB-c8".into(),
            "sparkd+dead",
            size,
            hit_reps.1,
        ),
        mk(
            "sparkd-no-upstream-hit-4KiB-c8".into(),
            "sparkd",
            size,
            hit_reps.0,
        ),
        miss.0,
        miss.1,
    ))
}

pub fn print(t: &TeamBench) {
    println!(
        "\nteam tier (Redis upstream on a Unix socket; GET at {CLIENTS} clients, ops/s median [min-max])"
    );
    for c in &t.cases {
        let o = c.ops();
        println!(
            "  {:<40} {:>10.0} [{:.0}-{:.0}]  p50 {:>7.0} µs  p99 {:>7.0} µs",
            c.id,
            o.median,
            o.min,
            o.max,
            c.p50().median,
            c.p99().median
        );
    }
    let find = |id: &str| t.cases.iter().find(|c| c.id == id).map(|c| c.ops().median);
    for size in ["4KiB", "256KiB"] {
        if let (Some(cold), Some(warm), Some(redis)) = (
            find(&format!("sparkd-cold-upstream-get-{size}-c8")),
            find(&format!("sparkd-warm-get-{size}-c8")),
            find(&format!("redis-get-{size}-c8")),
        ) {
            println!(
                "  {size}: cold+upstream = {:.2}x warm local, {:.2}x Redis GET",
                cold / warm,
                cold / redis
            );
        }
    }
    if let (Some(dead), Some(none)) = (
        find("sparkd-dead-upstream-hit-4KiB-c8"),
        find("sparkd-no-upstream-hit-4KiB-c8"),
    ) {
        println!(
            "  local hit with a dead upstream = {:.2}x without one",
            dead / none
        );
    }
    let first3: Vec<String> = t
        .miss_dead_us
        .iter()
        .take(4)
        .map(|u| format!("{:.0}", u / 1e3))
        .collect();
    let after = &t.miss_dead_us[t.miss_dead_us.len().min(10)..];
    println!(
        "  local miss: no upstream p50 {:.0} µs; dead upstream: first misses {} ms (timeout {TIMEOUT_MS} ms, \
         breaker opens after 3), then p50 {:.0} µs p99 {:.0} µs, max overall {:.0} ms",
        percentile(&t.miss_no_upstream_us, 0.5),
        first3.join(", "),
        percentile(after, 0.5),
        percentile(after, 0.99),
        t.miss_dead_us.iter().cloned().fold(0.0, f64::max) / 1e3
    );
}

pub fn json(t: &TeamBench) -> Value {
    json!({
        "cases": t.cases.iter().map(CaseResult::json).collect::<Vec<_>>(),
        "miss_no_upstream_p50_us": percentile(&t.miss_no_upstream_us, 0.5),
        "miss_dead_upstream_us": t.miss_dead_us,
        "upstream_timeout_ms": TIMEOUT_MS,
    })
}
