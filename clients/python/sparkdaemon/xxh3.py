"""XXH3-128 (seed 0, default secret) in pure Python: the checksum of StreamEnd frames (protocol.md §9.1).

Written from the XXH3 specification (xxHash 0.8) so the package can compute and check checksums with no
third-party module. It is slow (about a second per few MiB): :func:`sparkdaemon.protocol.blob_checksum` still
prefers the optional ``xxhash`` module for blob bodies. Every length branch (0, 1-3, 4-8, 9-16, 17-128, 129-240,
> 240 bytes) is checked against the ``xxh3_128`` check values of ``docs/protocol-vectors.json``.
"""

from __future__ import annotations

from typing import List, Tuple, Union

BytesLike = Union[bytes, bytearray, memoryview]

_M64 = (1 << 64) - 1

_P32_1 = 0x9E3779B1
_P32_2 = 0x85EBCA77
_P32_3 = 0xC2B2AE3D
_P64_1 = 0x9E3779B185EBCA87
_P64_2 = 0xC2B2AE3D27D4EB4F
_P64_3 = 0x165667B19E3779F9
_P64_4 = 0x85EBCA77C2B2AE63
_P64_5 = 0x27D4EB2F165667C5

_SECRET = bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e"
    "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e"
)
_STRIPE_LEN = 64
_ACC_NB = 8
_SECRET_CONSUME_RATE = 8
_SECRET_MERGEACCS_START = 11
_SECRET_LASTACC_START = 7
_SECRET_SIZE_MIN = 136


def _r32(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 4], "little")


def _r64(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 8], "little")


def _swap32(x: int) -> int:
    return int.from_bytes(x.to_bytes(4, "little"), "big")


def _swap64(x: int) -> int:
    return int.from_bytes(x.to_bytes(8, "little"), "big")


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def _mul128_fold64(a: int, b: int) -> int:
    p = a * b
    return (p & _M64) ^ (p >> 64)


def _xxh64_avalanche(h: int) -> int:
    h ^= h >> 33
    h = (h * _P64_2) & _M64
    h ^= h >> 29
    h = (h * _P64_3) & _M64
    return h ^ (h >> 32)


def _avalanche(h: int) -> int:
    h ^= h >> 37
    h = (h * 0x165667919E3779F9) & _M64
    return h ^ (h >> 32)


def _mix16(data: bytes, i: int, s: int) -> int:
    return _mul128_fold64(_r64(data, i) ^ _r64(_SECRET, s), _r64(data, i + 8) ^ _r64(_SECRET, s + 8))


def _mix32(acc: Tuple[int, int], data: bytes, i1: int, i2: int, s: int) -> Tuple[int, int]:
    lo, hi = acc
    lo = (lo + _mix16(data, i1, s)) & _M64
    lo ^= (_r64(data, i2) + _r64(data, i2 + 8)) & _M64
    hi = (hi + _mix16(data, i2, s + 16)) & _M64
    hi ^= (_r64(data, i1) + _r64(data, i1 + 8)) & _M64
    return lo, hi


def _join(lo: int, hi: int) -> int:
    return (lo & _M64) | ((hi & _M64) << 64)


def _len_0() -> int:
    return _join(
        _xxh64_avalanche(_r64(_SECRET, 64) ^ _r64(_SECRET, 72)),
        _xxh64_avalanche(_r64(_SECRET, 80) ^ _r64(_SECRET, 88)),
    )


def _len_1to3(d: bytes) -> int:
    n = len(d)
    combined_lo = (d[0] << 16) | (d[n >> 1] << 24) | d[n - 1] | (n << 8)
    combined_hi = _rotl32(_swap32(combined_lo), 13)
    flip_lo = _r32(_SECRET, 0) ^ _r32(_SECRET, 4)
    flip_hi = _r32(_SECRET, 8) ^ _r32(_SECRET, 12)
    return _join(_xxh64_avalanche(combined_lo ^ flip_lo), _xxh64_avalanche(combined_hi ^ flip_hi))


def _len_4to8(d: bytes) -> int:
    n = len(d)
    input64 = (_r32(d, 0) + (_r32(d, n - 4) << 32)) & _M64
    keyed = input64 ^ (_r64(_SECRET, 16) ^ _r64(_SECRET, 24))
    p = keyed * ((_P64_1 + (n << 2)) & _M64)
    lo, hi = p & _M64, p >> 64
    hi = (hi + (lo << 1)) & _M64
    lo ^= hi >> 3
    lo ^= lo >> 35
    lo = (lo * 0x9FB21C651E98DF25) & _M64
    lo ^= lo >> 28
    return _join(lo, _avalanche(hi))


