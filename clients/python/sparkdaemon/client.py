"""The blocking socket client for ``sparkd``.

Typical use::

    from sparkdaemon import Client

    with Client() as c:                                  # connects and says Hello
        c.shader.put(0x1234ABCD, target=3, stage=1, data=b"...")
        blob = c.shader.get(0x1234ABCD, target=3, stage=1)  # bytes, or None on a miss
        c.asset.put("textures/rock.png", platform=2, data=png)
        with open("big.bin", "rb") as f:
            c.asset.put_from_file("levels/big.bin", 2, f)   # streamed, never all in memory

One :class:`Client` owns one connection. A lock serialises request/reply exchanges, so one client can be shared by
several threads (each exchange, streams included, holds the connection exclusively while it runs). After a
transport failure the connection is closed and the next request opens a new one (nothing is retried
automatically).
"""

from __future__ import annotations

import io
import os
import socket
import stat
import threading
import time
import weakref
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Union

from . import protocol as p
from .compile_client import CompileApi
from .errors import (
    DaemonError,
    DaemonNotRunning,
    ProtocolError,
    SparkError,
    StreamMismatch,
    TransportError,
    UnexpectedMessage,
)

BytesLike = Union[bytes, bytearray, memoryview]

#: Default per-operation socket timeout in seconds.
DEFAULT_TIMEOUT = 30.0

# Parts of a frame at or below this size are copied into one send buffer with the header.
_COALESCE_LIMIT = 64 * 1024


