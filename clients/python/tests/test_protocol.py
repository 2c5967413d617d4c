"""Codec edge cases beyond the shared vectors (no daemon needed)."""

from __future__ import annotations

import pytest

from sparkdaemon import protocol as p
from sparkdaemon.errors import (
    DaemonError,
    ErrorCode,
    FrameTooLarge,
    InvalidUtf8,
    InvalidValue,
    TrailingBytes,
    Truncated,
    UnexpectedMessage,
)


def test_header_limits():
    assert len(p.encode_header(p.MAX_PAYLOAD, 2, 3)) == 8
    with pytest.raises(FrameTooLarge):
        p.encode_header(p.MAX_PAYLOAD + 1, 2, 3)
    with pytest.raises(FrameTooLarge):
        p.encode_frame(2, 3, bytes(p.MAX_PAYLOAD + 1))
    h = p.decode_header(p.encode_header(p.MAX_PAYLOAD, 0x7777, 0x00FF))
    assert h == p.FrameHeader(p.MAX_PAYLOAD, 0x7777, 0x00FF)


def test_frame_decoder_splits_and_joins():
    frames = [p.Ping(b"a").to_frame(1), p.Version().to_frame(1), p.ErrorResponse(9, "bad").to_frame(2)]
    stream = b"".join(frames)
    dec = p.FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += dec.feed(stream[i : i + 1])
    assert [f.encode() for f in out] == frames
    assert out[2].is_error and not out[2].is_event
    assert dec.pending == 0
    with pytest.raises(TrailingBytes):
        p.decode_frame_exact(frames[0] + b"\x00")


def test_decoders_reject_bad_payloads():
    with pytest.raises(TrailingBytes):
        p.Version.decode(b"\x00")
    with pytest.raises(Truncated):
        p.ExistsResponse.decode(b"\x01\x00")
    with pytest.raises(TrailingBytes):
        p.PutResponse.decode(b"\x01\x00")
    with pytest.raises(InvalidValue):
        p.GetResponse.decode(b"\x03")
    with pytest.raises(TrailingBytes):
        p.GetResponse.decode(b"\x00\x00")
    with pytest.raises(InvalidUtf8):
        p.ErrorResponse.decode(b"\x01\x00\x02\x00\xff\xfe")
    with pytest.raises(Truncated):
        p.ErrorResponse.decode(b"\x01\x00\x05\x00ab")
    # A list count larger than the payload can hold fails before allocating.
    with pytest.raises(Truncated):
        p.HelloResponse.decode(b"\x01\x00\x00\x00\x01\x00\x00\x00\xff\xff")
    with pytest.raises(UnexpectedMessage):
        p.message_class(2, 0x0042)


def test_trailing_bytes_ignored_where_extensible():
    st = p.CacheStats(*range(1, 12))
    assert p.CacheStats.decode(st.encode() + b"future") == st
    sr = p.StatsResponse(1, 1, [1, 2, 3], 4, 5)
    assert p.StatsResponse.decode(sr.encode() + b"\x00" * 8) == sr
    hr = p.HelloResponse(1, "v", 3, [1], ["stream"])
    assert p.HelloResponse.decode(hr.encode() + b"x") == hr


def test_encoders_validate_ranges():
    with pytest.raises(ValueError):
        p.ShaderKey(1 << 64, 0, 0).encode()
    with pytest.raises(ValueError):
        p.ShaderKey(0, 256, 0).encode()
    with pytest.raises(ValueError):
        p.AssetKey("x", -1).encode()
    with pytest.raises(ValueError):
        p.AssetKey("x" * 65536, 0).encode()
    with pytest.raises(TypeError):
        p.AssetKey(b"x", 0).encode()
    # Non-ASCII paths are measured in UTF-8 bytes.
    assert p.AssetKey("é", 1).encode() == b"\x01\x02\x00\xc3\xa9"
    assert p.StreamEnd((1 << 128) - 1).encode() == b"\xff" * 16


def test_cache_messages_by_service():
    k = p.AssetKey("a/b", 3)
    f = p.decode_frame_exact(p.AssetPutStream(k, 1 << 40).to_frame(p.SERVICE_ASSET))
    assert p.decode_message(f) == p.AssetPutStream(k, 1 << 40)
    f = p.decode_frame_exact(p.ShaderGet(p.ShaderKey(2**64 - 1, 255, 0)).to_frame(p.SERVICE_SHADER))
    assert p.decode_message(f).key == p.ShaderKey(2**64 - 1, 255, 0)
    # Invalidate exists on the asset service only.
    with pytest.raises(UnexpectedMessage):
        p.message_class(p.SERVICE_SHADER, p.CACHE_INVALIDATE)
    assert p.key_class(p.SERVICE_ASSET) is p.AssetKey


def test_error_codes():
    e = p.ErrorResponse(1, "no such service").to_exception(0x7777)
    assert isinstance(e, DaemonError)
    assert (e.code, e.code_name, e.message, e.service) == (1, "unknown-service", "no such service", 0x7777)
    assert e.error_code is ErrorCode.UNKNOWN_SERVICE
    names = {c.value: c.code_name for c in ErrorCode}
    assert names[6] == "no-space" and names[11] == "stream-mismatch" and names[13] == "internal"
    future = DaemonError(999, "newer daemon")
    assert future.code == 999 and future.code_name == "unknown"
    assert "newer daemon" in str(future)
    import pickle

    back = pickle.loads(pickle.dumps(future))
    assert (back.code, back.message) == (999, "newer daemon")
