//! What the bench measured, and the two ways a case is run: one system alone, or sparkd and Redis alternating.

use anyhow::{Context, Result};

use crate::kv::{self, Op, Shape};
use crate::procs::{Redis, Sparkd};
use crate::startup::StartupRep;
use crate::stats::{CaseResult, Rep};
use crate::{KIB, MIB, progress};

/// Everything measured, for the table and the JSON.
#[derive(Default)]
pub struct Results {
    pub floor_echo: Option<CaseResult>,
    pub floor_bulk: Vec<CaseResult>,
    pub ping: Option<CaseResult>,
    /// Ping on the `--baseline` build, repetitions alternating with `ping`.
    pub ping_baseline: Option<CaseResult>,
    /// (sparkd, the other system) per shape: Redis, or the `--baseline` build.
    pub kv: Vec<(CaseResult, Option<CaseResult>)>,
    /// What the second element of `kv` is: "redis" or "baseline".
    pub kv_other: &'static str,
    pub big_rss: Option<RssReading>,
    pub fill_rss: Option<RssReading>,
    pub startup: Option<StartupResult>,
    pub redis_note: Option<String>,
    pub redis_version: Option<String>,
    pub watch: Option<crate::watch::WatchResult>,
    /// Why the watch group was skipped.
    pub watch_note: Option<String>,
    pub compile: Option<crate::compile::CompileBench>,
    pub collab: Option<crate::collab::CollabBench>,
    pub team: Option<crate::team::TeamBench>,
}

pub struct RssReading {
    pub peak_vmrss_kib: u64,
    pub vmhwm_kib: u64,
    pub entries: u64,
    pub budget_mb: u64,
    /// What the stores count in their memory tiers (fill case).
    pub memory_tier_bytes: u64,
}

impl RssReading {
    pub fn limit_kib(&self) -> u64 {
        self.budget_mb * 1024 + 64 * 1024 + (256 * self.entries).div_ceil(1024)
    }
}

pub struct StartupResult {
    pub reps: Vec<StartupRep>,
    pub entries: usize,
    pub value_bytes: usize,
    pub budget_mb: u64,
}

#[allow(clippy::too_many_arguments)]
pub fn case(
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

/// What a kv shape is compared with.
#[derive(Clone, Copy)]
pub enum Other<'a> {
    Redis(&'a Redis),
    /// Another sparkd build (`--baseline`).
    Baseline(&'a Sparkd),
}

/// Runs one shape on both systems, alternating repetitions so that noise from the shared machine falls on
/// both alike.
pub fn side_by_side(
    d: &Sparkd,
    r: Option<Other>,
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
        match r {
            Some(Other::Redis(_)) => " vs redis",
            Some(Other::Baseline(_)) => " vs baseline",
            None => "",
        }
    ));
    let mut sp = Vec::new();
    let mut rd = Vec::new();
    for _ in 0..reps {
        sp.push(kv::sparkd_run(d, s).with_context(|| format!("sparkd {id}"))?);
        match r {
            Some(Other::Redis(r)) => {
                rd.push(kv::redis_run(r, s).with_context(|| format!("redis {id}"))?)
            }
            Some(Other::Baseline(b)) => {
                rd.push(kv::sparkd_run(b, s).with_context(|| format!("baseline {id}"))?)
            }
            None => {}
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
    let other = r.map(|o| match (o, s.op) {
        (Other::Baseline(_), op) => mk("baseline", rd, op.name()),
        (Other::Redis(_), Op::Get) => mk("redis", rd, "GET"),
        (Other::Redis(_), Op::Put) => mk("redis", rd, "SET"),
    });
    Ok((mk("sparkd", sp, s.op.name()), other))
}

pub fn size_name(size: usize) -> String {
    if size >= MIB && size % MIB == 0 {
        format!("{}MiB", size / MIB)
    } else if size >= KIB && size % KIB == 0 {
        format!("{}KiB", size / KIB)
    } else {
        format!("{size}B")
    }
}
