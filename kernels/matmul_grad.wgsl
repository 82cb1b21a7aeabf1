// Backward of the HF Linear y = x·Wᵀ + b (kernels/matmul.wgsl), f32 values.
// f16 operands (mixed-precision training): dy and x are rounded to f16 as
// they are loaded (RND = rnd), W is the f16 copy of the weight (TB = f16 in
// dinput); accumulation and every output stay f32; the bias sum is not a
// matrix product and reads dy unrounded.
// Legend: M rows (tokens), N output features, K input features.
//   dy  [M, N]  upstream gradient, row m's N values at dy[m*ldy + col0 ..]
//               (ldy/col0 let a caller walk a weight in row chunks: the
//               chunk's N columns of a wider dy)
//   W   [N, K]  weight (a chunk of rows when bound as a byte range)
//   x   [M, K]  the forward input
//   dx  [M, K]  dInput:  dx  = dy·W      (or dx += dy·W with accumulate = 1)
//   dw  [N, K]  dWeight: dw += dyᵀ·x     (always accumulates: micro-batches)
//   db  [N]     dBias:   db += Σ_m dy[m, :]
// Accumulation is f32 in a fixed order (no atomics), so results are
// bit-identical from run to run.
//
// dInput and dWeight are the same tiled product C[i, j] (+)= Σ_r A(i, r)·B(r, j)
// with C and B both of row length K:
//   dInput:  i = m, r = n, A(i, r) = dy[m, n],  B = W [N, K], C = dx [M, K]
//   dWeight: i = n, r = m, A(i, r) = dy[m, n],  B = x [M, K], C = dw [N, K]
// A workgroup computes a BM x BN tile of C, staging BR-long slices of the
// reduction of A and B in shared memory; each thread keeps a TM x TN
// register tile. The reduction runs r = 0, 1, ... in order for every element.
//
// Compile-time constants: WX, WY (threads along j and i), TM, TN (register
// tile, multiples of 4), BR (reduction slice), for the rows form RM (rows
// per workgroup) and RWG (threads per workgroup), and for bias BX (columns
// per workgroup), BY (row lanes, power of two).

{{ENABLE}}

{{RND_FN}}

