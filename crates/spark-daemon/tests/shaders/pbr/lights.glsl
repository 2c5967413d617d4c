// Punctual lights (point and spot) with inverse-square falloff and a smooth range window, plus one
// directional light with a 3x3 PCF shadow lookup. Included by pbr.frag.
#ifndef PBR_LIGHTS_GLSL
#define PBR_LIGHTS_GLSL

#ifndef MAX_LIGHTS
#define MAX_LIGHTS 16
#endif

struct PunctualLight {
    vec4 position_range;    // xyz position, w range
    vec4 color_intensity;   // rgb color, a intensity
    vec4 direction_spot;    // xyz spot direction, w 1.0 for a spot light
    vec4 cone;              // x cos(outer), y 1 / (cos(inner) - cos(outer))
};

layout(set = 0, binding = 1) uniform LightBlock {
    PunctualLight lights[MAX_LIGHTS];
    vec4 sun_direction;     // xyz towards the light
    vec4 sun_color;         // rgb color, a intensity
    mat4 sun_view_proj;
    vec4 shadow_params;     // x depth bias, y normal bias, z texel size, w strength
    ivec4 light_count;
} light_block;

layout(set = 0, binding = 2) uniform texture2D shadow_map;
layout(set = 0, binding = 3) uniform sampler shadow_sampler;

float smooth_distance_attenuation(float dist2, float inv_range2) {
    float factor = dist2 * inv_range2;
    float smooth_factor = clamp(1.0 - factor * factor, 0.0, 1.0);
    return smooth_factor * smooth_factor;
}

float distance_attenuation(vec3 to_light, float range) {
    float dist2 = dot(to_light, to_light);
    float atten = 1.0 / max(dist2, 1e-4);
    return atten * smooth_distance_attenuation(dist2, 1.0 / (range * range));
}

float spot_attenuation(vec3 l, PunctualLight light) {
    if (light.direction_spot.w < 0.5) {
        return 1.0;
    }
    float cd = dot(normalize(-light.direction_spot.xyz), l);
    float a = clamp((cd - light.cone.x) * light.cone.y, 0.0, 1.0);
    return a * a;
}

float shadow_pcf(vec3 world, vec3 normal) {
    vec3 biased = world + normal * light_block.shadow_params.y;
    vec4 clip = light_block.sun_view_proj * vec4(biased, 1.0);
    vec3 ndc = clip.xyz / max(clip.w, 1e-6);
    vec2 uv = ndc.xy * 0.5 + 0.5;
    if (uv.x < 0.0 || uv.x > 1.0 || uv.y < 0.0 || uv.y > 1.0 || ndc.z > 1.0) {
        return 1.0;
    }
    float texel = light_block.shadow_params.z;
    float depth = ndc.z - light_block.shadow_params.x;
    float lit = 0.0;
    for (int y = -1; y <= 1; y++) {
        for (int x = -1; x <= 1; x++) {
            vec2 offset = vec2(float(x), float(y)) * texel;
            float stored = textureLod(sampler2D(shadow_map, shadow_sampler), uv + offset, 0.0).r;
            lit += depth <= stored ? 1.0 : 0.0;
        }
    }
    lit /= 9.0;
    return mix(1.0, lit, light_block.shadow_params.w);
}

vec3 shade_lights(Surface s) {
    vec3 color = vec3(0.0);
    int count = min(light_block.light_count.x, MAX_LIGHTS);
    for (int i = 0; i < count; i++) {
        PunctualLight light = light_block.lights[i];
        vec3 to_light = light.position_range.xyz - s.position;
        vec3 l = normalize(to_light);
        float atten = distance_attenuation(to_light, light.position_range.w) * spot_attenuation(l, light);
        if (atten <= 0.0) {
            continue;
        }
        vec3 radiance = light.color_intensity.rgb * light.color_intensity.a * atten;
        color += brdf(s, l) * radiance;
    }
    vec3 sun_l = normalize(light_block.sun_direction.xyz);
    float shadow = shadow_pcf(s.position, s.normal);
    color += brdf(s, sun_l) * light_block.sun_color.rgb * light_block.sun_color.a * shadow;
    return color;
}

#endif
