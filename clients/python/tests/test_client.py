"""Client behaviour against a scripted fake daemon (tests/fake_daemon.py): no real sparkd needed."""

from __future__ import annotations

import io
import os
import socket
import tempfile
import threading
import time

import pytest

import sparkdaemon
from sparkdaemon import Client, protocol as p
from sparkdaemon.errors import (
    DaemonError,
    DaemonNotRunning,
    ProtocolError,
    StreamMismatch,
    TransportError,
    UnexpectedMessage,
)

from fake_daemon import FakeDaemon, Peer, cache_handler


@pytest.fixture
def fake_factory():
    made = []

    def make(handler, **kw):
        d = FakeDaemon(handler, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
        assert not d.errors, d.errors


@pytest.fixture
def cache_fake(fake_factory):
    store = {}
    d = fake_factory(cache_handler(store))
    d.store = store
    return d


def test_hello_fields(fake_factory):
    d = fake_factory(cache_handler({}))
    with Client(d.path, client_name="tool-x", sponsor=True) as c:
        assert c.hello.daemon_version == "fake-0.0"
        assert c.hello.services == [1, 2, 3]
        assert c.ping(b"abc") >= 0
    h = d.hellos[0]
    assert (h.protocol_version, h.flags, h.pid, h.client_name) == (1, p.HELLO_FLAG_SPONSOR, os.getpid(), "tool-x")


def test_lazy_connect_and_reconnect_after_close(cache_fake):
    c = Client(cache_fake.path)
    assert not c.connected
    assert c.shader.get(1, 2, 3) is None
    assert c.connected
    c.close()
    assert not c.connected
    assert c.shader.put(1, 2, 3, b"x") is True
    assert cache_fake.accepted == 2
    c.close()


def test_inline_streamed_boundary(cache_fake):
    """A put whose frame is exactly 16 MiB goes inline; one byte more is streamed in 1 MiB chunks."""
    with Client(cache_fake.path) as c:
        key_len = len(p.ShaderKey(5, 1, 1).encode())
        exact = os.urandom(p.MAX_PAYLOAD - key_len)
        assert c.shader.put(5, 1, 1, exact)
        assert c.shader.get(5, 1, 1) == exact
        over = exact + b"!"
        assert c.shader.put(5, 1, 2, bytearray(over))
        assert c.shader.get(5, 1, 2) == over
        assert c.shader.size(5, 1, 2) == len(over)
    assert cache_fake.accepted == 1


def test_put_stream_frames(fake_factory, monkeypatch):
    seen = {}

    def handler(peer: Peer):
        f = peer.read_frame()
        seen["put_stream"] = p.decode_message(f)
        seen["data"], seen["checksum"], seen["sizes"] = peer.read_stream(f.service)
        peer.send(f.service, p.PutResponse(True))
        f = peer.read_frame()
        seen["put_stream2"] = p.decode_message(f)
        data, seen["checksum2"], _ = peer.read_stream(f.service)
        peer.send(f.service, p.PutResponse(False))

    d = fake_factory(handler)
    blob = os.urandom(20 * 1024 * 1024 + 3)
    with Client(d.path) as c:
        assert c.asset.put("big/blob.bin", 7, memoryview(blob)) is True
        monkeypatch.setattr(p, "HAVE_XXHASH", False)
        assert c.asset.put_from_file("big/blob2.bin", 7, io.BytesIO(blob)) is False
    assert seen["put_stream"] == p.AssetPutStream(p.AssetKey("big/blob.bin", 7), len(blob))
    assert seen["data"] == blob
    assert max(seen["sizes"]) == p.STREAM_CHUNK_SIZE and len(seen["sizes"]) == 21
    if sparkdaemon.protocol._xxhash is not None:
        assert seen["checksum"] == sparkdaemon.protocol._xxhash.xxh3_128_intdigest(blob)
    else:
        assert seen["checksum"] == 0
    assert seen["put_stream2"].total_len == len(blob)
    assert seen["checksum2"] == 0  # checksum "not supplied" without xxhash


def test_streamed_get_bytes_and_file(fake_factory):
    blob = os.urandom(3 * 1024 * 1024 + 17)
    d = fake_factory(cache_handler({(p.SERVICE_SHADER, p.ShaderKey(9, 0, 0)): blob}, inline_max=1000, chunk=700_001))
    with Client(d.path) as c:
        assert c.shader.get(9, 0, 0) == blob
        with tempfile.TemporaryFile() as f:
            assert c.shader.get_to_file(9, 0, 0, f) == len(blob)
            f.seek(0)
            assert f.read() == blob
        assert c.shader.get_to_file(9, 0, 1, io.BytesIO()) is None


def test_put_from_file_roundtrip(cache_fake):
    blob = os.urandom(18 * 1024 * 1024)
    with tempfile.TemporaryFile() as f:
        f.write(b"HEADER" + blob)
        f.seek(6)
        with Client(cache_fake.path) as c:
            assert c.asset.put_from_file("x", 1, f) is True  # size: the rest of the file
            assert c.asset.get("x", 1) == blob
            f.seek(6)
            assert c.asset.put_from_file("small", 1, f, size=10) is True
            assert c.asset.get("small", 1) == blob[:10]


def test_put_from_short_file_keeps_connection(cache_fake):
    with Client(cache_fake.path) as c:
        with pytest.raises(sparkdaemon.SourceExhausted):
            c.asset.put_from_file("short", 1, io.BytesIO(b"x" * 100), size=20 * 1024 * 1024)
        with pytest.raises(sparkdaemon.SourceExhausted):  # inline: nothing is sent at all
            c.asset.put_from_file("short", 1, io.BytesIO(b"x" * 100), size=1000)
        assert c.asset.exists("short", 1) is False
        c.ping()
    assert cache_fake.accepted == 1


def _stream_reply_handler(total_len, chunks, end):
    """Answers every Get with a streamed reply made of ``chunks`` then ``end`` (a frame), then echoes pings."""

    def handler(peer: Peer):
        while True:
            f = peer.read_frame()
            if f.service == p.SERVICE_CONTROL:
                peer.send(p.SERVICE_CONTROL, p.Pong(f.payload))
                continue
            peer.send(f.service, p.GetResponse(p.GetStatus.STREAMED, total_len=total_len))
            for ch in chunks:
                peer.send_frame(f.service, p.MSG_STREAM_CHUNK, ch)
            peer.sock.sendall(end(f.service))

    return handler


def test_mid_stream_error_response(fake_factory):
    d = fake_factory(
        _stream_reply_handler(
            10, [b"01234"], lambda svc: p.ErrorResponse(9, "blob failed its checksum").to_frame(svc)
        )
    )
    with Client(d.path) as c:
        with pytest.raises(DaemonError) as info:
            c.shader.get(1, 1, 1)
        assert info.value.code == 9 and info.value.code_name == "corrupt"
        c.ping()  # still in sync
    assert d.accepted == 1


def test_stream_length_mismatch(fake_factory):
    d = fake_factory(
        _stream_reply_handler(10, [b"01234", b"567890123"], lambda svc: p.StreamEnd(0).to_frame(svc))
    )
    with Client(d.path) as c:
        with pytest.raises(StreamMismatch):
            c.asset.get("a", 1)
        with pytest.raises(StreamMismatch):
            c.asset.get_to_file("a", 1, io.BytesIO())
        c.ping()
    assert d.accepted == 1


@pytest.mark.skipif(not p.HAVE_XXHASH, reason="xxhash not installed")
def test_stream_checksum_mismatch(fake_factory):
    d = fake_factory(_stream_reply_handler(4, [b"ab", b"cd"], lambda svc: p.StreamEnd(12345).to_frame(svc)))
    with Client(d.path) as c:
        with pytest.raises(StreamMismatch):
            c.asset.get("a", 1)


def test_stream_checksum_zero_means_not_supplied(fake_factory):
    d = fake_factory(_stream_reply_handler(4, [b"ab", b"cd"], lambda svc: p.StreamEnd(0).to_frame(svc)))
    with Client(d.path) as c:
        assert c.asset.get("a", 1) == b"abcd"


def test_unexpected_reply_drops_connection(fake_factory):
    def handler(peer: Peer):
        while True:
            f = peer.read_frame()
            if f.msg_type == p.CONTROL_PING:
                peer.send(p.SERVICE_CONTROL, p.Pong(f.payload))
            else:
                peer.send(f.service, p.ClearResponse(1))  # wrong reply type

    d = fake_factory(handler)
    c = Client(d.path)
    with pytest.raises(UnexpectedMessage):
        c.shader.exists(1, 2, 3)
    assert not c.connected
    c.ping()  # reconnects
    assert d.accepted == 2
    c.close()


def test_undecodable_reply_is_protocol_error(fake_factory):
    def handler(peer: Peer):
        f = peer.read_frame()
        peer.send_frame(f.service, p.CACHE_EXISTS_RESPONSE, b"\x01")

    d = fake_factory(handler)
    with Client(d.path) as c:
        with pytest.raises(ProtocolError):
            c.shader.exists(1, 2, 3)


def test_dropped_connection_is_transport_error(fake_factory):
    def handler(peer: Peer):
        peer.read_frame()
        peer.sock.sendall(p.encode_header(10, 2, p.CACHE_GET_RESPONSE) + b"\x01abc")  # then hang up

    d = fake_factory(handler)
    with Client(d.path) as c:
        with pytest.raises(TransportError):
            c.shader.get(1, 2, 3)
        assert not c.connected


def test_timeout_is_transport_error(fake_factory):
    never = threading.Event()

    def handler(peer: Peer):
        peer.read_frame()
        never.wait(5)

    d = fake_factory(handler)
    with Client(d.path, timeout=0.3) as c:
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            c.ping()
        assert time.monotonic() - t0 < 3
    never.set()


def test_events_are_skipped(fake_factory):
    events = []

    def handler(peer: Peer):
        f = peer.read_frame()
        peer.send_frame(p.SERVICE_ASSET, 0x8001, b"changed")
        peer.send(p.SERVICE_CONTROL, p.Pong(f.payload))

    d = fake_factory(handler)
    with Client(d.path, on_event=events.append) as c:
        c.ping(b"x")
    assert events == [p.Frame(p.SERVICE_ASSET, 0x8001, b"changed")]


def test_events_lost_reaches_on_event_and_decodes(fake_factory):
    """EventsLost arrives like any event: a raw frame for on_event, which decode_message turns into a message."""
    events = []

    def handler(peer: Peer):
        f = peer.read_frame()
        peer.send(p.SERVICE_CONTROL, p.EventsLost(1500))
        peer.send(p.SERVICE_CONTROL, p.Pong(f.payload))

    d = fake_factory(handler)
    with Client(d.path, on_event=events.append) as c:
        c.ping(b"x")
    assert [p.decode_message(e) for e in events] == [p.EventsLost(1500)]


def test_namespaces(fake_factory):
    reply = p.NamespacesResponse(
        [p.NamespaceStats("shader", 2, [("hits", 10), ("misses", 2)]), p.NamespaceStats("http-cas", 0, [])]
    )

    def handler(peer: Peer):
        f = peer.read_frame()
        assert (f.service, f.msg_type, f.payload) == (p.SERVICE_CONTROL, p.CONTROL_NAMESPACES, b"")
        # Decoders ignore trailing bytes: later revisions may append fields.
        peer.send_frame(p.SERVICE_CONTROL, p.CONTROL_NAMESPACES_RESPONSE, reply.encode() + b"\x00\x01")

    d = fake_factory(handler)
    with Client(d.path) as c:
        got = c.namespaces()
    assert got == reply.namespaces
    assert got[0].to_dict() == {"name": "shader", "service": 2, "counters": {"hits": 10, "misses": 2}}


def test_error_response_on_any_service(cache_fake):
    with Client(cache_fake.path) as c:
        with pytest.raises(DaemonError) as info:
            c.request_raw(0x7777, 1, b"")
        assert info.value.code == 1 and info.value.service == 0x7777
        c.ping()
        frame = c.request_raw(p.SERVICE_CONTROL, p.CONTROL_PING, b"raw")
        assert frame == p.Frame(p.SERVICE_CONTROL, p.CONTROL_PONG, b"raw")


def test_pipeline(fake_factory):
    """The fake reads all requests before answering any: only a pipelining client can finish."""
    n = 50

    def handler(peer: Peer):
        reqs = [peer.read_frame() for _ in range(n)]
        for f in reqs:
            if f.service == p.SERVICE_CONTROL:
                peer.send(f.service, p.Pong(f.payload))
            elif f.msg_type == p.CACHE_EXISTS:
                peer.send(f.service, p.ExistsResponse(True, p.ShaderExists.decode(f.payload).key.source_hash))
            else:
                peer.error(f.service, 10, "bad key")

    d = fake_factory(handler)
    with Client(d.path, timeout=5) as c:
        pipe = c.pipeline()
        for i in range(n - 2):
            assert pipe.shader.size(i, 0, 0) == i
        pipe.ping(b"p")
        pipe.asset.get("", 0)
        assert len(pipe) == n
        res = pipe.execute(return_exceptions=True)
        assert res[: n - 2] == list(range(n - 2))
        assert isinstance(res[n - 2], float)
        assert isinstance(res[n - 1], DaemonError) and res[n - 1].code == 10
        assert c.pipeline().execute() == []


def test_threads_share_one_client(cache_fake):
    with Client(cache_fake.path) as c:
        errors = []

        def work(t):
            try:
                for i in range(30):
                    data = f"{t}:{i}".encode() * (i + 1)
                    assert c.shader.put(t, i, 0, data)
                    assert c.shader.get(t, i, 0) == data
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
    assert cache_fake.accepted == 1


def test_daemon_not_running_is_immediate():
    d = tempfile.mkdtemp(prefix="sparknone-")
    try:
        t0 = time.monotonic()
        with pytest.raises(DaemonNotRunning):
            Client(os.path.join(d, "missing.sock")).connect()
        with pytest.raises(DaemonNotRunning):
            Client(os.path.join(d, "nodir", "missing.sock")).ping()
        # A stale socket file nobody listens on: connection refused.
        stale = os.path.join(d, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)
        s.close()
        with pytest.raises(DaemonNotRunning):
            Client(stale).connect()
        assert time.monotonic() - t0 < 1.0
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)