def default_socket_path() -> str:
    """The daemon's default socket: ``$XDG_RUNTIME_DIR/spark/sparkd.sock``, else ``/tmp/spark-<uid>/sparkd.sock``."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "spark", "sparkd.sock")
    return f"/tmp/spark-{os.getuid()}/sparkd.sock"


class SourceExhausted(SparkError, ValueError):
    """``put_from_file`` was told ``size`` bytes but the file ended earlier. Nothing was stored."""


# ---------------------------------------------------------------------------------------------------------------
# One connection: frame I/O on a socket
# ---------------------------------------------------------------------------------------------------------------


class _Conn:
    """A connected socket and the frame I/O on it. Not locked itself: the owning Client's lock guards it."""

    def __init__(self, sock: socket.socket, timeout: Optional[float], on_event: Optional[Callable]) -> None:
        self.sock = sock
        self.timeout = timeout
        self.on_event = on_event
        self.sent = 0  # bytes written so far (tells whether a failed write left a partial request behind)
        self.pid = os.getpid()  # a connection inherited through fork() is not used by the child
        self.pipelining = False  # set while a pipeline's writer thread and the reader share the socket
        self._hdr = bytearray(p.HEADER_LEN)
        self._chunk = bytearray(0)

    # ---- writing ----

    def send_frame(self, service: int, msg_type: int, *parts: BytesLike) -> None:
        """Sends one frame whose payload is the concatenation of ``parts``."""
        views = [memoryview(x).cast("B") if isinstance(x, memoryview) else x for x in parts]
        total = sum(len(v) for v in views)
        header = p.encode_header(total, service, msg_type)
        if total <= _COALESCE_LIMIT:
            self._send(header + b"".join(views))
            return
        pending = [header]
        for v in views:
            if len(v) <= _COALESCE_LIMIT:
                pending.append(bytes(v))
            else:
                if pending:
                    self._send(b"".join(pending))
                    pending = []
                self._send(v)
        if pending:
            self._send(b"".join(pending))

    def send_message(self, service: int, msg: p.Message) -> None:
        self.send_frame(service, msg.TYPE, msg.encode())

    def _send(self, data: BytesLike) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise TransportError(f"timed out after {self.timeout}s sending to the daemon") from None
        except OSError as e:
            raise TransportError(f"connection to the daemon lost while sending: {e}") from e
        self.sent += len(data)

    # ---- reading ----

    def _recv_into(self, mv: memoryview) -> None:
        while len(mv):
            try:
                n = self.sock.recv_into(mv)
            except socket.timeout:
                raise TransportError(f"timed out after {self.timeout}s waiting for the daemon") from None
            except OSError as e:
                raise TransportError(f"connection to the daemon lost while receiving: {e}") from e
            if n == 0:
                raise TransportError("the daemon closed the connection")
            mv = mv[n:]

    def _recv_some(self, n: int) -> bytes:
        try:
            data = self.sock.recv(n)
        except socket.timeout:
            raise TransportError(f"timed out after {self.timeout}s waiting for the daemon") from None
        except OSError as e:
            raise TransportError(f"connection to the daemon lost while receiving: {e}") from e
        if not data:
            raise TransportError("the daemon closed the connection")
        return data

    def read_payload(self, n: int) -> bytes:
        if n == 0:
            return b""
        first = self._recv_some(n)  # usually the whole payload: no extra copy
        if len(first) == n:
            return first
        buf = bytearray(n)
        buf[: len(first)] = first
        self._recv_into(memoryview(buf)[len(first) :])
        return bytes(buf)

    def read_header(self) -> p.FrameHeader:
        """The next reply frame's header; server-initiated events are read and handed to ``on_event``."""
        while True:
            self._recv_into(memoryview(self._hdr))
            h = p.decode_header(self._hdr)
            if not p.is_event(h.msg_type):
                return h
            payload = self.read_payload(h.length)
            if self.on_event is not None:
                try:
                    self.on_event(p.Frame(h.service, h.msg_type, payload))
                except Exception:  # an event handler must not break the exchange in flight
                    pass

    def read_frame(self) -> p.Frame:
        h = self.read_header()
        return p.Frame(h.service, h.msg_type, self.read_payload(h.length))

    def read_reply(self, service: int, cls: type) -> Any:
        """Reads one reply frame and decodes it as ``cls``; an ErrorResponse raises :class:`DaemonError`."""
        f = self.read_frame()
        if f.msg_type == p.MSG_ERROR:
            raise p.ErrorResponse.decode(f.payload).to_exception(f.service)
        if f.service != service or f.msg_type != cls.TYPE:
            raise UnexpectedMessage(f.service, f.msg_type, expected=f"{cls.__name__} on service 0x{service:04x}")
        return cls.decode(f.payload)

    def read_stream(
        self,
        service: int,
        total_len: int,
        write: Optional[Callable[[memoryview], Any]] = None,
        into: Optional[bytearray] = None,
    ) -> None:
        """Reads STREAM_CHUNK frames up to the STREAM_END, handing each chunk to ``write`` or receiving the
        blob straight into ``into`` (a buffer of ``total_len`` bytes).

        Raises :class:`DaemonError` when the daemon ends the stream with an ErrorResponse and
        :class:`StreamMismatch` on a length or checksum mismatch (both after the whole stream was consumed).
        """
        hasher = p.new_hasher()
        received = 0
        overflow = False
        while True:
            h = self.read_header()
            if h.msg_type == p.MSG_ERROR:
                raise p.ErrorResponse.decode(self.read_payload(h.length)).to_exception(h.service)
            if h.service != service or h.msg_type not in (p.MSG_STREAM_CHUNK, p.MSG_STREAM_END):
                raise UnexpectedMessage(h.service, h.msg_type, expected="STREAM_CHUNK or STREAM_END")
            if h.msg_type == p.MSG_STREAM_END:
                end = p.StreamEnd.decode(self.read_payload(h.length))
                if received != total_len:
                    raise StreamMismatch(f"stream carried {received} bytes but {total_len} were announced")
                if hasher is not None and end.checksum and hasher.intdigest() != end.checksum:
                    raise StreamMismatch(
                        f"stream checksum mismatch: got {hasher.intdigest():032x}, daemon sent {end.checksum:032x}"
                    )
                return
            if not overflow and received + h.length > total_len:
                overflow = True  # keep draining to the end so the connection stays in sync
            if into is not None and not overflow:
                mv = memoryview(into)[received : received + h.length]
                self._recv_into(mv)
            else:
                if len(self._chunk) < h.length:
                    self._chunk = bytearray(h.length)
                mv = memoryview(self._chunk)[: h.length]
                self._recv_into(mv)
                if write is not None and not overflow:
                    write(mv)
            if not overflow and hasher is not None:
                hasher.update(mv)
            received += h.length

    def pending_error(self, wait: float = 0.5) -> Optional[DaemonError]:
        """After a failed send: the ErrorResponse the daemon sent before hanging up, if there is one."""
        if self.pipelining:
            return None
        try:
            self.sock.settimeout(wait)
            f = self.read_frame()
            if f.msg_type == p.MSG_ERROR:
                return p.ErrorResponse.decode(f.payload).to_exception(f.service)
        except (SparkError, OSError):
            pass
        return None

    def abort(self) -> None:
        """Shuts the socket down, waking any thread blocked on it."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------------------
# Operations: each writes its request frames and reads its reply
# ---------------------------------------------------------------------------------------------------------------

# Exceptions raised while reading a reply that leave the connection in sync (the whole reply was consumed).
_IN_SYNC = (DaemonError, StreamMismatch, SourceExhausted)


class _Op:
    def write(self, conn: _Conn) -> None:
        raise NotImplementedError

    def read(self, conn: _Conn) -> Any:
        raise NotImplementedError


class _Simple(_Op):
    """One request message, one reply message, optionally converted."""

    def __init__(self, service: int, msg: p.Message, reply: type, convert: Optional[Callable] = None) -> None:
        self.service, self.reply, self.convert = service, reply, convert
        self.msg_type, self.payload = msg.TYPE, msg.encode()  # arguments are checked before anything is sent

    def write(self, conn: _Conn) -> None:
        conn.send_frame(self.service, self.msg_type, self.payload)

    def read(self, conn: _Conn) -> Any:
        m = conn.read_reply(self.service, self.reply)
        return self.convert(m) if self.convert else m


class _Ping(_Op):
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.t0 = 0.0

    def write(self, conn: _Conn) -> None:
        self.t0 = time.perf_counter()
        conn.send_message(p.SERVICE_CONTROL, p.Ping(self.data))

    def read(self, conn: _Conn) -> float:
        pong = conn.read_reply(p.SERVICE_CONTROL, p.Pong)
        rtt = time.perf_counter() - self.t0
        if pong.data != self.data:
            raise ProtocolError("Pong does not echo the Ping payload")
        return rtt


class _Raw(_Op):
    def __init__(self, service: int, msg_type: int, payload: bytes) -> None:
        p.encode_header(len(payload), service, msg_type)  # checks the fields before anything is sent
        self.service, self.msg_type, self.payload = service, msg_type, payload

    def write(self, conn: _Conn) -> None:
        conn.send_frame(self.service, self.msg_type, self.payload)

    def read(self, conn: _Conn) -> p.Frame:
        f = conn.read_frame()
        if f.msg_type == p.MSG_ERROR:
            raise p.ErrorResponse.decode(f.payload).to_exception(f.service)
        return f


def _write_all(fileobj: BinaryIO, mv: memoryview) -> None:
    while len(mv):
        n = fileobj.write(mv)
        if n is None or n >= len(mv):  # buffered writers return len or None for "all"
            return
        mv = mv[n:]


class _Get(_Op):
    """Get into memory (``fileobj is None``: returns bytes) or into a file (returns the size written)."""

    def __init__(self, service: int, key: p.CacheKey, fileobj: Optional[BinaryIO] = None) -> None:
        self.service, self.key, self.fileobj = service, key, fileobj
        self.key_bytes = key.encode()

    def write(self, conn: _Conn) -> None:
        conn.send_frame(self.service, p.CACHE_GET, self.key_bytes)

    def read(self, conn: _Conn) -> Any:
        r = conn.read_reply(self.service, p.GetResponse)
        if r.status == p.GetStatus.MISS:
            return None
        if r.status == p.GetStatus.INLINE:
            if self.fileobj is None:
                return r.data
            _write_all(self.fileobj, memoryview(r.data))
            return len(r.data)
        # Streamed.
        if self.fileobj is None:
            buf = bytearray(r.total_len)
            conn.read_stream(self.service, r.total_len, into=buf)
            return bytes(buf)
        f = self.fileobj
        conn.read_stream(self.service, r.total_len, lambda mv: _write_all(f, mv))
        return r.total_len


def _source_size(fileobj: BinaryIO) -> int:
    """Bytes left in ``fileobj`` from its current position."""
    try:
        st = os.fstat(fileobj.fileno())
        if stat.S_ISREG(st.st_mode):
            return st.st_size - fileobj.tell()
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    try:
        cur = fileobj.tell()
        end = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(cur, io.SEEK_SET)
        return end - cur
    except (AttributeError, OSError, io.UnsupportedOperation):
        raise ValueError("size is required when the file is not seekable") from None


def _read_fill(fileobj: BinaryIO, mv: memoryview) -> int:
    """Reads until ``mv`` is full or the file ends; returns the bytes read."""
    got = 0
    readinto = getattr(fileobj, "readinto", None)
    while got < len(mv):
        if readinto is not None:
            n = readinto(mv[got:])
            if n is None:  # non-blocking raw file with nothing ready
                raise ValueError("non-blocking file objects are not supported")
        else:
            b = fileobj.read(len(mv) - got)
            n = len(b)
            mv[got : got + n] = b
        if n == 0:
            break
        got += n
    return got


class _Put(_Op):
    """Put from memory (``data``) or from a file (``fileobj`` + ``size``): inline when the frame fits, else streamed."""

    def __init__(
        self,
        service: int,
        key: p.CacheKey,
        data: Optional[BytesLike] = None,
        fileobj: Optional[BinaryIO] = None,
        size: Optional[int] = None,
        chunk_size: int = p.STREAM_CHUNK_SIZE,
    ) -> None:
        self.service, self.key = service, key
        self.key_bytes = key.encode()  # validates the key before anything is sent
        self.chunk_size = chunk_size
        self.short: Optional[str] = None
        if fileobj is None:
            mv = memoryview(data)
            self.data: Optional[memoryview] = mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")
            self.fileobj = None
            self.size = len(self.data)
        else:
            self.data = None
            self.fileobj = fileobj
            self.size = _source_size(fileobj) if size is None else int(size)
            if self.size < 0:
                raise ValueError("size must not be negative")

    @property
    def inline(self) -> bool:
        return len(self.key_bytes) + self.size <= p.MAX_PAYLOAD

    def write(self, conn: _Conn) -> None:
        try:
            self._write(conn)
        except TransportError as e:
            # The daemon may have refused the blob (e.g. too large) and hung up: report its reason.
            err = conn.pending_error()
            if err is not None:
                raise err from e
            raise

    def _write(self, conn: _Conn) -> None:
        svc = self.service
        if self.data is not None:
            if self.inline:
                conn.send_frame(svc, p.CACHE_PUT, self.key_bytes, self.data)
                return
            checksum = p.blob_checksum(self.data)
            conn.send_frame(svc, p.CACHE_PUT_STREAM, self.key_bytes, p._u64(self.size))
            for off in range(0, self.size, self.chunk_size):
                conn.send_frame(svc, p.MSG_STREAM_CHUNK, self.data[off : off + self.chunk_size])
            conn.send_frame(svc, p.MSG_STREAM_END, p._u128(checksum))
            return
        # From a file.
        if self.inline:
            buf = bytearray(self.size)
            got = _read_fill(self.fileobj, memoryview(buf))
            if got < self.size:  # nothing sent yet: the connection is untouched
                raise SourceExhausted(f"file ended after {got} of the {self.size} bytes announced")
            conn.send_frame(svc, p.CACHE_PUT, self.key_bytes, buf)
            return
        hasher = p.new_hasher()
        conn.send_frame(svc, p.CACHE_PUT_STREAM, self.key_bytes, p._u64(self.size))
        buf = bytearray(self.chunk_size)
        sent = 0
        while sent < self.size:
            want = min(self.chunk_size, self.size - sent)
            mv = memoryview(buf)[:want]
            got = _read_fill(self.fileobj, mv)
            if got:
                conn.send_frame(svc, p.MSG_STREAM_CHUNK, mv[:got])
                if hasher is not None:
                    hasher.update(mv[:got])
                sent += got
            if got < want:
                # Close the stream short: the daemon rejects it on length, and the connection stays in sync.
                self.short = f"file ended after {sent} of the {self.size} bytes announced"
                conn.send_frame(svc, p.MSG_STREAM_END, p._u128(0))
                return
        conn.send_frame(svc, p.MSG_STREAM_END, p._u128(hasher.intdigest() if hasher is not None else 0))

    def read(self, conn: _Conn) -> bool:
        try:
            r = conn.read_reply(self.service, p.PutResponse)
        except DaemonError as e:
            if self.short:
                raise SourceExhausted(self.short) from e
            raise
        if self.short:
            raise SourceExhausted(self.short + " (yet the daemon accepted the stream)")
        return r.stored


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------

Submit = Callable[[_Op], Any]


def _cache_stats(m: p.CacheStats) -> Dict[str, int]:
    return m.to_dict()


class _CacheApi:
    """Operations shared by the Shader and Asset caches (built on a key)."""

    SERVICE = 0

    def __init__(self, submit: Submit) -> None:
        self._submit = submit

    def _get(self, key: p.CacheKey, fileobj: Optional[BinaryIO] = None) -> Any:
        if fileobj is not None and not hasattr(fileobj, "write"):
            raise TypeError("fileobj must be a binary file object open for writing")
        return self._submit(_Get(self.SERVICE, key, fileobj))

    def _put(self, key: p.CacheKey, data: BytesLike) -> Any:
        if isinstance(data, str):
            raise TypeError("data must be bytes-like, not str")
        return self._submit(_Put(self.SERVICE, key, data=data))

    def _put_file(self, key: p.CacheKey, fileobj: BinaryIO, size: Optional[int]) -> Any:
        return self._submit(_Put(self.SERVICE, key, fileobj=fileobj, size=size))

    def _exists(self, key: p.CacheKey) -> Any:
        return self._submit(_Simple(self.SERVICE, p.Exists(key), p.ExistsResponse, lambda m: m.exists))

    def _size(self, key: p.CacheKey) -> Any:
        return self._submit(
            _Simple(self.SERVICE, p.Exists(key), p.ExistsResponse, lambda m: m.size if m.exists else None)
        )

    def clear(self) -> int:
        """Removes every entry of this cache, in memory and on disk; returns how many were removed."""
        return self._submit(_Simple(self.SERVICE, p.Clear(), p.ClearResponse, lambda m: m.removed))

    def stats(self) -> Dict[str, int]:
        """This cache's counters: hits, misses, puts, entries, entries_in_memory, bytes_in_memory,
        bytes_on_disk, evictions, corrupt_dropped, memory_budget, disk_budget (0 = unbounded)."""
        return self._submit(_Simple(self.SERVICE, p.CacheStatsRequest(), p.CacheStats, _cache_stats))


class ShaderCache(_CacheApi):
    """The Shader cache (service 2), keyed by ``(source_hash: u64, target: u8, stage: u8)``."""

    SERVICE = p.SERVICE_SHADER

    @staticmethod
    def key(source_hash: int, target: int, stage: int) -> p.ShaderKey:
        return p.ShaderKey(source_hash, target, stage)

    def get(self, source_hash: int, target: int, stage: int) -> Optional[bytes]:
        """The cached blob, or None on a miss."""
        return self._get(self.key(source_hash, target, stage))

    def get_to_file(self, source_hash: int, target: int, stage: int, fileobj: BinaryIO) -> Optional[int]:
        """Writes the cached blob to ``fileobj`` chunk by chunk; returns its size, or None on a miss.

        If a :class:`DaemonError` or :class:`StreamMismatch` interrupts a streamed blob, ``fileobj`` holds a
        partial blob: discard it.
        """
        return self._get(self.key(source_hash, target, stage), fileobj)

    def put(self, source_hash: int, target: int, stage: int, data: BytesLike) -> bool:
        """Stores ``data``; returns False when the daemon did not keep it (larger than every budget).

        Blobs too big for one 16 MiB frame are streamed transparently.
        """
        return self._put(self.key(source_hash, target, stage), data)

    def put_from_file(
        self, source_hash: int, target: int, stage: int, fileobj: BinaryIO, size: Optional[int] = None
    ) -> bool:
        """Stores ``size`` bytes read from ``fileobj`` (default: the rest of a seekable file), streaming them."""
        return self._put_file(self.key(source_hash, target, stage), fileobj, size)

    def exists(self, source_hash: int, target: int, stage: int) -> bool:
        """Whether the key is cached (does not count as a hit or a miss)."""
        return self._exists(self.key(source_hash, target, stage))

    def size(self, source_hash: int, target: int, stage: int) -> Optional[int]:
        """The cached blob's size in bytes, or None when absent (does not count as a hit or a miss)."""
        return self._size(self.key(source_hash, target, stage))


