"""Fixtures: the path to a ``sparkd`` binary (built on demand) and a running daemon per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PYTHON_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = Path(__file__).resolve().parents[3]
if str(PYTHON_DIR) not in sys.path:  # import the package from the source tree, installed or not
    sys.path.insert(0, str(PYTHON_DIR))

from sparkdaemon import Client, DaemonNotRunning, SparkError, TransportError  # noqa: E402

START_TIMEOUT = 10.0


def _default_binary() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    target_dir = (REPO_ROOT / target) if target else (REPO_ROOT / "target")
    return target_dir / "debug" / "sparkd"


@pytest.fixture(scope="session")
def sparkd_bin() -> Path:
    """$SPARKD_BIN, else <repo>/target/debug/sparkd, built once with cargo when missing."""
    env = os.environ.get("SPARKD_BIN")
    if env:
        path = Path(env)
        if not path.is_file():
            pytest.fail(f"SPARKD_BIN={env} does not exist")
        return path
    path = _default_binary()
    if path.is_file():
        return path
    if not (REPO_ROOT / "crates" / "spark-daemon" / "Cargo.toml").is_file():
        pytest.skip("no sparkd binary and no crates/spark-daemon to build it from")
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("no sparkd binary and no cargo to build it")
    r = subprocess.run(
        [cargo, "build", "-p", "spark-daemon", "--bin", "sparkd"],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    if r.returncode != 0 or not path.is_file():
        tail = r.stdout.decode(errors="replace")[-4000:]
        pytest.fail(f"cargo build -p spark-daemon --bin sparkd failed (exit {r.returncode}):\n{tail}")
    return path


@dataclass
class Daemon:
    """A running sparkd: its socket, process and scratch directory."""

    socket_path: str
    cache_root: str
    proc: subprocess.Popen
    log_path: str

    def client(self, **kw) -> Client:
        return Client(self.socket_path, **kw)

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""


def _stop(d: Daemon) -> None:
    """Control Shutdown, then terminate / kill by pid: the process never outlives the test."""
    if d.proc.poll() is None:
        try:
            Client(d.socket_path, timeout=2).shutdown()
        except SparkError:
            pass
        try:
            d.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    if d.proc.poll() is None:
        d.proc.terminate()
        try:
            d.proc.wait(5)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def sparkd(sparkd_bin):
    """Starts ``sparkd`` on a fresh socket and cache root, waits until a ping succeeds, stops it afterwards."""
    tmp = tempfile.mkdtemp(prefix="sparkpy-")  # short: Unix socket paths are limited to ~107 bytes
    d = Daemon(
        socket_path=os.path.join(tmp, "s.sock"),
        cache_root=os.path.join(tmp, "cache"),
        proc=None,  # type: ignore[arg-type]
        log_path=os.path.join(tmp, "sparkd.log"),
    )
    with open(d.log_path, "wb") as log:
        d.proc = subprocess.Popen(
            [str(sparkd_bin), "--socket", d.socket_path, "--cache-root", d.cache_root, "--log-level", "warn"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if d.proc.poll() is not None:
                pytest.fail(f"sparkd exited with status {d.proc.returncode} during startup:\n{d.log()}")
            try:
                with Client(d.socket_path, timeout=2) as c:
                    c.ping()
                break
            except (DaemonNotRunning, TransportError) as e:
                if time.monotonic() > deadline:
                    pytest.fail(f"sparkd did not answer a ping within {START_TIMEOUT}s ({e}):\n{d.log()}")
                time.sleep(0.05)
        yield d
    finally:
        _stop(d)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def client(sparkd):
    with sparkd.client() as c:
        yield c
