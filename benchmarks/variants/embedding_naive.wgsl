// Baseline for benchmarks/kernels.ts: one thread per token copies its whole
// row (no workgroup cooperation; neighbouring threads touch addresses D apart).
// Same uniform and bindings as kernels/embedding.wgsl's gather.
{{ENABLE}}

struct Params {
  T: u32,
  D: u32,
  row0: u32,
  rows: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;          // [T]
@group(0) @binding(2) var<storage, read> table: array<{{T}}>;      // [rows, D]
@group(0) @binding(3) var<storage, read_write> out: array<{{T}}>;  // [T, D]

@compute @workgroup_size({{WG}})
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= P.T) { return; }
  let r = ids[t] - P.row0;
  if (r >= P.rows) { return; }
  for (var d = 0u; d < P.D; d++) { out[t * P.D + d] = table[r * P.D + d]; }
}
