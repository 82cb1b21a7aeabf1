// Baseline for benchmarks/kernels.ts: one thread per output element, no
// tiling, no shared memory. C[m, n] = sum_k A[m,k]·W[n,k] (+ nothing else).
// Same uniform struct and bindings as kernels/matmul.wgsl's no-bias f32 variant.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  ldc: u32,
  col0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

@compute @workgroup_size({{WX}}, {{WY}})
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  let m = gid.y;
  if (m >= P.M || n >= P.N) { return; }
  var s = 0.0;
  for (var k = 0u; k < P.K; k++) { s += A[m * P.K + k] * W[n * P.K + k]; }
  C[m * P.ldc + P.col0 + n] = s;
}
