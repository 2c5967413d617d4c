//! The Compile service (`0x0004`): shader compilation in the daemon, cached in the `compile` namespace by a
//! BLAKE3 content key (see `spark_compile::key` and `docs/protocol.md` §13).
//!
//! - `request.rs`: a request → one keyed job per permutation (backend choice, include expansion, key);
//! - `backends/`: naga in process (`naga.rs`), `glslangValidator` as a worker subprocess (`glslang.rs`);
//! - `pool.rs`: the bounded pool (`--compile-jobs`), timeouts (`--compile-timeout`), lower CPU priority;
//! - `stats.rs`: counters and compile-time percentiles (CompileStats, and the namespace's counters).
//!
//! A request's permutations run concurrently, each through `Namespace::get_or_fill`, so concurrent requests
//! for one key (from any connection) share one compile; results stream back as each completes. Successful
//! compiles and compile errors are both stored (negative caching); failures (timeout, crash, missing backend,
//! refused include) are not.

pub mod backends;
pub mod pool;
pub mod request;
pub mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use spark_compile::Outcome;
use spark_proto::compile::{
    COMPILE, CompileAccepted, CompileRequest, CompileResult, Origin, ResultStatus, STATS,
};
use spark_proto::{BlobHasher, MAX_PAYLOAD, Message, service};
use tokio::sync::mpsc;

use crate::namespaces::{Filled, Namespace};
use crate::registry::{
    BoxFuture, HandlerResult, Reply, Request, Service, StreamPart, unknown_message,
};
use backends::{Backends, glslang::Glslang};
use pool::Pool;
use request::Prepared;

/// The Compile service's settings (flags `--compile-jobs`, `--compile-timeout`, `--glslang`,
/// `--compile-max-input-kb`).
#[derive(Debug, Clone)]
pub struct CompileConfig {
    pub jobs: usize,
    pub timeout: Duration,
    pub glslang: PathBuf,
    pub max_input: usize,
}

impl Default for CompileConfig {
    fn default() -> Self {
        CompileConfig {
            jobs: default_jobs(),
            timeout: Duration::from_secs(60),
            glslang: PathBuf::from(spark_compile::glslang::PROGRAM),
            max_input: spark_compile::DEFAULT_MAX_INPUT,
        }
    }
}

/// Cores minus one (one stays for the editor), at least 1.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

pub struct CompileService {
    ns: Arc<Namespace>,
    pool: Arc<Pool>,
    max_input: usize,
}

impl CompileService {
    pub fn new(ns: Arc<Namespace>, config: &CompileConfig) -> CompileService {
        let glslang = Glslang::detect(&config.glslang);
        match &glslang {
            Some(g) => tracing::info!("compile: {} at {}", g.identity, g.program.display()),
            None => tracing::info!(
                "compile: {} not found ({}); GLSL/HLSL via glslang unavailable",
                config.glslang.display(),
                spark_compile::glslang::PACKAGE
            ),
        }
        let pool = Arc::new(Pool::new(config.jobs, config.timeout, Backends { glslang }));
        let (stats, jobs) = (pool.stats.clone(), pool.jobs());
        ns.set_extra_counters(Box::new(move || stats::counters(&stats.snapshot(jobs))));
        CompileService {
            ns,
            pool,
            max_input: config.max_input,
        }
    }

