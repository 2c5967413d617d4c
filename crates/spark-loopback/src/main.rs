//! The loopback subset a Windows build must pass, run against a real `sparkd` by `scripts/test.d/windows.sh`
//! under Wine (it runs natively too: `cargo run -p spark-loopback -- SPARKD SCRATCH_DIR`).
//!
//! Starts and stops its own daemons on a private pipe (`\\.\pipe\spark-check-<pid>`, or a socket under
//! SCRATCH_DIR on Unix) and checks: start, ping, version, stats, shader and asset put/get/invalidate, a
//! 40 MiB streamed blob, pipelining, 16 concurrent clients, 64 simultaneous connects (more than the pending
//! pipe instances), a second daemon refused, restart and
//! persistence, idle timeout, sponsor exit, and auto-spawn. Prints one `PASS`/`FAIL` line per check and
//! exits 1 if any failed. Waits are bounded (a daemon that never comes up fails the check, it never hangs),
//! never measured.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use spark_client::spark_proto::cache::{Get, GetResponse, GetStatus};
use spark_client::spark_proto::{Message, service};
use spark_client::{AssetKey, Client, ClientOptions, DaemonConfig, ShaderKey, connect_or_spawn};

type Check = Result<String, String>;

/// Long enough for a cold Wine start on a loaded 2-core machine; only ever a bound, never a measurement.
const BOUND: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--sponsor" {
        // Child mode for the sponsor check: register, stay a moment, exit.
        std::process::exit(sponsor_child(Path::new(&args[2])));
    }
    if args.len() != 3 {
        eprintln!("usage: spark-loopback-check SPARKD SCRATCH_DIR");
        std::process::exit(64);
    }
    let env = Env {
        sparkd: PathBuf::from(&args[1]),
        scratch: PathBuf::from(&args[2]),
    };
    std::fs::create_dir_all(&env.scratch).expect("scratch dir");
    let mut failed = 0;
    let mut run = |name: &str, r: Check| match r {
        Ok(detail) => println!("PASS {name}: {detail}"),
        Err(why) => {
            failed += 1;
            println!("FAIL {name}: {why}");
        }
    };
    let main_pipe = env.endpoint("main");
    let cache = env.scratch.join("cache-main");
    match env.start(&main_pipe, &cache, &[]) {
        Ok(mut d) => {
            run(
                "daemon start",
                Ok(format!("pid {} on {}", d.id(), main_pipe.display())),
            );
            run("ping version stats", ping_version_stats(&main_pipe));
            run("shader put/get/miss", shader(&main_pipe));
            run("asset put/get/invalidate", asset(&main_pipe));
            run("40 MiB streamed blob", big_blob(&main_pipe));
            run("pipelining", pipelining(&main_pipe));
            run("16 concurrent clients", concurrent(&main_pipe));
            run("64 simultaneous connects", connect_burst(&main_pipe));
            run("second daemon refused", env.second_refused(&main_pipe));
            run(
                "restart and persistence",
                env.restart(&main_pipe, &cache, &mut d),
            );
            stop(&main_pipe, d);
        }
        Err(e) => run("daemon start", Err(e)),
    }
    run("idle timeout", env.idle_timeout());
    run("sponsor exit", env.sponsor_exit());
    run("auto-spawn", env.auto_spawn());
    if failed > 0 {
        println!("spark-loopback-check: {failed} check(s) FAILED");
        std::process::exit(1);
    }
    println!("spark-loopback-check: every check passed");
}

struct Env {
    sparkd: PathBuf,
    scratch: PathBuf,
}

impl Env {
    /// A pipe (Windows) or socket (Unix) no other run uses.
    fn endpoint(&self, tag: &str) -> PathBuf {
        if cfg!(windows) {
            PathBuf::from(format!(
                r"\\.\pipe\spark-check-{}-{tag}",
                std::process::id()
            ))
        } else {
            self.scratch.join(format!("{tag}.sock"))
        }
    }

    fn command(&self, pipe: &Path, cache: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(&self.sparkd);
        c.arg("--socket").arg(pipe).arg("--cache-root").arg(cache);
        c.args(extra);
        c
    }

