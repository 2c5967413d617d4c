//! `glslangValidator` as a worker subprocess: one process per job, in a private temporary directory, at lower
//! CPU priority, killed when the job's timeout passes. A crash (or a kill from outside) is a failed job; the
//! next job gets a new process, so the pool replaces the worker by construction.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spark_compile::glslang::{PACKAGE, PROGRAM, args, identity_from_version_output, input_name};
use spark_compile::{Compiled, Job, Outcome, Severity};

use super::JobFailure;

/// A `glslangValidator` found at startup.
#[derive(Debug, Clone)]
pub struct Glslang {
    pub program: PathBuf,
    /// `glslangValidator <version>`: part of every key it computes.
    pub identity: String,
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

impl Glslang {
    /// Runs `program --version`; `None` when it cannot run (not installed).
    pub fn detect(program: &Path) -> Option<Glslang> {
        let out = std::process::Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let identity = identity_from_version_output(&String::from_utf8_lossy(&out.stdout))?;
        Some(Glslang {
            program: program.to_path_buf(),
            identity,
        })
    }

    /// What a request for glslang gets when it is absent.
    pub fn missing() -> JobFailure {
        JobFailure::Missing(format!(
            "{PROGRAM} is not installed: install the Debian package {PACKAGE} (or pass --glslang PATH)"
        ))
    }

    pub async fn run(
        &self,
        job: &Job,
        timeout: Duration,
        nice: i32,
    ) -> Result<Outcome, JobFailure> {
        let dir = std::env::temp_dir().join(format!(
            "sparkd-glslang-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.run_in(&dir, job, timeout, nice).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    async fn run_in(
        &self,
        dir: &Path,
        job: &Job,
        timeout: Duration,
        nice: i32,
    ) -> Result<Outcome, JobFailure> {
        let io = |e: std::io::Error| JobFailure::Io(e.to_string());
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let input = dir.join(input_name(job));
        let output = dir.join("out.spv");
        tokio::fs::write(&input, &job.expanded.text)
            .await
            .map_err(io)?;
        let child = tokio::process::Command::new(&self.program)
            .args(args(
                job,
                &input.to_string_lossy(),
                &output.to_string_lossy(),
            ))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Glslang::missing(),
                _ => io(e),
            })?;
        if let Some(pid) = child.id() {
            crate::platform::lower_process_priority(pid, nice);
        }
        // On timeout the future (and with it the child) is dropped: kill_on_drop kills the worker.
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| JobFailure::Timeout(timeout))?
            .map_err(io)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let diagnostics = spark_compile::glslang::parse_output(job, &stdout);
        if out.status.success() {
            let bytes = tokio::fs::read(&output).await.map_err(io)?;
            return Ok(Outcome::Compiled(Compiled {
                output: bytes,
                diagnostics,
                ..Compiled::default()
            }));
        }
        if let Some(sig) = crate::platform::exit_signal(&out.status) {
            return Err(JobFailure::Crashed(format!(
                "{PROGRAM} was killed by signal {sig}"
            )));
        }
        if diagnostics.iter().any(|d| d.severity == Severity::Error) {
            return Ok(Outcome::Errors(diagnostics));
        }
        Err(JobFailure::Crashed(format!(
            "{PROGRAM} exited with {} and reported no error: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