class AssetCache(_CacheApi):
    """The Asset cache (service 3), keyed by ``(path: str, platform: u8)``. Paths are opaque keys."""

    SERVICE = p.SERVICE_ASSET

    @staticmethod
    def key(path: str, platform: int) -> p.AssetKey:
        if not isinstance(path, str):
            raise TypeError(f"asset path must be str, not {type(path).__name__}")
        return p.AssetKey(path, platform)

    def get(self, path: str, platform: int) -> Optional[bytes]:
        """The cached blob, or None on a miss."""
        return self._get(self.key(path, platform))

    def get_to_file(self, path: str, platform: int, fileobj: BinaryIO) -> Optional[int]:
        """Writes the cached blob to ``fileobj`` chunk by chunk; returns its size, or None on a miss.

        If a :class:`DaemonError` or :class:`StreamMismatch` interrupts a streamed blob, ``fileobj`` holds a
        partial blob: discard it.
        """
        return self._get(self.key(path, platform), fileobj)

    def put(self, path: str, platform: int, data: BytesLike) -> bool:
        """Stores ``data``; returns False when the daemon did not keep it. Large blobs are streamed."""
        return self._put(self.key(path, platform), data)

    def put_from_file(self, path: str, platform: int, fileobj: BinaryIO, size: Optional[int] = None) -> bool:
        """Stores ``size`` bytes read from ``fileobj`` (default: the rest of a seekable file), streaming them."""
        return self._put_file(self.key(path, platform), fileobj, size)

    def exists(self, path: str, platform: int) -> bool:
        """Whether the key is cached (does not count as a hit or a miss)."""
        return self._exists(self.key(path, platform))

    def size(self, path: str, platform: int) -> Optional[int]:
        """The cached blob's size in bytes, or None when absent."""
        return self._size(self.key(path, platform))

    def invalidate(self, path: str) -> int:
        """Drops every platform variant of ``path``; returns how many were dropped."""
        if not isinstance(path, str):
            raise TypeError(f"asset path must be str, not {type(path).__name__}")
        return self._submit(_Simple(self.SERVICE, p.Invalidate(path), p.InvalidateResponse, lambda m: m.dropped))

    def declare_deps(self, path: str, platform: int, deps: List[str]) -> int:
        """Declares the source files ``(path, platform)`` was built from: when one changes, the daemon drops the
        variant and sends AssetInvalidated to connections that subscribed. Returns how many are watched."""
        files = [os.path.abspath(d) for d in deps]
        return self._submit(
            _Simple(self.SERVICE, p.DeclareDeps(path, platform, files), p.DeclareDepsResponse, lambda m: m.watched)
        )

    def subscribe_invalidations(self) -> None:
        """AssetInvalidated events (``p.AssetInvalidated``) arrive on this connection (see ``on_event``)."""
        self._submit(_Simple(self.SERVICE, p.SubscribeInvalidations(), p.SubscribeInvalidationsResponse))

    def get_or_import(
        self,
        source_path: str,
        platform: int,
        importer_id: str,
        importer_version: int,
        import_fn: Callable[[], BytesLike],
        deps: Optional[List[str]] = None,
    ) -> bytes:
        """The variant of ``source_path`` for ``platform`` made by this importer: from the cache, or made by
        ``import_fn()`` -- run at most once across every process asking at the same time (the others wait for
        its result). Keyed on the BLAKE3 of the source's and ``deps``' contents (not their mtimes), the
        importer's id and version and the platform; once stored, the source and deps are watched and a change
        drops the variant. Not available in a pipeline."""
        claim = p.ImportClaim(
            platform,
            importer_id,
            importer_version,
            os.path.abspath(source_path),
            [os.path.abspath(d) for d in (deps or [])],
        )
        # A ready variant can be evicted before it is read: claim again (then this call may import it).
        for _ in range(8):
            r = self._submit(_Simple(self.SERVICE, claim, p.ImportClaimResponse))
            if not isinstance(r, p.ImportClaimResponse):
                raise TypeError("get_or_import cannot run in a pipeline")
            if r.status == p.CLAIM_READY:
                data = self.get(r.path, platform)
                if data is not None:
                    return data
                continue
            return self._import(r.path, platform, import_fn)
        raise SparkError("the imported variant kept being evicted before it could be read")

    def _import(self, path: str, platform: int, import_fn: Callable[[], BytesLike]) -> bytes:
        def done(ok: bool) -> None:
            self._submit(_Simple(self.SERVICE, p.ImportDone(path, platform, ok), p.ImportDoneResponse))

        try:
            data = bytes(import_fn())
            stored = self.put(path, platform, data)
        except BaseException:
            # Wake the waiters: one of them imports instead.
            done(False)
            raise
        done(stored)
        return data


