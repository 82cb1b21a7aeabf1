// Optimiser kernels: the AdamW update of f32 master weights (with the clip
// factor given, or computed on the GPU from the global norm), the f32 → f16
// compute copy, and the global squared gradient norm (two passes).
// Everything is f32; the copy packs pairs with pack2x16float, so it needs no
// shader-f16 feature. Element-per-invocation entries may run on a 2-D grid
// (n / WG over maxComputeWorkgroupsPerDimension): the linear group index is
// wid.y * nwg.x + wid.x.

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}

// ---- step: one AdamW step (PyTorch's order) ----
//   p ← p · decay                          decay = 1 − lr·wd (decoupled weight decay)
//   g ← grad · scale                       scale = grad_scale (1/accumulation × the clip factor)
//   m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²
//   p ← p − step_size · m / (√v · inv_sqrt_bc2 + eps)
// with step_size = lr / (1 − β1^t) and inv_sqrt_bc2 = 1 / √(1 − β2^t), so
// m / (1 − β1^t) = m̂ and √v / √(1 − β2^t) = √v̂ (bias correction).
//
// ---- step_clip: the same step with the global-norm clip taken on the GPU ----
// The optimiser runs it over a parameter arena (every tensor at an aligned
// offset in a few binding-sized buffers; padding is zero and stays zero), so
// one dispatch covers many tensors. The squared norm comes from sumsq_final
// in the same batch (no readback in between):
//   norm  = √(norm_sq[0]) · |grad_scale|
//   scale = grad_scale · min(1, max_norm / (norm + 1e-6))   (max_norm 0: no clip)
// as torch.nn.utils.clip_grad_norm_. A non-finite norm leaves every value
// unchanged: the CPU reads the norm afterwards and reports the skipped step.
struct StepParams {
  n: u32,
  decay: f32,
  beta1: f32,
  beta2: f32,
  step_size: f32,
  inv_sqrt_bc2: f32,
  eps: f32,
  grad_scale: f32,
  max_norm: f32,
}

@group(0) @binding(0) var<uniform> SP: StepParams;
@group(0) @binding(1) var<storage, read_write> st_param: array<f32>;
@group(0) @binding(2) var<storage, read> st_grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> st_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> st_v: array<f32>;
@group(0) @binding(5) var<storage, read> st_norm_sq: array<f32>;

fn adam_update(i: u32, scale: f32) {
  let g = st_grad[i] * scale;
  let m = SP.beta1 * st_m[i] + (1.0 - SP.beta1) * g;
  let v = SP.beta2 * st_v[i] + (1.0 - SP.beta2) * g * g;
  st_m[i] = m;
  st_v[i] = v;
  let p = st_param[i] * SP.decay;
  st_param[i] = p - SP.step_size * m / (sqrt(v) * SP.inv_sqrt_bc2 + SP.eps);
}

@compute @workgroup_size({{WG}})
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = group_index(wid, nwg) * {{WG}}u + lid.x;
  if (i >= SP.n) { return; }
  adam_update(i, SP.grad_scale);
}

// Inf and NaN have every exponent bit set (WGSL may assume neither exists, so
// x != x or x > max could be folded away; the bit test cannot).
fn is_finite(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size({{WG}})
fn step_clip(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = group_index(wid, nwg) * {{WG}}u + lid.x;
  if (i >= SP.n) { return; }
  let norm = sqrt(st_norm_sq[0]) * abs(SP.grad_scale);
  if (!is_finite(norm)) { return; }
  var scale = SP.grad_scale;
  if (SP.max_norm > 0.0) { scale *= min(1.0, SP.max_norm / (norm + 1e-6)); }
  adam_update(i, scale);
}

// ---- copy_f16: out16[i] = f16(param[i]), two halves per u32 word ----
// Values beyond ±65504 are clamped first (an f32 → f16 conversion out of
// range is indeterminate in WGSL). With an odd n the last word's upper half
// belongs to whatever follows the tensor, so it is kept.
struct CopyParams {
  n: u32,
}

@group(0) @binding(0) var<uniform> CP: CopyParams;
@group(0) @binding(1) var<storage, read> cp_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> cp_out: array<u32>;

const F16_MAX: f32 = 65504.0;

@compute @workgroup_size({{WG}})
fn copy_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
  let w = group_index(wid, nwg) * {{WG}}u + lid.x;
  let i = 2u * w;
  if (i >= CP.n) { return; }
  let lo = clamp(cp_src[i], -F16_MAX, F16_MAX);
  if (i + 1u < CP.n) {
    let hi = clamp(cp_src[i + 1u], -F16_MAX, F16_MAX);
    cp_out[w] = pack2x16float(vec2<f32>(lo, hi));
  } else {
    cp_out[w] = (cp_out[w] & 0xffff0000u) | (pack2x16float(vec2<f32>(lo, 0.0)) & 0xffffu);
  }
}

// ---- sumsq_partial: partials[base + g] = Σ x² over group g's slice ----
// Group g owns elements [g·CHUNK, (g+1)·CHUNK) with CHUNK = WG·ITEMS; each
// invocation sums a fixed strided subset, then a fixed tree merges them, so
// the result is the same bit for bit on every run.
struct PartialParams {
  n: u32,
  base: u32,
}

@group(0) @binding(0) var<uniform> PP: PartialParams;
@group(0) @binding(1) var<storage, read> sp_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sp_partials: array<f32>;

var<workgroup> red: array<f32, {{WG}}>;

fn tree_sum(lid: u32) -> f32 {
  for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  return red[0];
}

@compute @workgroup_size({{WG}})
fn sumsq_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
  let g = group_index(wid, nwg);
  let start = g * ({{WG}}u * {{ITEMS}}u);
  if (start >= PP.n) { return; } // uniform per workgroup
  let end = min(PP.n, start + {{WG}}u * {{ITEMS}}u);
  var acc = 0.0;
  for (var i = start + lid.x; i < end; i += {{WG}}u) {
    let x = sp_x[i];
    acc += x * x;
  }
  red[lid.x] = acc;
  workgroupBarrier();
  let total = tree_sum(lid.x);
  if (lid.x == 0u) { sp_partials[PP.base + g] = total; }
}

// ---- sumsq_final: out[0] = Σ partials[0 .. count) ----
// One workgroup; each invocation keeps a compensated (Kahan) sum of its
// strided partials, since a 1.5B-parameter model has ~400k of them.
struct FinalParams {
  count: u32,
}

@group(0) @binding(0) var<uniform> FP: FinalParams;
@group(0) @binding(1) var<storage, read> sf_partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> sf_out: array<f32>;

@compute @workgroup_size({{WG}})
fn sumsq_final(@builtin(local_invocation_id) lid: vec3<u32>) {
  var s = 0.0;
  var c = 0.0;
  for (var i = lid.x; i < FP.count; i += {{WG}}u) {
    let y = sf_partials[i] - c;
    let t = s + y;
    c = (t - s) - y;
    s = t;
  }
  red[lid.x] = s;
  workgroupBarrier();
  let total = tree_sum(lid.x);
  if (lid.x == 0u) { sf_out[0] = total; }
}
