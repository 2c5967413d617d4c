//! The operator's tools end to end against a real daemon: `verify` finds and drops a blob damaged on disk,
//! `trim` evicts down to a size, and `top` (run in a real tmux pane) shows numbers that move with traffic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use spark_client::spark_proto::cache::ShaderKey;
use spark_testkit::Daemon;

fn sparkctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparkctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "sparkctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn key(i: u64) -> ShaderKey {
    ShaderKey {
        source_hash: i,
        target: 1,
        stage: 1,
    }
}

/// Every blob file under `dir` (one file per blob: the daemon runs with `--pack-max-kb 0`).
fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .parent()
                .is_some_and(|d| d.ancestors().any(|a| a.ends_with("blobs")))
            {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn verify_drops_exactly_the_blob_damaged_on_disk() {
    let d = Daemon::start(&["--pack-max-kb", "0"]);
    let c = d.client();
    for i in 0..20 {
        c.shader().put(&key(i), &vec![i as u8; 5000]).unwrap();
    }
    let files = blob_files(&d.cache_root.join("shader"));
    assert_eq!(files.len(), 20, "{files:?}");
    let victim = &files[7];
    let mut bytes = std::fs::read(victim).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x5a;
    std::fs::write(victim, bytes).unwrap();

    let o = sparkctl(&d.socket, &["verify", "shader"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("20 entries checked") && text.contains("1 corrupt and dropped"),
        "{text}"
    );
    // Not a terminal: progress comes as plain lines.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("shader: 20/20 entries checked"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let present = (0..20)
        .filter(|i| c.shader().get(&key(*i)).unwrap().is_some())
        .count();
    assert_eq!(present, 19, "only the damaged entry is gone");

    let v = json(&sparkctl(&d.socket, &["--json", "verify"]));
    let spaces = v["namespaces"].as_array().unwrap();
    assert!(spaces.len() >= 3, "{v}");
    let shader = spaces.iter().find(|n| n["namespace"] == "shader").unwrap();
    assert_eq!(
        (shader["checked"].as_u64(), shader["corrupt"].as_u64()),
        (Some(19), Some(0))
    );
}

#[test]
fn trim_evicts_down_to_the_size_and_refuses_bad_input() {
    let d = Daemon::start(&[]);
    let c = d.client();
    for i in 0..40 {
        c.shader().put(&key(i), &vec![i as u8; 16 << 10]).unwrap();
    }
    let v = json(&sparkctl(
        &d.socket,
        &["--json", "trim", "shader", "--to", "200K"],
    ));
    assert!(v["bytes_before"].as_u64().unwrap() > 600 << 10, "{v}");
    assert!(v["bytes_after"].as_u64().unwrap() <= 200 << 10, "{v}");
    assert!(v["evicted"].as_u64().unwrap() >= 28, "{v}");
    let present = (0..40)
        .filter(|i| c.shader().get(&key(*i)).unwrap().is_some())
        .count();
    assert!(present <= 12, "{present} entries left");
    assert!(
        c.shader().get(&key(39)).unwrap().is_some(),
        "the newest stays"
    );

    let o = sparkctl(&d.socket, &["trim", "shader", "--to", "lots"]);
    assert_eq!(o.status.code(), Some(64));
    let o = sparkctl(&d.socket, &["trim", "textures", "--to", "1M"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no namespace 'textures'") && err.contains("shader"),
        "{err}"
    );
}

/// A private tmux server (its own socket name), killed at the end.
struct Tmux(String);

impl Tmux {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .unwrap()
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The shader row's columns: HIT%, OPS/S, GETS, PUTS.
fn shader_row(pane: &str) -> Option<(String, f64, u64, u64)> {
    let line = pane.lines().find(|l| l.starts_with("shader "))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    Some((
        f[1].to_string(),
        f[2].parse().ok()?,
        f[3].parse().ok()?,
        f[4].parse().ok()?,
    ))
}

fn wait_pane(t: &Tmux, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let p = t.pane();
        if ok(&p) {
            return p;
        }
        // A hang guard, not a timing check.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {what} in the pane:\n{p}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn top_in_tmux_shows_numbers_that_move_with_traffic() {
    let have = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("SKIPPED: tmux missing: install tmux (apt-get install -y tmux)");
        return;
    }
    let d = Daemon::start(&[]);
    let t = Tmux(format!("sparkctl-top-{}", std::process::id()));
    let line = format!(
        "{} --socket {} top --interval-ms 200",
        env!("CARGO_BIN_EXE_sparkctl"),
        d.socket.display()
    );
    let o = t.cmd(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "120",
        "-y",
        "30",
        &line,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = wait_pane(&t, "shader row", |p| shader_row(p).is_some());
    let (_, _, gets0, puts0) = shader_row(&first).unwrap();
    assert!(
        first.contains("NAMESPACE") && first.contains("clients"),
        "{first}"
    );

    // Traffic until top shows it: puts, hits and misses, with a live rate.
    let c = d.client();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.shader().put(&key(i % 64), b"top traffic").unwrap();
                c.shader().get(&key(i % 128)).unwrap();
                i += 1;
            }
        });
        let p = wait_pane(&t, "moving numbers", |p| {
            shader_row(p).is_some_and(|(hit, rate, gets, puts)| {
                gets > gets0 + 100 && puts > puts0 + 100 && rate > 0.0 && hit != "-"
            })
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        p
    });
    let (hit, _, _, _) = shader_row(&seen).unwrap();
    let hit: f64 = hit.parse().unwrap();
    assert!(
        hit > 0.0 && hit < 100.0,
        "puts 64 keys, gets 128: some hit, some miss\n{seen}"
    );
}