    async fn compile(self: Arc<Self>, req: Request) -> HandlerResult {
        let r: CompileRequest = req.decode()?;
        let n = r.permutations.len();
        // Include directories mean file reads: off the runtime. An include map (or none) is pure work of a
        // few microseconds, done here: a warm hit then costs no thread hop.
        let prepared = if r.include_dirs.is_empty() {
            request::prepare(&r, &self.pool.backends, self.max_input)
        } else {
            let svc = self.clone();
            tokio::task::spawn_blocking(move || {
                request::prepare(&r, &svc.pool.backends, svc.max_input)
            })
            .await
            .map_err(|e| {
                crate::registry::HandlerError::reply(
                    spark_proto::ErrorCode::Internal,
                    e.to_string(),
                )
            })?
        };
        if n == 1 {
            // One permutation (the common editor request): answered from this task, without the per-result
            // tasks and the collector a batch needs; a warm hit then costs no task hop.
            let p = prepared.into_iter().next().expect("one permutation");
            let payload = encode_result(self.run_one(0, p).await);
            let (tx, parts) = mpsc::channel(2);
            let end = spark_proto::blob_checksum(&payload);
            let _ = tx.try_send(StreamPart::Chunk(payload));
            let _ = tx.try_send(StreamPart::End(end));
            return Ok(Reply::Stream {
                first: Box::new(CompileAccepted { permutations: 1 }),
                parts,
            });
        }
        let (done_tx, mut done_rx) = mpsc::channel::<Bytes>(n);
        for (index, p) in prepared.into_iter().enumerate() {
            let (svc, done_tx) = (self.clone(), done_tx.clone());
            tokio::spawn(async move {
                let result = svc.run_one(index as u16, p).await;
                let _ = done_tx.send(encode_result(result)).await;
            });
        }
        drop(done_tx);
        let (tx, parts) = mpsc::channel(n.min(64) + 1);
        tokio::spawn(async move {
            let mut hasher = BlobHasher::new();
            while let Some(payload) = done_rx.recv().await {
                hasher.update(&payload);
                if tx.send(StreamPart::Chunk(payload)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(StreamPart::End(hasher.digest128())).await;
        });
        Ok(Reply::Stream {
            first: Box::new(CompileAccepted {
                permutations: n as u16,
            }),
            parts,
        })
    }

    /// One permutation: from the namespace, joined, or compiled; never an error reply (a failure is a result).
    async fn run_one(&self, index: u16, p: Prepared) -> CompileResult {
        let (job, key, compiler) = match p {
            Prepared::Failed {
                compiler,
                diagnostic,
            } => return failed(index, [0; 32], compiler, String::new(), diagnostic),
            Prepared::Ready { job, key, compiler } => (job, key, compiler),
        };
        let entry = job.entry.clone();
        let pool = self.pool.clone();
        let fill_compiler = compiler.clone();
        let fill_entry = entry.clone();
        let r = self
            .ns
            .get_or_fill(&key, move || async move {
                let outcome = pool.run(*job).await?;
                stored_result(outcome, key, fill_compiler, fill_entry)
            })
            .await;
        let stats = &self.pool.stats;
        match r {
            Ok((bytes, filled)) => match CompileResult::decode(&bytes) {
                Ok(mut res) => {
                    res.index = index;
                    res.origin = match filled {
                        Filled::Ran => Origin::Fresh,
                        Filled::Joined => Origin::Joined,
                        Filled::Hit => Origin::Hit,
                    };
                    // A fresh compile was counted by the pool.
                    let counter = match (filled, res.status) {
                        (Filled::Hit, ResultStatus::CompileError) => Some(&stats.negative_hits),
                        (Filled::Hit, _) => Some(&stats.hits),
                        (Filled::Joined, _) => Some(&stats.joins),
                        (Filled::Ran, _) => None,
                    };
                    if let Some(c) = counter {
                        c.fetch_add(1, Relaxed);
                    }
                    res
                }
                Err(e) => {
                    let _ = self.ns.remove(key.to_vec()).await;
                    let d = spark_compile::error_at(
                        "<cache>",
                        0,
                        format!(
                            "the cached result did not decode ({e}); it was removed, ask again"
                        ),
                    );
                    failed(index, key, compiler, entry, d)
                }
            },
            Err(e) => {
                let d = spark_compile::error_at(
                    spark_compile::include::SOURCE_NAME,
                    0,
                    format!("{e:#}"),
                );
                failed(index, key, compiler, entry, d)
            }
        }
    }
}

fn failed(
    index: u16,
    key: [u8; 32],
    compiler: String,
    entry: String,
    d: spark_proto::compile::Diagnostic,
) -> CompileResult {
    CompileResult {
        index,
        status: ResultStatus::Failed,
        origin: Origin::Fresh,
        key,
        compiler,
        entry,
        workgroup_size: [0; 3],
        bindings: Vec::new(),
        diagnostics: vec![d],
        output: Bytes::new(),
    }
}

/// What the namespace stores for a key: the result message itself (index 0, origin fresh; both are set per
/// request when served). A result too large for one frame is an error, so nothing is stored.
fn stored_result(
    outcome: Outcome,
    key: [u8; 32],
    compiler: String,
    entry: String,
) -> anyhow::Result<Bytes> {
    let res = spark_compile::result_message(outcome, key, compiler, entry);
    let out = encode_result(res);
    if out.len() > MAX_PAYLOAD {
        anyhow::bail!(
            "the compiled output ({} bytes) does not fit in one frame",
            out.len()
        );
    }
    Ok(out)
}

fn encode_result(r: CompileResult) -> Bytes {
    let mut out = BytesMut::new();
    r.encode(&mut out);
    out.freeze()
}

impl Service for CompileService {
    fn id(&self) -> u16 {
        service::COMPILE
    }

    fn capabilities(&self) -> &'static [&'static str] {
        self.pool.backends.capabilities()
    }

    fn handle(self: Arc<Self>, req: Request) -> BoxFuture<HandlerResult> {
        Box::pin(async move {
            match req.frame.msg_type {
                COMPILE => self.compile(req).await,
                STATS => {
                    let _: spark_proto::compile::Stats = req.decode()?;
                    Ok(Reply::msg(self.pool.stats.snapshot(self.pool.jobs())))
                }
                _ => Err(unknown_message(&req.frame)),
            }
        })
    }
}
