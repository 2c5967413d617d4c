//! The tier's rules against an in-memory upstream that can hang or fail on demand (the real Redis runs in
//! `tests/team_redis.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use super::*;

#[derive(Default)]
struct Fake {
    map: Mutex<HashMap<String, Bytes>>,
    hang: AtomicBool,
    fail: AtomicBool,
    gets: AtomicU64,
}

impl Upstream for Fake {
    fn get<'a>(&'a self, key: &'a str) -> upstream::UpFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            self.gets.fetch_add(1, Ordering::SeqCst);
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(UpstreamError("connection refused".into()));
            }
            Ok(self.map.lock().unwrap().get(key).cloned())
        })
    }
    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> upstream::UpFuture<'a, ()> {
        Box::pin(async move {
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.map.lock().unwrap().insert(key.to_string(), value);
            Ok(())
        })
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}

fn cfg(queue: usize) -> TeamConfig {
    TeamConfig {
        namespace: "shader".into(),
        url: "redis://fake".into(),
        policy: Policy::ReadWrite,
        timeout: Duration::from_millis(20),
        queue,
    }
}

fn counter(t: &TeamTier, name: &str) -> u64 {
    t.counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

#[tokio::test]
async fn reads_verify_what_comes_back() {
    let fake = Arc::new(Fake::default());
    let t = TeamTier::start("shader", &cfg(8), fake.clone());
    fake.map
        .lock()
        .unwrap()
        .insert(upstream_key("shader", b"k1"), envelope::seal(b"good"));
    let mut bad = envelope::seal(b"evil").to_vec();
    let n = bad.len();
    bad[n - 1] ^= 1;
    fake.map
        .lock()
        .unwrap()
        .insert(upstream_key("shader", b"k2"), Bytes::from(bad));
    assert_eq!(t.fetch(b"k1").await.unwrap(), &b"good"[..]);
    assert!(matches!(t.fetch(b"k2").await, Err(FetchError::Corrupt(_))));
    assert!(matches!(t.fetch(b"k3").await, Err(FetchError::Miss)));
    assert_eq!(
        (
            counter(&t, "upstream_hits"),
            counter(&t, "upstream_rejected"),
            counter(&t, "upstream_misses")
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_hanging_upstream_times_out_then_the_breaker_opens_and_a_probe_closes_it() {
    let fake = Arc::new(Fake::default());
    let t = TeamTier::start("shader", &cfg(8), fake.clone());
    fake.hang.store(true, Ordering::SeqCst);
    for _ in 0..breaker::TRIP_AFTER {
        assert!(matches!(t.fetch(b"k").await, Err(FetchError::Timeout(_))));
    }
    assert_eq!(counter(&t, "upstream_breaker_open"), 1);
    let gets = fake.gets.load(Ordering::SeqCst);
    assert!(matches!(t.fetch(b"k").await, Err(FetchError::BreakerOpen)));
    assert_eq!(counter(&t, "upstream_skipped"), 1);
    // The open breaker never sent that read upstream (the probe may have sent its own).
    assert!(fake.gets.load(Ordering::SeqCst) <= gets + 1);
    fake.hang.store(false, Ordering::SeqCst);
    while counter(&t, "upstream_breaker_open") == 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(t.fetch(b"k").await, Err(FetchError::Miss)));
    assert_eq!(counter(&t, "upstream_breaker_trips"), 1);
}

#[tokio::test]
async fn errors_count_and_trip_too() {
    let fake = Arc::new(Fake::default());
    let t = TeamTier::start("shader", &cfg(8), fake.clone());
    fake.fail.store(true, Ordering::SeqCst);
    for _ in 0..breaker::TRIP_AFTER {
        assert!(matches!(t.fetch(b"k").await, Err(FetchError::Upstream(_))));
    }
    assert_eq!(counter(&t, "upstream_errors"), 3);
    assert_eq!(counter(&t, "upstream_breaker_open"), 1);
}

#[tokio::test]
async fn writes_go_behind_and_a_full_queue_drops_never_blocks() {
    let fake = Arc::new(Fake::default());
    let t = TeamTier::start("shader", &cfg(4), fake.clone());
    t.enqueue(b"a", &Bytes::from_static(b"one"));
    while counter(&t, "uploads") < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored = fake
        .map
        .lock()
        .unwrap()
        .get(&upstream_key("shader", b"a"))
        .cloned();
    assert_eq!(envelope::open(stored.unwrap()).unwrap(), &b"one"[..]);
    // A hanging upstream holds the worker on one upload; the queue (4) fills, the rest are dropped.
    fake.hang.store(true, Ordering::SeqCst);
    for i in 0..20u8 {
        t.enqueue(&[i], &Bytes::from_static(b"x"));
    }
    let dropped = counter(&t, "uploads_dropped");
    assert!((15..=16).contains(&dropped), "{dropped} dropped");
    assert!(counter(&t, "upload_queue_depth") >= 3);
}

#[tokio::test]
async fn read_only_and_off_policies() {
    let fake = Arc::new(Fake::default());
    let mut c = cfg(4);
    c.policy = Policy::ReadOnly;
    let t = TeamTier::start("shader", &c, fake.clone());
    assert!(t.reads() && !t.writes());
    t.enqueue(b"a", &Bytes::from_static(b"one"));
    assert_eq!(counter(&t, "upload_queue_depth"), 0);
    c.policy = Policy::Off;
    let t = TeamTier::start("shader", &c, fake);
    assert!(!t.reads() && !t.writes());
}

#[test]
fn keys_carry_the_namespace_and_format_version() {
    assert_eq!(
        upstream_key("shader", &[0x01, 0xab]),
        "spark/v1/shader/01ab"
    );
}
