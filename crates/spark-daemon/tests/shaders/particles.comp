#version 450
layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) buffer Particles {
    vec4 pos[];
} particles;

layout(set = 0, binding = 1) uniform Params {
    float dt;
} params;

void main() {
    uint i = gl_GlobalInvocationID.x;
    particles.pos[i].xyz += vec3(0.0, -9.8, 0.0) * params.dt;
}
