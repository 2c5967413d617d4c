#version 450
#include "common/transform.glsl"

layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
layout(location = 0) out vec3 v_normal;
layout(location = 1) out vec3 v_world;

void main() {
    v_normal = normal;
    v_world = position;
    gl_Position = camera.view_proj * vec4(position * SCALE, 1.0);
}
