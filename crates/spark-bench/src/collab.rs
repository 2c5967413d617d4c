//! Collab benchmark: local pub/sub fan-out (1 publisher, 32 subscribers) against Redis pub/sub over its Unix
//! socket in the same run, and the lock acquire + release round trip, local and bridged through a
//! `nats-server` (Debian's package; started on loopback with JetStream, stopped by PID; skipped loudly when
//! missing).
//!
//! Fan-out: the publisher sends `msgs` messages of 64 bytes in pipelined batches of 64; each carries its send
//! time, so every subscriber records publish → receive latency. Throughput is messages published per second
//! until the last subscriber got the last one (deliveries are 32 times that). Each sparkd subscription's queue
//! holds the whole run, so nothing is dropped; a drop would show as a shortfall and fail the case.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use spark_client::spark_proto::Message;
use spark_client::spark_proto::collab::Publish;
use spark_client::spark_proto::service;
use spark_client::{Client, CollabEvent, JoinOptions, LockOutcome};

use crate::groups::Ctx;
use crate::procs::{Proc, Redis, Sparkd, SparkdSpec, which};
use crate::progress;
use crate::stats::{Summary, percentile};
use crate::targets::Target;

const SUBSCRIBERS: usize = 32;
const BATCH: usize = 64;
const PAYLOAD: usize = 64;

pub struct FanOut {
    pub msgs_per_s: Vec<f64>,
    pub p50_us: Vec<f64>,
    pub p99_us: Vec<f64>,
}

pub struct CollabBench {
    pub msgs: usize,
    pub sparkd: FanOut,
    /// The `--baseline` build, repetitions alternating with `sparkd` and Redis.
    pub baseline: Option<FanOut>,
    pub redis: Option<FanOut>,
    pub lock_local_us: Vec<f64>,
    /// Bridged lock round trips, or why they were skipped.
    pub lock_bridged_us: Result<Vec<f64>, String>,
}

fn payload(base: Instant) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
    p
}

fn latency_us(base: Instant, p: &[u8]) -> f64 {
    let sent = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
    (base.elapsed().as_nanos() as u64).saturating_sub(sent) as f64 / 1000.0
}

/// One fan-out repetition: (messages/s, p50 µs, p99 µs).
fn summarize(msgs: usize, start: Instant, lat: Vec<Vec<f64>>) -> Result<(f64, f64, f64)> {
    let secs = start.elapsed().as_secs_f64();
    let all: Vec<f64> = lat.into_iter().flatten().collect();
    if all.len() != msgs * SUBSCRIBERS {
        bail!("{} of {} deliveries arrived", all.len(), msgs * SUBSCRIBERS);
    }
    Ok((
        msgs as f64 / secs,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
    ))
}

fn sparkd_rep(d: &Sparkd, msgs: usize) -> Result<(f64, f64, f64)> {
    let base = Instant::now();
    let publisher = d.client()?;
    publisher.collab().join(
        "bench",
        &JoinOptions {
            client: "bench".into(),
            ..Default::default()
        },
    )?;
    let ready = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let subs: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            let c = d.client()?;
            let ready = ready.clone();
            Ok(std::thread::spawn(move || -> Result<Vec<f64>> {
                let sub = c.collab().subscribe("bench", "fan/*", 65536)?;
                ready.wait();
                let mut lat = Vec::with_capacity(msgs);
                while lat.len() < msgs {
                    match c.collab().next_event(Duration::from_secs(30))? {
                        Some(CollabEvent::Message(m)) if m.subscription == sub => {
                            lat.push(latency_us(base, &m.payload))
                        }
                        Some(CollabEvent::Lagged(l)) => {
                            bail!("subscriber lagged: {} dropped", l.dropped)
                        }
                        Some(_) => {}
                        None => bail!("no message for 30 s"),
                    }
                }
                Ok(lat)
            }))
        })
        .collect::<Result<_>>()?;
    ready.wait();
    let start = Instant::now();
    for chunk in (0..msgs).collect::<Vec<_>>().chunks(BATCH) {
        let frames: Vec<_> = chunk
            .iter()
            .map(|_| {
                Publish {
                    session: "bench".into(),
                    topic: "fan/x".into(),
                    flags: 0,
                    payload: payload(base).into(),
                }
                .to_frame(service::COLLAB)
            })
            .collect::<Result<_, _>>()?;
        for r in publisher.pipeline(&frames)? {
            r?;
        }
    }
    let lat = subs
        .into_iter()
        .map(|t| t.join().expect("subscriber thread"))
        .collect::<Result<Vec<_>>>()?;
    summarize(msgs, start, lat)
}

