//! File-watch benchmark: sparkd's Watch service and Watchman (Debian's 4.9) on the same tree, in the same run,
//! with the same 20 ms settle: write → event latency (both subscribed at once, so one write is timed on both),
//! memory per watched file and the time to set up a watch on the big tree.
//!
//! Watchman runs as a private instance (its own socket, state and log files in a temporary directory), is
//! spoken to in JSON over its socket, and is stopped by PID. Without a `watchman` binary the group is skipped
//! loudly.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use spark_client::{Client, WatchEvent, WatchSpec};

use crate::procs::{Proc, Sparkd, SparkdSpec, status_kib, which};
use crate::progress;

pub struct WatchResult {
    pub files: usize,
    /// Write → event latencies in µs.
    pub sparkd_lat_us: Vec<f64>,
    pub watchman_lat_us: Vec<f64>,
    /// RSS growth from watching the big tree, per file, in bytes.
    pub sparkd_bytes_per_file: f64,
    pub watchman_bytes_per_file: f64,
    pub sparkd_setup_s: f64,
    pub watchman_setup_s: f64,
    pub watchman_version: String,
}

/// Makes (or reuses) a tree of `files` files, 100 per directory, under `base`.
fn tree(base: &Path, files: usize) -> Result<PathBuf> {
    let root = base.join(format!("watch-tree-{files}"));
    let marker = base.join(format!("watch-tree-{files}.complete"));
    if marker.exists() {
        return Ok(root);
    }
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    progress(&format!(
        "watch: making a tree of {files} files (kept for later runs)"
    ));
    for i in 0..files {
        let dir = root.join(format!("d{:04}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(dir.join(format!("f{i:06}.txt")), b"x")?;
    }
    std::fs::write(&marker, b"")?;
    Ok(root)
}

/// A private Watchman and one JSON connection to it.
struct Watchman {
    proc: Proc,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Watchman {
    fn start(bin: &Path) -> Result<Watchman> {
        let dir = tempfile::Builder::new()
            .prefix("spark-bench-wm")
            .tempdir()?;
        let sock = dir.path().join("wm.sock");
        let child = Command::new(bin)
            .arg("--foreground")
            .arg(format!("--sockname={}", sock.display()))
            .arg(format!(
                "--statefile={}",
                dir.path().join("state").display()
            ))
            .arg(format!("--logfile={}", dir.path().join("log").display()))
            .arg(format!("--pidfile={}", dir.path().join("pid").display()))
            .arg("--no-save-state")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut w = Watchman {
            proc: Proc::new(child, "watchman"),
            sock,
            _dir: dir,
        };
        let t = Instant::now();
        while UnixStream::connect(&w.sock).is_err() {
            w.proc.check_alive()?;
            if t.elapsed() > Duration::from_secs(30) {
                bail!("watchman did not open its socket within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(w)
    }

    fn connect(&self) -> Result<WmConn> {
        let s = UnixStream::connect(&self.sock)?;
        Ok(WmConn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }
}

struct WmConn {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl WmConn {
    fn send(&mut self, cmd: &Value) -> Result<()> {
        self.w.write_all(format!("{cmd}\n").as_bytes())?;
        Ok(())
    }
    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            bail!("watchman closed the connection");
        }
        Ok(serde_json::from_str(&line)?)
    }
    /// A command's reply (unilateral subscription PDUs in between are skipped).
    fn call(&mut self, cmd: Value) -> Result<Value> {
        self.send(&cmd)?;
        loop {
            let v = self.read()?;
            if v.get("unilateral").is_some() {
                continue;
            }
            if let Some(e) = v.get("error") {
                bail!("watchman {cmd}: {e}");
            }
            return Ok(v);
        }
    }
}

pub fn run(
    sparkd: &SparkdSpec<'_>,
    base: &Path,
    smoke: bool,
) -> Result<Result<WatchResult, String>> {
    let Some(bin) = which("watchman") else {
        return Ok(Err("no `watchman` on PATH (Debian package watchman)".into()));
    };
    let files = if smoke { 2_000 } else { 100_000 };
    let samples = if smoke { 10 } else { 200 };
    let root = tree(base, files)?.canonicalize()?;
    let wm = Watchman::start(&bin)?;
    let mut wmc = wm.connect()?;
    let watchman_version = wmc.call(json!(["version"]))?["version"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let d = Sparkd::start(sparkd)?;
    let client = d.client()?;

    // Set-up time and memory: a fresh daemon each, the same tree.
    let before = status_kib(d.proc.pid(), "VmRSS");
    let t = Instant::now();
    let sub = client.watch().subscribe(&root, &WatchSpec::default())?;
    let sparkd_setup_s = t.elapsed().as_secs_f64();
    let sparkd_kib = status_kib(d.proc.pid(), "VmRSS").saturating_sub(before);
    let wm_before = status_kib(wm.proc.pid(), "VmRSS");
    let t = Instant::now();
    wmc.call(json!(["watch", root]))?;
    // A query syncs with the crawl (a cookie file): it answers once the whole tree is known.
    wmc.call(json!(["query", root, {"expression": ["name", "none-such"], "fields": ["name"], "sync_timeout": 600000}]))?;
    let watchman_setup_s = t.elapsed().as_secs_f64();
    let wm_kib = status_kib(wm.proc.pid(), "VmRSS").saturating_sub(wm_before);

    let (sparkd_lat_us, watchman_lat_us) =
        latencies(&client, sub.subscription, &wm, &root, samples)?;
    Ok(Ok(WatchResult {
        files,
        sparkd_lat_us,
        watchman_lat_us,
        sparkd_bytes_per_file: sparkd_kib as f64 * 1024.0 / files as f64,
        watchman_bytes_per_file: wm_kib as f64 * 1024.0 / files as f64,
        sparkd_setup_s,
        watchman_setup_s,
        watchman_version,
    }))
}

/// Writes `samples` files one at a time; both watchers are subscribed, each reader thread stamps when it
/// hears of a file, the writer waits for both before the next write.
fn latencies(
    client: &Client,
    sub: u32,
    wm: &Watchman,
    root: &Path,
    samples: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut wmc = wm.connect()?;
    wmc.call(json!(["subscribe", root, "bench", {
        "expression": ["allof", ["type", "f"], ["dirname", "lat"]], "fields": ["name"], "settle": 20}]))?;
    std::fs::create_dir_all(root.join("lat"))?;
    let (tx, rx) = mpsc::channel::<(&'static str, String, Instant)>();
    let wtx = tx.clone();
    let wm_thread = std::thread::spawn(move || -> Result<()> {
        loop {
            let v = wmc.read()?;
            for f in v["files"].as_array().into_iter().flatten() {
                if let Some(n) = f.as_str() {
                    if wtx
                        .send(("watchman", n.to_string(), Instant::now()))
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
    });
    let mut sp = Vec::new();
    let mut wmv = Vec::new();
    // Let both settle after the directory appeared.
    drain(client, Duration::from_millis(300));
    while rx.try_recv().is_ok() {}
    for i in 0..samples {
        let rel = format!("lat/s{i:05}");
        let t0 = Instant::now();
        std::fs::write(root.join(&rel), b"sample")?;
        let mut seen: HashMap<&'static str, Instant> = HashMap::new();
        let deadline = t0 + Duration::from_secs(5);
        while seen.len() < 2 && Instant::now() < deadline {
            if !seen.contains_key("sparkd")
                && let Some(WatchEvent::Changes(c)) =
                    client.watch().next_event(Duration::from_millis(2))?
                && c.subscription == sub
                && c.changes.iter().any(|c| c.path == rel)
            {
                seen.insert("sparkd", Instant::now());
            }
            while let Ok((who, name, at)) = rx.try_recv() {
                if name == rel {
                    seen.entry(who).or_insert(at);
                }
            }
        }
        if let Some(t) = seen.get("sparkd") {
            sp.push(t.duration_since(t0).as_secs_f64() * 1e6);
        }
        if let Some(t) = seen.get("watchman") {
            wmv.push(t.duration_since(t0).as_secs_f64() * 1e6);
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    drop(rx);
    drop(tx);
    drop(wm_thread);
    if sp.is_empty() || wmv.is_empty() {
        bail!(
            "no latency samples: sparkd {} of {samples}, watchman {} of {samples}",
            sp.len(),
            wmv.len()
        );
    }
    Ok((sp, wmv))
}

fn drain(client: &Client, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        let _ = client.next_event(Duration::from_millis(10));
    }
}
