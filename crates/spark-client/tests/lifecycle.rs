//! The engine lifecycle against real daemons: configuration, try_connect, auto-spawn (including a 16-process
//! race), reconnect after a daemon crash, and the daemon's own idle and sponsor exits.
//!
//! Some tests re-run this test binary as child processes (`child_entry`, selected by the
//! `SPARK_LIFECYCLE_CHILD` variable) so that separate processes really race or sponsor.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spark_client::{
    Client, DaemonConfig, DaemonConnection, ShaderKey, SpawnError, connect_or_spawn,
};
use spark_testkit::{Daemon, eventually, sparkd_bin};

const CHILD_ENV: &str = "SPARK_LIFECYCLE_CHILD";
const SOCKET_ENV: &str = "SPARK_LIFECYCLE_SOCKET";
const GO_ENV: &str = "SPARK_LIFECYCLE_GO";

/// Generous: the machine is shared and a debug daemon under load can take seconds to start.
const SLOW: Duration = Duration::from_secs(30);

fn process_alive(pid: u32) -> bool {
    // A zombie still answers kill(0); read its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// A config that auto-spawns a memory-only daemon on `socket`; the daemon's idle timeout is a safety net
/// that ends it even if a test fails before shutting it down.
fn spawn_config(socket: &Path) -> DaemonConfig {
    DaemonConfig {
        auto_spawn: true,
        daemon_bin: sparkd_bin(),
        daemon_args: [
            "--memory-only",
            "--idle-timeout",
            "60",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(OsString::from)
        .collect(),
        spawn_timeout: SLOW,
        ..DaemonConfig::for_socket(socket)
    }
}

/// Shuts the daemon at `socket` down and waits until its process is gone.
fn shut_down(socket: &Path) -> u32 {
    let c = Client::connect(socket).expect("daemon to shut down is running");
    let pid = c.hello().daemon_pid;
    c.shutdown().unwrap();
    drop(c);
    reap(pid);
    assert!(
        eventually(SLOW, || !process_alive(pid)),
        "daemon {pid} exited"
    );
    pid
}

/// Reaps `pid` if it is our child (directly, or re-parented to us as subreaper); otherwise a no-op.
fn reap(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
    }
}

#[test]
fn config_defaults_are_off_and_env_vars_are_read() {
    let d = DaemonConfig::from_vars(|_| None);
    assert!(!d.enabled, "disabled by default");
    assert!(!d.auto_spawn, "no auto-spawn by default");
    assert_eq!(d.socket, spark_client::default_socket_path());
    assert_eq!(d.spawn_timeout, Duration::from_secs(2));

    let env: HashMap<&str, &str> = [
        ("SPARK_DAEMON_ENABLED", "true"),
        ("SPARK_DAEMON_SOCKET", "/tmp/x/s.sock"),
        ("SPARK_DAEMON_AUTO_SPAWN", "ON"),
        ("SPARK_DAEMON_BIN", "/opt/spark/sparkd"),
    ]
    .into();
    let c = DaemonConfig::from_vars(|k| env.get(k).map(OsString::from));
    assert!(c.enabled && c.auto_spawn);
    assert_eq!(c.socket, PathBuf::from("/tmp/x/s.sock"));
    assert_eq!(c.daemon_bin, PathBuf::from("/opt/spark/sparkd"));

    // Unparseable values keep the defaults rather than guessing.
    let c = DaemonConfig::from_vars(|k| (k == "SPARK_DAEMON_ENABLED").then(|| "maybe".into()));
    assert!(!c.enabled);
    let c = DaemonConfig::from_vars(|k| (k == "SPARK_DAEMON_ENABLED").then(|| "0".into()));
    assert!(!c.enabled);
}

#[test]
fn disabled_is_a_no_op_even_with_a_daemon_running() {
    let d = Daemon::start(&["--memory-only"]);
    let before = d.client().stats().unwrap().total_connections;
    let conn = DaemonConnection::new();
    let cfg = DaemonConfig {
        enabled: false,
        ..DaemonConfig::for_socket(&d.socket)
    };
    assert!(!conn.init(cfg));
    assert!(conn.is_initialised() && !conn.is_enabled() && !conn.is_connected());
    let err = conn.call(|c| c.ping()).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert_eq!(conn.call_or_miss(|c| c.ping()), None);
    assert_eq!(
        d.client().stats().unwrap().total_connections,
        before + 1,
        "only our stats client connected: the disabled connection never dialled"
    );
}

#[test]
fn missing_socket_is_a_quiet_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("absent.sock");
    assert!(spark_client::try_connect(&socket, &Default::default()).is_none());
    let conn = DaemonConnection::new();
    assert!(!conn.init(DaemonConfig::for_socket(&socket)));
    assert!(conn.is_enabled() && !conn.is_connected());
    for _ in 0..100 {
        assert!(
            conn.call(|c| c.shader().get(&ShaderKey {
                source_hash: 1,
                target: 0,
                stage: 0
            }))
            .is_err()
        );
    }
    assert!(matches!(
        connect_or_spawn(&DaemonConfig::for_socket(&socket)),
        Err(SpawnError::NotRunning(_))
    ));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "nothing created without auto-spawn: {left:?}"
    );
}

