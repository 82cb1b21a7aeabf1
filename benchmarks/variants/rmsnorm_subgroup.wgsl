// Subgroup variants of kernels/rmsnorm.wgsl's forward, for benchmarks/kernels.ts
// (same uniform and bindings). Both assume subgroup k of a workgroup is
// invocations k·sg .. k·sg + sg − 1 (true on the adapters measured; the
// benchmark checks every element before timing, which would catch it).
//   sg_tree: one workgroup of WG per row; subgroupAdd, then a shared-memory
//            tree over the WG / sg subgroup sums (log2(WG / sg) barriers
//            instead of log2(WG)).
//   sg_row:  one subgroup per row, WG / sg rows per workgroup, no shared
//            memory and no barrier at all.
enable subgroups;
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
fn sg_tree(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(subgroup_size) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let row = wid.x;
  if (row >= P.rows) { return; } // uniform per workgroup
  let base = row * P.dim;
  var ss = 0.0;
  for (var i = lid.x; i < P.dim; i += {{WG}}u) {
    let v = f32(x[base + i]);
    ss += v * v;
  }
  let t = subgroupAdd(ss);
  if (lane == 0u) { partial[lid.x / sg] = t; }
  workgroupBarrier();
  for (var s = {{WG}}u / sg / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) { partial[lid.x] += partial[lid.x + s]; }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(partial[0] / f32(P.dim) + P.eps);
  for (var i = lid.x; i < P.dim; i += {{WG}}u) {
    out[base + i] = {{T}}(f32(x[base + i]) * inv * f32(w[i]));
  }
}

@compute @workgroup_size({{WG}})
fn sg_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(subgroup_size) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let row = wid.x * ({{WG}}u / sg) + lid.x / sg;
  let r = min(row, P.rows - 1u); // every lane reaches subgroupAdd; only real rows write
  let base = r * P.dim;
  var ss = 0.0;
  for (var i = lane; i < P.dim; i += sg) {
    let v = f32(x[base + i]);
    ss += v * v;
  }
  let inv = 1.0 / sqrt(subgroupAdd(ss) / f32(P.dim) + P.eps);
  if (row < P.rows) {
    for (var i = lane; i < P.dim; i += sg) {
      out[base + i] = {{T}}(f32(x[base + i]) * inv * f32(w[i]));
    }
  }
}
