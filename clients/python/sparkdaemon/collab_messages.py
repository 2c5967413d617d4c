"""The Collab service's messages (service ``0x0005``), mirroring ``crates/spark-proto/src/collab.rs``.

Re-exported by :mod:`sparkdaemon.protocol`. Every message here is a flat list of fields, so each class only
declares its ``FIELDS`` (name, wire type) in wire order and shares one codec. Wire types: ``u8`` ``u32``
``u64`` ``bool`` ``str16`` ``list_str16``, ``rest`` (the rest of the payload, bytes), and a record class for a
``u16``-counted list of records (:class:`SessionInfo`, :class:`MemberInfo`, :class:`LockInfo`,
:class:`ActivityEntry`; inside records ``bytes32`` is a ``u32``-length-prefixed byte string).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Tuple

from .errors import Truncated
from .protocol import BytesLike, Message, Reader, _list_str16, _str16, _u8, _u16, _u32, _u64

JOIN_SHARED = 1
JOIN_EXISTING = 2
PUBLISH_PERSISTENT = 1
KV_CAS = 1
KV_DELETE = 2
LEFT_LEAVE, LEFT_DISCONNECT, LEFT_DAEMON_LOST = 1, 2, 3
LOCK_LOCKED, LOCK_RELEASED, LOCK_FORCED, LOCK_EXPIRED = 1, 2, 3, 4
ACT_JOIN, ACT_LEAVE, ACT_LOCK, ACT_UNLOCK, ACT_MESSAGE = 1, 2, 3, 4, 5
BRIDGE_LOCAL, BRIDGE_UP, BRIDGE_DEGRADED = 0, 1, 2


def _put(kind: Any, v: Any, name: str) -> bytes:
    if isinstance(kind, type):
        return _u16(len(v), name + " count") + b"".join(r.encode() for r in v)
    if kind == "u8":
        return _u8(v, name)
    if kind == "bool":
        return _u8(1 if v else 0, name)
    if kind == "u32":
        return _u32(v, name)
    if kind == "u64":
        return _u64(v, name)
    if kind == "str16":
        return _str16(v, name)
    if kind == "list_str16":
        return _list_str16(v, name)
    if kind == "bytes32":
        return _u32(len(v), name + " length") + bytes(v)
    if kind == "rest":
        return bytes(v)
    raise ValueError(f"unknown wire type {kind}")


def _get(kind: Any, r: Reader) -> Any:
    if isinstance(kind, type):
        n = r.u16()
        if n * kind.MIN_LEN > r.remaining:
            raise Truncated()
        return [kind.read(r) for _ in range(n)]
    if kind == "bool":
        return r.u8() != 0
    if kind == "bytes32":
        n = r.u32()
        if n > r.remaining:
            raise Truncated()
        return bytes(r._take(n))
    if kind == "rest":
        return r.rest()
    return getattr(r, kind)()


class _Fields:
    """Encodes and decodes ``FIELDS`` in order."""

    FIELDS: ClassVar[Tuple[Tuple[str, Any], ...]] = ()

    def encode(self) -> bytes:
        return b"".join(_put(k, getattr(self, n), n) for n, k in self.FIELDS)

    @classmethod
    def read(cls, r: Reader):
        return cls(*[_get(k, r) for _, k in cls.FIELDS])

    @classmethod
    def from_fields(cls, f: Dict[str, Any]):
        """Builds from a JSON object as ``docs/protocol-vectors.json`` writes it (bytes as hex)."""
        args = []
        for n, k in cls.FIELDS:
            v = f[n]
            if isinstance(k, type):
                v = [k.from_fields(x) for x in v]
            elif k in ("rest", "bytes32"):
                v = bytes.fromhex(v)
            elif k == "bool":
                v = v != 0
            args.append(v)
        return cls(*args)


class _Collab(_Fields, Message):
    EXACT: ClassVar[bool] = True

    @classmethod
    def decode(cls, payload: BytesLike):
        r = Reader(payload)
        m = cls.read(r)
        if cls.EXACT:
            r.finish()
        return m


@dataclass
class SessionInfo(_Fields):
    MIN_LEN: ClassVar[int] = 20
    FIELDS: ClassVar = (("name", "str16"), ("shared", "bool"), ("bridge", "u8"), ("members", "u32"),
                        ("locks", "u32"), ("messages", "u64"))
    name: str
    shared: bool
    bridge: int
    members: int
    locks: int
    messages: int


@dataclass
class MemberInfo(_Fields):
    MIN_LEN: ClassVar[int] = 22
    FIELDS: ClassVar = (("member", "u64"), ("client", "str16"), ("user", "str16"), ("pid", "u32"),
                        ("host", "str16"), ("presence", "bytes32"))
    member: int
    client: str
    user: str
    pid: int
    host: str
    presence: bytes


@dataclass
class LockInfo(_Fields):
    MIN_LEN: ClassVar[int] = 24
    FIELDS: ClassVar = (("resource", "str16"), ("owner", "u64"), ("who", "str16"), ("host", "str16"),
                        ("note", "str16"), ("since_ms", "u64"))
    resource: str
    owner: int
    who: str
    host: str
    note: str
    since_ms: int


@dataclass
class ActivityEntry(_Fields):
    MIN_LEN: ClassVar[int] = 33
    FIELDS: ClassVar = (("seq", "u64"), ("time_ms", "u64"), ("kind", "u8"), ("member", "u64"), ("who", "str16"),
                        ("subject", "str16"), ("data", "bytes32"))
    seq: int
    time_ms: int
    kind: int
    member: int
    who: str
    subject: str
    data: bytes


def _message(name: str, msg_type: int, spec: Tuple[Tuple[str, Any], ...], exact: bool = True) -> type:
    """A message dataclass with fields ``spec`` (one definition per message, like ``define_messages!``)."""
    ns = {"TYPE": msg_type, "FIELDS": spec, "EXACT": exact, "__annotations__": {n: Any for n, _ in spec}}
    ns["__annotations__"].update({"TYPE": ClassVar[int], "FIELDS": ClassVar, "EXACT": ClassVar[bool]})
    ns["__module__"] = __name__
    cls = dataclass(type(name, (_Collab,), ns))
    if not spec:
        # An empty message: every instance is equal to every other.
        cls.__eq__ = lambda a, b: type(a) is type(b)  # type: ignore[assignment]
    return cls


S = ("session", "str16")
CollabJoin = _message("CollabJoin", 0x0001, (S, ("flags", "u8"), ("client", "str16"), ("user", "str16"),
                                             ("pid", "u32"), ("presence", "rest")))
CollabJoined = _message("CollabJoined", 0x0002, (("member", "u64"), ("created", "bool"), ("shared", "bool"),
                                                 ("bridge", "u8")), exact=False)
CollabLeave = _message("CollabLeave", 0x0003, (S,))
CollabAck = _message("CollabAck", 0x0004, (("count", "u32"),), exact=False)
CollabSessions = _message("CollabSessions", 0x0005, ())
CollabSessionsResponse = _message("CollabSessionsResponse", 0x0006, (("sessions", SessionInfo),), exact=False)
CollabMembers = _message("CollabMembers", 0x0007, (S,))
CollabMembersResponse = _message("CollabMembersResponse", 0x0008, (("members", MemberInfo),), exact=False)
CollabSetPresence = _message("CollabSetPresence", 0x0009, (S, ("presence", "rest")))
CollabPublish = _message("CollabPublish", 0x000B, (S, ("topic", "str16"), ("flags", "u8"), ("payload", "rest")))
CollabPublished = _message("CollabPublished", 0x000C, (("seq", "u64"), ("queued", "u32")), exact=False)
CollabSubscribe = _message("CollabSubscribe", 0x000D, (S, ("pattern", "str16"), ("queue", "u32")))
CollabSubscribed = _message("CollabSubscribed", 0x000E, (("subscription", "u32"),), exact=False)
CollabUnsubscribe = _message("CollabUnsubscribe", 0x000F, (("subscription", "u32"),))
CollabKvGet = _message("CollabKvGet", 0x0011, (S, ("key", "str16")))
CollabKvValue = _message("CollabKvValue", 0x0012, (("found", "bool"), ("version", "u64"), ("value", "rest")))
CollabKvPut = _message("CollabKvPut", 0x0013, (S, ("key", "str16"), ("flags", "u8"), ("expect_version", "u64"),
                                               ("value", "rest")))
CollabKvWritten = _message("CollabKvWritten", 0x0014, (("ok", "bool"), ("version", "u64")), exact=False)
CollabKvWatch = _message("CollabKvWatch", 0x0015, (S, ("prefix", "str16"), ("queue", "u32")))
CollabLock = _message("CollabLock", 0x0017, (S, ("resources", "list_str16"), ("note", "str16")))
CollabLockResponse = _message("CollabLockResponse", 0x0018, (("acquired", "bool"), ("contested", LockInfo)),
                              exact=False)
CollabUnlock = _message("CollabUnlock", 0x0019, (S, ("resources", "list_str16"), ("force", "bool"),
                                                 ("reason", "str16")))
CollabLocks = _message("CollabLocks", 0x001B, (S, ("prefix", "str16")))
CollabLocksResponse = _message("CollabLocksResponse", 0x001C, (("locks", LockInfo),), exact=False)
CollabActivity = _message("CollabActivity", 0x001D, (S, ("after", "u64"), ("max", "u32")))
CollabActivityResponse = _message("CollabActivityResponse", 0x001E, (("oldest", "u64"), ("entries", ActivityEntry)),
                                  exact=False)
CollabStatsRequest = _message("CollabStatsRequest", 0x001F, ())
COLLAB_STATS_FIELDS = ("sessions", "members", "subscriptions", "published", "delivered", "dropped", "locks",
                       "bridge", "bridge_reconnects", "bridge_errors")
CollabStats = _message("CollabStats", 0x0020, tuple((n, "u64") for n in COLLAB_STATS_FIELDS), exact=False)
CollabMemberJoined = _message("CollabMemberJoined", 0x8001, (S, ("member", MemberInfo)))
CollabMemberLeft = _message("CollabMemberLeft", 0x8002, (S, ("member", "u64"), ("reason", "u8")))
CollabPresenceChanged = _message("CollabPresenceChanged", 0x8003, (S, ("member", "u64"), ("presence", "rest")))
CollabMessage = _message("CollabMessage", 0x8004, (("subscription", "u32"), S, ("topic", "str16"),
                                                   ("publisher", "u64"), ("seq", "u64"), ("payload", "rest")))
CollabLagged = _message("CollabLagged", 0x8005, (("subscription", "u32"), ("dropped", "u64")))
CollabKvChanged = _message("CollabKvChanged", 0x8006, (("subscription", "u32"), S, ("key", "str16"),
                                                       ("version", "u64"), ("deleted", "bool"), ("value", "rest")))
CollabLockChanged = _message("CollabLockChanged", 0x8007, (S, ("state", "u8"), ("reason", "str16"),
                                                           ("lock", LockInfo)))
CollabSessionStatus = _message("CollabSessionStatus", 0x8008, (S, ("bridge", "u8"), ("detail", "str16")))

COLLAB_MESSAGES: List[type] = [
    c for c in list(globals().values()) if isinstance(c, type) and issubclass(c, _Collab) and c is not _Collab
]

__all__ = [c.__name__ for c in COLLAB_MESSAGES] + [
    "SessionInfo",
    "MemberInfo",
    "LockInfo",
    "ActivityEntry",
    "COLLAB_STATS_FIELDS",
    "JOIN_SHARED",
    "JOIN_EXISTING",
    "PUBLISH_PERSISTENT",
    "KV_CAS",
    "KV_DELETE",
]
