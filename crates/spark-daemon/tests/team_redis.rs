//! The team tier against a real `redis-server` on a Unix socket (started and stopped by PID here): two
//! daemons share blobs through it, a blob corrupted inside Redis is refused, a dead Redis leaves the daemon
//! local-only (breaker open) until it returns, and 8 concurrent misses make one upstream fetch.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spark_client::Client;
use spark_proto::cache::ShaderKey;
use spark_testkit::Daemon;

mod common_http;
use common_http::HttpDaemon;

/// A redis-server child on `<dir>/redis.sock`, no TCP, no persistence; killed by PID when dropped.
struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// `None` (after saying so loudly) when redis-server is not installed.
    fn start() -> Option<Redis> {
        let ok = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!(
                "SKIPPED: redis-server missing: install redis-server (apt-get install -y redis-server)"
            );
            return None;
        }
        let mut r = Redis {
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.spawn();
        Some(r)
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.sock())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        wait("redis-server to answer", || self.cli(&["PING"]) == "PONG");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.sock());
    }

    fn cli(&self, args: &[&str]) -> String {
        let o = Command::new("redis-cli")
            .arg("-s")
            .arg(self.sock())
            .args(args)
            .output()
            .expect("redis-cli (package redis-tools)");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn keys(&self) -> Vec<String> {
        self.cli(&["--scan"]).lines().map(str::to_string).collect()
    }

    /// Calls of one command since the last CONFIG RESETSTAT.
    fn calls(&self, cmd: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{cmd}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "[namespaces.shader.upstream]\nurl = \"redis+unix://{}\"\n{extra}",
            self.sock().display()
        )
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A hang guard (generous), not a timing check.
fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config_file(config: &str) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("sparkd.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn daemon(config: &str) -> Daemon {
    Daemon::start(&["--config", config_file(config).to_str().unwrap()])
}

/// The shader namespace's `upstream` object in the HTTP front's `/status`.
fn upstream_status(h: &HttpDaemon) -> serde_json::Value {
    let status: serde_json::Value = serde_json::from_str(&h.get_text("/status")).unwrap();
    status["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "shader")
        .unwrap()["upstream"]
        .clone()
}

fn key(i: u64) -> ShaderKey {
    ShaderKey {
        source_hash: 0x7ea0_0000 + i,
        target: 2,
        stage: 1,
    }
}

fn counter(c: &Client, name: &str) -> u64 {
    let spaces = c.namespaces().unwrap();
    let shader = spaces.iter().find(|n| n.name == "shader").unwrap();
    shader
        .counters
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no counter {name}: {:?}", shader.counters))
        .1
}

fn uploaded(c: &Client, n: u64) {
    wait("uploads", || counter(c, "uploads") >= n);
}

#[test]
fn two_daemons_share_blobs_through_redis() {
    let Some(redis) = Redis::start() else { return };
    let a = daemon(&redis.config(""));
    let b = daemon(&redis.config(""));
    let (ca, cb) = (a.client(), b.client());
    ca.shader().put(&key(1), b"built on workstation A").unwrap();
    uploaded(&ca, 1);
    // The key: format version, namespace, then the wire key in hex (u64 LE hash, target, stage).
    let keys = redis.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].ends_with("spark/v1/shader/0100a07e000000000201"),
        "{keys:?}"
    );
    let got = cb.shader().get(&key(1)).unwrap();
    assert_eq!(got.as_deref(), Some(&b"built on workstation A"[..]));
    assert_eq!(counter(&cb, "upstream_hits"), 1);
    // Now local on B: no second trip.
    assert!(cb.shader().get(&key(1)).unwrap().is_some());
    assert_eq!(counter(&cb, "upstream_hits"), 1);
    // B fetched it, so B does not upload it again.
    assert_eq!(counter(&cb, "uploads"), 0);
    assert!(cb.shader().get(&key(2)).unwrap().is_none());
    assert_eq!(counter(&cb, "upstream_misses"), 1);
    // A streamed put (what `sparkctl shader put` and large blobs use) is uploaded too.
    let big = vec![9u8; 3 << 20];
    ca.shader()
        .put_from_reader(&key(3), &mut &big[..], big.len() as u64)
        .unwrap();
    uploaded(&ca, 2);
    assert_eq!(cb.shader().get(&key(3)).unwrap().as_deref(), Some(&big[..]));
}

