struct Particle { pos: vec4<f32>, vel: vec4<f32> }
@group(0) @binding(0) var<storage, read_write> particles: array<Particle>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    particles[i].vel.y -= 9.8 * 0.016;
    particles[i].pos += particles[i].vel * 0.016;
}