    /// Starts a daemon and waits (bounded) until it answers.
    fn start(&self, pipe: &Path, cache: &Path, extra: &[&str]) -> Result<Child, String> {
        let log = self.scratch.join(format!("sparkd-{}.log", pipe_tag(pipe)));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut child = self
            .command(pipe, cache, extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.sparkd.display()))?;
        let deadline = Instant::now() + BOUND;
        loop {
            if Client::connect(pipe).is_ok() {
                return Ok(child);
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "sparkd exited at start ({st}); log {}",
                    log.display()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "sparkd did not answer within {BOUND:?}; log {}",
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn second_refused(&self, pipe: &Path) -> Check {
        let out = self
            .command(pipe, &self.scratch.join("cache-second"), &[])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(3) && err.contains("another sparkd already serves") {
            Ok(format!("exit 3: {}", err.trim()))
        } else {
            Err(format!(
                "expected exit 3 'another sparkd…', got {} {err:?}",
                out.status
            ))
        }
    }

    fn restart(&self, pipe: &Path, cache: &Path, d: &mut Child) -> Check {
        let key = AssetKey {
            path: "persist/me.bin".into(),
            platform: 1,
        };
        let data = pattern(3 << 20, 9);
        let c = connect(pipe)?;
        expect(c.asset().put(&key, &data).map_err(s)?, "put stored")?;
        c.shutdown().map_err(s)?;
        drop(c);
        let st = wait_exit(d)?;
        if !st.success() {
            return Err(format!("daemon exited with {st} on Shutdown"));
        }
        if Client::connect(pipe).is_ok() {
            return Err("a client still connects after the daemon exited".into());
        }
        *d = self.start(pipe, cache, &[])?;
        let got = connect(pipe)?.asset().get(&key).map_err(s)?;
        match got {
            Some(b) if b[..] == data[..] => Ok("3 MiB blob read back after restart".into()),
            Some(b) => Err(format!("blob changed across restart ({} bytes)", b.len())),
            None => Err("blob lost across restart".into()),
        }
    }

    fn idle_timeout(&self) -> Check {
        let pipe = self.endpoint("idle");
        let mut d = self.start(
            &pipe,
            &self.scratch.join("cache-idle"),
            &["--idle-timeout", "1"],
        )?;
        connect(&pipe)?.ping().map_err(s)?;
        let st = wait_exit(&mut d)?;
        Ok(format!(
            "exited by itself after its last client left ({st})"
        ))
    }

    fn sponsor_exit(&self) -> Check {
        let pipe = self.endpoint("sponsor");
        let mut d = self.start(
            &pipe,
            &self.scratch.join("cache-sponsor"),
            &["--exit-with-sponsors"],
        )?;
        let me = std::env::current_exe().map_err(s)?;
        let st = Command::new(me)
            .arg("--sponsor")
            .arg(&pipe)
            .status()
            .map_err(s)?;
        if !st.success() {
            let _ = d.kill();
            return Err(format!("sponsor child failed: {st}"));
        }
        let st = wait_exit(&mut d)?;
        Ok(format!("exited once its sponsor process had ({st})"))
    }

    fn auto_spawn(&self) -> Check {
        let pipe = self.endpoint("spawn");
        let cache = self.scratch.join("cache-spawn");
        let mut cfg = DaemonConfig::for_socket(&pipe);
        cfg.auto_spawn = true;
        cfg.daemon_bin = self.sparkd.clone();
        cfg.daemon_args = vec!["--cache-root".into(), cache.into_os_string()];
        cfg.spawn_timeout = BOUND;
        let c = connect_or_spawn(&cfg).map_err(|e| format!("connect_or_spawn: {e}"))?;
        let key = ShaderKey {
            source_hash: 77,
            target: 1,
            stage: 2,
        };
        c.shader().put(&key, b"spawned").map_err(s)?;
        let got = c.shader().get(&key).map_err(s)?;
        let stats = c.stats().map_err(s)?;
        c.shutdown().map_err(s)?;
        expect(
            got.as_deref() == Some(&b"spawned"[..]),
            "round trip through the spawned daemon",
        )?;
        Ok(format!(
            "spawned and served (uptime {} s)",
            stats.uptime_secs
        ))
    }
}

fn sponsor_child(pipe: &Path) -> i32 {
    let opts = ClientOptions {
        sponsor: true,
        ..ClientOptions::default()
    };
    match Client::connect_with(pipe, &opts) {
        Ok(c) => {
            let _ = c.ping();
            0
        }
        Err(e) => {
            eprintln!("sponsor child: {e}");
            1
        }
    }
}

fn ping_version_stats(pipe: &Path) -> Check {
    let c = connect(pipe)?;
    c.ping().map_err(s)?;
    let v = c.version().map_err(s)?;
    let st = c.stats().map_err(s)?;
    Ok(format!(
        "version {} protocol {}, {} connection(s)",
        v.daemon_version, v.protocol_version, st.current_connections
    ))
}

fn shader(pipe: &Path) -> Check {
    let c = connect(pipe)?;
    let sh = c.shader();
    let key = ShaderKey {
        source_hash: 0xfeed,
        target: 2,
        stage: 1,
    };
    expect(sh.get(&key).map_err(s)?.is_none(), "miss before put")?;
    expect(sh.put(&key, b"spirv bytes").map_err(s)?, "put stored")?;
    expect(
        sh.get(&key).map_err(s)?.as_deref() == Some(&b"spirv bytes"[..]),
        "hit equals put",
    )?;
    expect(
        sh.exists(&key).map_err(s)? == Some(11),
        "exists reports the size",
    )?;
    let st = sh.stats().map_err(s)?;
    expect(
        st.hits >= 1 && st.misses >= 1,
        "stats count the hit and the miss",
    )?;
    Ok(format!("hits {} misses {}", st.hits, st.misses))
}

fn asset(pipe: &Path) -> Check {
    let c = connect(pipe)?;
    let a = c.asset();
    let k1 = AssetKey {
        path: "tex/rock.png".into(),
        platform: 1,
    };
    let k2 = AssetKey {
        path: "tex/rock.png".into(),
        platform: 2,
    };
    a.put(&k1, b"pc").map_err(s)?;
    a.put(&k2, b"console").map_err(s)?;
    expect(
        a.get(&k2).map_err(s)?.as_deref() == Some(&b"console"[..]),
        "variant 2 read",
    )?;
    let dropped = a.invalidate("tex/rock.png").map_err(s)?;
    expect(
        dropped == 2,
        &format!("invalidate dropped 2 variants (got {dropped})"),
    )?;
    expect(a.get(&k1).map_err(s)?.is_none(), "gone after invalidate")?;
    Ok("2 variants put, read, invalidated".into())
}

fn big_blob(pipe: &Path) -> Check {
    let c = connect(pipe)?;
    let key = AssetKey {
        path: "big/40mib.bin".into(),
        platform: 0,
    };
    let data = pattern(40 << 20, 3);
    expect(c.asset().put(&key, &data).map_err(s)?, "40 MiB put stored")?;
    let got = c
        .asset()
        .get(&key)
        .map_err(s)?
        .ok_or("40 MiB blob missing")?;
    expect(
        got.len() == data.len() && got[..] == data[..],
        "40 MiB read back byte for byte",
    )?;
    Ok("40 MiB streamed up and down, identical".into())
}

fn pipelining(pipe: &Path) -> Check {
    let c = connect(pipe)?;
    let sh = c.shader();
    for i in 0..50u64 {
        sh.put(
            &ShaderKey {
                source_hash: 1000 + i,
                target: 0,
                stage: 0,
            },
            &i.to_le_bytes(),
        )
        .map_err(s)?;
    }
    let frames: Vec<_> = (0..100u64)
        .map(|i| {
            Get {
                key: ShaderKey {
                    source_hash: 1000 + i,
                    target: 0,
                    stage: 0,
                },
            }
            .to_frame(service::SHADER)
        })
        .collect::<Result<_, _>>()
        .map_err(s)?;
    let replies = c.pipeline(&frames).map_err(s)?;
    for (i, r) in replies.into_iter().enumerate() {
        let f = r.map_err(s)?;
        let g = GetResponse::decode(&f.payload).map_err(s)?;
        match (i < 50, g.status) {
            (true, GetStatus::Inline(b)) if b[..] == (i as u64).to_le_bytes() => {}
            (false, GetStatus::Miss) => {}
            (_, other) => return Err(format!("reply {i} out of order or wrong: {other:?}")),
        }
    }
    Ok("100 gets in one batch, replies in order".into())
}

fn concurrent(pipe: &Path) -> Check {
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let pipe = pipe.to_path_buf();
            std::thread::spawn(move || -> Result<(), String> {
                let c = connect(&pipe)?;
                for i in 0..40u64 {
                    let key = ShaderKey {
                        source_hash: (t << 32) | i,
                        target: 3,
                        stage: 3,
                    };
                    let v = pattern(1000 + i as usize * 37, (t * 100 + i) as u8);
                    c.shader().put(&key, &v).map_err(s)?;
                    if c.shader().get(&key).map_err(s)?.as_deref() != Some(&v[..]) {
                        return Err(format!("client {t} key {i}: wrong bytes"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| "a client thread panicked".to_string())??;
    }
    Ok("16 clients x 40 put/get, all consistent".into())
}

/// More clients than the daemon keeps pipe instances pending (8) open at the same instant: the ones that
/// find every instance busy must retry (ERROR_PIPE_BUSY) rather than fail.
fn connect_burst(pipe: &Path) -> Check {
    const N: usize = 64;
    let gate = std::sync::Arc::new(std::sync::Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let pipe = pipe.to_path_buf();
            let gate = gate.clone();
            std::thread::spawn(move || -> Result<Client, String> {
                gate.wait();
                let c = connect(&pipe)?;
                c.ping().map_err(s)?;
                Ok(c)
            })
        })
        .collect();
    let mut held = Vec::new();
    for t in threads {
        held.push(
            t.join()
                .map_err(|_| "a connecting thread panicked".to_string())??,
        );
    }
    let st = held[0].stats().map_err(s)?;
    expect(
        st.current_connections as usize >= N,
        &format!(
            "{N} connections open at once (daemon sees {})",
            st.current_connections
        ),
    )?;
    Ok(format!("{N} clients connected at once and all answered"))
}

fn connect(pipe: &Path) -> Result<Client, String> {
    Client::connect(pipe).map_err(|e| format!("connect {}: {e}", pipe.display()))
}

fn stop(pipe: &Path, mut d: Child) {
    if let Ok(c) = Client::connect(pipe) {
        let _ = c.shutdown();
    }
    if wait_exit(&mut d).is_err() {
        let _ = d.kill();
        let _ = d.wait();
    }
}

fn wait_exit(d: &mut Child) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(st) = d.try_wait().map_err(s)? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = d.kill();
            return Err(format!("daemon did not exit within {BOUND:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pipe_tag(p: &Path) -> String {
    p.to_string_lossy()
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or("x")
        .to_string()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn expect(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("expected: {what}"))
    }
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}
