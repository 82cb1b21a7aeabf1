// Baselines for benchmarks/kernels.ts: one thread per row of `cols`
// elements, walked serially (neighbouring threads touch addresses `cols`
// apart, so no coalescing), versus kernels/elementwise.wgsl's one thread per
// element. Same arithmetic (f32, sigmoid without overflow).
{{ENABLE}}

struct Params {
  rows: u32,
  cols: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

// ---- swiglu_naive: out = silu(gate) * up ----
@group(0) @binding(1) var<storage, read> sw_gate: array<{{T}}>;
@group(0) @binding(2) var<storage, read> sw_up: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> sw_out: array<{{T}}>;

@compute @workgroup_size({{WG}})
fn swiglu_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= P.rows) { return; }
  for (var i = row * P.cols; i < (row + 1u) * P.cols; i++) {
    let g = f32(sw_gate[i]);
    let e = exp(-abs(g));
    let s = select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
    sw_out[i] = {{T}}(g * s * f32(sw_up[i]));
  }
}

// ---- add_naive: out = x + y ----
@group(0) @binding(1) var<storage, read> ad_x: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ad_y: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> ad_out: array<{{T}}>;

@compute @workgroup_size({{WG}})
fn add_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= P.rows) { return; }
  for (var i = row * P.cols; i < (row + 1u) * P.cols; i++) {
    ad_out[i] = {{T}}(f32(ad_x[i]) + f32(ad_y[i]));
  }
}