#[test]
fn a_blob_corrupted_inside_redis_is_refused_never_served() {
    let Some(redis) = Redis::start() else { return };
    let a = daemon(&redis.config(""));
    let b = daemon(&redis.config(""));
    let ca = a.client();
    ca.shader().put(&key(3), &vec![7u8; 4096]).unwrap();
    uploaded(&ca, 1);
    let k = redis.keys().pop().unwrap();
    // Flip a byte inside the body (the 32-byte envelope header comes first).
    assert_eq!(redis.cli(&["SETRANGE", &k, "1000", "X"]), "4128");
    let cb = b.client();
    assert!(
        cb.shader().get(&key(3)).unwrap().is_none(),
        "a damaged blob must never be served"
    );
    assert_eq!(counter(&cb, "upstream_rejected"), 1);
    assert_eq!(counter(&cb, "entries"), 0, "nor kept");
}

#[test]
fn with_redis_dead_the_daemon_stays_local_and_comes_back_when_redis_does() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let config = config_file(&redis.config(""));
    let a = HttpDaemon::start(&["--config", config.to_str().unwrap()]);
    let c = a.d.client();
    assert_eq!(upstream_status(&a)["breaker"], "closed");
    assert_eq!(upstream_status(&a)["policy"], "read-write");
    c.shader().put(&key(10), b"before").unwrap();
    uploaded(&c, 1);
    redis.stop();
    let mut times = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        c.shader()
            .put(&key(100 + i), b"while redis is down")
            .unwrap();
        assert!(
            c.shader().get(&key(100 + i)).unwrap().is_some(),
            "local hits still hit"
        );
        assert!(
            c.shader().get(&key(10_000 + i)).unwrap().is_none(),
            "misses are misses"
        );
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "redis down: put+hit+miss p50 {:?} p99 {:?} max {:?} (upstream timeout 200 ms)",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    assert_eq!(counter(&c, "upstream_breaker_open"), 1);
    let st = upstream_status(&a);
    assert_eq!(
        (&st["breaker"], &st["local_only"]),
        (&"open".into(), &true.into()),
        "{st}"
    );
    assert!(counter(&c, "upstream_errors") + counter(&c, "upstream_timeouts") >= 3);
    assert!(
        counter(&c, "upstream_skipped") > 0,
        "with the breaker open, misses skip the upstream"
    );
    redis.spawn();
    wait("the breaker to close", || {
        counter(&c, "upstream_breaker_open") == 0
    });
    assert_eq!(upstream_status(&a)["breaker"], "closed");
    // Puts queued while Redis was down may still be uploading; this one follows them.
    c.shader().put(&key(11), b"after").unwrap();
    let b = daemon(&redis.config(""));
    let cb = b.client();
    wait("the put after the outage to reach another daemon", || {
        cb.shader().get(&key(11)).unwrap().as_deref() == Some(&b"after"[..])
    });
}

#[test]
fn eight_concurrent_misses_make_one_upstream_fetch() {
    let Some(redis) = Redis::start() else { return };
    // A long timeout: Redis is paused below so the eight misses overlap.
    let a = daemon(&redis.config("timeout_ms = 5000\n"));
    let b = daemon(&redis.config("timeout_ms = 5000\n"));
    a.client()
        .shader()
        .put(&key(20), &vec![5u8; 256 << 10])
        .unwrap();
    uploaded(&a.client(), 1);
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]), "OK");
    // Every client of Redis waits 400 ms, so the first fetch is still in flight when the others miss.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "400", "ALL"]), "OK");
    let barrier = std::sync::Barrier::new(8);
    let got: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let c = b.client();
                    barrier.wait();
                    c.shader().get(&key(20)).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        got.iter()
            .all(|g| g.as_deref() == Some(&vec![5u8; 256 << 10][..]))
    );
    assert_eq!(
        redis.calls("get"),
        1,
        "one upstream GET for eight concurrent misses"
    );
    assert_eq!(counter(&b.client(), "upstream_hits"), 1);
}

#[test]
fn read_only_never_uploads() {
    let Some(redis) = Redis::start() else { return };
    let a = daemon(&redis.config("policy = \"read-only\"\n"));
    let c = a.client();
    for i in 0..10 {
        c.shader().put(&key(30 + i), b"local only").unwrap();
    }
    // A read-write daemon's upload, waited for, shows uploads have had time to happen.
    let b = daemon(&redis.config(""));
    b.client().shader().put(&key(99), b"published").unwrap();
    uploaded(&b.client(), 1);
    assert_eq!(
        counter(&c, "uploads") + counter(&c, "upload_queue_depth"),
        0
    );
    assert_eq!(
        redis.keys().len(),
        1,
        "only the read-write daemon's blob: {:?}",
        redis.keys()
    );
    // And reads still go through.
    assert_eq!(
        c.shader().get(&key(99)).unwrap().as_deref(),
        Some(&b"published"[..])
    );
}
