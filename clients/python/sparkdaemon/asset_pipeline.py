"""The Asset service's pipeline messages (dependencies, invalidation events, single-flight imports), mirroring
``crates/spark-proto/src/cache.rs``. Re-exported by :mod:`sparkdaemon.protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List

from .protocol import BytesLike, Message, Reader, _Empty, _list_str16, _str16, _u8, _u32

ASSET_DECLARE_DEPS = 0x000F
ASSET_DECLARE_DEPS_RESPONSE = 0x0010
ASSET_SUBSCRIBE_INVALIDATIONS = 0x0011
ASSET_SUBSCRIBE_INVALIDATIONS_RESPONSE = 0x0012
ASSET_IMPORT_CLAIM = 0x0013
ASSET_IMPORT_CLAIM_RESPONSE = 0x0014
ASSET_IMPORT_DONE = 0x0015
ASSET_IMPORT_DONE_RESPONSE = 0x0016
#: Event (Asset): a variant was dropped because a source it was built from changed.
ASSET_INVALIDATED = 0x8001

#: ImportClaimResponse status: import it, put it, then send ImportDone.
CLAIM_OWNER = 0
#: ImportClaimResponse status: the variant is cached.
CLAIM_READY = 1


@dataclass
class DeclareDeps(Message):
    """``str16`` path, ``u8`` platform, ``list_str16`` absolute source paths the variant was built from."""

    TYPE: ClassVar[int] = ASSET_DECLARE_DEPS
    path: str
    platform: int
    deps: List[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return _str16(self.path, "asset path") + _u8(self.platform, "platform") + _list_str16(self.deps, "deps")

    @classmethod
    def decode(cls, payload: BytesLike) -> "DeclareDeps":
        r = Reader(payload)
        m = cls(r.str16(), r.u8(), r.list_str16())
        r.finish()
        return m


@dataclass
class _Watched(Message):
    watched: int

    def encode(self) -> bytes:
        return _u32(self.watched, "watched")

    @classmethod
    def decode(cls, payload: BytesLike):
        r = Reader(payload)
        m = cls(r.u32())
        r.finish()
        return m


@dataclass
class DeclareDepsResponse(_Watched):
    """``u32`` source files watched for the variant."""

    TYPE: ClassVar[int] = ASSET_DECLARE_DEPS_RESPONSE


class SubscribeInvalidations(_Empty):
    """This connection receives :class:`AssetInvalidated` events until it closes."""

    TYPE = ASSET_SUBSCRIBE_INVALIDATIONS


class SubscribeInvalidationsResponse(_Empty):
    """Empty."""

    TYPE = ASSET_SUBSCRIBE_INVALIDATIONS_RESPONSE


@dataclass
class ImportClaim(Message):
    """``u8`` platform, ``str16`` importer id, ``u32`` importer version, ``str16`` source, ``list_str16`` deps."""

    TYPE: ClassVar[int] = ASSET_IMPORT_CLAIM
    platform: int
    importer_id: str
    importer_version: int
    source: str
    deps: List[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return (
            _u8(self.platform, "platform")
            + _str16(self.importer_id, "importer id")
            + _u32(self.importer_version, "importer version")
            + _str16(self.source, "source")
            + _list_str16(self.deps, "deps")
        )

    @classmethod
    def decode(cls, payload: BytesLike) -> "ImportClaim":
        r = Reader(payload)
        m = cls(r.u8(), r.str16(), r.u32(), r.str16(), r.list_str16())
        r.finish()
        return m


@dataclass
class ImportClaimResponse(Message):
    """``u8`` status (CLAIM_OWNER, CLAIM_READY), ``str16`` the variant's asset path."""

    TYPE: ClassVar[int] = ASSET_IMPORT_CLAIM_RESPONSE
    status: int
    path: str

    def encode(self) -> bytes:
        return _u8(self.status, "status") + _str16(self.path, "asset path")

    @classmethod
    def decode(cls, payload: BytesLike) -> "ImportClaimResponse":
        r = Reader(payload)
        m = cls(r.u8(), r.str16())
        r.finish()
        return m


@dataclass
class ImportDone(Message):
    """``str16`` path, ``u8`` platform, ``u8`` ok (the variant was put)."""

    TYPE: ClassVar[int] = ASSET_IMPORT_DONE
    path: str
    platform: int
    ok: bool

    def encode(self) -> bytes:
        return _str16(self.path, "asset path") + _u8(self.platform, "platform") + _u8(1 if self.ok else 0)

    @classmethod
    def decode(cls, payload: BytesLike) -> "ImportDone":
        r = Reader(payload)
        m = cls(r.str16(), r.u8(), r.u8() != 0)
        r.finish()
        return m


@dataclass
class ImportDoneResponse(_Watched):
    """``u32`` source files watched for the variant."""

    TYPE: ClassVar[int] = ASSET_IMPORT_DONE_RESPONSE


@dataclass
class AssetInvalidated(Message):
    """Event: ``str16`` path, ``u8`` platform (the dropped variant), ``str16`` the source that changed."""

    TYPE: ClassVar[int] = ASSET_INVALIDATED
    path: str
    platform: int
    source: str

    def encode(self) -> bytes:
        return _str16(self.path, "asset path") + _u8(self.platform, "platform") + _str16(self.source, "source")

    @classmethod
    def decode(cls, payload: BytesLike) -> "AssetInvalidated":
        r = Reader(payload)
        m = cls(r.str16(), r.u8(), r.str16())
        r.finish()
        return m


ASSET_PIPELINE_MESSAGES = (
    DeclareDeps,
    DeclareDepsResponse,
    SubscribeInvalidations,
    SubscribeInvalidationsResponse,
    ImportClaim,
    ImportClaimResponse,
    ImportDone,
    ImportDoneResponse,
    AssetInvalidated,
)
