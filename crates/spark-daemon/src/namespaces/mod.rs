//! Namespaces: the named stores (`shader`, `asset`, later `compile`, `http-cas`, …) behind every front end.
//!
//! A [`Namespace`] is a store plus its key rule and budgets, built from one config table
//! ([`decl::DECLARED`] and [`crate::config`]). It offers the operations every front end needs — the binary
//! protocol's services are thin adapters over it, and the HTTP front and the compile service use the same
//! calls — and knows nothing of any wire format. Store work that may touch the disk runs on the blocking pool,
//! never on a runtime thread; a memory hit completes without leaving the caller's task.

pub mod decl;
pub mod single_flight;

use std::sync::Arc;

use bytes::Bytes;
use spark_store::{
    BlobReader, ColdRead, Lookup, PutWriter, Store, StoreConfig, StoreError, StoreStats,
};
use tracing::info;

pub use decl::{Decl, KeyRule};
pub use single_flight::FillError;
use single_flight::{Role, SingleFlight};

/// A namespace's configuration: its declaration and its store's settings (directory, budgets, durability).
#[derive(Debug, Clone)]
pub struct NamespaceConfig {
    pub decl: Decl,
    pub store: StoreConfig,
}

/// Why a namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    InvalidKey(String),
    #[error("store task failed: {0}")]
    Task(String),
}

/// A blob found by [`Namespace::get`].
pub enum Blob {
    Bytes(Bytes),
    /// Too large to read whole: read it a chunk at a time, off the runtime.
    Stream(Box<BlobReader>),
}

/// How [`Namespace::get_or_fill`] got its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// It was stored already.
    Hit,
    /// Another caller was filling it; this one waited and shares the result.
    Joined,
    /// This caller ran the fill.
    Ran,
}

/// Counters a service adds to its namespace's listing (Control's Namespaces reply).
pub type ExtraCounters = Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

pub struct Namespace {
    decl: Decl,
    store: Store,
    flights: Arc<SingleFlight>,
    extra: std::sync::OnceLock<ExtraCounters>,
    /// The team tier's upstream, when the config gives this namespace one.
    team: std::sync::OnceLock<Arc<crate::team::TeamTier>>,
}

impl Namespace {
    pub fn new(decl: Decl, store: Store) -> Namespace {
        Namespace {
            decl,
            store,
            flights: Arc::default(),
            extra: std::sync::OnceLock::new(),
            team: std::sync::OnceLock::new(),
        }
    }

    /// The team tier's upstream, if the config gave this namespace one.
    pub fn team(&self) -> Option<&Arc<crate::team::TeamTier>> {
        self.team.get()
    }

    /// Gives this namespace an upstream (see [`crate::team`]). Set once; a second call is ignored.
    pub fn set_team(&self, t: Arc<crate::team::TeamTier>) {
        let _ = self.team.set(t);
    }

    /// Lets the service that owns this namespace add its own counters to the namespace's listing (the Compile
    /// service's hits, joins, timeouts …). Set once; a second call is ignored.
    pub fn set_extra_counters(&self, f: ExtraCounters) {
        let _ = self.extra.set(f);
    }

