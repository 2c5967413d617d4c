//! The team tier: a namespace's upstream, an existing shared store (Redis today; S3, GCS and Azure Blob
//! through OpenDAL slot in behind the same [`Upstream`] trait), so a studio's workstations and CI share what
//! any of them built.
//!
//! - **Reads go through.** A local miss asks the upstream (one fetch per key however many callers miss at
//!   once: the namespace's single-flight), verifies what comes back ([`envelope`]: the checksum travels with
//!   the blob), stores it locally and answers. A blob that fails its check is refused and counted.
//! - **Writes go behind.** A put is acknowledged after the local write; the upload waits on a bounded queue
//!   and is dropped (and counted) when the queue is full, never blocking the put.
//! - **Failures make it slower, never broken.** Every upstream request has a timeout (200 ms by default), so
//!   no local request waits longer than that. Errors or timeouts in a row open a [`breaker`]: the namespace
//!   runs local-only, says so in its counters and the log, and a background probe tries again with back-off.
//! - Keys on the upstream are `spark/v<envelope version>/<namespace>/<hex key>`.

pub mod breaker;
pub mod config;
pub mod envelope;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{info, warn};

use breaker::{Breaker, Gate, Transition};
pub use config::{Policy, TeamConfig};
pub use upstream::{Upstream, UpstreamError};

/// How long an upload may take (it never holds up a request, but must not pile up forever).
const UPLOAD_TIMEOUT_FACTOR: u32 = 10;
/// The key the background probe reads (a miss is a success: the upstream answered).
const PROBE_KEY: &str = "spark/probe";

/// Gives each configured namespace its upstream. An upstream that cannot be set up (a bad address) is
/// logged and left out: the namespace runs local-only, as with an upstream that is down.
pub fn attach(namespaces: &crate::namespaces::Namespaces, team: &[TeamConfig]) {
    for cfg in team {
        let Some(ns) = namespaces.get(&cfg.namespace) else {
            continue;
        };
        match upstream::OpendalUpstream::from_url(&cfg.url) {
            Ok(u) => ns.set_team(TeamTier::start(&cfg.namespace, cfg, Arc::new(u))),
            Err(e) => warn!(namespace = %cfg.namespace, "no team tier: {e}"),
        }
    }
}

/// Where `key` of namespace `ns` lives upstream.
pub fn upstream_key(ns: &str, key: &[u8]) -> String {
    let mut s = format!("spark/v{}/{ns}/", envelope::VERSION);
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    rejected: AtomicU64,
    skipped: AtomicU64,
    uploads: AtomicU64,
    uploads_dropped: AtomicU64,
    uploads_failed: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Why a read-through found nothing (the namespace answers a miss in every case).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not on the upstream")]
    Miss,
    #[error("upstream skipped: its circuit breaker is open")]
    BreakerOpen,
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream error: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("refused a blob from the upstream: {0}")]
    Corrupt(#[from] envelope::EnvelopeError),
}

/// One namespace's upstream, its policy, breaker, upload queue and counters.
pub struct TeamTier {
    namespace: String,
    policy: Policy,
    timeout: Duration,
    upstream: Arc<dyn Upstream>,
    breaker: Breaker,
    queue: mpsc::Sender<(String, Bytes)>,
    counters: Counters,
}

impl TeamTier {
    /// Builds the tier and starts its upload worker and probe on the current runtime.
    pub fn start(namespace: &str, cfg: &TeamConfig, upstream: Arc<dyn Upstream>) -> Arc<TeamTier> {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let t = Arc::new(TeamTier {
            namespace: namespace.to_string(),
            policy: cfg.policy,
            timeout: cfg.timeout,
            upstream,
            breaker: Breaker::default(),
            queue: tx,
            counters: Counters::default(),
        });
        info!(
            namespace,
            upstream = %t.upstream.describe(),
            policy = ?cfg.policy,
            timeout_ms = cfg.timeout.as_millis() as u64,
            "team tier on"
        );
        tokio::spawn(upload_loop(Arc::downgrade(&t), rx));
        tokio::spawn(probe_loop(Arc::downgrade(&t)));
        t
    }

    pub fn reads(&self) -> bool {
        self.policy != Policy::Off
    }

    pub fn writes(&self) -> bool {
        self.policy == Policy::ReadWrite
    }

