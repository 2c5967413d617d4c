"""The Watch service's messages (service ``0x0007``), mirroring ``crates/spark-proto/src/watch.rs``.

Re-exported by :mod:`sparkdaemon.protocol` (which imports this module at its end), so every message class
lives in ``protocol`` as the vector tests expect. A clock is two ``u64``: ``instance`` (one incarnation of a
watched root) and ``seq`` (grows per batch). Paths are root-relative, ``/``-separated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Optional, Tuple

from .errors import InvalidValue, Truncated
from .protocol import (
    BytesLike,
    Message,
    Reader,
    _Empty,
    _list_str16,
    _str16,
    _u8,
    _u16,
    _u32,
    _u64,
)

WATCH_SUBSCRIBE = 0x0001
WATCH_SUBSCRIBE_RESPONSE = 0x0002
WATCH_UNSUBSCRIBE = 0x0003
WATCH_UNSUBSCRIBE_RESPONSE = 0x0004
WATCH_QUERY = 0x0005
WATCH_QUERY_RESPONSE = 0x0006
WATCH_LIST = 0x0007
WATCH_LIST_RESPONSE = 0x0008
#: Event: a settled batch of changes for one subscription.
WATCH_CHANGES = 0x8001
#: Event: the root overflowed (events were missed); rescan it.
WATCH_RESCAN = 0x8002
#: Event: the subscription ended.
WATCH_ENDED = 0x8003

#: Subscribe/Query flag: do not honour .gitignore, .ignore and the global excludes file.
WATCH_FLAG_NO_IGNORE_FILES = 1
#: Changes flag: no history back to the asked clock; rescan.
CHANGES_FRESH_INSTANCE = 1
#: Changes flag: more events with the same clock follow.
CHANGES_MORE = 2
ENDED_ROOT_DELETED = 1
ENDED_WATCH_LIMIT = 2
ENDED_ERROR = 3

CHANGE_CREATED = 1
CHANGE_MODIFIED = 2
CHANGE_REMOVED = 3
CHANGE_RENAMED = 4
CHANGE_NAMES = {CHANGE_CREATED: "created", CHANGE_MODIFIED: "modified", CHANGE_REMOVED: "removed", CHANGE_RENAMED: "renamed"}


def format_clock(instance: int, seq: int) -> str:
    """A clock as people read and type it: ``c:<instance hex>:<seq>``."""
    return f"c:{instance:x}:{seq}"


def parse_clock(s: str) -> Optional[Tuple[int, int]]:
    """Parses :func:`format_clock`'s form; None when it is not a clock."""
    if not s.startswith("c:") or s.count(":") != 2:
        return None
    _, i, q = s.split(":")
    try:
        return int(i, 16), int(q)
    except ValueError:
        return None


@dataclass(frozen=True)
class Change:
    """One change: kind (``CHANGE_*``), root-relative path, and for a rename the new path."""

    kind: int
    path: str
    to: str = ""

    @property
    def kind_name(self) -> str:
        return CHANGE_NAMES.get(self.kind, "unknown")


def _put_changes(changes: List[Change]) -> bytes:
    out = [_u32(len(changes), "change count")]
    for c in changes:
        out.append(_u8(c.kind, "change kind") + _str16(c.path, "path"))
        if c.kind == CHANGE_RENAMED:
            out.append(_str16(c.to, "to"))
    return b"".join(out)


def _get_changes(r: Reader) -> List[Change]:
    n = r.u32()
    if n > r.remaining // 3:
        raise Truncated()
    out = []
    for _ in range(n):
        kind = r.u8()
        if kind not in CHANGE_NAMES:
            raise InvalidValue("unknown change kind")
        path = r.str16()
        to = r.str16() if kind == CHANGE_RENAMED else ""
        out.append(Change(kind, path, to))
    return out


@dataclass
class _SubscribeLike(Message):
    root: str
    flags: int = 0
    include: List[str] = field(default_factory=list)
    exclude: List[str] = field(default_factory=list)
    since_instance: int = 0
    since_seq: int = 0

    def encode(self) -> bytes:
        return (
            _str16(self.root, "root")
            + _u8(self.flags, "flags")
            + _list_str16(self.include, "include")
            + _list_str16(self.exclude, "exclude")
            + _u64(self.since_instance, "since_instance")
            + _u64(self.since_seq, "since_seq")
        )

    @classmethod
    def decode(cls, payload: BytesLike):
        r = Reader(payload)
        m = cls(r.str16(), r.u8(), r.list_str16(), r.list_str16(), r.u64(), r.u64())
        r.finish()
        return m


@dataclass
class WatchSubscribe(_SubscribeLike):
    """Subscribe: ``str16`` root, ``u8`` flags, include and exclude globs, clock to resume from (instance 0 = none)."""

    TYPE: ClassVar[int] = WATCH_SUBSCRIBE


@dataclass
class WatchQuery(_SubscribeLike):
    """Query: the files under root matching the globs changed since the clock, without a subscription."""

    TYPE: ClassVar[int] = WATCH_QUERY