class WatchApi:
    """The Watch service (7): file-system watches kept by the daemon, with clocks (see docs/protocol.md §12).

    Clocks are ``(instance, seq)`` tuples; ``protocol.format_clock`` / ``parse_clock`` give the ``c:<hex>:<seq>``
    form. Events of a subscription (``protocol.WatchChanges``, ``WatchRescan``, ``WatchEnded``) reach the
    client's ``on_event`` while it talks to the daemon; a tool that polls uses :meth:`query` instead."""

    SERVICE = p.SERVICE_WATCH

    def __init__(self, submit: Submit) -> None:
        self._submit = submit

    @staticmethod
    def _args(root: str, include, exclude, no_ignore_files: bool, since) -> tuple:
        inst, seq = since if since is not None else (0, 0)
        flags = p.WATCH_FLAG_NO_IGNORE_FILES if no_ignore_files else 0
        return (os.path.abspath(root), flags, list(include or []), list(exclude or []), inst, seq)

    def subscribe(self, root: str, include=None, exclude=None, no_ignore_files: bool = False, since=None):
        """Subscribes this connection to ``root``; returns a ``protocol.WatchSubscribeResponse``."""
        m = p.WatchSubscribe(*self._args(root, include, exclude, no_ignore_files, since))
        return self._submit(_Simple(self.SERVICE, m, p.WatchSubscribeResponse))

    def unsubscribe(self, subscription: int) -> bool:
        m = p.WatchUnsubscribe(subscription)
        return self._submit(_Simple(self.SERVICE, m, p.WatchUnsubscribeResponse, lambda r: r.existed))

    def query(self, root: str, since=None, include=None, exclude=None, no_ignore_files: bool = False):
        """Files under ``root`` matching the globs changed since the clock: a ``protocol.WatchQueryResponse``
        (``.fresh_instance`` true: no history back to the clock -- rescan; ``(.instance, .seq)`` is the clock
        to pass next time)."""
        m = p.WatchQuery(*self._args(root, include, exclude, no_ignore_files, since))
        return self._submit(_Simple(self.SERVICE, m, p.WatchQueryResponse))

    def list(self):
        """Every watched root: a list of ``protocol.WatchRoot`` (subscribers, OS watches, files, rescans)."""
        return self._submit(_Simple(self.SERVICE, p.WatchList(), p.WatchListResponse, lambda r: r.roots))


