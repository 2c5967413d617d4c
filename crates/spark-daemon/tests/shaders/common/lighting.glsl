// Shared lighting helpers (included by lit.frag).
#ifndef LIGHTS
#define LIGHTS 1
#endif

layout(set = 0, binding = 0) uniform Lights {
    vec4 position[4];
    vec4 color[4];
} lights;

vec3 shade(vec3 n, vec3 p) {
    vec3 sum = vec3(0.0);
    for (int i = 0; i < LIGHTS; i++) {
        vec3 l = normalize(lights.position[i].xyz - p);
        sum += lights.color[i].rgb * max(dot(n, l), 0.0);
    }
    return sum;
}