fn redis_rep(r: &Redis, msgs: usize) -> Result<(f64, f64, f64)> {
    let base = Instant::now();
    let mut publisher = r.connect()?;
    let ready = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let subs: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut c = r.connect()?;
            let ready = ready.clone();
            Ok(std::thread::spawn(move || -> Result<Vec<f64>> {
                let mut ps = c.as_pubsub();
                ps.subscribe("fan/x")?;
                ps.set_read_timeout(Some(Duration::from_secs(30)))?;
                ready.wait();
                let mut lat = Vec::with_capacity(msgs);
                while lat.len() < msgs {
                    let m = ps.get_message()?;
                    lat.push(latency_us(base, m.get_payload_bytes()));
                }
                Ok(lat)
            }))
        })
        .collect::<Result<_>>()?;
    ready.wait();
    let start = Instant::now();
    for chunk in (0..msgs).collect::<Vec<_>>().chunks(BATCH) {
        let mut p = redis::pipe();
        for _ in chunk {
            p.cmd("PUBLISH").arg("fan/x").arg(payload(base));
        }
        let _: Vec<i64> = p.query(&mut publisher)?;
    }
    let lat = subs
        .into_iter()
        .map(|t| t.join().expect("subscriber thread"))
        .collect::<Result<Vec<_>>>()?;
    summarize(msgs, start, lat)
}

impl FanOut {
    fn new() -> FanOut {
        FanOut {
            msgs_per_s: vec![],
            p50_us: vec![],
            p99_us: vec![],
        }
    }

    fn push(&mut self, (t, p50, p99): (f64, f64, f64)) {
        self.msgs_per_s.push(t);
        self.p50_us.push(p50);
        self.p99_us.push(p99);
    }
}

/// The fan-out repetitions, alternating between the systems so a burst of load from elsewhere on the machine
/// falls on all of them alike.
fn fan_out(
    n: usize,
    msgs: usize,
    d: &Sparkd,
    baseline: Option<&Sparkd>,
    redis: Option<&Redis>,
) -> Result<(FanOut, Option<FanOut>, Option<FanOut>)> {
    let (mut mine, mut base, mut red) = (FanOut::new(), FanOut::new(), FanOut::new());
    for _ in 0..n {
        mine.push(sparkd_rep(d, msgs)?);
        if let Some(b) = baseline {
            base.push(sparkd_rep(b, msgs).context("baseline")?);
        }
        if let Some(r) = redis {
            red.push(redis_rep(r, msgs)?);
        }
    }
    Ok((mine, baseline.map(|_| base), redis.map(|_| red)))
}

/// Acquire + release round trips of one resource (µs each).
fn lock_round_trips(c: &Client, session: &str, n: usize) -> Result<Vec<f64>> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let r = format!("assets/{}.uasset", i % 16);
        let t = Instant::now();
        if c.collab().lock(session, &[r.as_str()], "")? != LockOutcome::Acquired {
            bail!("lock of {r} contested in an empty session");
        }
        c.collab().unlock(session, &[r.as_str()])?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(v)
}

fn nats_server() -> Option<PathBuf> {
    which("nats-server").or_else(|| which("/usr/sbin/nats-server"))
}

