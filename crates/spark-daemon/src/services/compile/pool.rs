//! The bounded compile pool: at most `--compile-jobs` jobs run at once, whatever their backend; the rest wait
//! in line (the queue depth in stats). Each job has `--compile-timeout`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use spark_compile::{Backend, Job, Outcome};
use tokio::sync::Semaphore;

use super::backends::naga::{NagaThreads, panic_message};
use super::backends::{Backends, JobFailure};
use super::stats::Stats;

/// The nice value compile workers run at: below interactive work, so background compiling never starves the
/// editor.
pub const WORKER_NICE: i32 = 10;

pub struct Pool {
    jobs: usize,
    slots: Semaphore,
    timeout: Duration,
    naga: NagaThreads,
    pub backends: Backends,
    pub stats: Arc<Stats>,
}

/// Decrements a gauge when dropped (a cancelled caller still leaves the gauge right).
struct Gauge<'a>(&'a std::sync::atomic::AtomicU64);
impl<'a> Gauge<'a> {
    fn up(g: &'a std::sync::atomic::AtomicU64) -> Gauge<'a> {
        g.fetch_add(1, Relaxed);
        Gauge(g)
    }
}
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Pool {
    pub fn new(jobs: usize, timeout: Duration, backends: Backends) -> Pool {
        let jobs = jobs.max(1);
        Pool {
            jobs,
            slots: Semaphore::new(jobs),
            timeout,
            naga: NagaThreads::start(jobs, WORKER_NICE),
            backends,
            stats: Arc::new(Stats::default()),
        }
    }

    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Runs one job when a slot is free. Counts compiles, failures, timeouts, crashes and the time taken.
    pub async fn run(&self, job: Job) -> Result<Outcome, JobFailure> {
        let permit = {
            let _queued = Gauge::up(&self.stats.queued);
            self.slots
                .acquire()
                .await
                .map_err(|_| JobFailure::Io("the compile pool is closed".into()))?
        };
        let _running = Gauge::up(&self.stats.running);
        let started = Instant::now();
        let r = match job.backend {
            Backend::Glslang => match &self.backends.glslang {
                Some(g) => g.run(&job, self.timeout, WORKER_NICE).await,
                None => Err(super::backends::glslang::Glslang::missing()),
            },
            _ => self.run_naga(job).await,
        };
        drop(permit);
        match &r {
            Ok(o) => {
                self.stats.compiles.fetch_add(1, Relaxed);
                self.stats.record_time(started.elapsed());
                if matches!(o, Outcome::Errors(_)) {
                    self.stats.failures.fetch_add(1, Relaxed);
                }
            }
            Err(JobFailure::Timeout(_)) => {
                self.stats.timeouts.fetch_add(1, Relaxed);
            }
            Err(JobFailure::Crashed(_)) => {
                self.stats.worker_crashes.fetch_add(1, Relaxed);
            }
            Err(_) => {}
        }
        r
    }

    async fn run_naga(&self, job: Job) -> Result<Outcome, JobFailure> {
        let rx = self.naga.submit(job);
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(outcome))) => Ok(outcome),
            Ok(Ok(Err(panic))) => Err(JobFailure::Crashed(format!(
                "naga panicked: {}",
                panic_message(panic.as_ref())
            ))),
            Ok(Err(_)) => Err(JobFailure::Crashed("the compile thread stopped".into())),
            Err(_) => {
                // The thread cannot be stopped from outside; it finishes on its own. A new one takes its place.
                self.naga.spawn_thread();
                Err(JobFailure::Timeout(self.timeout))
            }
        }
    }
}