    /// The verified body of `key` from the upstream. Never waits longer than the timeout; with the breaker
    /// open, returns at once.
    pub async fn fetch(&self, key: &[u8]) -> Result<Bytes, FetchError> {
        if self.breaker.gate() == Gate::Refuse {
            bump(&self.counters.skipped);
            return Err(FetchError::BreakerOpen);
        }
        let k = upstream_key(&self.namespace, key);
        let got = match tokio::time::timeout(self.timeout, self.upstream.get(&k)).await {
            Err(_) => {
                bump(&self.counters.timeouts);
                self.failed("a read timed out");
                return Err(FetchError::Timeout(self.timeout));
            }
            Ok(Err(e)) => {
                bump(&self.counters.errors);
                self.failed(&e.to_string());
                return Err(e.into());
            }
            Ok(Ok(got)) => got,
        };
        self.succeeded();
        let Some(blob) = got else {
            bump(&self.counters.misses);
            return Err(FetchError::Miss);
        };
        match envelope::open(blob) {
            Ok(body) => {
                bump(&self.counters.hits);
                Ok(body)
            }
            Err(e) => {
                bump(&self.counters.rejected);
                warn!(namespace = %self.namespace, key = %k, "refused an upstream blob: {e}");
                Err(e.into())
            }
        }
    }

    /// Queues the upload of a blob just stored locally; never waits. A full queue drops it (counted).
    pub fn enqueue(&self, key: &[u8], body: &Bytes) {
        if !self.writes() {
            return;
        }
        let k = upstream_key(&self.namespace, key);
        if self.queue.try_send((k, body.clone())).is_err() {
            bump(&self.counters.uploads_dropped);
        }
    }

    fn failed(&self, why: &str) {
        if let Transition::Opened(wait) = self.breaker.failure(Instant::now()) {
            warn!(
                namespace = %self.namespace,
                upstream = %self.upstream.describe(),
                "upstream failing ({why}): circuit breaker open, running local-only; probing again in {wait:?}"
            );
        }
    }

    fn succeeded(&self) {
        if self.breaker.success() == Transition::Closed {
            info!(namespace = %self.namespace, upstream = %self.upstream.describe(),
                "upstream answers again: circuit breaker closed");
        }
    }

    /// The upstream's state for `/status`: its policy and whether the breaker has it running local-only.
    pub fn status(&self) -> serde_json::Value {
        let open = self.breaker.is_open();
        serde_json::json!({
            "policy": match self.policy {
                Policy::ReadWrite => "read-write",
                Policy::ReadOnly => "read-only",
                Policy::Off => "off",
            },
            "breaker": if open { "open" } else { "closed" },
            "local_only": open || self.policy == Policy::Off,
            "trips": self.breaker.trips(),
        })
    }

    /// Counters for the namespace's listing (Control Namespaces, `sparkctl stats`).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let depth = (self.queue.max_capacity() - self.queue.capacity()) as u64;
        vec![
            ("upstream_hits", l(&c.hits)),
            ("upstream_misses", l(&c.misses)),
            ("upstream_errors", l(&c.errors)),
            ("upstream_timeouts", l(&c.timeouts)),
            ("upstream_rejected", l(&c.rejected)),
            ("upstream_skipped", l(&c.skipped)),
            ("upload_queue_depth", depth),
            ("uploads", l(&c.uploads)),
            ("uploads_dropped", l(&c.uploads_dropped)),
            ("uploads_failed", l(&c.uploads_failed)),
            ("upstream_breaker_open", self.breaker.is_open() as u64),
            ("upstream_breaker_trips", self.breaker.trips()),
        ]
    }
}

/// Writes queued blobs behind. While the breaker is open, uploads are dropped (counted as failed): the
/// namespace is local-only until the probe closes it.
async fn upload_loop(tier: std::sync::Weak<TeamTier>, mut rx: mpsc::Receiver<(String, Bytes)>) {
    while let Some((key, body)) = rx.recv().await {
        let Some(t) = tier.upgrade() else { return };
        if t.breaker.is_open() {
            bump(&t.counters.uploads_failed);
            continue;
        }
        let sealed = envelope::seal(&body);
        let limit = t.timeout * UPLOAD_TIMEOUT_FACTOR;
        match tokio::time::timeout(limit, t.upstream.put(&key, sealed)).await {
            Ok(Ok(())) => {
                bump(&t.counters.uploads);
                t.succeeded();
            }
            Ok(Err(e)) => {
                bump(&t.counters.uploads_failed);
                t.failed(&format!("an upload failed: {e}"));
            }
            Err(_) => {
                bump(&t.counters.uploads_failed);
                t.failed("an upload timed out");
            }
        }
    }
}

/// While the breaker is open, tries the upstream when the back-off says so; one answer closes it.
async fn probe_loop(tier: std::sync::Weak<TeamTier>) {
    const TICK: Duration = Duration::from_millis(100);
    loop {
        let wait = match tier.upgrade() {
            None => return,
            Some(t) => match t.breaker.probe_due(Instant::now()) {
                None => TICK,
                Some(d) if !d.is_zero() => d.min(TICK),
                Some(_) => {
                    let r = tokio::time::timeout(t.timeout, t.upstream.get(PROBE_KEY)).await;
                    match r {
                        Ok(Ok(_)) => {
                            t.succeeded();
                        }
                        _ => {
                            t.breaker.failure(Instant::now());
                        }
                    }
                    Duration::ZERO
                }
            },
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests;