#[test]
fn attaches_to_a_running_daemon_and_init_shutdown_are_idempotent() {
    let d = Daemon::start(&["--memory-only"]);
    let other = Daemon::start(&["--memory-only"]);
    let conn = DaemonConnection::new();
    assert!(conn.init(DaemonConfig::for_socket(&d.socket)));
    let pid = conn.call(|c| Ok(c.hello().daemon_pid)).unwrap();
    assert_eq!(pid, d.pid());
    // A second init is a no-op: still the first daemon.
    assert!(conn.init(DaemonConfig::for_socket(&other.socket)));
    assert_eq!(conn.call(|c| Ok(c.hello().daemon_pid)).unwrap(), d.pid());
    conn.call(|c| c.ping()).unwrap();

    conn.shutdown();
    conn.shutdown();
    assert!(!conn.is_initialised() && !conn.is_connected());
    assert!(conn.call(|c| c.ping()).unwrap_err().is_unavailable());
    // Initialising again after a shutdown works, with the new configuration.
    assert!(conn.init(DaemonConfig::for_socket(&other.socket)));
    assert_eq!(
        conn.call(|c| Ok(c.hello().daemon_pid)).unwrap(),
        other.pid()
    );
    conn.shutdown();

    // Shutdown without init is fine too, and so is the global instance.
    DaemonConnection::new().shutdown();
    let g = DaemonConnection::global();
    assert!(std::sync::Arc::ptr_eq(&g, &DaemonConnection::global()));
}

#[test]
fn auto_spawn_starts_a_detached_daemon_and_logs_next_to_the_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("run/spark/s.sock");
    let conn = DaemonConnection::new();
    assert!(
        conn.init(spawn_config(&socket)),
        "auto-spawned and connected"
    );
    let pid = conn.call(|c| Ok(c.hello().daemon_pid)).unwrap();
    assert_ne!(pid, std::process::id());
    // Its own session: ^C or a closed terminal in ours does not reach it.
    let sid = |p: u32| -> Option<String> {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        s.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(3)
            .map(str::to_string)
    };
    let own_pgid = rustix::process::getpgrp()
        .as_raw_nonzero()
        .get()
        .to_string();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let pgid = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    assert_ne!(pgid, own_pgid, "daemon is in its own process group");
    let have_setsid = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("setsid").exists());
    if have_setsid {
        assert_ne!(
            sid(pid),
            sid(std::process::id()),
            "daemon runs in its own session"
        );
    } else {
        eprintln!(
            "SKIP (partly): no `setsid` program, so only the process-group fallback is checked"
        );
    }
    let dir_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(socket.parent().unwrap())
            .unwrap()
            .permissions(),
    );
    assert_eq!(dir_mode & 0o777, 0o700, "socket directory created private");
    assert!(
        tmp.path().join("run/spark/s.sock.log").exists(),
        "daemon output goes to <socket>.log"
    );
    conn.call(|c| {
        c.shader().put(
            &ShaderKey {
                source_hash: 7,
                target: 1,
                stage: 2,
            },
            b"x",
        )
    })
    .unwrap();
    conn.shutdown();
    assert_eq!(shut_down(&socket), pid);
}

