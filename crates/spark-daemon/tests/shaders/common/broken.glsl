// An included file with a deliberate error on line 4.
vec3 tint(vec3 c) {
    vec3 t = c * 0.5;
    return t * missing_tint_factor;
}
