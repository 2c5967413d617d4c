//! Start-up with a large persisted cache: the time from spawning `sparkd` to its first successful Get, and
//! its peak RSS once loaded.
//!
//! The cache directory is made once by putting every entry through a daemon, which is then stopped; it is
//! kept under the work directory (with a marker naming its shape) so later runs reuse it instead of writing
//! another gigabyte. Runs start with the directory in the page cache (the machine is not ours to flush).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spark_client::Client;
use spark_client::spark_proto::cache::{Put, PutResponse};
use spark_client::spark_proto::{Frame, Message, service};

use crate::kv::{key, value};
use crate::procs::{Sparkd, SparkdSpec, status_kib};

const NS: u64 = 3 << 56;

#[derive(Debug, Clone)]
pub struct StartupRep {
    pub first_hit_s: f64,
    pub rss_at_first_hit_kib: u64,
    /// CPU time (user + system, every thread) sparkd used until the first hit; `None` off Linux.
    pub cpu_at_first_hit_ms: Option<f64>,
    pub hwm_after_settle_kib: u64,
    pub entries: u64,
}

/// Makes (or reuses) the cache directory with `entries` values of `value_bytes` each.
pub fn prepare(
    base: &Path,
    bin: &Path,
    entries: usize,
    value_bytes: usize,
    budget_mb: u64,
) -> Result<std::path::PathBuf> {
    let root = base.join(format!("startup-{entries}x{value_bytes}"));
    let marker = root.join("bench-complete");
    if marker.exists() {
        return Ok(root);
    }
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("remove the incomplete {}", root.display()))?;
    }
    std::fs::create_dir_all(&root)?;
    eprintln!(
        "spark-bench: generating the start-up cache ({entries} entries of {value_bytes} B) in {} (kept for later runs)",
        root.display()
    );
    let t = Instant::now();
    let mut d = Sparkd::start(&SparkdSpec {
        bin,
        cache_root: Some(&root),
        scratch: base,
        memory_budget_mb: budget_mb,
        extra_args: &[],
    })?;
    const DEPTH: usize = 64;
    const WRITERS: usize = 2;
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = (0..WRITERS)
            .map(|w| {
                let d = &d;
                s.spawn(move || -> Result<()> {
                    let c = d.client()?;
                    let mut i = w * DEPTH;
                    while i < entries {
                        let end = (i + DEPTH).min(entries);
                        let frames = (i..end)
                            .map(|j| {
                                Put {
                                    key: key(NS, j),
                                    data: value(value_bytes, j as u64),
                                }
                                .to_frame(service::SHADER)
                            })
                            .collect::<Result<Vec<Frame>, _>>()?;
                        for r in c.pipeline(&frames)? {
                            if !PutResponse::decode(&r?.payload)?.stored {
                                bail!("sparkd did not keep a start-up entry");
                            }
                        }
                        i += WRITERS * DEPTH;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        Ok(())
    })?;
    let n = d.client()?.shader().stats()?.entries;
    d.stop();
    if n != entries as u64 {
        bail!("start-up cache holds {n} entries, wanted {entries}");
    }
    std::fs::write(
        &marker,
        format!("{entries} entries of {value_bytes} bytes\n"),
    )?;
    eprintln!(
        "spark-bench: start-up cache ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(root)
}

/// One start: spawn, poll until a Get of a known key hits, read RSS, let it settle, read the peak.
pub fn run_once(
    bin: &Path,
    root: &Path,
    entries: usize,
    value_bytes: usize,
    budget_mb: u64,
    settle: Duration,
) -> Result<StartupRep> {
    let probe = key(NS, entries / 2);
    let t0 = Instant::now();
    let mut d = Sparkd::spawn(&SparkdSpec {
        bin,
        cache_root: Some(root),
        scratch: root,
        memory_budget_mb: budget_mb,
        extra_args: &[],
    })?;
    let first_hit = loop {
        if let Ok(c) = Client::connect(&d.socket)
            && let Ok(Some(v)) = c.shader().get(&probe)
        {
            if v.len() != value_bytes {
                bail!(
                    "start-up probe returned {} bytes, wanted {value_bytes}",
                    v.len()
                );
            }
            break t0.elapsed();
        }
        d.proc.check_alive()?;
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("no hit from sparkd within 120 s of starting it");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let pid = d.proc.pid();
    let rss_at_first_hit_kib = status_kib(pid, "VmRSS");
    let cpu_at_first_hit_ms = cpu_ms(pid);
    std::thread::sleep(settle);
    let hwm_after_settle_kib = status_kib(pid, "VmHWM");
    let entries_seen = d.client()?.shader().stats()?.entries;
    d.stop();
    Ok(StartupRep {
        first_hit_s: first_hit.as_secs_f64(),
        rss_at_first_hit_kib,
        cpu_at_first_hit_ms,
        hwm_after_settle_kib,
        entries: entries_seen,
    })
}

/// User + system CPU time of process `pid` (all its threads) from `/proc/PID/stat`: on a shared machine the
/// wall-clock start-up moves with the load, the CPU it took much less.
fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis):
    // utime and stime are the 14th and 15th fields of the line, the 12th and 13th after it.
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // In clock ticks of USER_HZ, which is 100 on every Linux ABI this runs on.
    Some(ticks as f64 * 10.0)
}