#[test]
fn auto_spawn_with_a_missing_binary_fails_fast_and_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("s.sock");
    let cfg = DaemonConfig {
        daemon_bin: tmp.path().join("no-such-sparkd"),
        spawn_timeout: Duration::from_secs(120),
        ..spawn_config(&socket)
    };
    let t = Instant::now();
    assert!(matches!(
        connect_or_spawn(&cfg),
        Err(SpawnError::MissingBinary(_))
    ));
    let conn = DaemonConnection::new();
    assert!(!conn.init(cfg.clone()));
    assert!(conn.call_or_miss(|c| c.ping()).is_none());
    // A name that is on no PATH entry is missing too.
    let bare = DaemonConfig {
        daemon_bin: "sparkd-definitely-not-installed".into(),
        ..cfg
    };
    assert!(matches!(
        connect_or_spawn(&bare),
        Err(SpawnError::MissingBinary(_))
    ));
    // Had anything waited for the spawn timeout this would take minutes; 10x margin below it.
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "took {:?}",
        t.elapsed()
    );
    assert!(!socket.exists());
}

/// Entry point for child processes of the multi-process tests; a no-op in a normal run.
#[test]
fn child_entry() {
    let Some(role) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let socket = PathBuf::from(std::env::var_os(SOCKET_ENV).expect("socket for child"));
    match role.to_str().unwrap() {
        "race" => {
            let go = PathBuf::from(std::env::var_os(GO_ENV).unwrap());
            while !go.exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let conn = DaemonConnection::new();
            assert!(conn.init(spawn_config(&socket)), "child connected");
            let pid = conn.call(|c| Ok(c.hello().daemon_pid)).unwrap();
            conn.call(|c| c.ping()).unwrap();
            println!("DAEMON_PID={pid}");
        }
        "sponsor" => {
            let mut cfg = DaemonConfig::for_socket(&socket);
            cfg.client.sponsor = true;
            let conn = DaemonConnection::new();
            assert!(conn.init(cfg));
            println!("READY");
            // Stay alive (and connected) until killed.
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            std::thread::sleep(Duration::from_secs(3600));
        }
        other => panic!("unknown child role {other}"),
    }
}

fn child(role: &str, socket: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env(SOCKET_ENV, socket);
    c
}

#[test]
fn sixteen_processes_auto_spawning_at_once_end_with_one_daemon() {
    // Orphaned daemons (their spawner exits first) are re-parented to us, so we can reap them.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("race.sock");
    let go = tmp.path().join("go");
    let children: Vec<_> = (0..16)
        .map(|_| {
            child("race", &socket)
                .env(GO_ENV, &go)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::fs::write(&go, b"").unwrap();
    let mut pids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let pid: u32 = stdout
            .lines()
            .find_map(|l| l.split_once("DAEMON_PID=").map(|(_, pid)| pid.trim()))
            .unwrap_or_else(|| panic!("no DAEMON_PID in {stdout}"))
            .parse()
            .unwrap();
        pids.push(pid);
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "all 16 connected to one daemon: {pids:?}");
    // And only one sparkd for this socket ever kept running.
    let sock = socket.to_string_lossy().into_owned();
    let live: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&sock) && process_alive(p))
        })
        .collect();
    assert_eq!(live, pids, "exactly one live daemon process for the socket");
    assert_eq!(shut_down(&socket), pids[0]);
}

