// Matrix product with an HF Linear weight: C[m, col0 + n] = sum_k A[m,k]·W[n,k] + bias[n],
// with optional fused prologue and epilogues (one dispatch instead of two or three):
//   NORM (prologue): A's rows are Qwen2-RMS-normalised with gain G first:
//        A'[m,k] = A[m,k] · G[k] / sqrt(mean_k A[m,k]² + eps). The sum of squares is
//        accumulated while A streams through the K loop, the gain multiplies each A
//        load, and 1/rms scales the finished dot product (it is linear in A).
//   GLU (epilogue): a second weight U [N, K] (up_proj) is multiplied alongside W
//        (gate_proj) and C = silu(A·Wᵀ) · (A·Uᵀ) (Qwen2's SwiGLU MLP).
//   RES (epilogue): C += result (the residual add; C is read, then written, by
//        the one thread that owns the element).
// Legend: M rows (tokens), N output features, K input features.
//   A    [M, K]  row-major, element type {{T}}
//   W, U [N, K]  row-major (HF Linear weight [out, in]), {{T}}
//   bias [N]     {{T}}, only in the bias variant
//   G    [K]     {{T}}, only in the NORM variant
//   C    rows of stride ldc; row m's outputs at C[m*ldc + col0 + n], type {{TC}}
// Accumulation is always f32.
// Mixed precision (training's f16-mixed): A, bias, G and C are f32, W and U
// are f16 copies of the f32 master weights (TW = f16), and every A element is
// rounded to f16 as it is loaded (RNDU = rnd / rnd4, from kernels' shared
// f16-operand helper): f16 × f16 products accumulated in f32.
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
// Compile-time constants: ENABLE ("enable f16;" or ""), T, TC, the binding
// numbers B_U, B_BIAS, B_G, B_C (bindings follow A, W in the order U, bias, G,
// C, present ones only), the tile sizes below, and line switches that are ""
// (line kept) or "//" (line commented out): IF_BIAS, IF_GLU, IF_NORM, IF_RES,
// IF_V4 / IF_V1 (gemv's and rows' unit: vec4 or scalar). tiled is always
// compiled with V = 1.

{{ENABLE}}

struct Params {
  M: u32,
  N: u32,
  K: u32,
  ldc: u32,
  col0: u32,
  eps: f32,      // NORM only
}

@group(0) @binding(0) var<uniform> P: Params;
// A, W, U and G in units of V elements: VT = T (V = 1) or vec4<T> (V = 4, when K % 4 == 0).
@group(0) @binding(1) var<storage, read> A: array<{{VT}}>;
@group(0) @binding(2) var<storage, read> W: array<{{VW}}>;
{{IF_GLU}}@group(0) @binding({{B_U}}) var<storage, read> U: array<{{VW}}>;
{{IF_BIAS}}@group(0) @binding({{B_BIAS}}) var<storage, read> bias: array<{{T}}>;
{{IF_NORM}}@group(0) @binding({{B_G}}) var<storage, read> G: array<{{VT}}>;
@group(0) @binding({{B_C}}) var<storage, read_write> C: array<{{TC}}>;

{{RND_FN}}

fn bias_at(n: u32) -> f32 {
  var b = 0.0;
  {{IF_BIAS}}b = f32(bias[n]);
  return b;
}

// silu(g) = g * sigmoid(g); sigmoid written so exp never overflows (as in elementwise.wgsl).
fn silu(g: f32) -> f32 {
  let e = exp(-abs(g));
  let s = select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
  return g * s;
}

// The epilogue shared by every entry point: gate (the W product), up (the U
// product, GLU only) and ss (row m's sum of squares, NORM only) in, one C
// element out.
fn finish(m: u32, n: u32, gate: f32, up: f32, ss: f32) {
  var inv = 1.0;
  {{IF_NORM}}inv = 1.0 / sqrt(ss / f32(P.K) + P.eps);
  var v = gate * inv + bias_at(n);
  {{IF_GLU}}v = silu(v) * (up * inv);
  let idx = m * P.ldc + P.col0 + n;
  {{IF_RES}}v += f32(C[idx]);
  C[idx] = {{TC}}(v);
}

// ---------------------------------------------------------------- tiled ----