    /// The store's counters, then the service's (see [`Namespace::set_extra_counters`]).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut c = self.stats().counters();
        if let Some(f) = self.extra.get() {
            c.extend(f());
        }
        if let Some(t) = self.team.get() {
            c.extend(t.counters());
        }
        c
    }

    pub fn name(&self) -> &'static str {
        self.decl.name
    }

    /// The binary-protocol service that serves this namespace, 0 for none.
    pub fn service(&self) -> u16 {
        self.decl.service
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn check_key(&self, key: &[u8]) -> Result<(), NsError> {
        let r = self.decl.key;
        if (r.min_len..=r.max_len).contains(&key.len()) {
            return Ok(());
        }
        Err(NsError::InvalidKey(format!(
            "a key of namespace '{}' must be {}..={} bytes, not {}",
            self.decl.name,
            r.min_len,
            r.max_len,
            key.len()
        )))
    }

    /// Runs store work that may touch the disk on the blocking pool.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, NsError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| NsError::Task(e.to_string()))?
            .map_err(NsError::Store)
    }

    /// The blob under `key`, from the upstream on a local miss when there is one. Counts a hit or a miss.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Blob>, NsError> {
        let local = self.get_local(key).await?;
        if local.is_some() {
            return Ok(local);
        }
        match self.team.get() {
            Some(t) if t.reads() => Ok(self.read_through(key, t).await.map(Blob::Bytes)),
            _ => Ok(None),
        }
    }

    /// A local miss asks the upstream: one fetch per key however many callers miss it at once (they share
    /// the leader's result through the namespace's single-flight), stored locally when it verifies. Any
    /// failure is a miss: the upstream makes the cache faster, never broken.
    async fn read_through(&self, key: &[u8], t: &crate::team::TeamTier) -> Option<Bytes> {
        match self.flights.join(key) {
            Role::Follower(rx) => single_flight::follow(rx).await.and_then(Result::ok),
            Role::Leader(leader) => {
                let r = match t.fetch(key).await {
                    Ok(b) => {
                        // Stored locally but not queued for upload: it came from there.
                        if let Err(e) = self.put_local(key.to_vec(), b.clone()).await {
                            tracing::warn!(
                                namespace = self.name(),
                                "cannot keep an upstream blob: {e}"
                            );
                        }
                        Ok(b)
                    }
                    Err(e) => Err(Arc::new(anyhow::Error::from(e))),
                };
                leader.finish(r.clone());
                r.ok()
            }
        }
    }

    /// The blob under `key` in this daemon's own store. Counts a hit or a miss.
    pub async fn get_local(&self, key: &[u8]) -> Result<Option<Blob>, NsError> {
        self.check_key(key)?;
        match self.store.lookup(key) {
            Lookup::Hit(b) => Ok(Some(Blob::Bytes(b))),
            Lookup::Miss => Ok(None),
            Lookup::Cold(c) => Ok(match self.blocking(move |s| s.read_cold(c)).await? {
                ColdRead::Whole(b) => Some(Blob::Bytes(b)),
                ColdRead::Gone => None,
                ColdRead::Stream(r) => Some(Blob::Stream(r)),
            }),
        }
    }

    /// The blob under `key` as one buffer, however large.
    pub async fn get_bytes(&self, key: &[u8]) -> Result<Option<Bytes>, NsError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(Blob::Bytes(b)) => Ok(Some(b)),
            Some(Blob::Stream(mut r)) => {
                let all = self
                    .blocking(move |_| {
                        let mut out = Vec::with_capacity(r.len() as usize);
                        let mut buf = Vec::new();
                        while r.next_chunk_into(1 << 20, &mut buf)? {
                            out.extend_from_slice(&buf);
                        }
                        Ok(out)
                    })
                    .await?;
                Ok(Some(Bytes::from(all)))
            }
        }
    }

    /// Stores a blob; returns whether it was kept (false: larger than every budget allows). With a
    /// read-write upstream, the upload is queued after the local write (never waited for).
    pub async fn put(&self, key: Vec<u8>, data: Bytes) -> Result<bool, NsError> {
        self.put_hinted(key, data, false).await
    }

    /// [`Namespace::put`] for a request with more pipelined behind it (`more_behind`): a small put then
    /// joins the store's next batch instead of being written alone in this thread.
    pub async fn put_hinted(
        &self,
        key: Vec<u8>,
        data: Bytes,
        more_behind: bool,
    ) -> Result<bool, NsError> {
        let team = self.team.get().filter(|t| t.writes());
        let upload = team.map(|t| (t, key.clone(), data.clone()));
        let kept = self.put_local_hinted(key, data, more_behind).await?;
        if let Some((t, key, data)) = upload {
            t.enqueue(&key, &data);
        }
        Ok(kept)
    }

    /// Whether a streamed put of `total_len` bytes should keep a copy for the upstream: the tier writes,
    /// and the blob is small enough to hold in memory once more while it is queued.
    pub fn uploads_stream(&self, total_len: u64) -> bool {
        const MAX_STREAMED_UPLOAD: u64 = 64 << 20;
        self.team.get().is_some_and(|t| t.writes()) && total_len <= MAX_STREAMED_UPLOAD
    }

    /// Queues the upload of a blob stored by a streamed put (a no-op without a writing upstream).
    pub fn upload(&self, key: &[u8], body: &Bytes) {
        if let Some(t) = self.team.get() {
            t.enqueue(key, body);
        }
    }

    /// Stores a blob in this daemon's own store only.
    pub async fn put_local(&self, key: Vec<u8>, data: Bytes) -> Result<bool, NsError> {
        self.put_local_hinted(key, data, false).await
    }

    async fn put_local_hinted(
        &self,
        key: Vec<u8>,
        data: Bytes,
        more_behind: bool,
    ) -> Result<bool, NsError> {
        self.check_key(&key)?;
        if self.store.config().dir.is_none() {
            return Ok(self.store.put(&key, data)?);
        }
        if self.store.queues_put(&key, data.len() as u64) {
            // The store's writer thread completes the put (or, when it is idle and nothing is pipelined
            // behind, the store writes it here): no blocking-pool thread waits for its batch.
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.store
                .put_queued_hinted(&key, data, !more_behind, move |r| {
                    let _ = tx.send(r);
                });
            let kept = rx.await.map_err(|_| {
                NsError::Task("the store's writer ended without an answer".into())
            })??;
            if self.store.packs_need_compaction() {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || store.compact_packs_if_due());
            }
            return Ok(kept);
        }
        self.blocking(move |s| s.put(&key, data)).await
    }

    /// Starts a streamed put of `total_len` bytes.
    pub async fn begin_put(&self, key: Vec<u8>, total_len: u64) -> Result<PutWriter, NsError> {
        self.check_key(&key)?;
        self.blocking(move |s| s.begin_put(&key, total_len)).await
    }

    /// The size of the blob under `key`, without counting a hit or a miss.
    pub fn exists(&self, key: &[u8]) -> Option<u64> {
        self.store.exists(key)
    }

    pub async fn remove(&self, key: Vec<u8>) -> Result<bool, NsError> {
        self.blocking(move |s| s.remove(&key)).await
    }

    /// Removes every key given; returns how many were present.
    pub async fn remove_many(&self, keys: Vec<Vec<u8>>) -> Result<u64, NsError> {
        self.blocking(move |s| s.remove_many(keys)).await
    }

    /// Removes everything; returns how many entries there were.
    pub async fn clear(&self) -> Result<u64, NsError> {
        self.blocking(|s| s.clear()).await
    }

    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// The blob under `key`, or the result of `fill` stored under it. Concurrent callers for one key wait for
    /// one fill and all get its result or all get its error; a failed fill stores nothing, so the next call
    /// tries again. `fill` runs in the leading caller's task.
    ///
    /// A fill's result is answered before it is stored: the store's write (a pack append, maybe an fsync)
    /// would otherwise be on every miss's path. The flight stays open until the write is done, so a caller
    /// arriving meanwhile gets the result from the flight instead of filling again.
    pub async fn get_or_fill<F, Fut>(
        self: &Arc<Self>,
        key: &[u8],
        fill: F,
    ) -> Result<(Bytes, Filled), FillError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Bytes>>,
    {
        let mut fill = Some(fill);
        loop {
            if let Some(b) = self.get_bytes(key).await.map_err(|e| Arc::new(e.into()))? {
                return Ok((b, Filled::Hit));
            }
            match self.flights.join(key) {
                Role::Follower(rx) => {
                    // A result already published is being stored: to this caller it is a hit.
                    let how = match rx.borrow().is_some() {
                        true => Filled::Hit,
                        false => Filled::Joined,
                    };
                    if let Some(r) = single_flight::follow(rx).await {
                        return r.map(|b| (b, how));
                    }
                    // The leader gave up without a result (cancelled): look again, maybe lead.
                }
                Role::Leader(leader) => {
                    let f = fill
                        .take()
                        .expect("a caller leads at most once: it returns when it does");
                    let b = match f().await {
                        Ok(b) => b,
                        Err(e) => {
                            let e = Arc::new(e);
                            leader.finish(Err(e.clone()));
                            return Err(e);
                        }
                    };
                    leader.publish(Ok(b.clone()));
                    let (ns, key, value) = (self.clone(), key.to_vec(), b.clone());
                    tokio::spawn(async move {
                        if let Err(e) = ns.put(key, value).await {
                            tracing::warn!(
                                namespace = ns.name(),
                                "storing a filled entry failed: {e}"
                            );
                        }
                        drop(leader);
                    });
                    return Ok((b, Filled::Ran));
                }
            }
        }
    }

    /// Fills in flight now (for stats).
    pub fn fills_in_flight(&self) -> usize {
        self.flights.in_flight()
    }
}

