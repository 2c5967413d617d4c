"""Checks the codec against docs/protocol-vectors.json, the byte-level vectors shared by every client.

For every vector: build the message from its fields with this package's codec and compare the frame byte for
byte; then decode the frame and the payload and compare the fields. Every invalid vector must fail to decode
with the named error. No daemon needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparkdaemon import compile_messages as cm
from sparkdaemon import protocol as p
from sparkdaemon.errors import FrameTooLarge, ProtocolError, Truncated

VECTORS_PATH = Path(__file__).resolve().parent.joinpath("..", "..", "..", "docs", "protocol-vectors.json").resolve()
DOC = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def shader_key(f):
    return p.ShaderKey(int(f["source_hash"], 16), f["target"], f["stage"])


def asset_key(f):
    return p.AssetKey(f["path"], f["platform"])


def data(f):
    return bytes.fromhex(f["data"])


def stats(f):
    return p.CacheStats(**{k: f[k] for k in p.CACHE_STATS_FIELDS})


def get_response(f):
    if f["status"] == 0:
        return p.GetResponse(p.GetStatus.MISS)
    if f["status"] == 1:
        return p.GetResponse(p.GetStatus.INLINE, data=data(f))
    return p.GetResponse(p.GetStatus.STREAMED, total_len=f["total_len"])


def namespaces_response(f):
    return p.NamespacesResponse(
        [
            p.NamespaceStats(ns["name"], ns["service"], [(c["name"], c["value"]) for c in ns["counters"]])
            for ns in f["namespaces"]
        ]
    )


def changes(f):
    return [p.Change(c["kind"], c["path"], c.get("to", "")) for c in f["changes"]]


def subscribe_like(cls, f):
    return cls(f["root"], f["flags"], f["include"], f["exclude"], int(f["since_instance"], 16), f["since_seq"])


def list_response(f):
    return p.WatchListResponse(
        [
            p.WatchRoot(r["root"], r["flags"], r["subscribers"], r["watches"], r["files"], r["seq"], r["rescans"])
            for r in f["roots"]
        ]
    )


def compile_request(f):
    return p.CompileRequest(
        cm.LANGUAGES[f["language"]],
        cm.STAGES[f["stage"]],
        cm.TARGETS[f["target"]],
        cm.BACKENDS[f["backend"]],
        f["flags"],
        f["spirv_version"],
        f["entry"],
        f["include_dirs"],
        [(m["path"], m["content"]) for m in f["include_map"]],
        f["permutations"],
        f["source"],
    )


def compile_result(f):
    return p.CompileResult(
        f["index"],
        f["status"],
        f["origin"],
        bytes.fromhex(f["key"]),
        f["compiler"],
        f["entry"],
        tuple(f["workgroup_size"]),
        [(b["set"], b["binding"], b["kind"]) for b in f["bindings"]],
        [cm.Diagnostic(d["severity"], d["file"], d["line"], d["column"], d["message"]) for d in f["diagnostics"]],
        data({"data": f["output"]}),
    )


# message name -> (class, build from fields)
BUILD = {
    "Ping": (p.Ping, lambda f: p.Ping(data(f))),
    "Pong": (p.Pong, lambda f: p.Pong(data(f))),
    "Version": (p.Version, lambda f: p.Version()),
    "VersionResponse": (p.VersionResponse, lambda f: p.VersionResponse(f["protocol_version"], f["daemon_version"])),
    "Shutdown": (p.Shutdown, lambda f: p.Shutdown()),
    "ShutdownAck": (p.ShutdownAck, lambda f: p.ShutdownAck()),
    "Stats": (p.StatsRequest, lambda f: p.StatsRequest()),
    "StatsResponse": (
        p.StatsResponse,
        lambda f: p.StatsResponse(
            f["uptime_secs"], f["protocol_version"], f["services"], f["current_connections"], f["total_connections"]
        ),
    ),
    "Hello": (p.Hello, lambda f: p.Hello(f["protocol_version"], f["flags"], f["pid"], f["client_name"])),
    "HelloResponse": (
        p.HelloResponse,
        lambda f: p.HelloResponse(
            f["protocol_version"], f["daemon_version"], f["daemon_pid"], f["services"], f["capabilities"]
        ),
    ),
    "RegisterSponsor": (p.RegisterSponsor, lambda f: p.RegisterSponsor(f["pid"])),
    "RegisterSponsorAck": (p.RegisterSponsorAck, lambda f: p.RegisterSponsorAck(f["sponsors"])),
    "ErrorResponse": (p.ErrorResponse, lambda f: p.ErrorResponse(f["code"], f["message"])),
    "ShaderGet": (p.ShaderGet, lambda f: p.ShaderGet(shader_key(f))),
    "ShaderPut": (p.ShaderPut, lambda f: p.ShaderPut(shader_key(f), data(f))),
    "ShaderPutStream": (p.ShaderPutStream, lambda f: p.ShaderPutStream(shader_key(f), f["total_len"])),
    "ShaderExists": (p.ShaderExists, lambda f: p.ShaderExists(shader_key(f))),
    "AssetGet": (p.AssetGet, lambda f: p.AssetGet(asset_key(f))),
    "AssetPut": (p.AssetPut, lambda f: p.AssetPut(asset_key(f), data(f))),
    "AssetExists": (p.AssetExists, lambda f: p.AssetExists(asset_key(f))),
    "GetResponse": (p.GetResponse, get_response),
    "PutResponse": (p.PutResponse, lambda f: p.PutResponse(f["stored"] != 0)),
    "StreamChunk": (p.StreamChunk, lambda f: p.StreamChunk(data(f))),
    "StreamEnd": (p.StreamEnd, lambda f: p.StreamEnd(int(f["checksum"], 16))),
    "ExistsResponse": (p.ExistsResponse, lambda f: p.ExistsResponse(f["exists"] != 0, f["size"])),
    "Clear": (p.Clear, lambda f: p.Clear()),
    "ClearResponse": (p.ClearResponse, lambda f: p.ClearResponse(f["removed"])),
    "CacheStatsRequest": (p.CacheStatsRequest, lambda f: p.CacheStatsRequest()),
    "CacheStats": (p.CacheStats, stats),
    "Invalidate": (p.Invalidate, lambda f: p.Invalidate(f["path"])),
    "InvalidateResponse": (p.InvalidateResponse, lambda f: p.InvalidateResponse(f["dropped"])),
    "AssetPutStream": (p.AssetPutStream, lambda f: p.AssetPutStream(asset_key(f), f["total_len"])),
    "Namespaces": (p.Namespaces, lambda f: p.Namespaces()),
    "NamespacesResponse": (p.NamespacesResponse, namespaces_response),
    "EventsLost": (p.EventsLost, lambda f: p.EventsLost(f["dropped"])),
    "Verify": (p.Verify, lambda f: p.Verify(f["namespace"])),
    "VerifyResponse": (
        p.VerifyResponse,
        lambda f: p.VerifyResponse(f["checked"], f["bytes"], f["corrupt"], f["memory_only"]),
    ),
    "VerifyProgress": (
        p.VerifyProgress,
        lambda f: p.VerifyProgress(f["namespace"], f["checked"], f["total"], f["corrupt"]),
    ),
    "Trim": (p.Trim, lambda f: p.Trim(f["namespace"], f["target_bytes"])),
    "TrimResponse": (p.TrimResponse, lambda f: p.TrimResponse(f["evicted"], f["bytes_before"], f["bytes_after"])),
    "DeclareDeps": (p.DeclareDeps, lambda f: p.DeclareDeps(f["path"], f["platform"], f["deps"])),
    "DeclareDepsResponse": (p.DeclareDepsResponse, lambda f: p.DeclareDepsResponse(f["watched"])),
    "SubscribeInvalidations": (p.SubscribeInvalidations, lambda f: p.SubscribeInvalidations()),
    "SubscribeInvalidationsResponse": (
        p.SubscribeInvalidationsResponse,
        lambda f: p.SubscribeInvalidationsResponse(),
    ),
    "ImportClaim": (
        p.ImportClaim,
        lambda f: p.ImportClaim(f["platform"], f["importer_id"], f["importer_version"], f["source"], f["deps"]),
    ),
    "ImportClaimResponse": (p.ImportClaimResponse, lambda f: p.ImportClaimResponse(f["status"], f["path"])),
    "ImportDone": (p.ImportDone, lambda f: p.ImportDone(f["path"], f["platform"], f["ok"] != 0)),
    "ImportDoneResponse": (p.ImportDoneResponse, lambda f: p.ImportDoneResponse(f["watched"])),
    "AssetInvalidated": (p.AssetInvalidated, lambda f: p.AssetInvalidated(f["path"], f["platform"], f["source"])),
    "WatchSubscribe": (p.WatchSubscribe, lambda f: subscribe_like(p.WatchSubscribe, f)),
    "WatchSubscribeResponse": (
        p.WatchSubscribeResponse,
        lambda f: p.WatchSubscribeResponse(
            f["subscription"], int(f["instance"], 16), f["seq"], f["watched_dirs"], f["watched_files"]
        ),
    ),
    "WatchUnsubscribe": (p.WatchUnsubscribe, lambda f: p.WatchUnsubscribe(f["subscription"])),
    "WatchUnsubscribeResponse": (p.WatchUnsubscribeResponse, lambda f: p.WatchUnsubscribeResponse(f["existed"] != 0)),
    "WatchQuery": (p.WatchQuery, lambda f: subscribe_like(p.WatchQuery, f)),
    "WatchQueryResponse": (
        p.WatchQueryResponse,
        lambda f: p.WatchQueryResponse(int(f["instance"], 16), f["seq"], f["fresh_instance"] != 0, changes(f)),
    ),
    "WatchList": (p.WatchList, lambda f: p.WatchList()),
    "WatchListResponse": (p.WatchListResponse, list_response),
    "WatchChanges": (
        p.WatchChanges,
        lambda f: p.WatchChanges(f["subscription"], int(f["instance"], 16), f["seq"], f["flags"], changes(f)),
    ),
    "WatchRescan": (
        p.WatchRescan,
        lambda f: p.WatchRescan(f["subscription"], f["root"], int(f["instance"], 16), f["seq"], f["reason"]),
    ),
    "WatchEnded": (
        p.WatchEnded,
        lambda f: p.WatchEnded(f["subscription"], f["root"], f["reason"], f["message"]),
    ),
    "CompileRequest": (p.CompileRequest, compile_request),
    "CompileAccepted": (p.CompileAccepted, lambda f: p.CompileAccepted(f["permutations"])),
    "CompileResult": (p.CompileResult, compile_result),
    "CompileStatsRequest": (p.CompileStatsRequest, lambda f: p.CompileStatsRequest()),
    "CompileStats": (
        p.CompileStats,
        lambda f: p.CompileStats(**{k: f[k] for k in cm.COMPILE_STATS_FIELDS}),
    ),
}

# The Collab messages declare their fields, so one builder covers them all.
BUILD.update({c.__name__: (c, c.from_fields) for c in p.COLLAB_MESSAGES})


def vector_id(v):
    return v["name"]


def test_file_protocol_version():
    assert DOC["protocol_version"] == p.PROTOCOL_VERSION


def _python_message_classes():
    """Every concrete message class of the protocol module (generic bases such as ``Get`` are covered by their
    per-key subclasses ``ShaderGet`` / ``AssetGet``)."""
    classes = {
        c
        for c in vars(p).values()
        if isinstance(c, type) and issubclass(c, p.Message) and c not in (p.Message, p._Empty) and hasattr(c, "TYPE")
    }
    return {c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)}


def test_every_vector_message_has_a_python_class():
    """A message in the Rust registry (every one has a vector, checked by vectors.rs) exists in Python."""
    missing = sorted({v["message"] for v in DOC["vectors"]} - set(BUILD))
    assert not missing, f"messages with vectors but no Python class: {missing}"


def test_every_python_message_class_has_a_vector():
    """A Python message class exists in Rust (its registry generates the vectors), and is checked byte-exactly."""
    covered = {BUILD[v["message"]][0] for v in DOC["vectors"]}
    extra = sorted(c.__name__ for c in _python_message_classes() - covered)
    assert not extra, f"Python message classes with no vector (not in the Rust registry?): {extra}"
    stale = sorted(name for name, (cls, _) in BUILD.items() if cls not in _python_message_classes())
    assert not stale, f"BUILD names classes that are not messages: {stale}"


@pytest.mark.parametrize("v", DOC["vectors"], ids=vector_id)
def test_encode_matches_vector(v):
    cls, build = BUILD[v["message"]]
    msg = build(v["fields"])
    assert type(msg) is cls
    assert msg.TYPE == v["msg_type"]
    assert msg.to_frame(v["service"]).hex() == v["frame"]


@pytest.mark.parametrize("v", DOC["vectors"], ids=vector_id)
def test_decode_matches_vector(v):
    cls, build = BUILD[v["message"]]
    frame = p.decode_frame_exact(bytes.fromhex(v["frame"]))
    assert frame.service == v["service"]
    assert frame.msg_type == v["msg_type"]
    # Decode as the vector's message, and by lookup from (service, msg_type) alone.
    decoded = cls.decode(frame.payload)
    assert decoded == build(v["fields"])
    assert p.decode_message(frame) == decoded
    # Decoding then encoding gives the same payload back.
    assert decoded.encode() == frame.payload


@pytest.mark.parametrize("v", DOC["invalid"], ids=vector_id)
def test_invalid_vector_raises(v):
    errors = {"frame_too_large": FrameTooLarge, "truncated": Truncated}
    exc = errors[v["error"]]
    raw = bytes.fromhex(v["frame"])
    with pytest.raises(exc) as info:
        p.decode_frame_exact(raw)
    assert isinstance(info.value, ProtocolError)
    assert info.value.kind == v["error"]
    # The incremental decoder agrees: oversize headers fail from the header alone, truncated input waits.
    dec = p.FrameDecoder()
    if exc is FrameTooLarge:
        with pytest.raises(FrameTooLarge):
            dec.feed(raw)
    else:
        assert dec.feed(raw) == []
        assert dec.pending == len(raw)


def xxh3_input(length):
    """The check-value input of docs/protocol-vectors.json: byte i = (i * 7 + 3) mod 256."""
    return bytes((i * 7 + 3) % 256 for i in range(length))


def test_xxh3_check_values_cover_every_length_branch():
    lengths = [c["length"] for c in DOC["xxh3_128"]]
    # XXH3-128 branches: 0, 1-3, 4-8, 9-16, 17-128, 129-240, > 240 bytes.
    for lo, hi in [(0, 0), (1, 3), (4, 8), (9, 16), (17, 128), (129, 240), (241, 1 << 30)]:
        assert any(lo <= n <= hi for n in lengths), (lo, hi)


@pytest.mark.parametrize("c", DOC["xxh3_128"], ids=vector_id)
def test_xxh3_128_check_value(c):
    assert p.xxh3_128(xxh3_input(c["length"])) == int(c["checksum"], 16)
    if p.HAVE_XXHASH:
        assert p.blob_checksum(xxh3_input(c["length"])) == int(c["checksum"], 16)


def test_stream_end_vector_checksum_is_xxh3_128():
    v = next(v for v in DOC["vectors"] if v["message"] == "StreamEnd")
    if not p.HAVE_XXHASH:
        assert p.blob_checksum(bytes(range(6))) == 0  # "not supplied" without xxhash
        pytest.skip("xxhash not installed")
    assert p.blob_checksum(bytes(range(6))) == int(v["fields"]["checksum"], 16)