// tiled is only dispatched from the V = 1 pipelines; in V = 4 modules (which
// exist for gemv) its element loads are stubbed so the module still compiles.
fn a_elt(i: u32) -> f32 {
  {{IF_V1}}return {{RND}}(f32(A[i]));
  {{IF_V4}}return 0.0;
}
fn w_elt(i: u32) -> f32 {
  {{IF_V1}}return f32(W[i]);
  {{IF_V4}}return 0.0;
}
fn u_elt(i: u32) -> f32 {
  var v = 0.0;
  {{IF_GLU}}{{IF_V1}}v = f32(U[i]);
  return v;
}
fn g_elt(i: u32) -> f32 {
  var v = 1.0;
  {{IF_NORM}}{{IF_V1}}v = f32(G[i]);
  return v;
}

const TM = {{TM}}u;            // rows per thread (multiple of 4)
const TN = {{TN}}u;            // columns per thread (multiple of 4)
const WX = {{WX}}u;            // threads along N
const WY = {{WY}}u;            // threads along M
const BK = {{BK}}u;            // K slice staged per step
const BM = WY * TM;
const BN = WX * TN;
const NT = WX * WY;
const SPT = BM * BK / NT;      // A elements each thread stages per slice (NORM: NT % BK == 0, so always the same k column)

// Shared tiles are stored k-major ([k][m] and [k][n]) as vec4 so a thread
// reads 4 consecutive rows (columns) of its register tile with one load.
var<workgroup> As: array<vec4<f32>, BK * BM / 4>;
var<workgroup> Ws: array<vec4<f32>, BK * BN / 4>;
{{IF_GLU}}var<workgroup> Us: array<vec4<f32>, BK * BN / 4>;
{{IF_NORM}}var<workgroup> SSs: array<f32, BM * BK>;

@compute @workgroup_size(WX, WY)
fn tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let tid = lid.y * WX + lid.x;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let M = P.M;
  let N = P.N;
  let K = P.K;
  var acc: array<f32, TM * TN>;
  {{IF_GLU}}var accu: array<f32, TM * TN>;
  var ssp: array<f32, SPT>;    // NORM: partial sums of squares of the A elements this thread stages
  for (var k0 = 0u; k0 < K; k0 += BK) {
    // Stage A[m0.., k0..] and W[n0.., k0..]; consecutive threads read
    // consecutive k of one row (coalesced); out-of-range elements are 0.
    for (var i = tid; i < BM * BK; i += NT) {
      let r = i / BK;
      let k = k0 + i % BK;
      var v = 0.0;
      if (m0 + r < M && k < K) {
        v = a_elt((m0 + r) * K + k);
        {{IF_NORM}}ssp[(i - tid) / NT] += v * v;
        v *= g_elt(k);
      }
      let s = (i % BK) * BM + r;
      As[s / 4u][s % 4u] = v;
    }
    for (var i = tid; i < BN * BK; i += NT) {
      let r = i / BK;
      let k = k0 + i % BK;
      var v = 0.0;
      {{IF_GLU}}var vu = 0.0;
      if (n0 + r < N && k < K) {
        v = w_elt((n0 + r) * K + k);
        {{IF_GLU}}vu = u_elt((n0 + r) * K + k);
      }
      let s = (i % BK) * BN + r;
      Ws[s / 4u][s % 4u] = v;
      {{IF_GLU}}Us[s / 4u][s % 4u] = vu;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<vec4<f32>, TM / 4>;
      var w: array<vec4<f32>, TN / 4>;
      {{IF_GLU}}var u: array<vec4<f32>, TN / 4>;
      for (var i = 0u; i < TM / 4u; i++) { a[i] = As[(kk * BM + lid.y * TM) / 4u + i]; }
      for (var j = 0u; j < TN / 4u; j++) { w[j] = Ws[(kk * BN + lid.x * TN) / 4u + j]; }
      {{IF_GLU}}for (var j = 0u; j < TN / 4u; j++) { u[j] = Us[(kk * BN + lid.x * TN) / 4u + j]; }
      for (var i = 0u; i < TM; i++) {
        let ai = a[i / 4u][i % 4u];
        for (var j = 0u; j < TN / 4u; j++) {
          let o = i * TN + 4u * j;
          acc[o] = fma(ai, w[j].x, acc[o]);
          acc[o + 1u] = fma(ai, w[j].y, acc[o + 1u]);
          acc[o + 2u] = fma(ai, w[j].z, acc[o + 2u]);
          acc[o + 3u] = fma(ai, w[j].w, acc[o + 3u]);
          {{IF_GLU}}accu[o] = fma(ai, u[j].x, accu[o]);
          {{IF_GLU}}accu[o + 1u] = fma(ai, u[j].y, accu[o + 1u]);
          {{IF_GLU}}accu[o + 2u] = fma(ai, u[j].z, accu[o + 2u]);
          {{IF_GLU}}accu[o + 3u] = fma(ai, u[j].w, accu[o + 3u]);
        }
      }
    }
    workgroupBarrier();
  }
  // NORM: row r's sum of squares is spread over the BK threads that staged its columns.
  var ssr: array<f32, TM>;
  {{IF_NORM}}for (var j = 0u; j < SPT; j++) { SSs[tid + j * NT] = ssp[j]; }
  {{IF_NORM}}workgroupBarrier();
  {{IF_NORM}}for (var i = 0u; i < TM; i++) {
  {{IF_NORM}}  var s = 0.0;
  {{IF_NORM}}  for (var kk = 0u; kk < BK; kk++) { s += SSs[(lid.y * TM + i) * BK + kk]; }
  {{IF_NORM}}  ssr[i] = s;
  {{IF_NORM}}}
  for (var j = 0u; j < TN; j++) {
    let n = n0 + lid.x * TN + j;
    if (n >= N) { break; }
    for (var i = 0u; i < TM; i++) {
      let m = m0 + lid.y * TM + i;
      if (m >= M) { break; }
      var up = 0.0;
      {{IF_GLU}}up = accu[i * TN + j];
      finish(m, n, acc[i * TN + j], up, ssr[i]);
    }
  }
}

