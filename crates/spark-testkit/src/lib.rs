//! Test support shared by every crate's integration tests: a real `sparkd` child process on a temporary
//! socket and cache directory, stopped by PID when dropped, plus `/proc` readings for leak checks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use spark_client::{Client, ClientOptions};

/// The `sparkd` binary: `$SPARKD_BIN`, else next to the running test's target directory (built by
/// `cargo test --workspace`), else built now.
pub fn sparkd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SPARKD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/sparkd
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("sparkd");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "spark-daemon", "--bin", "sparkd"])
            .status()
            .expect("run cargo build for sparkd");
        assert!(status.success(), "building sparkd failed");
    }
    bin
}

/// A binary next to `sparkd` (e.g. `sparkctl`).
pub fn sibling_bin(name: &str) -> PathBuf {
    sparkd_bin().with_file_name(name)
}

/// A running daemon in its own temporary directory.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub cache_root: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts `sparkd --socket <tmp>/s.sock --cache-root <tmp>/cache --log-level warn <extra…>` and waits
    /// until it answers a ping.
    pub fn start(extra: &[&str]) -> Daemon {
        Self::start_with_env(extra, &[])
    }

    /// As [`Daemon::start`], with extra environment variables for the daemon process.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("sparkd-test")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("s.sock");
        let cache_root = dir.path().join("cache");
        let mut d = Daemon {
            child: None,
            socket,
            cache_root,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn_and_wait();
        d
    }

    /// The command line this daemon runs with (for tests that start a rival).
    pub fn command(&self) -> Command {
        let mut c = Command::new(sparkd_bin());
        c.arg("--socket").arg(&self.socket);
        if !self.extra.iter().any(|a| a == "--memory-only") {
            c.arg("--cache-root").arg(&self.cache_root);
        }
        c.args(["--log-level", "warn"]).args(&self.extra);
        // The developer's own sparkd.toml must not change what a test daemon does.
        c.env("XDG_CONFIG_HOME", self.dir.path());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.stdin(Stdio::null());
        c
    }

    fn spawn_and_wait(&mut self) {
        let child = self.command().spawn().expect("spawn sparkd");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(20));
    }

    /// Waits until a ping succeeds; panics with the exit status if the daemon died.
    pub fn wait_ready(&mut self, limit: Duration) {
        let t = Instant::now();
        loop {
            if let Ok(c) = Client::connect(&self.socket)
                && c.ping().is_ok()
            {
                return;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("sparkd exited during start-up: {st}");
            }
            assert!(
                t.elapsed() < limit,
                "sparkd did not become ready within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect to test daemon")
    }

    pub fn client_with(&self, opts: &ClientOptions) -> Client {
        Client::connect_with(&self.socket, opts).expect("connect to test daemon")
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if t.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same socket and cache directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait();
    }

    /// Starts the daemon again on the same socket and cache directory with different extra flags.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.spawn_and_wait();
    }

    /// Shutdown request, then SIGTERM, then SIGKILL: always by this daemon's PID.
    pub fn stop(&mut self) {
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else {
            return;
        };
        if let Ok(c) = Client::connect(&self.socket) {
            let _ = c.shutdown();
        }
        if self.wait_exit(Duration::from_secs(3)).is_some() {
            return;
        }
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        if self.wait_exit(Duration::from_secs(3)).is_none() {
            self.kill();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of a process.
pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` until it returns true or `limit` passes; returns the last result.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
