// Baseline for benchmarks/kernels.ts: one thread per row, a serial sum of
// squares, then a serial scaled write (no workgroup reduction).
// Same uniform and bindings as kernels/rmsnorm.wgsl's rmsnorm.
{{ENABLE}}

struct Params {
  rows: u32,
  dim: u32,
  eps: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<{{T}}>;          // [rows, dim]
@group(0) @binding(2) var<storage, read> w: array<{{T}}>;          // [dim]
@group(0) @binding(3) var<storage, read_write> out: array<{{T}}>;  // [rows, dim]

@compute @workgroup_size({{WG}})
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= P.rows) { return; }
  let base = row * P.dim;
  var ss = 0.0;
  for (var i = 0u; i < P.dim; i++) {
    let v = f32(x[base + i]);
    ss += v * v;
  }
  let inv = 1.0 / sqrt(ss / f32(P.dim) + P.eps);
  for (var i = 0u; i < P.dim; i++) { out[base + i] = {{T}}(f32(x[base + i]) * inv * f32(w[i])); }
}
