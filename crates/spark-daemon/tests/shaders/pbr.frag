#version 450
// A production-size forward PBR fragment shader (metallic-roughness, normal mapping, image-based
// lighting, punctual lights, a PCF-shadowed sun, fog, ACES tone mapping), about the size of one material
// permutation in a game engine. The bench compares compile paths on it; the corpus tests validate it.
#include "pbr/brdf.glsl"
#include "pbr/lights.glsl"
#include "pbr/tonemap.glsl"

layout(location = 0) in vec3 v_world;
layout(location = 1) in vec3 v_normal;
layout(location = 2) in vec4 v_tangent;
layout(location = 3) in vec2 v_uv0;
layout(location = 4) in vec2 v_uv1;
layout(location = 5) in vec4 v_color;

layout(location = 0) out vec4 out_color;

layout(set = 0, binding = 0) uniform Camera {
    mat4 view;
    mat4 proj;
    vec4 position;      // xyz world position
    vec4 exposure_fog;  // x exposure (EV100 scale), y fog density, z fog height falloff, w time
    vec4 fog_color;
} camera;

layout(set = 1, binding = 0) uniform Material {
    vec4 base_color_factor;
    vec4 emissive_factor;       // rgb emissive, a strength
    vec4 mr_factors;            // x metallic, y roughness, z normal scale, w occlusion strength
    vec4 alpha;                 // x cutoff, y reflectance
    vec4 uv_transform;          // xy scale, zw offset
} material;

layout(set = 1, binding = 1) uniform texture2D base_color_tex;
layout(set = 1, binding = 2) uniform texture2D normal_tex;
layout(set = 1, binding = 3) uniform texture2D metal_rough_tex;
layout(set = 1, binding = 4) uniform texture2D occlusion_tex;
layout(set = 1, binding = 5) uniform texture2D emissive_tex;
layout(set = 1, binding = 6) uniform sampler material_sampler;

layout(set = 2, binding = 0) uniform textureCube irradiance_map;
layout(set = 2, binding = 1) uniform textureCube prefiltered_map;
layout(set = 2, binding = 2) uniform sampler env_sampler;
layout(set = 2, binding = 3) uniform Environment {
    vec4 params;                // x intensity, y max mip level, z rotation (radians)
} env;

vec2 material_uv(vec2 uv) {
    return uv * material.uv_transform.xy + material.uv_transform.zw;
}

vec4 sample_material(texture2D t, vec2 uv) {
    return texture(sampler2D(t, material_sampler), uv);
}

vec3 rotate_y(vec3 v, float angle) {
    float c = cos(angle);
    float s = sin(angle);
    return vec3(c * v.x + s * v.z, v.y, -s * v.x + c * v.z);
}

vec3 perturbed_normal(vec2 uv) {
    vec3 n = normalize(v_normal);
    if (!gl_FrontFacing) {
        n = -n;
    }
#ifdef HAS_NORMAL_MAP
    vec3 t = normalize(v_tangent.xyz - n * dot(n, v_tangent.xyz));
    vec3 b = cross(n, t) * v_tangent.w;
    vec3 tn = sample_material(normal_tex, uv).xyz * 2.0 - 1.0;
    tn.xy *= material.mr_factors.z;
    n = normalize(mat3(t, b, n) * tn);
#endif
    return n;
}

Surface build_surface(vec2 uv, vec4 base_color) {
    Surface s;
    s.position = v_world;
    s.normal = perturbed_normal(uv);
    s.view = normalize(camera.position.xyz - v_world);
    s.n_dot_v = max(dot(s.normal, s.view), 1e-4);
    float metallic = material.mr_factors.x;
    float perceptual = material.mr_factors.y;
#ifdef HAS_METAL_ROUGH_MAP
    vec4 mr = sample_material(metal_rough_tex, uv);
    perceptual *= mr.g;
    metallic *= mr.b;
#endif
    perceptual = clamp(perceptual, MIN_ROUGHNESS, 1.0);
    s.perceptual_roughness = perceptual;
    s.roughness = perceptual * perceptual;
    float reflectance = material.alpha.y;
    s.f0 = mix(vec3(0.16 * reflectance * reflectance), base_color.rgb, metallic);
    s.diffuse_color = base_color.rgb * (1.0 - metallic);
    s.occlusion = 1.0;
#ifdef HAS_OCCLUSION_MAP
    float ao = sample_material(occlusion_tex, v_uv1).r;
    s.occlusion = mix(1.0, ao, material.mr_factors.w);
#endif
    return s;
}

vec3 image_based_lighting(Surface s) {
    float angle = env.params.z;
    vec3 n = rotate_y(s.normal, angle);
    vec3 r = rotate_y(reflect(-s.view, s.normal), angle);
    vec3 irradiance = texture(samplerCube(irradiance_map, env_sampler), n).rgb;
    float lod = s.perceptual_roughness * env.params.y;
    vec3 prefiltered = textureLod(samplerCube(prefiltered_map, env_sampler), r, lod).rgb;
    vec2 ab = env_brdf_approx(s.n_dot_v, s.perceptual_roughness);
    vec3 specular_color = s.f0 * ab.x + ab.y;
    // Multiple-scattering energy compensation (Fdez-Agüera), so rough metals do not lose energy.
    float ess = ab.x + ab.y;
    vec3 fms = (1.0 - ess) * specular_color / max(1.0 - (1.0 - ess) * specular_color, vec3(1e-4));
    vec3 diffuse = irradiance * s.diffuse_color;
    vec3 specular = prefiltered * specular_color + fms * irradiance * specular_color;
    return (diffuse + specular) * s.occlusion * env.params.x;
}

vec3 apply_fog(vec3 color, vec3 world) {
    float density = camera.exposure_fog.y;
    if (density <= 0.0) {
        return color;
    }
    vec3 ray = world - camera.position.xyz;
    float dist = length(ray);
    float falloff = camera.exposure_fog.z;
    float height = max(abs(ray.y) * falloff, 1e-4);
    float fog = density * exp(-camera.position.y * falloff) * (1.0 - exp(-height)) / height;
    float amount = 1.0 - exp(-fog * dist);
    return mix(color, camera.fog_color.rgb, clamp(amount, 0.0, 1.0));
}

void main() {
    vec2 uv = material_uv(v_uv0);
    vec4 base_color = material.base_color_factor * v_color;
#ifdef HAS_BASE_COLOR_MAP
    base_color *= sample_material(base_color_tex, uv);
#endif
#ifdef ALPHA_MASK
    if (base_color.a < material.alpha.x) {
        discard;
    }
#endif
    Surface s = build_surface(uv, base_color);
    vec3 color = shade_lights(s) + image_based_lighting(s);
    vec3 emissive = material.emissive_factor.rgb * material.emissive_factor.a;
#ifdef HAS_EMISSIVE_MAP
    emissive *= sample_material(emissive_tex, uv).rgb;
#endif
    color += emissive;
    color = apply_fog(color, v_world);
    color *= camera.exposure_fog.x;
#ifdef DEBUG_NORMALS
    color = s.normal * 0.5 + 0.5;
#endif
    out_color = vec4(linear_to_srgb(aces_fitted(color)), base_color.a);
}