#[test]
fn losing_daemons_of_a_direct_start_race_exit_cleanly_with_status_3() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("s.sock");
    let mut kids: Vec<_> = (0..8)
        .map(|_| {
            Command::new(sparkd_bin())
                .arg("--socket")
                .arg(&socket)
                .args(["--memory-only", "--log-level", "warn"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Every loser exits on its own; the winner keeps serving.
    let mut losers = 0;
    let t = Instant::now();
    while losers < 7 {
        assert!(t.elapsed() < SLOW * 2, "losers did not exit");
        for k in kids.iter_mut() {
            if let Ok(Some(st)) = k.try_wait() {
                assert_eq!(st.code(), Some(3), "a losing daemon exits with status 3");
                let mut msg = String::new();
                BufReader::new(k.stderr.take().unwrap())
                    .read_line(&mut msg)
                    .unwrap();
                assert!(msg.contains("already serves"), "{msg}");
                losers += 1;
            }
        }
        kids.retain_mut(|k| k.stderr.is_some());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(kids.len(), 1);
    assert!(eventually(SLOW, || Client::connect(&socket).is_ok()));
    assert_eq!(
        Client::connect(&socket).unwrap().hello().daemon_pid,
        kids[0].id()
    );
    Client::connect(&socket).unwrap().shutdown().unwrap();
    assert!(kids[0].wait().unwrap().success());
}

#[test]
fn daemon_killed_mid_session_degrades_to_misses_then_reconnects() {
    let mut d = Daemon::start(&["--memory-only"]);
    let key = ShaderKey {
        source_hash: 0xfeed,
        target: 1,
        stage: 1,
    };

    // Restarted between two calls: the next call reconnects by itself (one retry) and succeeds.
    let conn = DaemonConnection::new();
    assert!(conn.init(DaemonConfig::for_socket(&d.socket)));
    conn.call(|c| c.shader().put(&key, b"v1")).unwrap();
    let old_pid = d.pid();
    d.kill();
    d.restart();
    assert!(
        conn.call(|c| c.shader().put(&key, b"v2")).unwrap(),
        "first call after the restart works"
    );
    assert_eq!(conn.call(|c| Ok(c.hello().daemon_pid)).unwrap(), d.pid());
    assert_ne!(d.pid(), old_pid);

    // Dead: calls are misses, and with a long retry interval nothing keeps dialling.
    let patient = DaemonConnection::new();
    assert!(patient.init(DaemonConfig {
        retry_interval: Duration::from_secs(3600),
        ..DaemonConfig::for_socket(&d.socket)
    }));
    let eager = DaemonConnection::new();
    assert!(eager.init(DaemonConfig {
        retry_interval: Duration::from_millis(20),
        ..DaemonConfig::for_socket(&d.socket)
    }));
    d.kill();
    for _ in 0..200 {
        assert_eq!(patient.call_or_miss(|c| c.shader().get(&key)), None);
        assert!(
            eager
                .call(|c| c.shader().get(&key))
                .unwrap_err()
                .is_unavailable()
        );
    }
    assert!(!patient.is_connected() && !eager.is_connected());
    d.restart();
    let before = d.client().stats().unwrap().total_connections;
    for _ in 0..50 {
        assert_eq!(
            patient.call_or_miss(|c| c.ping()),
            None,
            "no attempt before the retry interval"
        );
    }
    assert_eq!(
        d.client().stats().unwrap().total_connections,
        before + 1,
        "only our stats client connected: no retry storm"
    );
    // The eager one reconnects once its (short) interval has passed.
    assert!(eventually(SLOW, || eager.call(|c| c.ping()).is_ok()));
    assert_eq!(
        eager.call(|c| c.shader().get(&key)).unwrap(),
        None,
        "a fresh memory-only daemon"
    );
}

#[test]
fn idle_timeout_exits_only_once_no_client_is_left() {
    // The harness's readiness ping disconnects just before `d.client()`; 2 s leaves that gap a wide margin.
    let mut d = Daemon::start(&["--memory-only", "--idle-timeout", "2"]);
    let c = d.client();
    // Connected clients keep it alive however long they are quiet.
    std::thread::sleep(Duration::from_millis(3500));
    c.ping().expect("still serving while a client is connected");
    drop(c);
    let st = d.wait_exit(SLOW).expect("exits after the idle timeout");
    assert!(st.success(), "idle exit is clean: {st}");
    assert!(!d.socket.exists(), "socket removed");
}

#[test]
fn exit_with_sponsors_waits_for_every_sponsor_process() {
    let mut d = Daemon::start(&["--memory-only", "--exit-with-sponsors"]);
    // Sponsor 1: a plain process registered with RegisterSponsor.
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    assert_eq!(d.client().register_sponsor(sleeper.id()).unwrap(), 1);
    // Sponsor 2: an engine process that registers itself through the Hello flag.
    let mut engine = child("sponsor", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(engine.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    while !line.contains("READY") {
        line.clear();
        assert_ne!(
            BufReader::new(engine.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap(),
            0,
            "child died"
        );
    }
    assert!(
        eventually(SLOW, || d.client().register_sponsor(sleeper.id()).unwrap()
            == 2),
        "both sponsors registered"
    );

    sleeper.kill().unwrap();
    // Reaped, or it would stay a zombie that still counts as alive.
    sleeper.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    d.client().ping().expect("one sponsor left: still running");

    engine.kill().unwrap();
    engine.wait().unwrap();
    let st = d.wait_exit(SLOW).expect("exits once every sponsor is gone");
    assert!(st.success(), "{st}");
}