// ---------------------------------------------------------------- units ----

// Arithmetic on one unit of V elements in f32: FT = f32 (V = 1) or vec4<f32> (V = 4).
fn cvt(x: {{VT}}) -> {{FT}} {
  return {{FT}}(x);
}
fn cvw(x: {{VW}}) -> {{FT}} {
  return {{FT}}(x);
}
// An A unit: rounded to f16 in mixed precision.
fn cva(x: {{VT}}) -> {{FT}} {
  return {{RNDU}}({{FT}}(x));
}
fn hsum(x: {{FT}}) -> f32 {
  {{IF_V4}}return dot(x, vec4<f32>(1.0));
  {{IF_V1}}return x;
}

// ----------------------------------------------------------------- rows ----

const RM = {{RM}}u;            // rows per workgroup (workgroup-uniform A loads)
const RN = {{RN}}u;            // columns per thread, RWG apart
const RWG = {{RWG}}u;          // threads per workgroup

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
  var acc: array<{{FT}}, RM * RN>;
  {{IF_GLU}}var accu: array<{{FT}}, RM * RN>;
  var ss: array<{{FT}}, RM>;
  for (var k = 0u; k < KU; k++) {
    var w: array<{{FT}}, RN>;
    for (var j = 0u; j < RN; j++) { w[j] = cvw(W[wrow[j] + k]); }
    {{IF_GLU}}var u: array<{{FT}}, RN>;
    {{IF_GLU}}for (var j = 0u; j < RN; j++) { u[j] = cvw(U[wrow[j] + k]); }
    {{IF_NORM}}let gk = cvt(G[k]);
    for (var i = 0u; i < RM; i++) {
      var a = cva(A[arow[i] + k]);
      {{IF_NORM}}ss[i] += a * a;
      {{IF_NORM}}a *= gk;
      for (var j = 0u; j < RN; j++) {
        acc[i * RN + j] += a * w[j];
        {{IF_GLU}}accu[i * RN + j] += a * u[j];
      }
    }
  }
  // no early exits: a loop with a break may stay rolled, and acc would go to scratch
  for (var j = 0u; j < RN; j++) {
    let n = n0 + j * RWG;
    for (var i = 0u; i < RM; i++) {
      let m = m0 + i;
      var up = 0.0;
      {{IF_GLU}}up = hsum(accu[i * RN + j]);
      if (m < M && n < N) { finish(m, n, hsum(acc[i * RN + j]), up, hsum(ss[i])); }
    }
  }
}

// ----------------------------------------------------------------- gemv ----