/// Every namespace of the daemon, in declaration order.
#[derive(Default)]
pub struct Namespaces {
    all: Vec<Arc<Namespace>>,
}

impl Namespaces {
    /// Opens every namespace's store.
    pub fn open(configs: &[NamespaceConfig]) -> anyhow::Result<Namespaces> {
        let mut all = Vec::with_capacity(configs.len());
        for c in configs {
            let store = open_store(&c.store)?;
            all.push(Arc::new(Namespace::new(c.decl, store)));
        }
        Ok(Namespaces { all })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.all.iter().find(|n| n.name() == name)
    }

    /// The namespace `name`; panics if the config table lacks it (a build-time mistake, not input).
    pub fn expect(&self, name: &str) -> Arc<Namespace> {
        self.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("namespace '{name}' is not configured"))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.all.iter()
    }
}

fn open_store(cfg: &StoreConfig) -> anyhow::Result<Store> {
    use anyhow::Context;
    let (store, rep) = Store::open(cfg.clone()).with_context(|| {
        format!(
            "cannot open the {} cache{}",
            cfg.name,
            cfg.dir
                .as_ref()
                .map(|d| format!(" in {}", d.display()))
                .unwrap_or_default()
        )
    })?;
    let mb = |b: u64| b / (1024 * 1024);
    info!(
        "{} cache: {} entries loaded ({} MiB on disk) in {:.1} ms; dir {}; memory budget {} MiB; disk budget {}{}",
        cfg.name,
        rep.entries,
        mb(rep.bytes_on_disk),
        rep.index_load_time.as_secs_f64() * 1000.0,
        cfg.dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "none (memory only)".into()),
        mb(cfg.memory_budget),
        if cfg.disk_budget == 0 {
            "unbounded".to_string()
        } else {
            format!("{} MiB", mb(cfg.disk_budget))
        },
        if rep.trimmed_at_start > 0 {
            format!("; {} evicted to fit the budget", rep.trimmed_at_start)
        } else {
            String::new()
        },
    );
    Ok(store)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    fn memory_ns() -> Arc<Namespace> {
        let decl = *decl::find("asset").unwrap();
        let (store, _) = Store::open(StoreConfig::memory("asset", 1 << 20)).unwrap();
        Arc::new(Namespace::new(decl, store))
    }

    /// 16 callers at once for one key, each with a fill that counts its runs and takes a while.
    async fn sixteen_callers(
        ns: &Arc<Namespace>,
        runs: &Arc<AtomicU32>,
        fail: bool,
    ) -> Vec<Result<(Bytes, Filled), FillError>> {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (ns, runs) = (ns.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                ns.get_or_fill(b"\x01key", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if fail {
                        anyhow::bail!("the importer crashed")
                    }
                    Ok(Bytes::from_static(b"filled"))
                })
                .await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn get_or_fill_runs_one_fill_for_sixteen_callers() {
        let ns = memory_ns();
        let runs = Arc::new(AtomicU32::new(0));
        let results = sixteen_callers(&ns, &runs, false).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one fill for 16 callers");
        let mut ran = 0;
        for r in results {
            let (b, how) = r.unwrap();
            assert_eq!(b, Bytes::from_static(b"filled"));
            ran += (how == Filled::Ran) as u32;
        }
        assert_eq!(ran, 1);
        // Answered before it was stored: a caller arriving meanwhile gets it from the flight (a hit), never
        // fills again.
        let (b, how) = ns
            .get_or_fill(b"\x01key", || async { anyhow::bail!("must not run") })
            .await
            .unwrap();
        assert_eq!((b, how), (Bytes::from_static(b"filled"), Filled::Hit));
        // Once stored, the flight is over and the next caller hits.
        while ns.fills_in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(ns.exists(b"\x01key").is_some());
        let (b, how) = ns
            .get_or_fill(b"\x01key", || async { anyhow::bail!("must not run") })
            .await
            .unwrap();
        assert_eq!((b, how), (Bytes::from_static(b"filled"), Filled::Hit));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_fill_reaches_every_caller_and_the_next_call_tries_again() {
        let ns = memory_ns();
        let runs = Arc::new(AtomicU32::new(0));
        let results = sixteen_callers(&ns, &runs, true).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one fill for 16 callers");
        for r in &results {
            let e = r.as_ref().unwrap_err();
            assert!(e.to_string().contains("the importer crashed"), "{e}");
        }
        assert!(
            ns.exists(b"\x01key").is_none(),
            "nothing of a failed fill is stored"
        );
        let (b, how) = ns
            .get_or_fill(b"\x01key", || async {
                Ok(Bytes::from_static(b"second try"))
            })
            .await
            .unwrap();
        assert_eq!((b, how), (Bytes::from_static(b"second try"), Filled::Ran));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_lets_a_follower_fill() {
        let ns = memory_ns();
        let leader = {
            let ns = ns.clone();
            tokio::spawn(async move {
                ns.get_or_fill(b"\x01k", || async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Bytes::new())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let follower = {
            let ns = ns.clone();
            tokio::spawn(async move {
                ns.get_or_fill(b"\x01k", || async { Ok(Bytes::from_static(b"mine")) })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        leader.abort();
        let (b, how) = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("the follower is not stranded")
            .unwrap()
            .unwrap();
        assert_eq!((b, how), (Bytes::from_static(b"mine"), Filled::Ran));
    }

    #[test]
    fn keys_outside_the_rule_are_refused_by_name() {
        let ns = memory_ns();
        let e = ns.check_key(b"\x01").unwrap_err();
        assert!(e.to_string().contains("namespace 'asset'"), "{e}");
        assert!(ns.check_key(b"\x01a").is_ok());
    }
}
