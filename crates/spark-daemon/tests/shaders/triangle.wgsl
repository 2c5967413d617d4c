struct VsOut {
    @builtin(position) pos: vec4<f32>,
    @location(0) color: vec3<f32>,
}

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VsOut {
    var p = array<vec2<f32>, 3>(vec2(0.0, 0.5), vec2(-0.5, -0.5), vec2(0.5, -0.5));
    var out: VsOut;
    out.pos = vec4<f32>(p[i], 0.0, 1.0);
    out.color = vec3<f32>(f32(i == 0u), f32(i == 1u), f32(i == 2u));
    return out;
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    return vec4<f32>(in.color * BRIGHTNESS, 1.0);
}
