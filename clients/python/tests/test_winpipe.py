"""The Windows pipe transport's logic, run on Linux: the path rules (same as Rust's), connect's busy retry and
"not running" at once, and a whole client exchange through :class:`winpipe.PipeSocket` over a stand-in stream
with PeekNamedPipe's semantics. The Win32 calls themselves need a Windows CPython (docs/reliability.md)."""

from __future__ import annotations

import socket

import pytest

from sparkdaemon import Client, DaemonNotRunning, TransportError, winpipe
from fake_daemon import FakeDaemon, cache_handler


def test_pipe_paths_and_the_default_name_follow_the_rust_rules():
    assert winpipe.is_pipe_path("\\\\.\\pipe\\spark-x-sparkd")
    assert winpipe.is_pipe_path("\\\\.\\PIPE\\x")
    assert not winpipe.is_pipe_path("\\\\.\\pipe\\")
    assert not winpipe.is_pipe_path("/run/user/1000/spark/sparkd.sock")
    sid = "S-1-5-21-1004336348-1177238915-682003330-1001"
    assert winpipe.default_pipe_path(sid) == f"\\\\.\\pipe\\spark-{sid}-sparkd"
    # Same vector as spark-platform's unit test: nothing can leave the pipe namespace.
    assert winpipe.default_pipe_path("..\\..\\x y") == "\\\\.\\pipe\\spark-______x_y-sparkd"


class _StandIn:
    """A raw stream over one end of a Unix connection, with ``available()`` behaving like PeekNamedPipe:
    bytes readable now, BrokenPipeError once the other end closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = sock.makefile("rwb", buffering=0)

    def available(self) -> int:
        try:
            data = self.sock.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        if not data:
            raise BrokenPipeError("closed")
        return len(data)

    def read(self, n):
        return self.raw.read(n)

    def readinto(self, mv):
        return self.raw.readinto(mv)

    def write(self, mv):
        return self.raw.write(mv)

    def close(self):
        self.raw.close()
        self.sock.close()


def test_a_client_talks_through_the_pipe_socket(monkeypatch):
    store = {}
    fake = FakeDaemon(cache_handler(store, inline_max=1000, chunk=300))
    try:
        pipe = "\\\\.\\pipe\\spark-test-sparkd"
        opened = []

        def fake_open(path, mode, buffering):
            assert (path, mode, buffering) == (pipe, "r+b", 0)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(fake.path)
            opened.append(path)
            return _StandIn(s)

        stream_holder = {}

        def connect(path, timeout):
            s = fake_open(path, "r+b", 0)
            stream_holder["s"] = s
            return winpipe.PipeSocket(s, s.available, timeout)

        monkeypatch.setattr(winpipe, "connect", connect)
        with Client(pipe, timeout=5) as c:
            c.ping()
            c.shader.put(7, target=1, stage=2, data=b"abc")
            assert c.shader.get(7, target=1, stage=2) == b"abc"
            big = bytes(range(256)) * 40  # 10 KiB: streamed back in 300-byte chunks
            c.asset.put("a/b", 1, big)
            assert c.asset.get("a/b", 1) == big
        assert opened == [pipe]
    finally:
        fake.close()


def test_a_missing_pipe_is_daemon_not_running_at_once(monkeypatch):
    def missing(path, timeout):
        raise FileNotFoundError(2, "The system cannot find the file specified")

    monkeypatch.setattr(winpipe, "connect", missing)
    with pytest.raises(DaemonNotRunning):
        Client("\\\\.\\pipe\\nobody-here").ping()


def test_connect_retries_a_busy_pipe_then_gives_up_with_the_error(monkeypatch):
    calls = []

    def busy_twice(path, mode, buffering):
        calls.append(path)
        if len(calls) <= 2:
            e = OSError("All pipe instances are busy")
            e.winerror = winpipe.ERROR_PIPE_BUSY
            raise e
        return object()

    ps = winpipe.connect("\\\\.\\pipe\\x", 1.0, opener=busy_twice)
    assert isinstance(ps, winpipe.PipeSocket) and len(calls) == 3

    def always_busy(path, mode, buffering):
        e = OSError("All pipe instances are busy")
        e.winerror = winpipe.ERROR_PIPE_BUSY
        raise e

    monkeypatch.setattr(winpipe, "BUSY_WAIT", 0.05)
    with pytest.raises(OSError) as ei:
        winpipe.connect("\\\\.\\pipe\\x", 1.0, opener=always_busy)
    assert ei.value.winerror == winpipe.ERROR_PIPE_BUSY


def test_pipe_socket_times_out_and_sees_end_of_stream():
    a, b = socket.socketpair()
    s = _StandIn(a)
    ps = winpipe.PipeSocket(s, s.available, timeout=0.05)
    with pytest.raises(socket.timeout):
        ps.recv(10)
    b.sendall(b"hi")
    assert ps.recv(10) == b"hi"
    b.close()
    assert ps.recv(10) == b""
    ps.close()


def test_a_dead_pipe_is_a_transport_error(monkeypatch):
    def broken(path, timeout):
        raise PermissionError(13, "Access is denied")

    monkeypatch.setattr(winpipe, "connect", broken)
    with pytest.raises(TransportError):
        Client("\\\\.\\pipe\\x").ping()
