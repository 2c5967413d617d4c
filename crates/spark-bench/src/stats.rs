//! Running N clients at once and summarising repeated runs.

use std::sync::Barrier;
use std::time::Instant;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

/// One run of one case.
#[derive(Debug, Clone)]
pub struct Rep {
    pub ops: u64,
    pub bytes: u64,
    pub secs: f64,
    /// Per-batch round trips in microseconds (a batch is `depth` requests sent together).
    pub lat_us: Vec<f64>,
}

impl Rep {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    /// Payload bytes per second in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    pub fn percentile(&self, q: f64) -> f64 {
        percentile(&self.lat_us, q)
    }
}

pub fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let idx = ((s.len() - 1) as f64 * q).round() as usize;
    s[idx]
}

/// Median and range of one metric over the repetitions.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let mut s = values.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Summary {
            median,
            min: s[0],
            max: s[n - 1],
        }
    }

    pub fn json(&self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max })
    }
}

/// What one case measured over all its repetitions.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub system: &'static str,
    pub op: &'static str,
    pub size: usize,
    pub clients: usize,
    pub depth: usize,
    pub reps: Vec<Rep>,
}

impl CaseResult {
    pub fn ops(&self) -> Summary {
        Summary::of(&self.reps.iter().map(Rep::ops_per_s).collect::<Vec<_>>())
    }
    pub fn mbs(&self) -> Summary {
        Summary::of(&self.reps.iter().map(Rep::mb_per_s).collect::<Vec<_>>())
    }
    pub fn p50(&self) -> Summary {
        Summary::of(
            &self
                .reps
                .iter()
                .map(|r| r.percentile(0.50))
                .collect::<Vec<_>>(),
        )
    }
    pub fn p99(&self) -> Summary {
        Summary::of(
            &self
                .reps
                .iter()
                .map(|r| r.percentile(0.99))
                .collect::<Vec<_>>(),
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "system": self.system,
            "op": self.op,
            "value_bytes": self.size,
            "clients": self.clients,
            "depth": self.depth,
            "reps": self.reps.len(),
            "ops_per_s": self.ops().json(),
            "mb_per_s": self.mbs().json(),
            "p50_us": self.p50().json(),
            "p99_us": self.p99().json(),
            "per_rep": self.reps.iter().map(|r| json!({
                "ops": r.ops, "bytes": r.bytes, "secs": r.secs,
                "ops_per_s": r.ops_per_s(), "p50_us": r.percentile(0.5), "p99_us": r.percentile(0.99),
            })).collect::<Vec<_>>(),
        })
    }
}

/// How long one repetition of a case may run: each client stops after its batches or at this time limit,
/// whichever comes first, so a slow case costs seconds rather than minutes. Set once by `main`.
static TIME_LIMIT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(2000);

pub fn set_time_limit(d: std::time::Duration) {
    TIME_LIMIT_MS.store(d.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `clients` threads, each with its own connection, each doing up to `batches` calls of `op` (which
/// returns the requests and payload bytes it completed) within the time limit. Connections are made before
/// the clock starts; the clock covers the time from a common start until the last client finishes.
pub fn run_clients<C: Send>(
    clients: usize,
    batches: usize,
    mut connect: impl FnMut(usize) -> Result<C>,
    op: impl Fn(&mut C, usize, usize) -> Result<(u64, u64)> + Sync,
) -> Result<Rep> {
    let conns = (0..clients).map(&mut connect).collect::<Result<Vec<C>>>()?;
    let barrier = Barrier::new(clients + 1);
    let op = &op;
    let barrier = &barrier;
    std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(ci, mut conn)| {
                s.spawn(move || -> Result<(u64, u64, Vec<f64>)> {
                    let mut lat = Vec::with_capacity(batches);
                    let (mut ops, mut bytes) = (0u64, 0u64);
                    barrier.wait();
                    let start = Instant::now();
                    let limit = std::time::Duration::from_millis(
                        TIME_LIMIT_MS.load(std::sync::atomic::Ordering::Relaxed),
                    );
                    for b in 0..batches {
                        if b > 0 && start.elapsed() >= limit {
                            break;
                        }
                        let t = Instant::now();
                        let (o, n) = op(&mut conn, ci, b)?;
                        lat.push(t.elapsed().as_secs_f64() * 1e6);
                        ops += o;
                        bytes += n;
                    }
                    Ok((ops, bytes, lat))
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let mut rep = Rep {
            ops: 0,
            bytes: 0,
            secs: 0.0,
            lat_us: Vec::with_capacity(clients * batches),
        };
        let mut first_err = None;
        for h in handles {
            match h.join().map_err(|_| anyhow!("a client thread panicked")) {
                Ok(Ok((o, n, lat))) => {
                    rep.ops += o;
                    rep.bytes += n;
                    rep.lat_us.extend(lat);
                }
                Ok(Err(e)) | Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        rep.secs = t0.elapsed().as_secs_f64();
        match first_err {
            Some(e) => Err(e),
            None => Ok(rep),
        }
    })
}
