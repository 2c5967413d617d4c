#version 450
#include "common/broken.glsl"

layout(location = 0) out vec4 out_color;

void main() {
    out_color = vec4(tint(vec3(1.0)), 1.0);
}
