"""The Compile service's messages (service ``0x0004``), kept out of protocol.py for size; protocol.py re-exports
them. Layouts: docs/protocol.md section 13 (and crates/spark-proto/src/compile.rs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Tuple

from .errors import InvalidUtf8, InvalidValue, Truncated
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

COMPILE_REQUEST = 0x0001
COMPILE_ACCEPTED = 0x0002
COMPILE_RESULT = 0x0003
COMPILE_STATS = 0x0005
COMPILE_STATS_RESPONSE = 0x0006

#: Wire bytes of the enums, by the names tools use.
LANGUAGES = {"wgsl": 1, "glsl": 2, "hlsl": 3}
STAGES = {"vert": 1, "frag": 2, "comp": 3}
TARGETS = {"spirv": 1, "msl": 2, "hlsl": 3, "glsl": 4}
BACKENDS = {"auto": 0, "naga": 1, "glslang": 2}

FLAG_DEBUG = 1
FLAG_OPTIMIZE = 2

STATUS_OK = 0
STATUS_COMPILE_ERROR = 1
STATUS_FAILED = 2
ORIGINS = {0: "fresh", 1: "hit", 2: "joined"}
SEVERITIES = {0: "error", 1: "warning", 2: "note"}


def _bytes32(b: bytes, what: str) -> bytes:
    return _u32(len(b), what + " length") + b


def _read_bytes32(r: Reader) -> bytes:
    n = r.u32()
    if n > r.remaining:
        raise Truncated()
    return bytes(r._take(n))


def _read_str32(r: Reader) -> str:
    try:
        return str(_read_bytes32(r), "utf-8")
    except UnicodeDecodeError:
        raise InvalidUtf8() from None


def _enum(value: int, table: dict, what: str) -> int:
    if value not in table.values():
        raise InvalidValue(what)
    return value


@dataclass
class CompileRequest(Message):
    """Compile: see docs/protocol.md 10.2. ``include_map`` is a list of (virtual path, content)."""

    TYPE: ClassVar[int] = COMPILE_REQUEST
    language: int
    stage: int
    target: int
    backend: int = 0
    flags: int = 0
    spirv_version: int = 0
    entry: str = "main"
    include_dirs: List[str] = field(default_factory=list)
    include_map: List[Tuple[str, str]] = field(default_factory=list)
    permutations: List[List[str]] = field(default_factory=lambda: [[]])
    source: str = ""

    def encode(self) -> bytes:
        if not 1 <= len(self.permutations) <= 4096:
            raise ValueError("a compile request carries 1 to 4096 permutations")
        out = [
            _u8(self.language, "language"),
            _u8(self.stage, "stage"),
            _u8(self.target, "target"),
            _u8(self.backend, "backend"),
            _u8(self.flags, "flags"),
            _u16(self.spirv_version, "spirv_version"),
            _str16(self.entry, "entry"),
            _list_str16(self.include_dirs, "include dirs"),
            _u16(len(self.include_map), "include map count"),
        ]
        for path, content in self.include_map:
            out.append(_str16(path, "include path") + _bytes32(content.encode("utf-8"), "include"))
        out.append(_u16(len(self.permutations), "permutation count"))
        for defines in self.permutations:
            out.append(_list_str16(defines, "defines"))
        out.append(_bytes32(self.source.encode("utf-8"), "source"))
        return b"".join(out)

    @classmethod
    def decode(cls, payload: BytesLike) -> "CompileRequest":
        r = Reader(payload)
        language = _enum(r.u8(), LANGUAGES, "language")
        stage = _enum(r.u8(), STAGES, "stage")
        target = _enum(r.u8(), TARGETS, "target")
        backend = _enum(r.u8(), BACKENDS, "backend")
        flags, spirv_version, entry = r.u8(), r.u16(), r.str16()
        include_dirs = r.list_str16()
        include_map = []
        for _ in range(r.u16()):
            path = r.str16()
            include_map.append((path, _read_str32(r)))
        n = r.u16()
        if not 1 <= n <= 4096:
            raise InvalidValue("permutation count")
        permutations = [r.list_str16() for _ in range(n)]
        source = _read_str32(r)
        r.finish()
        return cls(
            language, stage, target, backend, flags, spirv_version, entry, include_dirs, include_map, permutations,
            source,
        )


@dataclass
class CompileAccepted(Message):
    """The first frame of a compile reply: ``u16`` permutations that follow, one StreamChunk each."""

    TYPE: ClassVar[int] = COMPILE_ACCEPTED
    permutations: int

    def encode(self) -> bytes:
        return _u16(self.permutations, "permutations")

    @classmethod
    def decode(cls, payload: BytesLike) -> "CompileAccepted":
        r = Reader(payload)
        m = cls(r.u16())
        r.finish()
        return m


@dataclass
class Diagnostic:
    severity: int
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        sev = SEVERITIES.get(self.severity, "note")
        where = self.file
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        return f"{where}: {sev}: {self.message}"


@dataclass
class CompileResult(Message):
    """One permutation's outcome, the payload of a StreamChunk in a compile reply (docs/protocol.md 10.3)."""

    TYPE: ClassVar[int] = COMPILE_RESULT
    index: int
    status: int
    origin: int
    key: bytes
    compiler: str
    entry: str
    workgroup_size: Tuple[int, int, int] = (0, 0, 0)
    bindings: List[Tuple[int, int, int]] = field(default_factory=list)
    diagnostics: List[Diagnostic] = field(default_factory=list)
    output: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def origin_name(self) -> str:
        return ORIGINS.get(self.origin, "unknown")

    def encode(self) -> bytes:
        if len(self.key) != 32:
            raise ValueError("key must be 32 bytes")
        out = [_u16(self.index, "index"), _u8(self.status, "status"), _u8(self.origin, "origin"), bytes(self.key)]
        out += [_str16(self.compiler, "compiler"), _str16(self.entry, "entry")]
        out += [_u32(w, "workgroup size") for w in self.workgroup_size]
        out.append(_u16(len(self.bindings), "binding count"))
        for s, b, k in self.bindings:
            out.append(_u32(s, "set") + _u32(b, "binding") + _u8(k, "kind"))
        out.append(_u16(len(self.diagnostics), "diagnostic count"))
        for d in self.diagnostics:
            out.append(
                _u8(d.severity, "severity")
                + _str16(d.file, "file")
                + _u32(d.line, "line")
                + _u32(d.column, "column")
                + _str16(d.message, "message")
            )
        out.append(_bytes32(bytes(self.output), "output"))
        return b"".join(out)

    @classmethod
    def decode(cls, payload: BytesLike) -> "CompileResult":
        r = Reader(payload)
        index, status, origin = r.u16(), r.u8(), r.u8()
        if status > 2:
            raise InvalidValue("compile status")
        if origin > 2:
            raise InvalidValue("compile origin")
        key = bytes(r._take(32))
        compiler, entry = r.str16(), r.str16()
        wg = (r.u32(), r.u32(), r.u32())
        bindings = []
        for _ in range(r.u16()):
            s, b = r.u32(), r.u32()
            k = r.u8()
            bindings.append((s, b, k if k in (1, 2, 3, 4, 5) else 255))
        diags = []
        for _ in range(r.u16()):
            sev = r.u8()
            file = r.str16()
            line, col = r.u32(), r.u32()
            diags.append(Diagnostic(min(sev, 2), file, line, col, r.str16()))
        output = _read_bytes32(r)
        r.finish()
        return cls(index, status, origin, key, compiler, entry, wg, bindings, diags, output)


