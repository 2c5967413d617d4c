"""``Client.compile``: shader compilation in the daemon (service 4, docs/protocol.md section 13).

The reply is a stream: CompileAccepted (N), N StreamChunks each holding one CompileResult in completion order,
then a StreamEnd whose checksum covers the chunk payloads. Results name their permutation by index.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import compile_messages as cm
from . import protocol as p
from .errors import ProtocolError, UnexpectedMessage


class _Compile:
    def __init__(self, req: cm.CompileRequest, on_result: Optional[Callable[[cm.CompileResult], None]]) -> None:
        self.payload = req.encode()  # validates before anything is sent
        self.on_result = on_result

    def write(self, conn) -> None:
        conn.send_frame(p.SERVICE_COMPILE, cm.COMPILE_REQUEST, self.payload)

    def read(self, conn) -> List[cm.CompileResult]:
        accepted = conn.read_reply(p.SERVICE_COMPILE, cm.CompileAccepted)
        results: List[Optional[cm.CompileResult]] = [None] * accepted.permutations
        hasher = p.new_hasher()
        seen: List[bytes] = []  # without the xxhash package: checked with the pure-Python XXH3 at the end
        while True:
            f = conn.read_frame()
            if f.msg_type == p.MSG_ERROR:
                raise p.ErrorResponse.decode(f.payload).to_exception(f.service)
            if f.service != p.SERVICE_COMPILE:
                raise UnexpectedMessage(f.service, f.msg_type, expected="a compile stream frame")
            if f.msg_type == p.MSG_STREAM_END:
                end = p.StreamEnd.decode(f.payload)
                if any(r is None for r in results):
                    raise ProtocolError("compile stream ended before every permutation's result")
                digest = hasher.intdigest() if hasher is not None else p.xxh3_128(b"".join(seen))
                if end.checksum != digest:
                    raise ProtocolError("compile stream failed its checksum")
                return results  # type: ignore[return-value]
            if f.msg_type != p.MSG_STREAM_CHUNK:
                raise UnexpectedMessage(f.service, f.msg_type, expected="STREAM_CHUNK or STREAM_END")
            if hasher is not None:
                hasher.update(f.payload)
            else:
                seen.append(bytes(f.payload))
            r = cm.CompileResult.decode(f.payload)
            if not 0 <= r.index < len(results) or results[r.index] is not None:
                raise ProtocolError(f"compile result for permutation {r.index} out of range or repeated")
            results[r.index] = r
            if self.on_result is not None:
                self.on_result(r)


class CompileApi:
    """Mixed into :class:`~sparkdaemon.Client`."""

    def compile(
        self,
        source: str,
        stage: str,
        *,
        language: str = "glsl",
        target: str = "spirv",
        entry: str = "main",
        defines: Sequence[str] = (),
        permutations: Optional[Sequence[Sequence[str]]] = None,
        include_dirs: Sequence[str] = (),
        include_map: Optional[Dict[str, str]] = None,
        backend: str = "auto",
        debug: bool = False,
        spirv_version: Optional[Tuple[int, int]] = None,
        on_result: Optional[Callable[[cm.CompileResult], None]] = None,
    ) -> List[cm.CompileResult]:
        """Compiles ``source`` through the daemon (cached, shared with every client).

        ``stage`` is ``vert``, ``frag`` or ``comp``; ``language`` ``glsl``, ``wgsl`` or ``hlsl``; ``target``
        ``spirv``, ``msl``, ``hlsl`` or ``glsl``. ``defines`` (``NAME`` or ``NAME=VALUE``) make one
        permutation; ``permutations`` (a list of define lists) a batch compiled in parallel. Returns the
        results ordered by permutation; ``on_result`` sees each as it arrives. A compile error is a result
        (``status == STATUS_COMPILE_ERROR``, diagnostics with file and line), not an exception.
        """
        perms = [list(x) for x in permutations] if permutations is not None else [list(defines)]
        req = cm.CompileRequest(
            language=cm.LANGUAGES[language],
            stage=cm.STAGES[stage],
            target=cm.TARGETS[target],
            backend=cm.BACKENDS[backend],
            flags=cm.FLAG_DEBUG if debug else 0,
            spirv_version=(spirv_version[0] << 8 | spirv_version[1]) if spirv_version else 0,
            entry=entry,
            include_dirs=[str(d) for d in include_dirs],
            include_map=sorted((include_map or {}).items()),
            permutations=perms,
            source=source,
        )
        return self._submit(_Compile(req, on_result))  # type: ignore[attr-defined]

    def compile_stats(self) -> Dict[str, int]:
        """The Compile service's counters (see :data:`~sparkdaemon.compile_messages.COMPILE_STATS_FIELDS`)."""
        from .client import _Simple

        m = self._submit(  # type: ignore[attr-defined]
            _Simple(p.SERVICE_COMPILE, cm.CompileStatsRequest(), cm.CompileStats)
        )
        return {k: getattr(m, k) for k in cm.COMPILE_STATS_FIELDS}
