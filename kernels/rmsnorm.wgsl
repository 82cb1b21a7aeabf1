// Qwen2 RMSNorm: out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * w.
// One workgroup per row (2-D grid when rows > maxComputeWorkgroupsPerDimension);
// each invocation sums the squares of a strided slice in f32, then a tree
// reduction in workgroup memory. Storage {{T}}, arithmetic f32, one rounding.
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

var<workgroup> partial: array<f32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= P.rows) { return; } // uniform per workgroup
  let base = row * P.dim;
  var ss = 0.0;
  for (var i = lid.x; i < P.dim; i += {{WG}}u) {
    let v = f32(x[base + i]);
    ss += v * v;
  }
  partial[lid.x] = ss;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) { partial[lid.x] += partial[lid.x + s]; }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(partial[0] / f32(P.dim) + P.eps);
  for (var i = lid.x; i < P.dim; i += {{WG}}u) {
    out[base + i] = {{T}}(f32(x[base + i]) * inv * f32(w[i]));
  }
}
