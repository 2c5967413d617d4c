"""The Shader and Asset caches' typed APIs, built on :mod:`sparkdaemon.ops`."""

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
from .ops import Submit, _Get, _Put, _Simple  # noqa: F401


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
