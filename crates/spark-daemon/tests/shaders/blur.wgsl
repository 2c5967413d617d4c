// A compute blur: reflection should report two bindings and an 8x8x1 workgroup.
@group(0) @binding(0) var src: texture_2d<f32>;
@group(0) @binding(1) var dst: texture_storage_2d<rgba8unorm, write>;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var sum = vec4<f32>(0.0);
    for (var dx = -1; dx <= 1; dx++) {
        sum += textureLoad(src, vec2<i32>(id.xy) + vec2<i32>(dx, 0), 0);
    }
    textureStore(dst, vec2<i32>(id.xy), sum / 3.0);
}
