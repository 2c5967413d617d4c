"""The operator's Control messages (service ``0x0001``, types ``0x0010..``), mirroring
``crates/spark-proto/src/operator.rs``: verify a namespace's checksums, trim a namespace to a size.

Re-exported by :mod:`sparkdaemon.protocol` (which imports this module at its end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .protocol import BytesLike, Message, Reader, _str16, _u64

CONTROL_VERIFY = 0x0010
CONTROL_VERIFY_RESPONSE = 0x0011
CONTROL_TRIM = 0x0012
CONTROL_TRIM_RESPONSE = 0x0013
#: Event: how far a running verify has got.
CONTROL_VERIFY_PROGRESS = 0x8010


@dataclass
class Verify(Message):
    """Verify: ``str16`` namespace. Reads every entry, checks every checksum, drops corrupt entries."""

    TYPE: ClassVar[int] = CONTROL_VERIFY
    namespace: str = ""

    def encode(self) -> bytes:
        return _str16(self.namespace)

    @classmethod
    def decode(cls, payload: BytesLike) -> "Verify":
        r = Reader(payload)
        m = cls(r.str16())
        r.finish()
        return m


@dataclass
class VerifyResponse(Message):
    """The verify's result. Decoders ignore trailing bytes."""

    TYPE: ClassVar[int] = CONTROL_VERIFY_RESPONSE
    checked: int = 0
    bytes: int = 0
    corrupt: int = 0
    memory_only: int = 0

    def encode(self) -> bytes:
        return (
            _u64(self.checked, "checked")
            + _u64(self.bytes, "bytes")
            + _u64(self.corrupt, "corrupt")
            + _u64(self.memory_only, "memory_only")
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "VerifyResponse":
        r = Reader(payload)
        return cls(r.u64(), r.u64(), r.u64(), r.u64())


@dataclass
class VerifyProgress(Message):
    """VerifyProgress (event ``0x8010`` on Control). Decoders ignore trailing bytes."""

    TYPE: ClassVar[int] = CONTROL_VERIFY_PROGRESS
    namespace: str = ""
    checked: int = 0
    total: int = 0
    corrupt: int = 0

    def encode(self) -> bytes:
        return (
            _str16(self.namespace)
            + _u64(self.checked, "checked")
            + _u64(self.total, "total")
            + _u64(self.corrupt, "corrupt")
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "VerifyProgress":
        r = Reader(payload)
        return cls(r.str16(), r.u64(), r.u64(), r.u64())


@dataclass
class Trim(Message):
    """Trim: ``str16`` namespace, ``u64`` target bytes; evicts least recently used entries down to it."""

    TYPE: ClassVar[int] = CONTROL_TRIM
    namespace: str = ""
    target_bytes: int = 0

    def encode(self) -> bytes:
        return _str16(self.namespace) + _u64(self.target_bytes, "target_bytes")

    @classmethod
    def decode(cls, payload: BytesLike) -> "Trim":
        r = Reader(payload)
        m = cls(r.str16(), r.u64())
        r.finish()
        return m


@dataclass
class TrimResponse(Message):
    """What the trim did. Decoders ignore trailing bytes."""

    TYPE: ClassVar[int] = CONTROL_TRIM_RESPONSE
    evicted: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    def encode(self) -> bytes:
        return _u64(self.evicted, "evicted") + _u64(self.bytes_before, "bytes_before") + _u64(self.bytes_after, "bytes_after")

    @classmethod
    def decode(cls, payload: BytesLike) -> "TrimResponse":
        r = Reader(payload)
        return cls(r.u64(), r.u64(), r.u64())


OPERATOR_MESSAGES = (Verify, VerifyResponse, VerifyProgress, Trim, TrimResponse)
