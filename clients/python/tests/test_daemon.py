"""Integration tests against a real ``sparkd`` (started per test by the ``sparkd`` fixture in conftest.py)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time

import pytest

from sparkdaemon import Client, DaemonError, DaemonNotRunning, SparkError, TransportError
from sparkdaemon import protocol as p

MiB = 1024 * 1024


def test_hello_version_ping_stats(sparkd, client):
    h = client.hello
    assert h.protocol_version == p.PROTOCOL_VERSION
    assert {1, 2, 3} <= set(h.services)
    assert h.services == sorted(h.services)
    assert h.daemon_pid == sparkd.proc.pid
    assert h.daemon_version

    v = client.version()
    assert v.protocol_version == 1
    assert v.daemon_version == h.daemon_version

    rtt = client.ping()
    assert 0 <= rtt < 5
    assert client.ping(b"\x00\xffpayload" * 100) >= 0
    assert client.request_raw(p.SERVICE_CONTROL, p.CONTROL_PING, b"echo") == p.Frame(
        p.SERVICE_CONTROL, p.CONTROL_PONG, b"echo"
    )

    st = client.stats()
    assert st["protocol_version"] == 1
    assert {1, 2, 3} <= set(st["services"])
    assert st["current_connections"] >= 1
    assert st["total_connections"] >= 2  # the fixture's readiness ping, then this client
    assert st["uptime_secs"] >= 0


def test_namespaces_live(client):
    names = {ns.name: ns for ns in client.namespaces()}
    assert names["shader"].service == p.SERVICE_SHADER
    assert names["asset"].service == p.SERVICE_ASSET
    assert "namespaces" in client.hello.capabilities


def test_register_sponsor(client):
    assert client.register_sponsor() >= 1


def test_shader_put_get_exists_miss_clear_stats(client):
    sh = client.shader
    before = sh.stats()
    assert set(before) == set(p.CACHE_STATS_FIELDS)
    assert before["entries"] == 0 and before["hits"] == 0 and before["misses"] == 0 and before["puts"] == 0

    data = os.urandom(4096)
    assert sh.put(0x0123456789ABCDEF, 3, 1, data) is True
    assert sh.exists(0x0123456789ABCDEF, 3, 1) is True
    assert sh.size(0x0123456789ABCDEF, 3, 1) == len(data)
    assert sh.get(0x0123456789ABCDEF, 3, 1) == data  # hit
    # Each key field matters.
    assert sh.get(0x0123456789ABCDEF, 3, 2) is None  # miss
    assert sh.exists(0x0123456789ABCDEF, 4, 1) is False
    assert sh.exists(0x0123456789ABCDEE, 3, 1) is False
    assert sh.size(0x0123456789ABCDEE, 3, 1) is None
    # Full u64 range and an empty blob.
    assert sh.put(2**64 - 1, 255, 255, b"") is True
    assert sh.get(2**64 - 1, 255, 255) == b""

    st = sh.stats()
    assert st["hits"] == 2
    assert st["misses"] == 1  # exists() counts as neither
    assert st["puts"] == 2
    assert st["entries"] == 2
    assert st["bytes_in_memory"] + st["bytes_on_disk"] >= len(data)

    # The asset cache is separate.
    assert client.asset.stats()["entries"] == 0

    assert sh.clear() == 2
    assert sh.get(0x0123456789ABCDEF, 3, 1) is None
    assert sh.exists(2**64 - 1, 255, 255) is False
    st = sh.stats()
    assert st["entries"] == 0
    assert st["misses"] == 2
    assert sh.clear() == 0


def test_put_overwrites(client):
    assert client.shader.put(7, 1, 1, b"first")
    assert client.shader.put(7, 1, 1, b"second, longer")
    assert client.shader.get(7, 1, 1) == b"second, longer"
    assert client.shader.stats()["entries"] == 1


def test_asset_platforms_and_invalidate(client):
    a = client.asset
    path = "textures/rock.png"
    for platform in (0, 1, 2):
        assert a.put(path, platform, f"rock for platform {platform}".encode()) is True
    assert a.put("textures/other.png", 1, b"other") is True
    for platform in (0, 1, 2):
        assert a.get(path, platform) == f"rock for platform {platform}".encode()
    assert a.exists(path, 3) is False
    assert a.stats()["entries"] == 4

    assert a.invalidate(path) == 3
    for platform in (0, 1, 2):
        assert a.get(path, platform) is None
        assert a.exists(path, platform) is False
    assert a.get("textures/other.png", 1) == b"other"
    assert a.invalidate(path) == 0
    assert a.stats()["entries"] == 1
    assert a.clear() == 1
    assert a.get("textures/other.png", 1) is None


def test_long_and_unicode_paths(client):
    a = client.asset
    long_path = "deep/" + "d" * 588 + ".uasset"
    assert len(long_path) == 600
    data = os.urandom(1000)
    assert a.put(long_path, 5, data) is True
    assert a.exists(long_path, 5) is True
    assert a.get(long_path, 5) == data
    assert a.get(long_path[:-1], 5) is None

    uni = "Maps/Île-de-France/城市/🚀.map"
    assert a.put(uni, 1, b"unicode") is True
    assert a.get(uni, 1) == b"unicode"
    assert a.invalidate(uni) == 1


def test_invalid_asset_keys_are_errors(client):
    with pytest.raises(DaemonError) as info:
        client.asset.put("", 1, b"x")
    assert info.value.code == 10 and info.value.code_name == "invalid-key"
    with pytest.raises(DaemonError) as info:
        client.asset.put("p" * (p.MAX_ASSET_PATH + 1), 1, b"x")
    assert info.value.code_name == "invalid-key"
    assert client.ping() >= 0


def test_invalid_key_on_streamed_put_keeps_connection(client):
    """An error answering a PutStream still comes after (or consumes) the whole stream."""
    before = client.stats()["total_connections"]
    with pytest.raises(DaemonError) as info:
        client.asset.put("", 1, bytes(20 * MiB))
    assert info.value.code_name == "invalid-key"
    assert client.connected
    assert client.ping() >= 0
    assert client.stats()["total_connections"] == before


def test_unknown_service_error_response(client):
    before = client.stats()["total_connections"]
    with pytest.raises(DaemonError) as info:
        client.request_raw(0x7777, 0x0001, b"whatever")
    e = info.value
    assert e.code == 1
    assert e.code_name == "unknown-service"
    assert isinstance(e.message, str)
    # The same connection is still usable.
    assert client.connected
    assert client.ping() >= 0
    assert client.shader.put(1, 1, 1, b"after error")
    assert client.shader.get(1, 1, 1) == b"after error"
    assert client.stats()["total_connections"] == before


def test_unknown_message_error_response(client):
    with pytest.raises(DaemonError) as info:
        client.request_raw(p.SERVICE_SHADER, 0x0042, b"")
    assert info.value.code == 2 and info.value.code_name == "unknown-message"
    with pytest.raises(DaemonError) as info:
        client.request_raw(p.SERVICE_SHADER, p.CACHE_GET, b"\x01\x02")  # truncated key
    assert info.value.code_name == "malformed"
    assert client.ping() >= 0


def test_boundary_inline_vs_streamed(client):
    key_len = len(p.ShaderKey(1, 2, 3).encode())
    inline = os.urandom(p.MAX_PAYLOAD - key_len)  # a Put frame of exactly 16 MiB
    assert client.shader.put(1, 2, 3, inline) is True
    assert client.shader.get(1, 2, 3) == inline
    streamed = inline + b"+"
    assert client.shader.put(1, 2, 4, streamed) is True
    assert client.shader.get(1, 2, 4) == streamed


def test_streamed_40mib_bytes_api(client):
    blob = os.urandom(40 * MiB + 123)
    assert client.asset.put("big/level.pak", 2, blob) is True
    assert client.asset.size("big/level.pak", 2) == len(blob)
    got = client.asset.get("big/level.pak", 2)
    assert len(got) == len(blob)
    assert got == blob
    assert client.ping() >= 0


def test_streamed_40mib_file_api(client):
    size = 40 * MiB + 7
    src_hash = hashlib.sha256()
    with tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as dst:
        for _ in range(40):
            block = os.urandom(MiB)
            src.write(block)
            src_hash.update(block)
        tail = os.urandom(7)
        src.write(tail)
        src_hash.update(tail)
        src.seek(0)
        assert client.shader.put_from_file(0xFEEDFACE, 1, 5, src) is True
        assert client.shader.get_to_file(0xFEEDFACE, 1, 5, dst) == size
        dst.seek(0)
        got_hash = hashlib.sha256()
        n = 0
        while True:
            block = dst.read(MiB)
            if not block:
                break
            n += len(block)
            got_hash.update(block)
        assert n == size
        assert got_hash.digest() == src_hash.digest()
    # The bytes API reads what the file API wrote, and vice versa.
    assert len(client.shader.get(0xFEEDFACE, 1, 5)) == size


def test_daemon_not_running_is_immediate():
    d = tempfile.mkdtemp(prefix="sparkpy-none-")
    try:
        t0 = time.monotonic()
        with pytest.raises(DaemonNotRunning):
            Client(os.path.join(d, "s.sock")).connect()
        with pytest.raises(DaemonNotRunning):
            with Client(os.path.join(d, "missing", "s.sock")):
                pass
        assert time.monotonic() - t0 < 1.0
    finally:
        os.rmdir(d)


def test_threads_share_one_client(client):
    errors = []
    n_threads, n_ops = 8, 40

    def work(t):
        try:
            for i in range(n_ops):
                data = f"thread {t} item {i} ".encode() * (1 + (i * 37) % 200)
                assert client.shader.put(t, i, 0, data) is True
                assert client.shader.get(t, i, 0) == data
                assert client.asset.put(f"t{t}/i{i}", t, data) is True
                assert client.asset.exists(f"t{t}/i{i}", t) is True
                if i % 10 == 0:
                    assert client.ping(data[:100]) >= 0
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert client.shader.stats()["entries"] == n_threads * n_ops
    assert client.asset.stats()["entries"] == n_threads * n_ops


def test_pipeline(client):
    for i in range(20):
        client.shader.put(i, 0, 0, bytes([i]) * (i + 1))
    pipe = client.pipeline()
    for i in range(25):
        pipe.shader.get(i, 0, 0)
    pipe.asset.put("pipe/big", 1, bytes(17 * MiB))
    pipe.request_raw(0x7777, 1)
    pipe.asset.size("pipe/big", 1)
    pipe.ping()
    res = pipe.execute(return_exceptions=True)
    assert res[:20] == [bytes([i]) * (i + 1) for i in range(20)]
    assert res[20:25] == [None] * 5
    assert res[25] is True
    assert isinstance(res[26], DaemonError) and res[26].code == 1
    assert res[27] == 17 * MiB
    assert isinstance(res[28], float)


def test_many_connections(sparkd):
    clients = [sparkd.client() for _ in range(20)]
    try:
        for i, c in enumerate(clients):
            c.asset.put(f"conn/{i}", 0, str(i).encode())
        for i, c in enumerate(reversed(clients)):
            assert c.asset.get(f"conn/{19 - i}", 0) == str(19 - i).encode()
        assert clients[0].stats()["current_connections"] >= 20
    finally:
        for c in clients:
            c.close()


def test_shutdown_stops_daemon(sparkd):
    c = sparkd.client()
    c.shutdown()
    assert not c.connected
    sparkd.proc.wait(10)
    with pytest.raises((DaemonNotRunning, TransportError)):
        c.ping()


def test_data_survives_restart_on_disk(sparkd_bin, sparkd):
    """Blobs put before a shutdown are served by a new daemon on the same cache root (disk tier)."""
    import subprocess

    with sparkd.client() as c:
        assert c.shader.put(42, 1, 1, b"persisted") is True
        big = os.urandom(20 * MiB)
        assert c.asset.put("persist/big", 0, big) is True
        c.shutdown()
    sparkd.proc.wait(10)
    with open(sparkd.log_path, "ab") as log:
        sparkd.proc = subprocess.Popen(
            [str(sparkd_bin), "--socket", sparkd.socket_path, "--cache-root", sparkd.cache_root, "--log-level", "warn"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 10
    while True:
        try:
            c = sparkd.client().connect()
            break
        except (DaemonNotRunning, TransportError):
            assert sparkd.proc.poll() is None, sparkd.log()
            assert time.monotonic() < deadline, sparkd.log()
            time.sleep(0.05)
    with c:
        assert c.shader.get(42, 1, 1) == b"persisted"
        assert c.asset.get("persist/big", 0) == big


def test_errors_are_spark_errors():
    assert issubclass(DaemonNotRunning, SparkError)
    assert issubclass(TransportError, SparkError)
    assert issubclass(DaemonError, SparkError)


def test_wrong_stream_checksum_is_rejected(client, monkeypatch):
    """The daemon checks a supplied checksum: a wrong one is a stream-mismatch and nothing is stored."""
    monkeypatch.setattr(p, "HAVE_XXHASH", True)
    monkeypatch.setattr(p, "blob_checksum", lambda data: 0x1234)
    with pytest.raises(DaemonError) as info:
        client.asset.put("bad/checksum", 1, bytes(17 * MiB))
    assert info.value.code == 11 and info.value.code_name == "stream-mismatch"
    assert client.connected
    assert client.asset.exists("bad/checksum", 1) is False


def test_short_stream_is_rejected(client):
    import io

    from sparkdaemon import SourceExhausted

    with pytest.raises(SourceExhausted) as info:
        client.shader.put_from_file(3, 3, 3, io.BytesIO(bytes(MiB)), size=20 * MiB)
    assert isinstance(info.value.__cause__, DaemonError)
    assert info.value.__cause__.code_name == "stream-mismatch"
    assert client.shader.exists(3, 3, 3) is False
    assert client.ping() >= 0


def test_streamed_get_frames_on_the_wire(sparkd, client):
    """Checks the daemon's streamed GetResponse byte-level: chunk frames of at most 16 MiB, the total length,
    and a STREAM_END whose checksum is 0 or the XXH3-128 of the blob."""
    import socket

    blob = os.urandom(33 * MiB + 5)
    assert client.shader.put(77, 7, 7, blob) is True
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sparkd.socket_path)
    try:
        s.sendall(p.ShaderGet(p.ShaderKey(77, 7, 7)).to_frame(p.SERVICE_SHADER))
        dec = p.FrameDecoder()
        frames = []
        while not frames or frames[-1].msg_type not in (p.MSG_STREAM_END, p.MSG_ERROR):
            data = s.recv(1 << 20)
            assert data, "daemon closed the connection"
            frames += dec.feed(data)
        assert dec.pending == 0
    finally:
        s.close()
    head = p.decode_message(frames[0])
    assert head == p.GetResponse(p.GetStatus.STREAMED, total_len=len(blob))
    chunks = frames[1:-1]
    assert chunks and all(f.msg_type == p.MSG_STREAM_CHUNK and f.service == p.SERVICE_SHADER for f in chunks)
    assert b"".join(f.payload for f in chunks) == blob
    end = p.decode_message(frames[-1])
    assert isinstance(end, p.StreamEnd)
    if p.HAVE_XXHASH:
        assert end.checksum in (0, p.blob_checksum(blob))


def _import_child(socket_path, src, log_path, go_path, out):
    """One of 8 processes asking for the same import at once."""
    from sparkdaemon import Client as C

    with C(socket_path) as c:
        while not os.path.exists(go_path):
            time.sleep(0.01)

        def convert():
            with open(log_path, "a") as f:
                f.write(f"{os.getpid()}\n")
            time.sleep(0.7)  # every other process asks while this one imports
            return b"converted"

        out.put(c.asset.get_or_import(src, 3, "tga", 1, convert))


def test_get_or_import_from_8_processes_runs_the_import_once(sparkd, tmp_path):
    import multiprocessing

    src = tmp_path / "big.tga"
    src.write_bytes(b"raw pixels")
    log, go = tmp_path / "imports.log", tmp_path / "go"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_import_child, args=(sparkd.socket_path, str(src), str(log), str(go), out))
        for _ in range(8)
    ]
    for pr in procs:
        pr.start()
    go.write_bytes(b"")
    results = [out.get(timeout=60) for _ in procs]
    for pr in procs:
        pr.join(30)
        assert pr.exitcode == 0
    assert results == [b"converted"] * 8
    assert len(log.read_text().splitlines()) == 1


def test_declared_deps_invalidate_and_get_or_import_keys_on_content(sparkd, tmp_path):
    events = []
    src = tmp_path / "rock.png"
    src.write_bytes(b"v1")
    with sparkd.client() as cooker, Client(sparkd.socket_path, on_event=events.append) as editor:
        editor.asset.subscribe_invalidations()
        assert cooker.asset.put("textures/rock", 1, b"cooked")
        assert cooker.asset.declare_deps("textures/rock", 1, [str(src)]) == 1
        first = cooker.asset.get_or_import(str(src), 2, "png", 1, lambda: b"imported v1")
        assert first == b"imported v1"
        assert cooker.asset.get_or_import(str(src), 2, "png", 1, lambda: b"must not run") == b"imported v1"
        src.write_bytes(b"v2")
        deadline = time.monotonic() + 20
        while cooker.asset.exists("textures/rock", 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not cooker.asset.exists("textures/rock", 1)
        # Events arrive while the editor talks to the daemon.
        while len(events) < 2 and time.monotonic() < deadline:
            editor.ping()
            time.sleep(0.02)
        inv = sorted((m.path, m.platform) for m in (p.decode_message(e) for e in events))
        assert ("textures/rock", 1) in inv
        assert [x for x in inv if x[0].startswith("import/")][0][1] == 2
        assert len(inv) == 2
        assert cooker.asset.get_or_import(str(src), 2, "png", 1, lambda: b"imported v2") == b"imported v2"


def test_watch_query_since_a_clock_and_list(sparkd, tmp_path):
    with sparkd.client() as c:
        first = c.watch.query(str(tmp_path))
        assert first.fresh_instance  # no clock given
        clock = (first.instance, first.seq)
        (tmp_path / "a.png").write_bytes(b"x")
        (tmp_path / "b.txt").write_bytes(b"x")
        deadline = time.monotonic() + 20
        while True:
            q = c.watch.query(str(tmp_path), since=clock, include=["*.png"])
            if q.changes or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert not q.fresh_instance
        assert q.changes == [p.Change(p.CHANGE_CREATED, "a.png")]
        assert p.parse_clock(p.format_clock(q.instance, q.seq)) == (q.instance, q.seq)
        roots = c.watch.list()
        assert [r.root for r in roots] == [os.path.realpath(tmp_path)]
        sub = c.watch.subscribe(str(tmp_path))
        assert c.watch.list()[0].subscribers == 1
        assert c.watch.unsubscribe(sub.subscription)
