//! The processes the bench starts: `sparkd` and `redis-server`, each on a Unix socket in a temporary
//! directory, each stopped by its own PID (never by name).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spark_client::Client;

/// A child process that is stopped by PID when dropped.
pub struct Proc {
    child: Option<Child>,
    what: &'static str,
}

impl Proc {
    pub fn new(child: Child, what: &'static str) -> Self {
        Proc {
            child: Some(child),
            what,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Fails if the process already exited (start-up failure).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(st) = c.try_wait()?
        {
            self.child = None;
            bail!("{} exited during start-up: {st}", self.what);
        }
        Ok(())
    }

    /// Waits up to `limit` for the process to exit by itself.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        let t = Instant::now();
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return true;
            }
            if t.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// SIGTERM to this PID, then SIGKILL to this PID if it does not go within 3 s.
    pub fn stop(&mut self) {
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else {
            return;
        };
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        if !self.wait_exit(Duration::from_secs(3))
            && let Some(mut c) = self.child.take()
        {
            eprintln!(
                "spark-bench: {} (pid {pid}) ignored SIGTERM; killing it",
                self.what
            );
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `sparkd` started by the bench.
pub struct Sparkd {
    pub proc: Proc,
    pub socket: PathBuf,
    /// Hold the socket directory and the fresh cache (if any) until the daemon is gone.
    _dir: tempfile::TempDir,
    _cache: Option<tempfile::TempDir>,
}

#[derive(Clone)]
pub struct SparkdSpec<'a> {
    pub bin: &'a Path,
    /// `None`: a fresh cache in a temporary directory under `scratch`.
    pub cache_root: Option<&'a Path>,
    /// Where fresh caches go. Not /tmp: the cache should sit where a user's `~/.cache` would, and on some
    /// machines /tmp is a different (here: ten times slower to create files in) place than the home disk.
    pub scratch: &'a Path,
    pub memory_budget_mb: u64,
    pub extra_args: &'a [String],
}

impl Sparkd {
    /// Spawns without waiting (the start-up case times the wait itself).
    pub fn spawn(spec: &SparkdSpec<'_>) -> Result<Sparkd> {
        let dir = tempfile::Builder::new().prefix("spark-bench").tempdir()?;
        let socket = dir.path().join("sparkd.sock");
        let cache = match spec.cache_root {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix("sparkd-cache")
                    .tempdir_in(spec.scratch)?,
            ),
        };
        let cache_root = match (&cache, spec.cache_root) {
            (Some(t), _) => t.path().to_path_buf(),
            (None, Some(r)) => r.to_path_buf(),
            (None, None) => unreachable!("one of the two is set"),
        };
        let child = Command::new(spec.bin)
            .arg("--socket")
            .arg(&socket)
            .arg("--cache-root")
            .arg(&cache_root)
            .arg("--memory-budget-mb")
            .arg(spec.memory_budget_mb.to_string())
            // `--durability fast` unless the extra arguments choose (sparkd takes each flag once).
            .args(
                (!spec.extra_args.iter().any(|a| a == "--durability"))
                    .then_some(["--durability", "fast"])
                    .into_iter()
                    .flatten(),
            )
            .args(["--log-level", "warn"])
            .args(spec.extra_args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", spec.bin.display()))?;
        Ok(Sparkd {
            proc: Proc::new(child, "sparkd"),
            socket,
            _dir: dir,
            _cache: cache,
        })
    }

    /// Spawns and waits until a ping succeeds.
    pub fn start(spec: &SparkdSpec<'_>) -> Result<Sparkd> {
        let mut d = Self::spawn(spec)?;
        let t = Instant::now();
        loop {
            if let Ok(c) = Client::connect(&d.socket)
                && c.ping().is_ok()
            {
                return Ok(d);
            }
            d.proc.check_alive()?;
            if t.elapsed() > Duration::from_secs(60) {
                bail!("sparkd did not answer a ping within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn client(&self) -> Result<Client> {
        Client::connect(&self.socket).context("connect to the bench's sparkd")
    }

    /// A Shutdown request first (the daemon's clean path), then the PID-based stop.
    pub fn stop(&mut self) {
        if let Ok(c) = Client::connect(&self.socket) {
            let _ = c.shutdown();
        }
        if !self.proc.wait_exit(Duration::from_secs(3)) {
            self.proc.stop();
        }
    }
}

impl Drop for Sparkd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` started by the bench: Unix socket only (`--port 0`), no persistence.
pub struct Redis {
    pub proc: Proc,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// `extra` comes last, so it overrides the defaults (no persistence).
    pub fn start(bin: &Path, extra: &[String]) -> Result<Redis> {
        let dir = tempfile::Builder::new()
            .prefix("spark-bench-redis")
            .tempdir()?;
        let socket = dir.path().join("redis.sock");
        let child = Command::new(bin)
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .args([
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--protected-mode",
                "yes",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut r = Redis {
            proc: Proc::new(child, "redis-server"),
            socket,
            _dir: dir,
        };
        let t = Instant::now();
        loop {
            if let Ok(mut c) = r.connect()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return Ok(r);
            }
            r.proc.check_alive()?;
            if t.elapsed() > Duration::from_secs(20) {
                bail!("redis-server did not answer PING within 20 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn connect(&self) -> Result<redis::Connection> {
        let url = format!("redis+unix://{}", self.socket.display());
        Ok(redis::Client::open(url)?.get_connection()?)
    }

    pub fn version(&self) -> String {
        let info: Option<String> = self
            .connect()
            .ok()
            .and_then(|mut c| redis::cmd("INFO").arg("server").query(&mut c).ok());
        info.and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("redis_version:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "?".into())
    }
}

pub use spark_testkit::status_kib;

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
