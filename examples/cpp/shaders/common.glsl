// Shared by sky.frag: a cheap horizon gradient.
vec3 horizon(float y) {
    return mix(vec3(0.9, 0.8, 0.7), vec3(0.2, 0.4, 0.9), clamp(y, 0.0, 1.0));
}