class CompileStatsRequest(_Empty):
    """Compile Stats: asks for :class:`CompileStats`."""

    TYPE = COMPILE_STATS


#: CompileStats field names, in wire order.
COMPILE_STATS_FIELDS = (
    "compiles",
    "hits",
    "negative_hits",
    "joins",
    "failures",
    "timeouts",
    "worker_crashes",
    "queue_depth",
    "running",
    "jobs",
    "p50_us",
    "p90_us",
    "p99_us",
    "max_us",
)


@dataclass
class CompileStats(Message):
    """The Compile service's counters: fourteen ``u64``. Trailing bytes are ignored."""

    TYPE: ClassVar[int] = COMPILE_STATS_RESPONSE
    compiles: int = 0
    hits: int = 0
    negative_hits: int = 0
    joins: int = 0
    failures: int = 0
    timeouts: int = 0
    worker_crashes: int = 0
    queue_depth: int = 0
    running: int = 0
    jobs: int = 0
    p50_us: int = 0
    p90_us: int = 0
    p99_us: int = 0
    max_us: int = 0

    def encode(self) -> bytes:
        return b"".join(_u64(getattr(self, f), f) for f in COMPILE_STATS_FIELDS)

    @classmethod
    def decode(cls, payload: BytesLike) -> "CompileStats":
        r = Reader(payload)
        return cls(*[r.u64() for _ in COMPILE_STATS_FIELDS])
