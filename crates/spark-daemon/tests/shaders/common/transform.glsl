// Camera matrices (included by basic.vert).
layout(set = 0, binding = 1) uniform Camera {
    mat4 view_proj;
} camera;
