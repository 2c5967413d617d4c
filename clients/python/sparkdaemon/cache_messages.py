"""The cache services' messages (Shader ``0x0002`` and Asset ``0x0003``: one set of layouts, two key types),
mirroring ``crates/spark-proto/src/cache.rs``.

Re-exported by :mod:`sparkdaemon.protocol`, which imports this module once its codecs are defined.
"""

from __future__ import annotations

import enum  # noqa: F401
import struct  # noqa: F401
from dataclasses import dataclass, field  # noqa: F401
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Tuple, Type, Union  # noqa: F401

from .errors import (  # noqa: F401
    DaemonError,
    FrameTooLarge,
    InvalidUtf8,
    InvalidValue,
    TrailingBytes,
    Truncated,
    UnexpectedMessage,
)

from .protocol import *  # noqa: F401,F403
from .protocol import (  # noqa: F401
    _Empty,
    _list_str16,
    _list_u16,
    _pack,
    _str16,
    _u8,
    _u16,
    _u32,
    _u64,
    _u128,
)


# ---- cache keys ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShaderKey:
    """Shader key: ``u64`` source hash, ``u8`` target, ``u8`` stage (10 bytes)."""

    source_hash: int
    target: int
    stage: int

    def encode(self) -> bytes:
        return _u64(self.source_hash, "source_hash") + _u8(self.target, "target") + _u8(self.stage, "stage")

    @classmethod
    def read(cls, r: Reader) -> "ShaderKey":
        return cls(r.u64(), r.u8(), r.u8())


@dataclass(frozen=True)
class AssetKey:
    """Asset key: ``u8`` platform, then ``str16`` path (an opaque key, never a file-system path)."""

    path: str
    platform: int

    def encode(self) -> bytes:
        return _u8(self.platform, "platform") + _str16(self.path, "asset path")

    @classmethod
    def read(cls, r: Reader) -> "AssetKey":
        platform = r.u8()
        path = r.str16()
        return cls(path, platform)


CacheKey = Union[ShaderKey, AssetKey]

# ---- cache messages ------------------------------------------------------------------------------------------


@dataclass
class Get(Message):
    """Get: the key. Use :class:`ShaderGet` / :class:`AssetGet` to decode."""

    TYPE: ClassVar[int] = CACHE_GET
    KEY: ClassVar[type] = ShaderKey
    key: CacheKey

    def encode(self) -> bytes:
        return self.key.encode()

    @classmethod
    def decode(cls, payload: BytesLike):
        r = Reader(payload)
        m = cls(cls.KEY.read(r))
        r.finish()
        return m


class ShaderGet(Get):
    KEY = ShaderKey


class AssetGet(Get):
    KEY = AssetKey


@dataclass
class Put(Message):
    """Put: the key, then the whole blob as the rest of the payload."""

    TYPE: ClassVar[int] = CACHE_PUT
    KEY: ClassVar[type] = ShaderKey
    key: CacheKey
    data: bytes = b""

    def encode(self) -> bytes:
        return self.key.encode() + bytes(self.data)

    @classmethod
    def decode(cls, payload: BytesLike):
        r = Reader(payload)
        key = cls.KEY.read(r)
        return cls(key, r.rest())


class ShaderPut(Put):
    KEY = ShaderKey


class AssetPut(Put):
    KEY = AssetKey


@dataclass
class PutStream(Message):
    """PutStream: the key and the ``u64`` total length; chunk frames and a StreamEnd follow."""

    TYPE: ClassVar[int] = CACHE_PUT_STREAM
    KEY: ClassVar[type] = ShaderKey
    key: CacheKey
    total_len: int

    def encode(self) -> bytes:
        return self.key.encode() + _u64(self.total_len, "total_len")

    @classmethod
    def decode(cls, payload: BytesLike):
        r = Reader(payload)
        key = cls.KEY.read(r)
        m = cls(key, r.u64())
        r.finish()
        return m


class ShaderPutStream(PutStream):
    KEY = ShaderKey


class AssetPutStream(PutStream):
    KEY = AssetKey


@dataclass
class Exists(Message):
    """Exists: the key."""

    TYPE: ClassVar[int] = CACHE_EXISTS
    KEY: ClassVar[type] = ShaderKey
    key: CacheKey

    def encode(self) -> bytes:
        return self.key.encode()

    @classmethod
    def decode(cls, payload: BytesLike):
        r = Reader(payload)
        m = cls(cls.KEY.read(r))
        r.finish()
        return m


class ShaderExists(Exists):
    KEY = ShaderKey


class AssetExists(Exists):
    KEY = AssetKey


class GetStatus(enum.IntEnum):
    """How a :class:`GetResponse` carries its blob."""

    MISS = 0
    INLINE = 1
    STREAMED = 2


@dataclass
class GetResponse(Message):
    """GetResponse: ``u8`` status; INLINE: the rest is the blob; STREAMED: ``u64`` total length."""

    TYPE: ClassVar[int] = CACHE_GET_RESPONSE
    status: int
    data: bytes = b""
    total_len: int = 0

    def encode(self) -> bytes:
        if self.status == GetStatus.MISS:
            return b"\x00"
        if self.status == GetStatus.INLINE:
            return b"\x01" + bytes(self.data)
        if self.status == GetStatus.STREAMED:
            return b"\x02" + _u64(self.total_len, "total_len")
        raise ValueError(f"invalid get status {self.status!r}")

    @classmethod
    def decode(cls, payload: BytesLike) -> "GetResponse":
        r = Reader(payload)
        status = r.u8()
        if status == GetStatus.MISS:
            m = cls(GetStatus.MISS)
        elif status == GetStatus.INLINE:
            m = cls(GetStatus.INLINE, data=r.rest())
        elif status == GetStatus.STREAMED:
            m = cls(GetStatus.STREAMED, total_len=r.u64())
        else:
            raise InvalidValue("get status")
        r.finish()
        return m


