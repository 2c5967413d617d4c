"""The Control service's messages (service ``0x0001``), mirroring ``crates/spark-proto/src/control.rs``.

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


# ---- control -------------------------------------------------------------------------------------------------


@dataclass
class Ping(Message):
    """Ping: an opaque payload (at most 1 KiB by convention) echoed back in :class:`Pong`."""

    TYPE: ClassVar[int] = CONTROL_PING
    data: bytes = b""

    def encode(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def decode(cls, payload: BytesLike) -> "Ping":
        return cls(bytes(payload))


@dataclass
class Pong(Message):
    """Pong: the Ping payload, unchanged."""

    TYPE: ClassVar[int] = CONTROL_PONG
    data: bytes = b""

    def encode(self) -> bytes:
        return bytes(self.data)

    @classmethod
    def decode(cls, payload: BytesLike) -> "Pong":
        return cls(bytes(payload))


class Version(_Empty):
    """Asks for :class:`VersionResponse`."""

    TYPE = CONTROL_VERSION


class Shutdown(_Empty):
    """Asks the daemon to finish in-flight requests and exit."""

    TYPE = CONTROL_SHUTDOWN


class ShutdownAck(_Empty):
    """Sent before the daemon stops accepting work."""

    TYPE = CONTROL_SHUTDOWN_ACK


class StatsRequest(_Empty):
    """Control Stats: asks for :class:`StatsResponse`."""

    TYPE = CONTROL_STATS


@dataclass
class VersionResponse(Message):
    """``u16`` protocol version, ``str16`` daemon version."""

    TYPE: ClassVar[int] = CONTROL_VERSION_RESPONSE
    protocol_version: int
    daemon_version: str

    def encode(self) -> bytes:
        return _u16(self.protocol_version, "protocol_version") + _str16(self.daemon_version, "daemon_version")

    @classmethod
    def decode(cls, payload: BytesLike) -> "VersionResponse":
        r = Reader(payload)
        m = cls(r.u16(), r.str16())
        r.finish()
        return m


@dataclass
class StatsResponse(Message):
    """Daemon-wide statistics. Trailing bytes are ignored (later revisions may append fields)."""

    TYPE: ClassVar[int] = CONTROL_STATS_RESPONSE
    uptime_secs: int
    protocol_version: int
    services: List[int]
    current_connections: int
    total_connections: int

    def encode(self) -> bytes:
        return (
            _u64(self.uptime_secs, "uptime_secs")
            + _u16(self.protocol_version, "protocol_version")
            + _list_u16(self.services, "services")
            + _u32(self.current_connections, "current_connections")
            + _u64(self.total_connections, "total_connections")
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "StatsResponse":
        r = Reader(payload)
        return cls(r.u64(), r.u16(), r.list_u16(), r.u32(), r.u64())

    def to_dict(self) -> Dict[str, Any]:
        return {
            "uptime_secs": self.uptime_secs,
            "protocol_version": self.protocol_version,
            "services": list(self.services),
            "current_connections": self.current_connections,
            "total_connections": self.total_connections,
        }


@dataclass
class Hello(Message):
    """The handshake a client sends first: protocol version, flags, pid, client name."""

    TYPE: ClassVar[int] = CONTROL_HELLO
    protocol_version: int
    flags: int
    pid: int
    client_name: str

    def encode(self) -> bytes:
        return (
            _u16(self.protocol_version, "protocol_version")
            + _u32(self.flags, "flags")
            + _u32(self.pid, "pid")
            + _str16(self.client_name, "client_name")
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "Hello":
        r = Reader(payload)
        m = cls(r.u16(), r.u32(), r.u32(), r.str16())
        r.finish()
        return m


@dataclass
class HelloResponse(Message):
    """The daemon's answer to :class:`Hello`. Trailing bytes are ignored."""

    TYPE: ClassVar[int] = CONTROL_HELLO_RESPONSE
    protocol_version: int
    daemon_version: str
    daemon_pid: int
    services: List[int] = field(default_factory=list)
    capabilities: List[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return (
            _u16(self.protocol_version, "protocol_version")
            + _str16(self.daemon_version, "daemon_version")
            + _u32(self.daemon_pid, "daemon_pid")
            + _list_u16(self.services, "services")
            + _list_str16(self.capabilities, "capabilities")
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "HelloResponse":
        r = Reader(payload)
        return cls(r.u16(), r.str16(), r.u32(), r.list_u16(), r.list_str16())


@dataclass
class RegisterSponsor(Message):
    """Registers a process id as a sponsor of the daemon."""

    TYPE: ClassVar[int] = CONTROL_REGISTER_SPONSOR
    pid: int

    def encode(self) -> bytes:
        return _u32(self.pid, "pid")

    @classmethod
    def decode(cls, payload: BytesLike) -> "RegisterSponsor":
        r = Reader(payload)
        m = cls(r.u32())
        r.finish()
        return m


@dataclass
class RegisterSponsorAck(Message):
    """The number of live sponsors after registration."""

    TYPE: ClassVar[int] = CONTROL_REGISTER_SPONSOR_ACK
    sponsors: int

    def encode(self) -> bytes:
        return _u32(self.sponsors, "sponsors")

    @classmethod
    def decode(cls, payload: BytesLike) -> "RegisterSponsorAck":
        r = Reader(payload)
        m = cls(r.u32())
        r.finish()
        return m


class Namespaces(_Empty):
    """Asks for :class:`NamespacesResponse`: every namespace the daemon serves, with its counters."""

    TYPE = CONTROL_NAMESPACES


@dataclass
class NamespaceStats:
    """One namespace (a named store: ``shader``, ``asset``, ...) and its counters, in the daemon's order."""

    name: str
    #: The service that serves it on this protocol; 0 when it is reached another way.
    service: int
    counters: List[Tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "service": self.service, "counters": dict(self.counters)}


@dataclass
class NamespacesResponse(Message):
    """``u16`` count, then per namespace: ``str16`` name, ``u16`` service, ``u16`` counter count, then per counter
    ``str16`` name and ``u64`` value. Trailing bytes are ignored."""

    TYPE: ClassVar[int] = CONTROL_NAMESPACES_RESPONSE
    namespaces: List[NamespaceStats] = field(default_factory=list)

    def encode(self) -> bytes:
        out = [_u16(len(self.namespaces), "namespace count")]
        for ns in self.namespaces:
            out.append(_str16(ns.name, "namespace name"))
            out.append(_u16(ns.service, "service"))
            out.append(_u16(len(ns.counters), "counter count"))
            for name, value in ns.counters:
                out.append(_str16(name, "counter name") + _u64(value, "counter value"))
        return b"".join(out)

    @classmethod
    def decode(cls, payload: BytesLike) -> "NamespacesResponse":
        r = Reader(payload)
        namespaces = []
        for _ in range(r.u16()):
            name, service = r.str16(), r.u16()
            counters = []
            for _ in range(r.u16()):
                key = r.str16()
                counters.append((key, r.u64()))
            namespaces.append(NamespaceStats(name, service, counters))
        return cls(namespaces)


@dataclass
class EventsLost(Message):
    """EventsLost (event ``0x8001`` on Control): ``u64`` events dropped since the last EventsLost on this
    connection. Sent between replies once the connection's event queue has room again."""

    TYPE: ClassVar[int] = CONTROL_EVENTS_LOST
    dropped: int

    def encode(self) -> bytes:
        return _u64(self.dropped, "dropped")

    @classmethod
    def decode(cls, payload: BytesLike) -> "EventsLost":
        r = Reader(payload)
        m = cls(r.u64())
        r.finish()
        return m
