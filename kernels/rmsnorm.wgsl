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

// ---- rmsnorm_row: the same result computed by one invocation per row ----
// For CPU-backed adapters (lavapipe), where a workgroup barrier turns
// invocations into coroutines and the tree reduction costs more than the
// row's serial sum (benchmarks/RESULTS.md: 0.24x of this form there). The
// sum runs in the same f32 precision, serially. Hardware GPUs use `rmsnorm`.
@compute @workgroup_size({{WG_ROW}})
fn rmsnorm_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = (wid.y * nwg.x + wid.x) * {{WG_ROW}}u + lid.x;
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

// ---- Backward (training; f32 only, whatever {{T}} is) ----
// With inv = 1/sqrt(mean(x²) + eps), x̂ = x·inv, y = x̂·w and g = dy·w:
//   dx = inv · (g − x̂ · mean(g·x̂))         (written)
//   dw += Σ_rows dy·x̂                      (accumulated across calls)
// dw is reduced without float atomics, so it is deterministic: the rows are
// cut into chunks of `chunk_rows`; pass 2 writes one partial sum per
// (chunk, feature) into scratch, pass 3 adds the chunks in order into dw.
struct BParams {
  rows: u32,
  dim: u32,
  eps: f32,
  chunk_rows: u32,   // rows per dw partial
  chunks: u32,       // ceil(rows / chunk_rows)
  accumulate: u32,   // pass 1: 1 = dx += (the residual stream's gradient merged in place), 0 = dx =
}

@group(0) @binding(0) var<uniform> B: BParams;

// Pass 1: dx (written, or added to dx with B.accumulate), and inv per row
// for pass 2. One workgroup per row.
@group(0) @binding(1) var<storage, read> bx_x: array<f32>;            // [rows, dim]
@group(0) @binding(2) var<storage, read> bx_w: array<f32>;            // [dim]
@group(0) @binding(3) var<storage, read> bx_dy: array<f32>;           // [rows, dim]
@group(0) @binding(4) var<storage, read_write> bx_dx: array<f32>;     // [rows, dim]
@group(0) @binding(5) var<storage, read_write> bx_inv: array<f32>;    // [rows] scratch

var<workgroup> partial2: array<vec2<f32>, {{WG}}>;

@compute @workgroup_size({{WG}})
fn rmsnorm_backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= B.rows) { return; } // uniform per workgroup
  let base = row * B.dim;
  // Σ x² and Σ (dy·w)·x in one sweep; x̂ = x·inv is applied after.
  var acc = vec2<f32>(0.0, 0.0);
  for (var i = lid.x; i < B.dim; i += {{WG}}u) {
    let v = bx_x[base + i];
    acc += vec2<f32>(v * v, bx_dy[base + i] * bx_w[i] * v);
  }
  partial2[lid.x] = acc;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) { partial2[lid.x] += partial2[lid.x + s]; }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(partial2[0].x / f32(B.dim) + B.eps);
  // mean(g·x̂) = inv · Σ g·x / dim; dx = inv·g − x·inv³·Σ g·x / dim.
  let k = inv * inv * partial2[0].y / f32(B.dim);
  for (var i = lid.x; i < B.dim; i += {{WG}}u) {
    let prev = select(0.0, bx_dx[base + i], B.accumulate != 0u);
    bx_dx[base + i] = prev + inv * (bx_dy[base + i] * bx_w[i] - bx_x[base + i] * k);
  }
  if (lid.x == 0u) { bx_inv[row] = inv; }
}

// Pass 1 by one invocation per row (CPU-backed adapters, as rmsnorm_row).
@compute @workgroup_size({{WG_ROW}})
fn rmsnorm_backward_dx_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = (wid.y * nwg.x + wid.x) * {{WG_ROW}}u + lid.x;
  if (row >= B.rows) { return; }
  let base = row * B.dim;
  var acc = vec2<f32>(0.0, 0.0);
  for (var i = 0u; i < B.dim; i++) {
    let v = bx_x[base + i];
    acc += vec2<f32>(v * v, bx_dy[base + i] * bx_w[i] * v);
  }
  let inv = 1.0 / sqrt(acc.x / f32(B.dim) + B.eps);
  let k = inv * inv * acc.y / f32(B.dim);
  for (var i = 0u; i < B.dim; i++) {
    let prev = select(0.0, bx_dx[base + i], B.accumulate != 0u);
    bx_dx[base + i] = prev + inv * (bx_dy[base + i] * bx_w[i] - bx_x[base + i] * k);
  }
  bx_inv[row] = inv;
}

// Pass 2: part[c, i] = Σ_{r in chunk c} dy[r, i]·x[r, i]·inv[r].
// Grid (ceil(dim / WG), chunks); one invocation per (chunk, feature).
@group(0) @binding(1) var<storage, read> bp_x: array<f32>;            // [rows, dim]
@group(0) @binding(2) var<storage, read> bp_dy: array<f32>;           // [rows, dim]
@group(0) @binding(3) var<storage, read> bp_inv: array<f32>;          // [rows]
@group(0) @binding(4) var<storage, read_write> bp_part: array<f32>;   // [chunks, dim] scratch

@compute @workgroup_size({{WG}})
fn rmsnorm_backward_dw_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = wid.x * {{WG}}u + lid.x;
  let c = wid.y;
  if (i >= B.dim || c >= B.chunks) { return; }
  let r0 = c * B.chunk_rows;
  let r1 = min(r0 + B.chunk_rows, B.rows);
  var s = 0.0;
  for (var r = r0; r < r1; r++) {
    s += bp_dy[r * B.dim + i] * bp_x[r * B.dim + i] * bp_inv[r];
  }
  bp_part[c * B.dim + i] = s;
}

// Pass 3: dw[i] += Σ_c part[c, i], chunks in order. One invocation per feature.
@group(0) @binding(1) var<storage, read> bf_part: array<f32>;         // [chunks, dim]
@group(0) @binding(2) var<storage, read_write> bf_dw: array<f32>;     // [dim]

@compute @workgroup_size({{WG}})
fn rmsnorm_backward_dw_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = wid.x * {{WG}}u + lid.x;
  if (i >= B.dim) { return; }
  var s = 0.0;
  for (var c = 0u; c < B.chunks; c++) { s += bf_part[c * B.dim + i]; }
  bf_dw[i] += s;
}
