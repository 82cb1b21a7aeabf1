// Rotary position embedding, Qwen2/HF rotate-half convention, in place on
// x [T, H, hd]: for i < hd/2 with angle = pos[t] · inv_freq[i],
//   (x[i], x[i + hd/2]) <- (x1·cos − x2·sin, x2·cos + x1·sin).
// inv_freq comes from a table the wrapper computes on the CPU exactly as HF
// does in f32, and angle is one f32 multiply (correctly rounded in WGSL), so
// the angle is bit-identical to HF's. Angles reach ~32768 rad, where WGSL's
// sin/cos give no accuracy guarantee, so the angle is first reduced to
// [−π, π] by Cody-Waite: 2π = C1 + C2 + C3 with C1, C2 short enough that
// k·C1 and k·C2 are exact for k < 2^15 (angles below ~2e5). The constants
// come through the uniform so the compiler cannot fold them together.
// One invocation per (t, h, i); 2-D grid when large. Storage {{T}}, math f32.
{{ENABLE}}

struct Params {
  n: u32,        // T * H * half
  H: u32,
  half: u32,     // hd / 2
  c1: f32,
  c2: f32,
  c3: f32,
  inv_two_pi: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<{{T}}>;  // [T, H, hd]
@group(0) @binding(2) var<storage, read> pos: array<u32>;         // [T]
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;    // [hd / 2]

// (cos, sin) of token t's angle for frequency i, reduced as described above.
fn cos_sin(t: u32, i: u32) -> vec2<f32> {
  let a = f32(pos[t]) * inv_freq[i];
  let k = round(a * P.inv_two_pi);
  let r = ((a - k * P.c1) - k * P.c2) - k * P.c3;
  return vec2<f32>(cos(r), sin(r));
}

@compute @workgroup_size({{WG}})
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let idx = (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x;
  if (idx >= P.n) { return; }
  let i = idx % P.half;
  let th = idx / P.half;          // t * H + h
  let cs = cos_sin(th / P.H, i);
  let c = cs.x;
  let s = cs.y;
  let j = th * 2u * P.half + i;
  let x1 = f32(x[j]);
  let x2 = f32(x[j + P.half]);
  x[j] = {{T}}(x1 * c - x2 * s);
  x[j + P.half] = {{T}}(x2 * c + x1 * s);
}

// ---- rope_backward (training; f32 only) ----
// The rotation is orthogonal, so its adjoint is the rotation by −angle:
//   (dx1, dx2) = (dy1·cos + dy2·sin, dy2·cos − dy1·sin).
// In place on g [T, H, hd]: dy in, dx out. Same uniform and angle reduction
// as the forward, so forward and backward use bit-identical cos/sin.
@group(0) @binding(1) var<storage, read_write> g: array<f32>;   // [T, H, hd]

@compute @workgroup_size({{WG}})
fn rope_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
  let idx = (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x;
  if (idx >= P.n) { return; }
  let i = idx % P.half;
  let th = idx / P.half;
  let cs = cos_sin(th / P.H, i);
  let c = cs.x;
  let s = cs.y;
  let j = th * 2u * P.half + i;
  let d1 = g[j];
  let d2 = g[j + P.half];
  g[j] = d1 * c + d2 * s;
  g[j + P.half] = d2 * c - d1 * s;
}
