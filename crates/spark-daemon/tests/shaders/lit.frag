#version 450
#include "common/lighting.glsl"

layout(location = 0) in vec3 v_normal;
layout(location = 1) in vec3 v_world;
layout(location = 0) out vec4 out_color;

void main() {
    vec3 c = shade(normalize(v_normal), v_world);
#ifdef FOG
    c = mix(c, vec3(0.5, 0.6, 0.7), 0.25);
#endif
    out_color = vec4(c, 1.0);
}
