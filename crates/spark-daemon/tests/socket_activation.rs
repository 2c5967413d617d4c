//! Socket activation: sparkd serves a listening socket passed the way systemd passes one (`LISTEN_FDS`,
//! `LISTEN_PID`, fd 3), both through Debian's real `systemd-socket-activate` and through the same convention
//! set up by hand, and leaves the passed socket file in place when it exits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spark_client::Client;
use spark_proto::cache::ShaderKey;
use spark_testkit::sparkd_bin;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str, pkg: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: {tool} missing: install {pkg}");
    }
    ok
}

/// Waits (generously: this is a hang guard, not a timing check) until `f` holds.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn daemon_args(dir: &Path) -> Vec<String> {
    vec![
        "--cache-root".into(),
        dir.join("cache").display().to_string(),
        "--log-level".into(),
        "warn".into(),
    ]
}

/// The checks every activated daemon must pass: it answers on the passed socket, stores and returns a blob,
/// a hand-started rival on the same path refuses to start, and after shutdown the socket file is still there.
fn check_activated(child: &mut Child, sock: &Path, dir: &Path) {
    wait_for("the passed socket to accept a ping", || {
        Client::connect(sock).and_then(|c| c.ping()).is_ok()
    });
    let c = Client::connect(sock).unwrap();
    let shader = c.shader();
    let key = ShaderKey {
        source_hash: 0xfd3,
        target: 1,
        stage: 2,
    };
    shader.put(&key, b"hello from fd 3").unwrap();
    assert_eq!(
        shader.get(&key).unwrap().as_deref(),
        Some(&b"hello from fd 3"[..])
    );
    let rival = Command::new(sparkd_bin())
        .arg("--socket")
        .arg(sock)
        .args(daemon_args(dir))
        .env("XDG_CONFIG_HOME", dir)
        .output()
        .unwrap();
    assert_eq!(
        rival.status.code(),
        Some(3),
        "a second daemon must see the lock: {}",
        String::from_utf8_lossy(&rival.stderr)
    );
    c.shutdown().unwrap();
    drop(c);
    wait_for("sparkd to exit", || child.try_wait().unwrap().is_some());
    assert!(child.try_wait().unwrap().unwrap().success());
    assert!(
        sock.exists(),
        "the passed socket belongs to the service manager and must stay"
    );
}

#[test]
fn systemd_socket_activate_starts_sparkd_on_its_socket() {
    if !have("systemd-socket-activate", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("act.sock");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(&sock);
    cmd.arg(format!("--setenv=XDG_CONFIG_HOME={}", dir.path().display()));
    cmd.arg(sparkd_bin()).args(daemon_args(dir.path()));
    cmd.stdin(Stdio::null());
    let mut child = Killed(cmd.spawn().expect("spawn systemd-socket-activate"));
    wait_for("systemd-socket-activate to listen", || sock.exists());
    check_activated(&mut child.0, &sock, dir.path());
}

/// The convention by hand (no systemd needed): a listening socket on fd 3, LISTEN_FDS=1, LISTEN_PID = the
/// daemon's pid (python binds, then execs sparkd in the same process).
fn python_activate(dir: &Path, sock: &Path, fd3: &str) -> Command {
    let script = format!(
        r#"
import os, socket, sys
{fd3}
os.dup2(f, 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"#
    );
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(script)
        .arg(sparkd_bin())
        .args(daemon_args(dir));
    c.env("XDG_CONFIG_HOME", dir)
        .env("SOCK", sock)
        .stdin(Stdio::null());
    c
}

#[test]
fn the_listen_fds_convention_by_hand() {
    if !have("python3", "python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock: PathBuf = dir.path().join("hand.sock");
    let fd3 = "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ns.bind(os.environ['SOCK'])\ns.listen(16)\nf = s.fileno()";
    let mut child = Killed(python_activate(dir.path(), &sock, fd3).spawn().unwrap());
    check_activated(&mut child.0, &sock, dir.path());
}

#[test]
fn a_passed_fd_that_is_not_a_socket_is_a_clear_error() {
    if !have("python3", "python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let fd3 = "f = os.open('/dev/null', os.O_RDONLY)";
    let out = python_activate(dir.path(), &sock, fd3).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a listening Unix stream socket"), "{err}");
}