const WG = {{WG}}u;            // threads per workgroup
const KS = {{KS}}u;            // threads sharing one column group, splitting K (power of two, divides WG)
const NC = {{NC}}u;            // output columns per thread group
const MT = {{MT}}u;            // rows per pass over K
const NG = WG / KS;            // column groups per workgroup
const NV = MT * NC;            // dot products per thread per pass
// Values a thread reduces per pass: NV gate (W) products, then NV up (U)
// products when GLU, then MT sums of squares when NORM; U_OFF / SS_OFF are
// their offsets (0 when absent: the value is then read but unused).
const NRED = {{NRED}}u;
const U_OFF = {{U_OFF}}u;
const SS_OFF = {{SS_OFF}}u;

{{IF_REDUCE}}var<workgroup> red: array<f32, NRED * WG>;

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
    // explicit zeros: lavapipe kept the arrays across passes
    var acc: array<{{FT}}, NV>;
    for (var i = 0u; i < NV; i++) { acc[i] = {{FT}}(0.0); }
    {{IF_GLU}}var accu: array<{{FT}}, NV>;
    {{IF_GLU}}for (var i = 0u; i < NV; i++) { accu[i] = {{FT}}(0.0); }
    var ss: array<{{FT}}, MT>;
    for (var r = 0u; r < MT; r++) { ss[r] = {{FT}}(0.0); }
    for (var k = kt; k < KU; k += KS) {
      var w: array<{{FT}}, NC>;
      for (var c = 0u; c < NC; c++) { w[c] = cvw(W[wrow[c] + k]); }
      {{IF_GLU}}var u: array<{{FT}}, NC>;
      {{IF_GLU}}for (var c = 0u; c < NC; c++) { u[c] = cvw(U[wrow[c] + k]); }
      {{IF_NORM}}let gk = cvt(G[k]);
      for (var r = 0u; r < MT; r++) {
        var a = cva(A[min(m0 + r, M - 1u) * KU + k]);
        {{IF_NORM}}ss[r] += a * a;
        {{IF_NORM}}a *= gk;
        for (var c = 0u; c < NC; c++) {
          acc[r * NC + c] += a * w[c];
          {{IF_GLU}}accu[r * NC + c] += a * u[c];
        }
      }
    }
    var vals: array<f32, NRED>;
    for (var i = 0u; i < NV; i++) { vals[i] = hsum(acc[i]); }
    {{IF_GLU}}for (var i = 0u; i < NV; i++) { vals[U_OFF + i] = hsum(accu[i]); }
    {{IF_NORM}}for (var r = 0u; r < MT; r++) { vals[SS_OFF + r] = hsum(ss[r]); }
    // KS == 1: each thread owns its columns, no reduction and no barrier
    // (on lavapipe a shader with a barrier runs as coroutines, much slower).
{{IF_DIRECT}}    for (var i = 0u; i < NV; i++) {
{{IF_DIRECT}}      let m = m0 + i / NC;
{{IF_DIRECT}}      let n = n0 + i % NC;
{{IF_DIRECT}}      if (m < M && n < N) { finish(m, n, vals[i], vals[U_OFF + i], vals[SS_OFF + i / NC]); }
{{IF_DIRECT}}    }
    // KS > 1: tree reduction over the KS threads of each column group
{{IF_REDUCE}}    for (var i = 0u; i < NRED; i++) { red[i * WG + lid.x] = vals[i]; }
{{IF_REDUCE}}    workgroupBarrier();
{{IF_REDUCE}}    for (var s = KS / 2u; s > 0u; s /= 2u) {
{{IF_REDUCE}}      if (kt < s) {
{{IF_REDUCE}}        for (var i = 0u; i < NRED; i++) { red[i * WG + lid.x] += red[i * WG + lid.x + s]; }
{{IF_REDUCE}}      }
{{IF_REDUCE}}      workgroupBarrier();
{{IF_REDUCE}}    }
{{IF_REDUCE}}    for (var i = kt; i < NV; i += KS) {
{{IF_REDUCE}}      let m = m0 + i / NC;
{{IF_REDUCE}}      let n = n0 + i % NC;
{{IF_REDUCE}}      let o = g * KS;
{{IF_REDUCE}}      if (m < M && n < N) { finish(m, n, red[i * WG + o], red[(U_OFF + i) * WG + o], red[(SS_OFF + i / NC) * WG + o]); }
{{IF_REDUCE}}    }
{{IF_REDUCE}}    workgroupBarrier();
  }
}