struct Params {
  M: u32,
  N: u32,
  K: u32,
  ldy: u32,
  col0: u32,
  accumulate: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
// dInput / dWeight: B = W or x, C = dx or dw.
@group(0) @binding(2) var<storage, read> B: array<{{TB}}>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
// bias: db at binding 2 (a different entry point: never used with B and C).
@group(0) @binding(2) var<storage, read_write> db: array<f32>;

// ---------------------------------------------------------------- tiled ----

const TM = {{TM}}u;            // rows of C per thread (multiple of 4)
const TN = {{TN}}u;            // columns of C per thread (multiple of 4)
const WX = {{WX}}u;            // threads along j
const WY = {{WY}}u;            // threads along i
const BR = {{BR}}u;            // reduction slice staged per step
const BM = WY * TM;
const BN = WX * TN;
const NT = WX * WY;

// Stored r-major ([r][i] and [r][j]) as vec4 so a thread reads 4
// consecutive rows (columns) of its register tile with one load.
var<workgroup> As: array<vec4<f32>, BR * BM / 4>;
var<workgroup> Bs: array<vec4<f32>, BR * BN / 4>;

/// C tile at workgroup `wid`: `rows` rows of C, reduction length `R`;
/// `dyT`: A(i, r) = dy[r, i] (dWeight) instead of dy[i, r] (dInput);
/// `add`: C += product instead of C = product.
fn tile(lid: vec3<u32>, wid: vec3<u32>, rows: u32, R: u32, dyT: bool, add: bool) {
  let tid = lid.y * WX + lid.x;
  let i0 = wid.y * BM;
  let j0 = wid.x * BN;
  let K = P.K;
  let ldy = P.ldy;
  let col0 = P.col0;
  var acc: array<f32, TM * TN>;
  for (var q = 0u; q < TM * TN; q++) { acc[q] = 0.0; }
  for (var r0 = 0u; r0 < R; r0 += BR) {
    // Stage A; consecutive threads walk dy's contiguous direction (n):
    // along r for dInput, along i for dWeight. Out of range: 0.
    for (var e = tid; e < BM * BR; e += NT) {
      var i: u32;
      var r: u32;
      if (dyT) { i = e % BM; r = e / BM; } else { i = e / BR; r = e % BR; }
      var v = 0.0;
      if (i0 + i < rows && r0 + r < R) {
        var m = i0 + i;
        var n = r0 + r;
        if (dyT) { m = r0 + r; n = i0 + i; }
        v = {{RND}}(dy[m * ldy + col0 + n]);
      }
      let s = r * BM + i;
      As[s / 4u][s % 4u] = v;
    }
    // Stage B (row length K), consecutive threads along j.
    for (var e = tid; e < BN * BR; e += NT) {
      let j = e % BN;
      let r = e / BN;
      var v = 0.0;
      if (j0 + j < K && r0 + r < R) { v = {{RND}}(f32(B[(r0 + r) * K + j0 + j])); }
      let s = r * BN + j;
      Bs[s / 4u][s % 4u] = v;
    }
    workgroupBarrier();
    for (var rr = 0u; rr < BR; rr++) {
      var a: array<vec4<f32>, TM / 4>;
      var b: array<vec4<f32>, TN / 4>;
      for (var u = 0u; u < TM / 4u; u++) { a[u] = As[(rr * BM + lid.y * TM) / 4u + u]; }
      for (var u = 0u; u < TN / 4u; u++) { b[u] = Bs[(rr * BN + lid.x * TN) / 4u + u]; }
      for (var ii = 0u; ii < TM; ii++) {
        let ai = a[ii / 4u][ii % 4u];
        for (var u = 0u; u < TN / 4u; u++) {
          let o = ii * TN + 4u * u;
          acc[o] = fma(ai, b[u].x, acc[o]);
          acc[o + 1u] = fma(ai, b[u].y, acc[o + 1u]);
          acc[o + 2u] = fma(ai, b[u].z, acc[o + 2u]);
          acc[o + 3u] = fma(ai, b[u].w, acc[o + 3u]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var ii = 0u; ii < TM; ii++) {
    let i = i0 + lid.y * TM + ii;
    if (i >= rows) { break; }
    for (var jj = 0u; jj < TN; jj++) {
      let j = j0 + lid.x * TN + jj;
      if (j >= K) { break; }
      let o = i * K + j;
      var v = acc[ii * TN + jj];
      if (add) { v += C[o]; }
      C[o] = v;
    }
  }
}

/// dx [M, K] (+)= dy [M, N] · W [N, K]. Grid: (ceil(K / BN), ceil(M / BM)).
@compute @workgroup_size(WX, WY)
fn dinput(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  tile(lid, wid, P.M, P.N, false, P.accumulate != 0u);
}

/// dw [N, K] += dy [M, N]ᵀ · x [M, K]. Grid: (ceil(K / BN), ceil(N / BM)).
@compute @workgroup_size(WX, WY)
fn dweight(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  tile(lid, wid, P.N, P.M, true, true);
}

// ----------------------------------------------------------------- rows ----
// The same products with no shared memory and no barrier (CPU-backed
// adapters, where barriers cost more than the tiles save; the forward's
// `rows` kernel in kernels/matmul.wgsl is the model): a workgroup owns RM
// rows i of C, so every A(i, r) load has a workgroup-uniform address; a
// thread owns 4 consecutive columns j (one vec4 load of B's row r per step)
// and keeps RM x 4 f32 accumulators. The reduction runs r = 0, 1, ... with
// one fma per term, as `tile` does: results are bit-identical to it.
// K must be a multiple of 4 (the wrapper falls back to `tile` otherwise).
// Grid: (ceil(K / (4·RWG)), ceil(rows / RM)).

const RM = {{RM}}u;            // rows of C per workgroup
const RWG = {{RWG}}u;          // threads per workgroup (4 columns each)

@group(0) @binding(2) var<storage, read> B4: array<vec4<{{TB}}>>;

fn rows_tile(lid: vec3<u32>, wid: vec3<u32>, rows: u32, R: u32, dyT: bool, add: bool) {
  let i0 = wid.y * RM;
  let j = (wid.x * RWG + lid.x) * 4u;
  let K = P.K;
  let ldy = P.ldy;
  let col0 = P.col0;
  let live = min(RM, rows - i0); // rows of this tile inside C (workgroup-uniform)
  var acc: array<vec4<f32>, RM>;
  for (var r = 0u; r < R; r++) {
    var b = vec4<f32>(0.0);
    if (j < K) {
      let v = vec4<f32>(B4[(r * K + j) / 4u]);
      b = vec4<f32>({{RND}}(v.x), {{RND}}(v.y), {{RND}}(v.z), {{RND}}(v.w));
    }
    for (var ii = 0u; ii < RM; ii++) {
      var a = 0.0;
      if (ii < live) {
        if (dyT) { a = {{RND}}(dy[r * ldy + col0 + i0 + ii]); } else { a = {{RND}}(dy[(i0 + ii) * ldy + col0 + r]); }
      }
      acc[ii] = fma(vec4<f32>(a), b, acc[ii]);
    }
  }
  if (j >= K) { return; }
  for (var ii = 0u; ii < RM; ii++) {
    if (ii >= live) { break; }
    let o = (i0 + ii) * K + j;
    for (var c = 0u; c < 4u; c++) {
      var v = acc[ii][c];
      if (add) { v += C[o + c]; }
      C[o + c] = v;
    }
  }
}

/// dx [M, K] (+)= dy [M, N] · W [N, K], rows form.
@compute @workgroup_size(RWG)
fn dinput_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  rows_tile(lid, wid, P.M, P.N, false, P.accumulate != 0u);
}

/// dw [N, K] += dy [M, N]ᵀ · x [M, K], rows form.
@compute @workgroup_size(RWG)
fn dweight_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  rows_tile(lid, wid, P.N, P.M, true, true);
}

// ----------------------------------------------------------------- bias ----

const BX = {{BX}}u;            // columns per workgroup
const BY = {{BY}}u;            // row lanes per column (power of two)

var<workgroup> red: array<f32, BX * BY>;

/// db [N] += Σ_m dy [m, :]. Lane y sums rows y, y + BY, ... of its column,
/// then the BY lane sums are added in a fixed tree. Grid: (ceil(N / BX)).
@compute @workgroup_size(BX, BY)
fn bias(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let n = wid.x * BX + lid.x;
  var s = 0.0;
  if (n < P.N) {
    for (var m = lid.y; m < P.M; m += BY) { s += dy[m * P.ldy + P.col0 + n]; }
  }
  red[lid.y * BX + lid.x] = s;
  workgroupBarrier();
  for (var h = BY / 2u; h > 0u; h /= 2u) {
    if (lid.y < h) { red[lid.y * BX + lid.x] += red[(lid.y + h) * BX + lid.x]; }
    workgroupBarrier();
  }
  if (lid.y == 0u && n < P.N) { db[n] += red[lid.x]; }
}
