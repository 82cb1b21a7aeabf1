// Matrix product with an HF Linear weight: C[m, col0 + n] = sum_k A[m,k]·W[n,k] + bias[n].
// Legend: M rows (tokens), N output features, K input features.
//   A    [M, K]  row-major, element type {{T}}
//   W    [N, K]  row-major (HF Linear weight [out, in]), {{T}}
//   bias [N]     {{T}}, only in the bias variant
//   C    rows of stride ldc; row m's outputs at C[m*ldc + col0 + n], type {{TC}}
// Accumulation is always f32.
//
// Three entry points:
//   tiled: prefill (many rows) on hardware GPUs. A workgroup computes a
//          BM x BN tile of C, staging BK-wide slices of A and W in shared
//          memory; each thread keeps a TM x TN register tile.
//   rows:  prefill on CPU-backed adapters (lavapipe), where a barrier turns
//          invocations into coroutines and a per-lane load costs one load per
//          lane. No barrier, no shared memory: a workgroup owns RM rows, so
//          every A load is workgroup-uniform (one load, broadcast), and each
//          thread reads its RN rows of W in vec4 units and keeps RM x RN
//          scalar accumulators.
//   gemv:  decode (few rows). A workgroup computes NC output columns for
//          every row, its WG threads splitting K and reducing in shared
//          memory; W is read exactly once when M <= MT.
//
// Compile-time constants: ENABLE ("enable f16;" or ""), T, TC, C_BINDING, the
// tile sizes below, and line switches that are "" (line kept) or "//" (line
// commented out): IF_BIAS (the no-bias variant has no bias binding, so C is
// binding 3 instead of 4), IF_V4 / IF_V1 (gemv's and rows' unit product).
// tiled is always compiled with V = 1.

{{ENABLE}}