@dataclass
class PutResponse(Message):
    """PutResponse: ``u8`` stored (1) or not kept because it exceeds every budget (0)."""

    TYPE: ClassVar[int] = CACHE_PUT_RESPONSE
    stored: bool

    def encode(self) -> bytes:
        return b"\x01" if self.stored else b"\x00"

    @classmethod
    def decode(cls, payload: BytesLike) -> "PutResponse":
        r = Reader(payload)
        m = cls(r.u8() != 0)
        r.finish()
        return m


@dataclass
class StreamChunk(Message):
    """One piece of a streamed blob: the payload is raw blob bytes."""

    TYPE: ClassVar[int] = MSG_STREAM_CHUNK
    data: bytes = b""

    def encode(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def decode(cls, payload: BytesLike) -> "StreamChunk":
        return cls(bytes(payload))


@dataclass
class StreamEnd(Message):
    """The end of a stream: ``u128`` XXH3-128 of the whole blob, little-endian (0 = not supplied)."""

    TYPE: ClassVar[int] = MSG_STREAM_END
    checksum: int = 0

    def encode(self) -> bytes:
        return _u128(self.checksum, "checksum")

    @classmethod
    def decode(cls, payload: BytesLike) -> "StreamEnd":
        r = Reader(payload)
        m = cls(r.u128())
        r.finish()
        return m


@dataclass
class ExistsResponse(Message):
    """ExistsResponse: ``u8`` exists, ``u64`` size in bytes (0 when absent)."""

    TYPE: ClassVar[int] = CACHE_EXISTS_RESPONSE
    exists: bool
    size: int = 0

    def encode(self) -> bytes:
        return (b"\x01" if self.exists else b"\x00") + _u64(self.size, "size")

    @classmethod
    def decode(cls, payload: BytesLike) -> "ExistsResponse":
        r = Reader(payload)
        m = cls(r.u8() != 0, r.u64())
        r.finish()
        return m


class Clear(_Empty):
    """Removes every entry of the service, in memory and on disk."""

    TYPE = CACHE_CLEAR


class CacheStatsRequest(_Empty):
    """Cache Stats: asks for :class:`CacheStats`."""

    TYPE = CACHE_STATS


@dataclass
class ClearResponse(Message):
    """ClearResponse: ``u64`` entries removed."""

    TYPE: ClassVar[int] = CACHE_CLEAR_RESPONSE
    removed: int

    def encode(self) -> bytes:
        return _u64(self.removed, "removed")

    @classmethod
    def decode(cls, payload: BytesLike) -> "ClearResponse":
        r = Reader(payload)
        m = cls(r.u64())
        r.finish()
        return m


#: CacheStats field names, in wire order.
CACHE_STATS_FIELDS = (
    "hits",
    "misses",
    "puts",
    "entries",
    "entries_in_memory",
    "bytes_in_memory",
    "bytes_on_disk",
    "evictions",
    "corrupt_dropped",
    "memory_budget",
    "disk_budget",
)


@dataclass
class CacheStats(Message):
    """A cache service's statistics: eleven ``u64``. Trailing bytes are ignored."""

    TYPE: ClassVar[int] = CACHE_STATS_RESPONSE
    hits: int = 0
    misses: int = 0
    puts: int = 0
    entries: int = 0
    entries_in_memory: int = 0
    bytes_in_memory: int = 0
    bytes_on_disk: int = 0
    evictions: int = 0
    corrupt_dropped: int = 0
    memory_budget: int = 0
    #: 0 = unbounded (or no disk tier).
    disk_budget: int = 0

    def encode(self) -> bytes:
        return b"".join(_u64(getattr(self, k), k) for k in CACHE_STATS_FIELDS)

    @classmethod
    def decode(cls, payload: BytesLike) -> "CacheStats":
        r = Reader(payload)
        return cls(*(r.u64() for _ in CACHE_STATS_FIELDS))

    def to_dict(self) -> Dict[str, int]:
        return {k: getattr(self, k) for k in CACHE_STATS_FIELDS}


@dataclass
class Invalidate(Message):
    """Invalidate (Asset only): ``str16`` path. Drops every platform variant of the path."""

    TYPE: ClassVar[int] = CACHE_INVALIDATE
    path: str

    def encode(self) -> bytes:
        return _str16(self.path, "asset path")

    @classmethod
    def decode(cls, payload: BytesLike) -> "Invalidate":
        r = Reader(payload)
        m = cls(r.str16())
        r.finish()
        return m


@dataclass
class InvalidateResponse(Message):
    """InvalidateResponse: ``u32`` variants dropped."""

    TYPE: ClassVar[int] = CACHE_INVALIDATE_RESPONSE
    dropped: int

    def encode(self) -> bytes:
        return _u32(self.dropped, "dropped")

    @classmethod
    def decode(cls, payload: BytesLike) -> "InvalidateResponse":
        r = Reader(payload)
        m = cls(r.u32())
        r.finish()
        return m
