// HLSL pixel shader: glslang's HLSL front end, entry point PSMain.
Texture2D albedo : register(t0);
SamplerState samp : register(s0);

float4 PSMain(float4 pos : SV_Position, float2 uv : TEXCOORD0) : SV_Target {
    return albedo.Sample(samp, uv) * TINT;
}
