#version 450
#include "common.glsl"
layout(location = 0) in float v_height;
layout(location = 0) out vec4 color;

void main() {
    color = vec4(horizon(v_height) * EXPOSURE, 1.0);
}