def test_default_socket_path(monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")
    assert sparkdaemon.default_socket_path() == "/run/user/1234/spark/sparkd.sock"
    assert Client().socket_path == "/run/user/1234/spark/sparkd.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert sparkdaemon.default_socket_path() == f"/tmp/spark-{os.getuid()}/sparkd.sock"


def test_argument_validation(cache_fake):
    with Client(cache_fake.path) as c:
        with pytest.raises(TypeError):
            c.shader.put(1, 2, 3, "text")
        with pytest.raises(ValueError):
            c.shader.get(-1, 0, 0)
        with pytest.raises(TypeError):
            c.asset.get(b"bytes", 0)
        c.ping()  # nothing was sent: still connected
    assert cache_fake.accepted == 1


def test_refused_stream_reports_daemon_reason(fake_factory):
    """A daemon that answers a PutStream with an error and hangs up: the error, not a broken pipe, is raised."""

    def handler(peer: Peer):
        f = peer.read_frame()
        assert f.msg_type == p.CACHE_PUT_STREAM
        peer.error(f.service, 5, "blob over the size limit")
        peer.sock.shutdown(socket.SHUT_RDWR)

    d = fake_factory(handler)
    c = Client(d.path)
    with pytest.raises(DaemonError) as info:
        c.asset.put("huge", 1, bytes(40 * 1024 * 1024))
    assert info.value.code_name == "too-large"
    assert not c.connected


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_opens_its_own_connection(cache_fake):
    c = Client(cache_fake.path).connect()
    pid = os.fork()
    if pid == 0:  # child: must not use the parent's stream
        code = 1
        try:
            c.ping(b"child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    c.ping(b"parent")
    assert cache_fake.accepted == 2
    c.close()


def test_bad_arguments_fail_before_sending(cache_fake):
    from sparkdaemon.errors import FrameTooLarge

    with Client(cache_fake.path) as c:
        pipe = c.pipeline()
        with pytest.raises(ValueError):
            pipe.shader.exists(0, 300, 0)  # rejected when queued
        with pytest.raises(ValueError):
            pipe.asset.invalidate("x" * 70000)
        pipe.ping()
        assert len(pipe) == 1
        assert isinstance(pipe.execute()[0], float)
        with pytest.raises(FrameTooLarge):
            c.request_raw(p.SERVICE_CONTROL, p.CONTROL_PING, bytes(p.MAX_PAYLOAD + 1))
        assert c.connected
        c.ping()
    assert cache_fake.accepted == 1