class _ControlApi:
    """Control requests that can run alone or in a pipeline."""

    _submit: Submit

    def ping(self, data: BytesLike = b"") -> float:
        """Round trip time in seconds of a Ping carrying ``data`` (which the daemon echoes)."""
        return self._submit(_Ping(bytes(data)))

    def version(self) -> p.VersionResponse:
        """The daemon's protocol version and version string (``.protocol_version``, ``.daemon_version``)."""
        return self._submit(_Simple(p.SERVICE_CONTROL, p.Version(), p.VersionResponse))

    def stats(self) -> Dict[str, Any]:
        """Daemon-wide statistics: uptime_secs, protocol_version, services, current_connections,
        total_connections."""
        return self._submit(_Simple(p.SERVICE_CONTROL, p.StatsRequest(), p.StatsResponse, lambda m: m.to_dict()))

    def register_sponsor(self, pid: Optional[int] = None) -> int:
        """Registers ``pid`` (default: this process) as a sponsor; returns the number of live sponsors."""
        pid = os.getpid() if pid is None else pid
        return self._submit(
            _Simple(p.SERVICE_CONTROL, p.RegisterSponsor(pid), p.RegisterSponsorAck, lambda m: m.sponsors)
        )

    def namespaces(self) -> List[p.NamespaceStats]:
        """Every namespace the daemon serves (``.name``, ``.service``, ``.counters`` as (name, value) pairs)."""
        return self._submit(
            _Simple(p.SERVICE_CONTROL, p.Namespaces(), p.NamespacesResponse, lambda m: m.namespaces)
        )

    def request_raw(self, service: int, msg_type: int, payload: BytesLike = b"") -> p.Frame:
        """Sends one raw frame and returns the first reply frame (low level: tests, new messages).

        An ErrorResponse raises :class:`DaemonError`. Only for requests answered by a single frame.
        """
        return self._submit(_Raw(service, msg_type, bytes(payload)))


