"""The SparkDaemon wire protocol: frames and message codecs, with no I/O.

This module mirrors ``crates/spark-proto`` byte for byte (checked by ``tests/test_vectors.py`` against
``docs/protocol-vectors.json``).

Framing: every message travels in a frame made of an 8-byte little-endian header -- ``u32`` payload length,
``u16`` service id, ``u16`` message type -- followed by at most :data:`MAX_PAYLOAD` (16 MiB) bytes of payload.

Field encodings: integers are little-endian; ``str16`` is a ``u16`` byte length followed by that many bytes of
UTF-8; lists carry a ``u16`` element count.

Rules every client relies on:

* replies on one connection come in request order, one logical reply per request (so requests may be
  pipelined);
* message type :data:`MSG_ERROR` (``0x00FF``) is an :class:`ErrorResponse` on *every* service;
* message types at or above :data:`MSG_EVENT_MIN` (``0x8000``) are server-initiated events, never replies;
* blobs larger than one frame travel as :data:`MSG_STREAM_CHUNK` frames closed by one :data:`MSG_STREAM_END`
  frame carrying the XXH3-128 of the whole blob (0 = "not supplied").
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Tuple, Type, Union

from .errors import (
    DaemonError,
    FrameTooLarge,
    InvalidUtf8,
    InvalidValue,
    TrailingBytes,
    Truncated,
    UnexpectedMessage,
)

BytesLike = Union[bytes, bytearray, memoryview]

# --------------------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------------------

#: The protocol version this package speaks (sent in Hello).
PROTOCOL_VERSION = 1
#: Length of the frame header in bytes.
HEADER_LEN = 8
#: Largest payload one frame may carry: 16 MiB. Larger blobs are streamed.
MAX_PAYLOAD = 16 * 1024 * 1024
#: Size of the STREAM_CHUNK frames this client sends.
STREAM_CHUNK_SIZE = 1024 * 1024
#: Longest asset path the daemon accepts, in bytes of UTF-8 (the daemon enforces it, not this client).
MAX_ASSET_PATH = 4096

# Service ids. Stable: never renumbered.
SERVICE_CONTROL = 0x0001
SERVICE_SHADER = 0x0002
SERVICE_ASSET = 0x0003
SERVICE_COMPILE = 0x0004
SERVICE_COLLAB = 0x0005
SERVICE_BUILD = 0x0006  # reserved
SERVICE_WATCH = 0x0007

SERVICE_NAMES = {
    SERVICE_CONTROL: "control",
    SERVICE_SHADER: "shader",
    SERVICE_ASSET: "asset",
    SERVICE_COMPILE: "compile",
    SERVICE_COLLAB: "collab",
    SERVICE_BUILD: "build",
    SERVICE_WATCH: "watch",
}


def service_name(service: int) -> str:
    """A human name for a service id (``"unknown"`` for ids this client does not know)."""
    return SERVICE_NAMES.get(service, "unknown")


# Message types reserved on every service.
MSG_STREAM_CHUNK = 0x00F0
MSG_STREAM_END = 0x00F1
MSG_ERROR = 0x00FF
MSG_EVENT_MIN = 0x8000


def is_event(msg_type: int) -> bool:
    """True when ``msg_type`` is a server-initiated event rather than a reply."""
    return msg_type >= MSG_EVENT_MIN


# Control service (0x0001) message types: requests are odd, their responses the next even number.
CONTROL_PING = 0x0001
CONTROL_PONG = 0x0002
CONTROL_VERSION = 0x0003
CONTROL_VERSION_RESPONSE = 0x0004
CONTROL_SHUTDOWN = 0x0005
CONTROL_SHUTDOWN_ACK = 0x0006
CONTROL_STATS = 0x0007
CONTROL_STATS_RESPONSE = 0x0008
CONTROL_HELLO = 0x0009
CONTROL_HELLO_RESPONSE = 0x000A
CONTROL_REGISTER_SPONSOR = 0x000B
CONTROL_REGISTER_SPONSOR_ACK = 0x000C
CONTROL_NAMESPACES = 0x000D
CONTROL_NAMESPACES_RESPONSE = 0x000E
#: Event (Control): the daemon dropped events for this connection because its event queue was full.
CONTROL_EVENTS_LOST = 0x8001

#: Hello flag: register the client's pid as a sponsor of the daemon.
HELLO_FLAG_SPONSOR = 1

# Cache services (Shader 0x0002, Asset 0x0003) message types.
CACHE_GET = 0x0001
CACHE_GET_RESPONSE = 0x0002
CACHE_PUT = 0x0003
CACHE_PUT_RESPONSE = 0x0004
CACHE_PUT_STREAM = 0x0005
CACHE_EXISTS = 0x0007
CACHE_EXISTS_RESPONSE = 0x0008
CACHE_CLEAR = 0x0009
CACHE_CLEAR_RESPONSE = 0x000A
CACHE_STATS = 0x000B
CACHE_STATS_RESPONSE = 0x000C
CACHE_INVALIDATE = 0x000D  # asset only
CACHE_INVALIDATE_RESPONSE = 0x000E  # asset only

# --------------------------------------------------------------------------------------------------------------
# Checksums (XXH3-128, only when the optional third-party ``xxhash`` module is installed)
# --------------------------------------------------------------------------------------------------------------

try:  # pragma: no cover - depends on the environment
    import xxhash as _xxhash

    HAVE_XXHASH = hasattr(_xxhash, "xxh3_128_intdigest") and hasattr(_xxhash, "xxh3_128")
except ImportError:  # pragma: no cover
    _xxhash = None
    HAVE_XXHASH = False


from .xxh3 import xxh3_128  # noqa: E402  (pure Python: checks, small inputs; re-exported here)


def blob_checksum(data: BytesLike) -> int:
    """XXH3-128 of ``data`` as an int, or 0 ("not supplied") when ``xxhash`` is not installed."""
    if not HAVE_XXHASH:
        return 0
    return _xxhash.xxh3_128_intdigest(data)


def new_hasher() -> Any:
    """An incremental XXH3-128 hasher (``update()``, ``intdigest()``), or None without ``xxhash``."""
    if not HAVE_XXHASH:
        return None
    return _xxhash.xxh3_128()


# --------------------------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------------------------

_HEADER = struct.Struct("<IHH")


class FrameHeader(NamedTuple):
    """A decoded frame header."""

    length: int
    service: int
    msg_type: int


class Frame(NamedTuple):
    """One frame: routing fields plus the payload."""

    service: int
    msg_type: int
    payload: bytes

    @property
    def is_error(self) -> bool:
        """True for an ErrorResponse, whatever the service."""
        return self.msg_type == MSG_ERROR

    @property
    def is_event(self) -> bool:
        """True for a server-initiated event."""
        return is_event(self.msg_type)

    def encode(self) -> bytes:
        """Header and payload as one buffer."""
        return encode_frame(self.service, self.msg_type, self.payload)


def encode_header(length: int, service: int, msg_type: int) -> bytes:
    """The 8-byte header for a payload of ``length`` bytes. Raises FrameTooLarge above 16 MiB."""
    if length > MAX_PAYLOAD:
        raise FrameTooLarge(length)
    try:
        return _HEADER.pack(length, service, msg_type)
    except struct.error as e:
        raise ValueError(f"invalid frame header field: {e}") from None


def decode_header(data: BytesLike) -> FrameHeader:
    """Parses the first 8 bytes of ``data`` as a header.

    Raises :class:`Truncated` when fewer than 8 bytes are given and :class:`FrameTooLarge` when the announced
    length is above 16 MiB (before anything is allocated for it).
    """
    if len(data) < HEADER_LEN:
        raise Truncated("frame header needs 8 bytes")
    length, service, msg_type = _HEADER.unpack_from(data, 0)
    if length > MAX_PAYLOAD:
        raise FrameTooLarge(length)
    return FrameHeader(length, service, msg_type)


def encode_frame(service: int, msg_type: int, payload: BytesLike = b"") -> bytes:
    """Header and payload as one ``bytes``. Raises FrameTooLarge for payloads above 16 MiB."""
    return encode_header(len(payload), service, msg_type) + bytes(payload)


def decode_frame(data: BytesLike, offset: int = 0) -> Optional[Tuple[Frame, int]]:
    """Decodes one frame starting at ``offset`` of ``data``.

    Returns ``(frame, next_offset)``, or None when ``data`` does not yet hold the whole frame. An oversize header
    raises :class:`FrameTooLarge` as soon as its 8 bytes are present.
    """
    if len(data) - offset < HEADER_LEN:
        return None
    h = decode_header(memoryview(data)[offset : offset + HEADER_LEN])
    start = offset + HEADER_LEN
    end = start + h.length
    if len(data) < end:
        return None
    return Frame(h.service, h.msg_type, bytes(data[start:end])), end


def decode_frame_exact(data: BytesLike) -> Frame:
    """Decodes exactly one frame from a complete buffer (raises Truncated / TrailingBytes otherwise)."""
    r = decode_frame(data)
    if r is None:
        raise Truncated("buffer ends before the frame does")
    frame, end = r
    if end != len(data):
        raise TrailingBytes("buffer has bytes after the frame")
    return frame


class FrameDecoder:
    """Incremental frame decoder for callers that do their own I/O (e.g. asyncio)::

        dec = FrameDecoder()
        for frame in dec.feed(chunk):
            ...
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: BytesLike) -> List[Frame]:
        """Adds received bytes; returns every frame now complete, in order."""
        self._buf += data
        frames = []
        pos = 0
        while True:
            r = decode_frame(self._buf, pos)
            if r is None:
                break
            frame, pos = r
            frames.append(frame)
        if pos:
            del self._buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole frame."""
        return len(self._buf)


# --------------------------------------------------------------------------------------------------------------
# Field codecs
# --------------------------------------------------------------------------------------------------------------

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Reader:
    """A bounds-checked cursor over one payload. Every read raises :class:`Truncated` past the end."""

    def __init__(self, payload: BytesLike) -> None:
        self._mv = memoryview(payload).cast("B") if not isinstance(payload, bytes) else memoryview(payload)
        self._pos = 0

    def _take(self, n: int) -> memoryview:
        end = self._pos + n
        if end > len(self._mv):
            raise Truncated()
        s = self._mv[self._pos : end]
        self._pos = end
        return s

    def _unpack(self, st: struct.Struct) -> int:
        end = self._pos + st.size
        if end > len(self._mv):
            raise Truncated()
        (v,) = st.unpack_from(self._mv, self._pos)
        self._pos = end
        return v

    def u8(self) -> int:
        return self._unpack(_U8)

    def u16(self) -> int:
        return self._unpack(_U16)

    def u32(self) -> int:
        return self._unpack(_U32)

    def u64(self) -> int:
        return self._unpack(_U64)

    def u128(self) -> int:
        return int.from_bytes(self._take(16), "little")

    def str16(self) -> str:
        """A ``u16``-length-prefixed UTF-8 string."""
        n = self.u16()
        raw = self._take(n)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise InvalidUtf8() from None

    def list_u16(self) -> List[int]:
        n = self.u16()
        if n * 2 > self.remaining:
            raise Truncated()
        return [self.u16() for _ in range(n)]

    def list_str16(self) -> List[str]:
        n = self.u16()
        if n * 2 > self.remaining:
            raise Truncated()
        return [self.str16() for _ in range(n)]

    def rest(self) -> bytes:
        """Everything left."""
        b = bytes(self._mv[self._pos :])
        self._pos = len(self._mv)
        return b

    @property
    def remaining(self) -> int:
        return len(self._mv) - self._pos

    def finish(self) -> None:
        """Raises :class:`TrailingBytes` when bytes are left over (messages have exact layouts)."""
        if self.remaining:
            raise TrailingBytes()


def _pack(st: struct.Struct, value: int, what: str) -> bytes:
    try:
        return st.pack(value)
    except struct.error:
        raise ValueError(f"{what} out of range: {value!r}") from None


def _u8(v: int, what: str = "u8") -> bytes:
    return _pack(_U8, v, what)


def _u16(v: int, what: str = "u16") -> bytes:
    return _pack(_U16, v, what)


def _u32(v: int, what: str = "u32") -> bytes:
    return _pack(_U32, v, what)


def _u64(v: int, what: str = "u64") -> bytes:
    return _pack(_U64, v, what)


def _u128(v: int, what: str = "u128") -> bytes:
    if not isinstance(v, int) or not 0 <= v < 1 << 128:
        raise ValueError(f"{what} out of range: {v!r}")
    return v.to_bytes(16, "little")


def _str16(s: str, what: str = "string") -> bytes:
    """``u16`` length + UTF-8. Raises ValueError past 65535 bytes (never truncates: keys must not collide)."""
    if not isinstance(s, str):
        raise TypeError(f"{what} must be str, not {type(s).__name__}")
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError(f"{what} is {len(b)} bytes of UTF-8; at most 65535 fit in a str16")
    return _U16.pack(len(b)) + b


def _list_u16(v: List[int], what: str = "list") -> bytes:
    return _u16(len(v), what + " length") + b"".join(_u16(x, what) for x in v)


def _list_str16(v: List[str], what: str = "list") -> bytes:
    return _u16(len(v), what + " length") + b"".join(_str16(x, what) for x in v)


# --------------------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------------------


class Message:
    """Base of every message: a fixed message type and a payload codec."""

    TYPE: ClassVar[int]

    def encode(self) -> bytes:
        """The payload (not the header)."""
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: BytesLike) -> "Message":
        """Parses a whole payload."""
        raise NotImplementedError

    def to_frame(self, service: int) -> bytes:
        """The whole frame (header and payload) for ``service``."""
        return encode_frame(service, self.TYPE, self.encode())


class _Empty(Message):
    """A message with an empty payload."""

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: BytesLike):
        if len(payload):
            raise TrailingBytes()
        return cls()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ---- errors --------------------------------------------------------------------------------------------------


@dataclass
class ErrorResponse(Message):
    """ErrorResponse (``0x00FF`` on every service): ``u16`` code, ``str16`` message."""

    TYPE: ClassVar[int] = MSG_ERROR
    code: int
    message: str

    def encode(self) -> bytes:
        return _u16(self.code, "code") + _str16(self.message, "message")

    @classmethod
    def decode(cls, payload: BytesLike) -> "ErrorResponse":
        r = Reader(payload)
        m = cls(r.u16(), r.str16())
        r.finish()
        return m

    def to_exception(self, service: Optional[int] = None) -> DaemonError:
        """The :class:`DaemonError` this response stands for."""
        return DaemonError(self.code, self.message, service)


# ---- messages, by service ------------------------------------------------------------------------------------

# Each service's messages live in a module of their own and are re-exported here, so every message class is
# reachable as ``protocol.<Name>``. They import this module's codecs, which are all defined above this point.
from .control_messages import *  # noqa: E402,F401,F403
from .cache_messages import *  # noqa: E402,F401,F403


# --------------------------------------------------------------------------------------------------------------
# Message lookup
# --------------------------------------------------------------------------------------------------------------

_CONTROL_MESSAGES: Dict[int, Type[Message]] = {
    c.TYPE: c
    for c in (
        Ping,
        Pong,
        Version,
        VersionResponse,
        Shutdown,
        ShutdownAck,
        StatsRequest,
        StatsResponse,
        Hello,
        HelloResponse,
        RegisterSponsor,
        RegisterSponsorAck,
        Namespaces,
        NamespacesResponse,
        EventsLost,
    )
}

_CACHE_COMMON: Dict[int, Type[Message]] = {
    c.TYPE: c
    for c in (GetResponse, PutResponse, ExistsResponse, Clear, ClearResponse, CacheStatsRequest, CacheStats)
}

_SHADER_MESSAGES: Dict[int, Type[Message]] = dict(_CACHE_COMMON)
_SHADER_MESSAGES.update({c.TYPE: c for c in (ShaderGet, ShaderPut, ShaderPutStream, ShaderExists)})

_ASSET_MESSAGES: Dict[int, Type[Message]] = dict(_CACHE_COMMON)
_ASSET_MESSAGES.update(
    {c.TYPE: c for c in (AssetGet, AssetPut, AssetPutStream, AssetExists, Invalidate, InvalidateResponse)}
)

_ANY_SERVICE: Dict[int, Type[Message]] = {
    MSG_ERROR: ErrorResponse,
    MSG_STREAM_CHUNK: StreamChunk,
    MSG_STREAM_END: StreamEnd,
}

# The asset pipeline's and the Watch service's messages live in their own modules and are re-exported here.
from .asset_pipeline import *  # noqa: E402,F401,F403
from .asset_pipeline import ASSET_PIPELINE_MESSAGES  # noqa: E402
from .watch_messages import *  # noqa: E402,F401,F403
from .watch_messages import WATCH_MESSAGES  # noqa: E402

_ASSET_MESSAGES.update({c.TYPE: c for c in ASSET_PIPELINE_MESSAGES})

# The Compile service's messages live in their own module (this one is long enough); re-exported here so the
# protocol module names every message.
from .compile_messages import (  # noqa: E402
    CompileAccepted,
    CompileRequest,
    CompileResult,
    CompileStats,
    CompileStatsRequest,
)

_COMPILE_MESSAGES: Dict[int, Type[Message]] = {
    c.TYPE: c for c in (CompileRequest, CompileAccepted, CompileResult, CompileStatsRequest, CompileStats)
}

# The operator's Control messages (verify, trim) live in their own module too.
from .operator_messages import *  # noqa: E402,F401,F403
from .operator_messages import OPERATOR_MESSAGES  # noqa: E402

_CONTROL_MESSAGES.update({c.TYPE: c for c in OPERATOR_MESSAGES})

_BY_SERVICE: Dict[int, Dict[int, Type[Message]]] = {
    SERVICE_COMPILE: _COMPILE_MESSAGES,
    SERVICE_CONTROL: _CONTROL_MESSAGES,
    SERVICE_SHADER: _SHADER_MESSAGES,
    SERVICE_ASSET: _ASSET_MESSAGES,
    SERVICE_WATCH: {c.TYPE: c for c in WATCH_MESSAGES},
}

# The Collab service's messages (one field list per message) live in their own module too.
from .collab_messages import *  # noqa: E402,F401,F403
from .collab_messages import COLLAB_MESSAGES  # noqa: E402

_BY_SERVICE[SERVICE_COLLAB] = {c.TYPE: c for c in COLLAB_MESSAGES}


def message_class(service: int, msg_type: int) -> Type[Message]:
    """The message class for a (service, message type) pair; raises :class:`UnexpectedMessage` if none."""
    cls = _ANY_SERVICE.get(msg_type) or _BY_SERVICE.get(service, {}).get(msg_type)
    if cls is None:
        raise UnexpectedMessage(service, msg_type)
    return cls


def decode_message(frame: Frame) -> Message:
    """Decodes a frame's payload as the message its service and type name."""
    return message_class(frame.service, frame.msg_type).decode(frame.payload)


def key_class(service: int) -> type:
    """:class:`ShaderKey` or :class:`AssetKey` for a cache service id."""
    if service == SERVICE_SHADER:
        return ShaderKey
    if service == SERVICE_ASSET:
        return AssetKey
    raise ValueError(f"service 0x{service:04x} is not a cache service")