def _len_9to16(d: bytes) -> int:
    n = len(d)
    flip_lo = _r64(_SECRET, 32) ^ _r64(_SECRET, 40)
    flip_hi = _r64(_SECRET, 48) ^ _r64(_SECRET, 56)
    input_lo = _r64(d, 0)
    input_hi = _r64(d, n - 8)
    p = (input_lo ^ input_hi ^ flip_lo) * _P64_1
    mul_lo, mul_hi = p & _M64, p >> 64
    mul_lo = (mul_lo + ((n - 1) << 54)) & _M64
    input_hi ^= flip_hi
    mul_hi = (mul_hi + input_hi + (input_hi & 0xFFFFFFFF) * (_P32_2 - 1)) & _M64
    mul_lo ^= _swap64(mul_hi)
    p = mul_lo * _P64_2
    res_lo, res_hi = p & _M64, p >> 64
    res_hi = (res_hi + mul_hi * _P64_2) & _M64
    return _join(_avalanche(res_lo), _avalanche(res_hi))


def _finish_mid(acc: Tuple[int, int], n: int) -> int:
    lo, hi = acc
    res_lo = (lo + hi) & _M64
    res_hi = (lo * _P64_1 + hi * _P64_4 + n * _P64_2) & _M64
    return _join(_avalanche(res_lo), (-_avalanche(res_hi)) & _M64)


def _len_17to128(d: bytes) -> int:
    n = len(d)
    acc = ((n * _P64_1) & _M64, 0)
    if n > 32:
        if n > 64:
            if n > 96:
                acc = _mix32(acc, d, 48, n - 64, 96)
            acc = _mix32(acc, d, 32, n - 48, 64)
        acc = _mix32(acc, d, 16, n - 32, 32)
    acc = _mix32(acc, d, 0, n - 16, 0)
    return _finish_mid(acc, n)


def _len_129to240(d: bytes) -> int:
    n = len(d)
    acc = ((n * _P64_1) & _M64, 0)
    for i in range(4):
        acc = _mix32(acc, d, 32 * i, 32 * i + 16, 32 * i)
    acc = (_avalanche(acc[0]), _avalanche(acc[1]))
    for i in range(4, n // 32):
        acc = _mix32(acc, d, 32 * i, 32 * i + 16, 3 + 32 * (i - 4))
    acc = _mix32(acc, d, n - 16, n - 32, _SECRET_SIZE_MIN - 17 - 16)
    return _finish_mid(acc, n)


def _accumulate_512(acc: List[int], d: bytes, i: int, s: int) -> None:
    for k in range(_ACC_NB):
        value = _r64(d, i + 8 * k)
        key = value ^ _r64(_SECRET, s + 8 * k)
        acc[k ^ 1] = (acc[k ^ 1] + value) & _M64
        acc[k] = (acc[k] + (key & 0xFFFFFFFF) * (key >> 32)) & _M64


def _scramble(acc: List[int], s: int) -> None:
    for k in range(_ACC_NB):
        a = acc[k]
        a ^= a >> 47
        a ^= _r64(_SECRET, s + 8 * k)
        acc[k] = (a * _P32_1) & _M64


def _merge(acc: List[int], s: int, start: int) -> int:
    result = start
    for k in range(4):
        lo = acc[2 * k] ^ _r64(_SECRET, s + 16 * k)
        hi = acc[2 * k + 1] ^ _r64(_SECRET, s + 16 * k + 8)
        result = (result + _mul128_fold64(lo, hi)) & _M64
    return _avalanche(result)


def _long(d: bytes) -> int:
    n = len(d)
    acc = [_P32_3, _P64_1, _P64_2, _P64_3, _P64_4, _P32_2, _P64_5, _P32_1]
    stripes_per_block = (len(_SECRET) - _STRIPE_LEN) // _SECRET_CONSUME_RATE
    block_len = _STRIPE_LEN * stripes_per_block
    blocks = (n - 1) // block_len
    for b in range(blocks):
        for st in range(stripes_per_block):
            _accumulate_512(acc, d, b * block_len + st * _STRIPE_LEN, st * _SECRET_CONSUME_RATE)
        _scramble(acc, len(_SECRET) - _STRIPE_LEN)
    stripes = ((n - 1) - block_len * blocks) // _STRIPE_LEN
    for st in range(stripes):
        _accumulate_512(acc, d, blocks * block_len + st * _STRIPE_LEN, st * _SECRET_CONSUME_RATE)
    _accumulate_512(acc, d, n - _STRIPE_LEN, len(_SECRET) - _STRIPE_LEN - _SECRET_LASTACC_START)
    lo = _merge(acc, _SECRET_MERGEACCS_START, (n * _P64_1) & _M64)
    hi = _merge(acc, len(_SECRET) - _ACC_NB * 8 - _SECRET_MERGEACCS_START, ~(n * _P64_2) & _M64)
    return _join(lo, hi)


def xxh3_128(data: BytesLike) -> int:
    """The XXH3-128 (seed 0) of ``data`` as an int; on the wire it is written as a ``u128`` little-endian."""
    d = bytes(data)
    n = len(d)
    if n == 0:
        return _len_0()
    if n <= 3:
        return _len_1to3(d)
    if n <= 8:
        return _len_4to8(d)
    if n <= 16:
        return _len_9to16(d)
    if n <= 128:
        return _len_17to128(d)
    if n <= 240:
        return _len_129to240(d)
    return _long(d)
