// Cook-Torrance microfacet BRDF: GGX distribution, Smith-Schlick visibility, Schlick Fresnel.
// Included by pbr.frag; the sizes and the maths are those of a typical engine's forward shader.
#ifndef PBR_BRDF_GLSL
#define PBR_BRDF_GLSL

const float PI = 3.14159265359;
const float INV_PI = 0.31830988618;
const float MIN_ROUGHNESS = 0.045;

float pow5(float x) {
    float x2 = x * x;
    return x2 * x2 * x;
}

float d_ggx(float n_dot_h, float roughness) {
    float a = n_dot_h * roughness;
    float k = roughness / max(1.0 - n_dot_h * n_dot_h + a * a, 1e-6);
    return k * k * INV_PI;
}

float v_smith_ggx_correlated(float n_dot_v, float n_dot_l, float roughness) {
    float a2 = roughness * roughness;
    float ggx_l = n_dot_v * sqrt((n_dot_l - a2 * n_dot_l) * n_dot_l + a2);
    float ggx_v = n_dot_l * sqrt((n_dot_v - a2 * n_dot_v) * n_dot_v + a2);
    return 0.5 / max(ggx_v + ggx_l, 1e-6);
}

vec3 f_schlick(vec3 f0, float f90, float v_dot_h) {
    return f0 + (vec3(f90) - f0) * pow5(1.0 - v_dot_h);
}

float f_schlick_scalar(float f0, float f90, float v_dot_h) {
    return f0 + (f90 - f0) * pow5(1.0 - v_dot_h);
}

// Burley's diffuse: roughness-dependent retro-reflection at grazing angles.
float fd_burley(float n_dot_v, float n_dot_l, float l_dot_h, float roughness) {
    float f90 = 0.5 + 2.0 * roughness * l_dot_h * l_dot_h;
    float light_scatter = f_schlick_scalar(1.0, f90, n_dot_l);
    float view_scatter = f_schlick_scalar(1.0, f90, n_dot_v);
    return light_scatter * view_scatter * INV_PI;
}

struct Surface {
    vec3 position;
    vec3 normal;
    vec3 view;
    vec3 diffuse_color;
    vec3 f0;
    float roughness;
    float perceptual_roughness;
    float occlusion;
    float n_dot_v;
};

vec3 brdf(Surface s, vec3 l) {
    vec3 h = normalize(s.view + l);
    float n_dot_l = clamp(dot(s.normal, l), 0.0, 1.0);
    float n_dot_h = clamp(dot(s.normal, h), 0.0, 1.0);
    float l_dot_h = clamp(dot(l, h), 0.0, 1.0);
    float d = d_ggx(n_dot_h, s.roughness);
    float v = v_smith_ggx_correlated(s.n_dot_v, n_dot_l, s.roughness);
    vec3 f = f_schlick(s.f0, 1.0, l_dot_h);
    vec3 specular = (d * v) * f;
    vec3 diffuse = s.diffuse_color * fd_burley(s.n_dot_v, n_dot_l, l_dot_h, s.roughness);
    return (diffuse + specular) * n_dot_l;
}

// Split-sum approximation of the environment BRDF (Karis), analytic fit instead of a lookup texture.
vec2 env_brdf_approx(float n_dot_v, float roughness) {
    const vec4 c0 = vec4(-1.0, -0.0275, -0.572, 0.022);
    const vec4 c1 = vec4(1.0, 0.0425, 1.04, -0.04);
    vec4 r = roughness * c0 + c1;
    float a004 = min(r.x * r.x, exp2(-9.28 * n_dot_v)) * r.x + r.y;
    return vec2(-1.04, 1.04) * a004 + r.zw;
}

#endif
