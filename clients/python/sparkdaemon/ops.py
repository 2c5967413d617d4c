"""One request's exchange on a connection: what to send, how to read its reply (inline or streamed), and
what to return. `client.py` runs them on its connection; the typed APIs build them.
"""

from __future__ import annotations

import io  # noqa: F401
import os  # noqa: F401
import stat  # noqa: F401
import time  # noqa: F401
from typing import TYPE_CHECKING
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Union  # noqa: F401

from . import protocol as p
from .errors import (  # noqa: F401
    DaemonError,
    ProtocolError,
    SparkError,
    StreamMismatch,
    TransportError,
    UnexpectedMessage,
)

BytesLike = Union[bytes, bytearray, memoryview]

if TYPE_CHECKING:  # annotations only: client.py imports this module
    from .client import _Conn  # noqa: F401


class SourceExhausted(SparkError, ValueError):
    """``put_from_file`` was told ``size`` bytes but the file ended earlier. Nothing was stored."""


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