class Client(_ControlApi, CompileApi):
    """A connection to ``sparkd``.

    Args:
        socket_path: the daemon's Unix socket (default: :func:`default_socket_path`).
        timeout: seconds any single socket operation may block (None: forever). A timeout raises
            :class:`TransportError` and closes the connection.
        client_name: sent in Hello, shown in the daemon's logs.
        sponsor: sets the Hello sponsor flag (the daemon then lives as long as this process, with
            ``--exit-with-sponsors``).
        on_event: optional callable receiving server-initiated event frames (message type >= 0x8000) as raw
            :class:`~sparkdaemon.protocol.Frame` objects; :func:`~sparkdaemon.protocol.decode_message` turns
            the ones this package knows (e.g. :class:`~sparkdaemon.protocol.EventsLost`) into messages. It runs
            while the connection is locked: it must not call this client.

    The connection opens on :meth:`connect` (or ``with Client() as c``), or lazily on the first request.
    Attributes: ``hello`` is the :class:`~sparkdaemon.protocol.HelloResponse` of the current connection;
    ``shader`` and ``asset`` are the two caches.
    """

    def __init__(
        self,
        socket_path: Optional[Union[str, "os.PathLike[str]"]] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        client_name: str = "python",
        *,
        sponsor: bool = False,
        on_event: Optional[Callable[[p.Frame], Any]] = None,
    ) -> None:
        self.socket_path = os.fspath(socket_path) if socket_path is not None else default_socket_path()
        self.timeout = timeout
        self.client_name = client_name
        self.sponsor = sponsor
        self.on_event = on_event
        self.hello: Optional[p.HelloResponse] = None
        self._conn: Optional[_Conn] = None
        self._lock = threading.Lock()
        self.shader = ShaderCache(self._submit)
        self.asset = AssetCache(self._submit)
        self.watch = WatchApi(self._submit)
        _live_clients.add(self)

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the lock at fork time; the child has only this thread.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "not connected"
        return f"<sparkdaemon.Client {self.socket_path!r} {state}>"

    # ---- connection ----

    def connect(self) -> "Client":
        """Connects and performs the Hello handshake (no-op when already connected). Returns ``self``.

        Raises :class:`DaemonNotRunning` at once when the socket is missing or refuses connections.
        """
        with self._lock:
            self._ensure_conn()
        return self

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def close(self) -> None:
        """Closes the connection (waits for an exchange in flight). A later request reconnects."""
        with self._lock:
            self._drop()

    def __enter__(self) -> "Client":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _open(self) -> _Conn:
        path = self.socket_path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
            sock.close()
            raise DaemonNotRunning(path, e.strerror or str(e)) from None
        except socket.timeout:
            sock.close()
            raise TransportError(f"timed out connecting to {path}") from None
        except OSError as e:
            sock.close()
            raise TransportError(f"cannot connect to {path}: {e}") from e
        conn = _Conn(sock, self.timeout, self.on_event)
        try:
            flags = p.HELLO_FLAG_SPONSOR if self.sponsor else 0
            conn.send_message(
                p.SERVICE_CONTROL, p.Hello(p.PROTOCOL_VERSION, flags, os.getpid() & 0xFFFFFFFF, self.client_name)
            )
            self.hello = conn.read_reply(p.SERVICE_CONTROL, p.HelloResponse)
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_conn(self) -> _Conn:
        conn = self._conn
        if conn is not None and conn.pid != os.getpid():
            # Inherited through fork(): the parent owns that stream. Close our copy of the descriptor only.
            conn.close()
            conn = self._conn = None
        if conn is None:
            conn = self._conn = self._open()
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ---- exchanges ----

    def _submit(self, op: _Op) -> Any:
        """Runs one request/reply exchange under the lock."""
        with self._lock:
            conn = self._ensure_conn()
            sent_before = conn.sent
            try:
                op.write(conn)
            except BaseException as e:
                # A request cut off half way leaves the connection unusable; one refused before anything was
                # sent (bad arguments, a short inline file) does not.
                if conn.sent != sent_before or isinstance(e, (TransportError, DaemonError)):
                    self._drop()
                raise
            try:
                return op.read(conn)
            except _IN_SYNC:
                raise
            except BaseException:
                self._drop()
                raise

    def _submit_many(self, ops: List[_Op], return_exceptions: bool) -> List[Any]:
        """Writes every request (from a helper thread) while reading the replies in order."""
        if not ops:
            return []
        with self._lock:
            conn = self._ensure_conn()
            writer_error: List[BaseException] = []

            def writer() -> None:
                try:
                    for op in ops:
                        op.write(conn)
                except BaseException as e:  # noqa: B036 - reported to the reading thread
                    writer_error.append(e)
                    conn.abort()

            t = threading.Thread(target=writer, name="sparkdaemon-pipeline-writer", daemon=True)
            conn.pipelining = True
            t.start()
            results: List[Any] = []
            try:
                for op in ops:
                    try:
                        results.append(op.read(conn))
                    except _IN_SYNC as e:
                        results.append(e)
            except BaseException:
                conn.abort()  # wakes the writer if it is blocked sending
                t.join()
                self._drop()
                if writer_error:
                    raise writer_error[0] from None
                raise
            finally:
                conn.pipelining = False
            t.join()
            if writer_error:
                self._drop()
                raise writer_error[0]
        if not return_exceptions:
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return results

    # ---- control requests not available in a pipeline ----

    def shutdown(self) -> None:
        """Asks the daemon to finish in-flight requests and exit; closes this connection once acknowledged."""
        try:
            self._submit(_Simple(p.SERVICE_CONTROL, p.Shutdown(), p.ShutdownAck))
        finally:
            self.close()

    def pipeline(self) -> "Pipeline":
        """A :class:`Pipeline` that sends several requests before reading their replies."""
        return Pipeline(self)


