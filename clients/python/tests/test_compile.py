"""Client.compile against a real sparkd: a GLSL and a WGSL shader, a batch, a compile error with its line and
negative caching, an include map, and the stats."""

from __future__ import annotations

from sparkdaemon import compile_messages as cm

FRAG = """#version 450
#include "tint.glsl"
layout(location = 0) out vec4 o;
void main() { o = vec4(TINT * GAIN, 1.0); }
"""

WGSL = """@group(0) @binding(0) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(16, 2, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) { v[id.x] = v[id.x] * 2.0; }
"""


def test_compile_glsl_with_include_map_and_batch(client):
    inc = {"tint.glsl": "const vec3 TINT = vec3(1.0, 0.5, 0.25);\n"}
    (r,) = client.compile(FRAG, "frag", defines=["GAIN=2.0"], include_map=inc)
    assert r.ok, r.diagnostics
    assert r.output[:4] == (0x07230203).to_bytes(4, "little")
    assert r.origin_name == "fresh"
    assert r.compiler.startswith("naga ")
    (again,) = client.compile(FRAG, "frag", defines=["GAIN=2.0"], include_map=inc)
    assert again.origin_name == "hit" and again.output == r.output and again.key == r.key
    seen = []
    results = client.compile(
        FRAG,
        "frag",
        permutations=[["GAIN=0.5"], ["GAIN=1.0"], ["GAIN=2.0"]],
        include_map=inc,
        on_result=lambda x: seen.append(x.index),
    )
    assert sorted(seen) == [0, 1, 2]
    assert [x.index for x in results] == [0, 1, 2]
    assert results[2].key == r.key and results[2].origin_name == "hit"
    assert len({x.key for x in results}) == 3


def test_compile_wgsl_reflection(client):
    (r,) = client.compile(WGSL, "comp", language="wgsl")
    assert r.ok, r.diagnostics
    assert r.workgroup_size == (16, 2, 1)
    assert r.bindings == [(0, 0, 2)]


def test_compile_error_has_line_and_is_a_negative_hit(client):
    src = "#version 450\nlayout(location = 0) out vec4 o;\nvoid main() {\n  o = nope;\n}\n"
    (r,) = client.compile(src, "frag")
    assert r.status == cm.STATUS_COMPILE_ERROR
    assert (r.diagnostics[0].file, r.diagnostics[0].line) == ("<source>", 4)
    assert str(r.diagnostics[0]).startswith("<source>:4")
    (r2,) = client.compile(src, "frag")
    assert r2.origin_name == "hit" and r2.status == cm.STATUS_COMPILE_ERROR
    st = client.compile_stats()
    assert st["negative_hits"] == 1 and st["failures"] == 1 and st["compiles"] == 1
