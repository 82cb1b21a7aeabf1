// Variant "rowtile": C[m, n] = sum_k A[m,k]·W[n,k], no barriers, no shared memory.
// A workgroup owns TM rows (the same for every thread, so A's loads are
// workgroup-uniform: one load each on lavapipe) and WG*TN columns; each thread
// keeps TM x TN scalar f32 accumulators and reads its TN rows of W in units of
// V elements (vec4 when K % 4 == 0). Same uniforms/bindings as matmul_naive.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  ldc: u32,
  col0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<{{VT}}>;
@group(0) @binding(2) var<storage, read> W: array<{{VT}}>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

const TM = {{TM}}u;
const TN = {{TN}}u;
const WG = {{WG}}u;

fn dotv(a: {{VT}}, w: {{VT}}) -> f32 {
  {{IF_V4}}return dot(a, w);
  {{IF_V1}}return a * w;
}

@compute @workgroup_size(WG)
fn rowtile(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let M = P.M;
  let N = P.N;
  let KU = P.K / {{V}}u;
  let m0 = wid.y * TM;
  let n0 = wid.x * WG * TN + lid.x;
  var wrow: array<u32, TN>;
  for (var j = 0u; j < TN; j++) { wrow[j] = min(n0 + j * WG, N - 1u) * KU; }
  var arow: array<u32, TM>;
  for (var i = 0u; i < TM; i++) { arow[i] = min(m0 + i, M - 1u) * KU; }
  var acc: array<f32, TM * TN>;
  for (var k = 0u; k < KU; k++) {
    var w: array<{{VT}}, TN>;
    for (var j = 0u; j < TN; j++) { w[j] = W[wrow[j] + k]; }
    for (var i = 0u; i < TM; i++) {
      let a = A[arow[i] + k];
      for (var j = 0u; j < TN; j++) { acc[i * TN + j] += dotv(a, w[j]); }
    }
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) {
      let m = m0 + i;
      let n = n0 + j * WG;
      if (m < M && n < N) { C[m * P.ldc + P.col0 + n] = acc[i * TN + j]; }
    }
  }
}