class Pipeline(_ControlApi):
    """Queues requests, then sends them all at once and reads the replies in order (fewer round trips)::

        pipe = client.pipeline()
        for h in hashes:
            pipe.shader.get(h, 3, 1)
        blobs = pipe.execute()          # one result per request, in order

    Queuing methods mirror the client's (``ping``, ``version``, ``stats``, ``register_sponsor``,
    ``request_raw``, ``shader.*``, ``asset.*``) and return the request's index in the results. The connection is
    held for the whole of :meth:`execute`.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._ops: List[_Op] = []
        self.shader = ShaderCache(self._submit)
        self.asset = AssetCache(self._submit)
        self.watch = WatchApi(self._submit)

    def _submit(self, op: _Op) -> int:
        self._ops.append(op)
        return len(self._ops) - 1

    def __len__(self) -> int:
        return len(self._ops)

    def execute(self, return_exceptions: bool = False) -> List[Any]:
        """Sends every queued request and returns their results in order; the queue is then empty.

        A request answered by an ErrorResponse raises its :class:`DaemonError` after every reply was read, unless
        ``return_exceptions`` is true, in which case the exception object takes that request's place in the list.
        Transport and protocol errors always raise.
        """
        ops, self._ops = self._ops, []
        return self._client._submit_many(ops, return_exceptions)


_live_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for c in list(_live_clients):
        c._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def connect(socket_path: Optional[str] = None, **kwargs: Any) -> Client:
    """Creates a :class:`Client` and connects it (see :class:`Client` for the arguments)."""
    return Client(socket_path, **kwargs).connect()