@dataclass
class WatchSubscribeResponse(Message):
    """``u32`` subscription, clock (``u64`` instance, ``u64`` seq), ``u32`` watched dirs, ``u64`` watched files.
    Trailing bytes are ignored."""

    TYPE: ClassVar[int] = WATCH_SUBSCRIBE_RESPONSE
    subscription: int
    instance: int
    seq: int
    watched_dirs: int
    watched_files: int

    def encode(self) -> bytes:
        return (
            _u32(self.subscription)
            + _u64(self.instance)
            + _u64(self.seq)
            + _u32(self.watched_dirs)
            + _u64(self.watched_files)
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "WatchSubscribeResponse":
        r = Reader(payload)
        return cls(r.u32(), r.u64(), r.u64(), r.u32(), r.u64())


@dataclass
class WatchUnsubscribe(Message):
    """``u32`` subscription id (of this connection)."""

    TYPE: ClassVar[int] = WATCH_UNSUBSCRIBE
    subscription: int

    def encode(self) -> bytes:
        return _u32(self.subscription)

    @classmethod
    def decode(cls, payload: BytesLike) -> "WatchUnsubscribe":
        r = Reader(payload)
        m = cls(r.u32())
        r.finish()
        return m


@dataclass
class WatchUnsubscribeResponse(Message):
    """``u8`` whether the subscription existed."""

    TYPE: ClassVar[int] = WATCH_UNSUBSCRIBE_RESPONSE
    existed: bool

    def encode(self) -> bytes:
        return _u8(1 if self.existed else 0)

    @classmethod
    def decode(cls, payload: BytesLike) -> "WatchUnsubscribeResponse":
        r = Reader(payload)
        m = cls(r.u8() != 0)
        r.finish()
        return m


@dataclass
class WatchQueryResponse(Message):
    """Clock now, ``u8`` fresh_instance (rescan; the list is then empty), the changes (one per path)."""

    TYPE: ClassVar[int] = WATCH_QUERY_RESPONSE
    instance: int
    seq: int
    fresh_instance: bool
    changes: List[Change] = field(default_factory=list)

    def encode(self) -> bytes:
        return (
            _u64(self.instance)
            + _u64(self.seq)
            + _u8(1 if self.fresh_instance else 0)
            + _put_changes(self.changes)
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "WatchQueryResponse":
        r = Reader(payload)
        m = cls(r.u64(), r.u64(), r.u8() != 0, _get_changes(r))
        r.finish()
        return m


class WatchList(_Empty):
    """Asks for :class:`WatchListResponse`: every watched root."""

    TYPE = WATCH_LIST


@dataclass
class WatchRoot:
    """One watched root as WatchListResponse reports it."""

    root: str
    flags: int
    subscribers: int
    watches: int
    files: int
    seq: int
    rescans: int


@dataclass
class WatchListResponse(Message):
    """``u16`` count, then per root: ``str16`` root, ``u8`` flags, ``u32`` subscribers, ``u32`` watches,
    ``u64`` files, ``u64`` seq, ``u64`` rescans. Trailing bytes are ignored."""

    TYPE: ClassVar[int] = WATCH_LIST_RESPONSE
    roots: List[WatchRoot] = field(default_factory=list)

    def encode(self) -> bytes:
        out = [_u16(len(self.roots), "root count")]
        for x in self.roots:
            out.append(
                _str16(x.root, "root")
                + _u8(x.flags)
                + _u32(x.subscribers)
                + _u32(x.watches)
                + _u64(x.files)
                + _u64(x.seq)
                + _u64(x.rescans)
            )
        return b"".join(out)

    @classmethod
    def decode(cls, payload: BytesLike) -> "WatchListResponse":
        r = Reader(payload)
        roots = [WatchRoot(r.str16(), r.u8(), r.u32(), r.u32(), r.u64(), r.u64(), r.u64()) for _ in range(r.u16())]
        return cls(roots)


@dataclass
class WatchChanges(Message):
    """Changes (event): ``u32`` subscription, clock, ``u8`` flags (CHANGES_FRESH_INSTANCE, CHANGES_MORE), changes."""

    TYPE: ClassVar[int] = WATCH_CHANGES
    subscription: int
    instance: int
    seq: int
    flags: int
    changes: List[Change] = field(default_factory=list)

    @property
    def fresh_instance(self) -> bool:
        return bool(self.flags & CHANGES_FRESH_INSTANCE)

    @property
    def more(self) -> bool:
        return bool(self.flags & CHANGES_MORE)

    def encode(self) -> bytes:
        return (
            _u32(self.subscription)
            + _u64(self.instance)
            + _u64(self.seq)
            + _u8(self.flags)
            + _put_changes(self.changes)
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "WatchChanges":
        r = Reader(payload)
        m = cls(r.u32(), r.u64(), r.u64(), r.u8(), _get_changes(r))
        r.finish()
        return m


@dataclass
class WatchRescan(Message):
    """Rescan (event): ``u32`` subscription, ``str16`` root, clock after the overflow, ``str16`` reason."""

    TYPE: ClassVar[int] = WATCH_RESCAN
    subscription: int
    root: str
    instance: int
    seq: int
    reason: str

    def encode(self) -> bytes:
        return (
            _u32(self.subscription)
            + _str16(self.root)
            + _u64(self.instance)
            + _u64(self.seq)
            + _str16(self.reason)
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "WatchRescan":
        r = Reader(payload)
        m = cls(r.u32(), r.str16(), r.u64(), r.u64(), r.str16())
        r.finish()
        return m


@dataclass
class WatchEnded(Message):
    """Ended (event): ``u32`` subscription, ``str16`` root, ``u8`` reason (ENDED_*), ``str16`` message."""

    TYPE: ClassVar[int] = WATCH_ENDED
    subscription: int
    root: str
    reason: int
    message: str

    def encode(self) -> bytes:
        return _u32(self.subscription) + _str16(self.root) + _u8(self.reason) + _str16(self.message)

    @classmethod
    def decode(cls, payload: BytesLike) -> "WatchEnded":
        r = Reader(payload)
        m = cls(r.u32(), r.str16(), r.u8(), r.str16())
        r.finish()
        return m


WATCH_MESSAGES = (
    WatchSubscribe,
    WatchSubscribeResponse,
    WatchUnsubscribe,
    WatchUnsubscribeResponse,
    WatchQuery,
    WatchQueryResponse,
    WatchList,
    WatchListResponse,
    WatchChanges,
    WatchRescan,
    WatchEnded,
)
