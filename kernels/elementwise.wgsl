// Elementwise kernels of the Qwen2 MLP and residual stream.
// Storage type {{T}} (f32 or f16); arithmetic always in f32.
// One invocation per element; the workgroup grid may be 2-D when n needs more
// than maxComputeWorkgroupsPerDimension groups, so the linear index is
// (wid.y * nwg.x + wid.x) * WG + lid.x.
{{ENABLE}}

struct Params {
  n: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

fn linear(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x;
}

// silu(g) = g * sigmoid(g); sigmoid written so exp never overflows.
fn silu(g: f32) -> f32 {
  let e = exp(-abs(g));
  let s = select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
  return g * s;
}

// ---- swiglu: out = silu(gate) * up ----
@group(0) @binding(1) var<storage, read> sw_gate: array<{{T}}>;
@group(0) @binding(2) var<storage, read> sw_up: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> sw_out: array<{{T}}>;

@compute @workgroup_size({{WG}})
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg, lid);
  if (i >= P.n) { return; }
  sw_out[i] = {{T}}(silu(f32(sw_gate[i])) * f32(sw_up[i]));
}

// ---- add: out = x + y (three distinct buffers) ----
@group(0) @binding(1) var<storage, read> ad_x: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ad_y: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> ad_out: array<{{T}}>;

@compute @workgroup_size({{WG}})
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg, lid);
  if (i >= P.n) { return; }
  ad_out[i] = {{T}}(f32(ad_x[i]) + f32(ad_y[i]));
}

// ---- add_inplace: x += y (x bound once, read_write) ----
@group(0) @binding(1) var<storage, read_write> ai_x: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ai_y: array<{{T}}>;

@compute @workgroup_size({{WG}})
fn add_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg, lid);
  if (i >= P.n) { return; }
  ai_x[i] = {{T}}(f32(ai_x[i]) + f32(ai_y[i]));
}

// ---- swiglu_backward (training; f32 only, whatever {{T}} is) ----
// out = silu(g)·u with silu(g) = g·s, s = sigmoid(g), silu'(g) = s·(1 + g·(1 − s)):
//   dup = dout·silu(g),  dgate = dout·u·silu'(g).  Both written (overwritten).
// The residual add needs no backward kernel: its gradient flows unchanged to
// both branches (see src/kernels/elementwise.ts).
@group(0) @binding(1) var<storage, read> sb_gate: array<f32>;
@group(0) @binding(2) var<storage, read> sb_up: array<f32>;
@group(0) @binding(3) var<storage, read> sb_dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> sb_dgate: array<f32>;
@group(0) @binding(5) var<storage, read_write> sb_dup: array<f32>;

@compute @workgroup_size({{WG}})
fn swiglu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg, lid);
  if (i >= P.n) { return; }
  let dd = swiglu_grads(sb_gate[i], sb_up[i], sb_dout[i]);
  sb_dgate[i] = dd.x;
  sb_dup[i] = dd.y;
}

// (dgate, dup) of out = silu(g)·u for the output gradient d.
fn swiglu_grads(g: f32, u: f32, d: f32) -> vec2<f32> {
  let e = exp(-abs(g));
  let s = select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
  return vec2<f32>(d * u * (s * (1.0 + g * (1.0 - s))), d * (g * s));
}

// ---- swiglu_gu / swiglu_gu_backward (training): gate and up side by side ----
// gu [rows, 2w] holds each row's gate then its up (the product of h with the
// gate and up weights stacked as one [2w, H] matrix, which the parameter
// arena keeps contiguous), so one product and one gradient product serve both:
//   swiglu_gu:          out [rows, w] = silu(gate) · up
//   swiglu_gu_backward: dgu [rows, 2w] = (dgate, dup) from gu and dout [rows, w]
// The same arithmetic as swiglu / swiglu_backward, element by element.
struct GuParams {
  n: u32,   // rows · w
  w: u32,
}

@group(0) @binding(0) var<uniform> GP: GuParams;
@group(0) @binding(1) var<storage, read> gu_in: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> gu_out: array<{{T}}>;

@compute @workgroup_size({{WG}})
fn swiglu_gu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg, lid);
  if (i >= GP.n) { return; }
  let j = (i / GP.w) * 2u * GP.w + i % GP.w;
  gu_out[i] = {{T}}(silu(f32(gu_in[j])) * f32(gu_in[j + GP.w]));
}

@group(0) @binding(1) var<storage, read> gb_gu: array<f32>;
@group(0) @binding(2) var<storage, read> gb_dout: array<f32>;
@group(0) @binding(3) var<storage, read_write> gb_dgu: array<f32>;

@compute @workgroup_size({{WG}})
fn swiglu_gu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = linear(wid, nwg, lid);
  if (i >= GP.n) { return; }
  let j = (i / GP.w) * 2u * GP.w + i % GP.w;
  let dd = swiglu_grads(gb_gu[j], gb_gu[j + GP.w], gb_dout[i]);
  gb_dgu[j] = dd.x;
  gb_dgu[j + GP.w] = dd.y;
}