struct Params {
  M: u32,
  N: u32,
  K: u32,
  ldc: u32,
  col0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
// A and W in units of V elements: VT = T (V = 1) or vec4<T> (V = 4, gemv when K % 4 == 0).
@group(0) @binding(1) var<storage, read> A: array<{{VT}}>;
@group(0) @binding(2) var<storage, read> W: array<{{VT}}>;
{{IF_BIAS}}@group(0) @binding(3) var<storage, read> bias: array<{{T}}>;
@group(0) @binding({{C_BINDING}}) var<storage, read_write> C: array<{{TC}}>;

fn bias_at(n: u32) -> f32 {
  var b = 0.0;
  {{IF_BIAS}}b = f32(bias[n]);
  return b;
}

// ---------------------------------------------------------------- tiled ----

// tiled is only dispatched from the V = 1 pipelines; in V = 4 modules (which
// exist for gemv) its element loads are stubbed so the module still compiles.
fn a_elt(i: u32) -> f32 {
  {{IF_V1}}return f32(A[i]);
  {{IF_V4}}return 0.0;
}
fn w_elt(i: u32) -> f32 {
  {{IF_V1}}return f32(W[i]);
  {{IF_V4}}return 0.0;
}

const TM = {{TM}}u;            // rows per thread (multiple of 4)
const TN = {{TN}}u;            // columns per thread (multiple of 4)
const WX = {{WX}}u;            // threads along N
const WY = {{WY}}u;            // threads along M
const BK = {{BK}}u;            // K slice staged per step
const BM = WY * TM;
const BN = WX * TN;
const NT = WX * WY;

// Shared tiles are stored k-major ([k][m] and [k][n]) as vec4 so a thread
// reads 4 consecutive rows (columns) of its register tile with one load.
var<workgroup> As: array<vec4<f32>, BK * BM / 4>;
var<workgroup> Ws: array<vec4<f32>, BK * BN / 4>;

@compute @workgroup_size(WX, WY)
fn tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let tid = lid.y * WX + lid.x;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let M = P.M;
  let N = P.N;
  let K = P.K;
  var acc: array<f32, TM * TN>;
  for (var k0 = 0u; k0 < K; k0 += BK) {
    // Stage A[m0.., k0..] and W[n0.., k0..]; consecutive threads read
    // consecutive k of one row (coalesced); out-of-range elements are 0.
    for (var i = tid; i < BM * BK; i += NT) {
      let r = i / BK;
      let k = k0 + i % BK;
      var v = 0.0;
      if (m0 + r < M && k < K) { v = a_elt((m0 + r) * K + k); }
      let s = (i % BK) * BM + r;
      As[s / 4u][s % 4u] = v;
    }
    for (var i = tid; i < BN * BK; i += NT) {
      let r = i / BK;
      let k = k0 + i % BK;
      var v = 0.0;
      if (n0 + r < N && k < K) { v = w_elt((n0 + r) * K + k); }
      let s = (i % BK) * BN + r;
      Ws[s / 4u][s % 4u] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<vec4<f32>, TM / 4>;
      var w: array<vec4<f32>, TN / 4>;
      for (var i = 0u; i < TM / 4u; i++) { a[i] = As[(kk * BM + lid.y * TM) / 4u + i]; }
      for (var j = 0u; j < TN / 4u; j++) { w[j] = Ws[(kk * BN + lid.x * TN) / 4u + j]; }
      for (var i = 0u; i < TM; i++) {
        let ai = a[i / 4u][i % 4u];
        for (var j = 0u; j < TN / 4u; j++) {
          let o = i * TN + 4u * j;
          acc[o] = fma(ai, w[j].x, acc[o]);
          acc[o + 1u] = fma(ai, w[j].y, acc[o + 1u]);
          acc[o + 2u] = fma(ai, w[j].z, acc[o + 2u]);
          acc[o + 3u] = fma(ai, w[j].w, acc[o + 3u]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var j = 0u; j < TN; j++) {
    let n = n0 + lid.x * TN + j;
    if (n >= N) { break; }
    let b = bias_at(n);
    for (var i = 0u; i < TM; i++) {
      let m = m0 + lid.y * TM + i;
      if (m >= M) { break; }
      C[m * P.ldc + P.col0 + n] = {{TC}}(acc[i * TN + j] + b);
    }
  }
}

// ----------------------------------------------------------------- rows ----

const RM = {{RM}}u;            // rows per workgroup (workgroup-uniform A loads)
const RN = {{RN}}u;            // columns per thread, RWG apart
const RWG = {{RWG}}u;          // threads per workgroup

// a·w in f32 for one unit (V elements).
fn dotv(a: {{VT}}, w: {{VT}}) -> f32 {
  {{IF_V4}}return dot(vec4<f32>(a), vec4<f32>(w));
  {{IF_V1}}return f32(a) * f32(w);
}

@compute @workgroup_size(RWG)
fn rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let M = P.M;
  let N = P.N;
  let KU = P.K / {{V}}u;       // row length in units
  let m0 = wid.y * RM;         // the same for the whole workgroup
  let n0 = wid.x * RWG * RN + lid.x;
  // Row indices are clamped for loads; clamped results are not stored.
  // Loops have constant trip counts, so they unroll and the arrays stay in registers.
  var wrow: array<u32, RN>;
  for (var j = 0u; j < RN; j++) { wrow[j] = min(n0 + j * RWG, N - 1u) * KU; }
  var arow: array<u32, RM>;
  for (var i = 0u; i < RM; i++) { arow[i] = min(m0 + i, M - 1u) * KU; }
  var acc: array<f32, RM * RN>;
  for (var k = 0u; k < KU; k++) {
    var w: array<{{VT}}, RN>;
    for (var j = 0u; j < RN; j++) { w[j] = W[wrow[j] + k]; }
    for (var i = 0u; i < RM; i++) {
      let a = A[arow[i] + k];
      for (var j = 0u; j < RN; j++) { acc[i * RN + j] += dotv(a, w[j]); }
    }
  }
  // no early exits: a loop with a break may stay rolled, and acc would go to scratch
  for (var j = 0u; j < RN; j++) {
    let n = n0 + j * RWG;
    let b = bias_at(min(n, N - 1u));
    for (var i = 0u; i < RM; i++) {
      let m = m0 + i;
      if (m < M && n < N) { C[m * P.ldc + P.col0 + n] = {{TC}}(acc[i * RN + j] + b); }
    }
  }
}

// ----------------------------------------------------------------- gemv ----

const WG = {{WG}}u;            // threads per workgroup
const KS = {{KS}}u;            // threads sharing one column group, splitting K (power of two, divides WG)
const NC = {{NC}}u;            // output columns per thread group
const MT = {{MT}}u;            // rows per pass over K
const NG = WG / KS;            // column groups per workgroup

var<workgroup> red: array<f32, MT * NC * WG>;

fn mulv(a: {{VT}}, w: {{VT}}) -> vec4<f32> {
  {{IF_V4}}return vec4<f32>(a) * vec4<f32>(w);
  {{IF_V1}}return vec4<f32>(f32(a) * f32(w), 0.0, 0.0, 0.0);
}

@compute @workgroup_size(WG)
fn gemv(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let kt = lid.x % KS;         // this thread's share of K
  let g = lid.x / KS;          // this thread's column group
  let n0 = ((wid.y * nwg.x + wid.x) * NG + g) * NC;
  let M = P.M;
  let N = P.N;
  let KU = P.K / {{V}}u;       // row length in units
  // Column and row indices are clamped for loads; clamped results are not stored.
  var wrow: array<u32, NC>;
  for (var c = 0u; c < NC; c++) { wrow[c] = min(n0 + c, N - 1u) * KU; }
  for (var m0 = 0u; m0 < M; m0 += MT) {
    var acc: array<vec4<f32>, MT * NC>;
    for (var i = 0u; i < MT * NC; i++) { acc[i] = vec4<f32>(0.0); } // explicit: lavapipe kept acc across passes
    for (var k = kt; k < KU; k += KS) {
      var w: array<{{VT}}, NC>;
      for (var c = 0u; c < NC; c++) { w[c] = W[wrow[c] + k]; }
      for (var r = 0u; r < MT; r++) {
        let a = A[min(m0 + r, M - 1u) * KU + k];
        for (var c = 0u; c < NC; c++) { acc[r * NC + c] += mulv(a, w[c]); }
      }
    }
    // KS == 1: each thread owns its columns, no reduction and no barrier
    // (on lavapipe a shader with a barrier runs as coroutines, much slower).
{{IF_DIRECT}}    for (var i = 0u; i < MT * NC; i++) {
{{IF_DIRECT}}      let m = m0 + i / NC;
{{IF_DIRECT}}      let n = n0 + i % NC;
{{IF_DIRECT}}      if (m < M && n < N) { C[m * P.ldc + P.col0 + n] = {{TC}}(dot(acc[i], vec4<f32>(1.0)) + bias_at(n)); }
{{IF_DIRECT}}    }
    // KS > 1: tree reduction over the KS threads of each column group
{{IF_REDUCE}}    // tree reduction over the KS threads of each column group
{{IF_REDUCE}}    for (var i = 0u; i < MT * NC; i++) { red[i * WG + lid.x] = dot(acc[i], vec4<f32>(1.0)); }
{{IF_REDUCE}}    workgroupBarrier();
{{IF_REDUCE}}    for (var s = KS / 2u; s > 0u; s /= 2u) {
{{IF_REDUCE}}      if (kt < s) {
{{IF_REDUCE}}        for (var i = 0u; i < MT * NC; i++) { red[i * WG + lid.x] += red[i * WG + lid.x + s]; }
{{IF_REDUCE}}      }
{{IF_REDUCE}}      workgroupBarrier();
{{IF_REDUCE}}    }
{{IF_REDUCE}}    for (var i = kt; i < MT * NC; i += KS) {
{{IF_REDUCE}}      let m = m0 + i / NC;
{{IF_REDUCE}}      let n = n0 + i % NC;
{{IF_REDUCE}}      if (m < M && n < N) { C[m * P.ldc + P.col0 + n] = {{TC}}(red[i * WG + g * KS] + bias_at(n)); }
{{IF_REDUCE}}    }
{{IF_REDUCE}}    workgroupBarrier();
  }
}