fn bridged_locks(spec: &SparkdSpec<'_>, n: usize) -> Result<Vec<f64>, String> {
    let bin = nats_server()
        .ok_or("nats-server missing: install nats-server (apt-get install -y nats-server)")?;
    let go = || -> Result<Vec<f64>> {
        let dir = tempfile::Builder::new()
            .prefix("spark-bench-nats")
            .tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start nats-server")?;
        let _nats = Proc::new(child, "nats-server");
        let extra: Vec<String> = spec
            .extra_args
            .iter()
            .cloned()
            .chain([
                "--collab-nats".to_string(),
                format!("nats://127.0.0.1:{port}"),
            ])
            .collect();
        let d = Sparkd::start(&SparkdSpec {
            extra_args: &extra,
            ..spec.clone()
        })?;
        let c = d.client()?;
        c.collab().join(
            "bench",
            &JoinOptions {
                client: "bench".into(),
                shared: true,
                ..Default::default()
            },
        )?;
        let t = Instant::now();
        while c.collab().stats()?.bridge != 1 {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("the bridge did not come up within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        lock_round_trips(&c, "bench", n)
    };
    go().map_err(|e| format!("{e:#}"))
}

pub fn run(cx: &Ctx<'_>, redis: Option<&Redis>) -> Result<Option<CollabBench>> {
    if !cx.a.wants("collab") {
        return Ok(None);
    }
    let smoke = cx.a.smoke;
    let (msgs, locks) = if smoke { (200, 50) } else { (20_000, 2000) };
    progress(&format!(
        "collab: pub/sub 1 x {SUBSCRIBERS}, {msgs} messages, sparkd vs redis"
    ));
    let d = Sparkd::start(&cx.spec)?;
    let b = match &cx.a.baseline {
        Some(bin) => Some(Sparkd::start(&SparkdSpec {
            bin,
            ..cx.spec.clone()
        })?),
        None => None,
    };
    let (sparkd, baseline, redis) = fan_out(cx.counts.reps, msgs, &d, b.as_ref(), redis)?;
    drop(b);
    progress("collab: lock round trips, local");
    let c = d.client()?;
    c.collab().join(
        "locks",
        &JoinOptions {
            client: "bench".into(),
            ..Default::default()
        },
    )?;
    let lock_local_us = lock_round_trips(&c, "locks", locks)?;
    progress("collab: lock round trips, bridged through nats-server");
    let lock_bridged_us = bridged_locks(&cx.spec, locks / 4);
    if let Err(why) = &lock_bridged_us {
        eprintln!("!!! spark-bench: bridged collab locks are SKIPPED: {why}");
    }
    Ok(Some(CollabBench {
        msgs,
        sparkd,
        baseline,
        redis,
        lock_local_us,
        lock_bridged_us,
    }))
}

fn med(v: &[f64]) -> f64 {
    Summary::of(v).median
}

pub fn print(c: &CollabBench) {
    println!(
        "\nCollab pub/sub: 1 publisher x {SUBSCRIBERS} subscribers, {} messages of {PAYLOAD} B (medians)",
        c.msgs
    );
    println!(
        "  {:<8} {:>12} {:>10} {:>10}   {:<17} {:<15}",
        "", "msgs/s", "p50 us", "p99 us", "msgs/s range", "p50 range"
    );
    let row = |n: &str, f: &FanOut| {
        let (t, p) = (Summary::of(&f.msgs_per_s), Summary::of(&f.p50_us));
        println!(
            "  {n:<8} {:>12.0} {:>10.1} {:>10.1}   {:<17} {:<15}",
            t.median,
            p.median,
            med(&f.p99_us),
            format!("{:.0}-{:.0}", t.min, t.max),
            format!("{:.0}-{:.0}", p.min, p.max)
        );
    };
    row("sparkd", &c.sparkd);
    if let Some(b) = &c.baseline {
        row("baseline", b);
        println!(
            "  sparkd/baseline: throughput {:.2}x, p50 {:.2}x",
            med(&c.sparkd.msgs_per_s) / med(&b.msgs_per_s),
            med(&c.sparkd.p50_us) / med(&b.p50_us)
        );
    }
    match &c.redis {
        Some(r) => {
            row("redis", r);
            println!(
                "  sparkd/redis: throughput {:.2}x (target >= 1.0), p50 {:.2}x (target <= 1.0)",
                med(&c.sparkd.msgs_per_s) / med(&r.msgs_per_s),
                med(&c.sparkd.p50_us) / med(&r.p50_us)
            );
        }
        None => println!("  redis: SKIPPED (no redis-server)"),
    }
    let pct = percentile;
    println!("Collab lock acquire+release round trip");
    println!(
        "  local    p50 {:>8.1} us  p99 {:>8.1} us",
        pct(&c.lock_local_us, 0.5),
        pct(&c.lock_local_us, 0.99)
    );
    match &c.lock_bridged_us {
        Ok(v) => println!(
            "  bridged  p50 {:>8.1} us  p99 {:>8.1} us (nats-server on loopback)",
            pct(v, 0.5),
            pct(v, 0.99)
        ),
        Err(why) => println!("  bridged  SKIPPED: {why}"),
    }
}

pub fn json(c: &CollabBench) -> Value {
    let f = |f: &FanOut| {
        json!({"msgs_per_s": Summary::of(&f.msgs_per_s).json(), "p50_us": Summary::of(&f.p50_us).json(),
            "p99_us": Summary::of(&f.p99_us).json()})
    };
    json!({
        "messages": c.msgs, "subscribers": SUBSCRIBERS, "payload_bytes": PAYLOAD,
        "sparkd": f(&c.sparkd), "baseline": c.baseline.as_ref().map(f), "redis": c.redis.as_ref().map(f),
        "lock_local_us": {"p50": percentile(&c.lock_local_us, 0.5), "p99": percentile(&c.lock_local_us, 0.99)},
        "lock_bridged_us": match &c.lock_bridged_us {
            Ok(v) => json!({"p50": percentile(v, 0.5), "p99": percentile(v, 0.99)}),
            Err(why) => json!({"skipped": why}),
        },
    })
}

/// Local pub/sub against Redis pub/sub: throughput >= 1.0x, p50 latency <= 1.0x (medians of this run).
pub fn targets(c: &CollabBench) -> Vec<Target> {
    let ratio =
        |f: fn(&FanOut) -> &Vec<f64>| c.redis.as_ref().map(|r| med(f(&c.sparkd)) / med(f(r)));
    let note = format!("1 publisher x {SUBSCRIBERS} subscribers, {} msgs", c.msgs);
    vec![
        Target {
            name: "collab pub/sub msgs/s vs redis pub/sub".into(),
            measured: ratio(|f| &f.msgs_per_s),
            goal: 1.0,
            at_least: true,
            unit: "x",
            note: note.clone(),
        },
        Target {
            name: "collab pub/sub p50 latency vs redis pub/sub".into(),
            measured: ratio(|f| &f.p50_us),
            goal: 1.0,
            at_least: false,
            unit: "x",
            note,
        },
    ]
}
