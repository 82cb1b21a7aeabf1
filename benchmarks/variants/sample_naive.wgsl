// Baseline for benchmarks/kernels.ts: one thread per row runs the sampler's
// steps serially, exactly as the CPU reference sampleRef does (greedy and
// top-p; top-k is not implemented here): the same f32 summation orders
// (strided partials of {{RED}} then a tree; contiguous chunks for the inverse
// CDF), so the drawn token matches kernels/sample.wgsl's. No workgroup
// cooperation: every threshold bisection step rescans the row in one thread.
// Same bindings as kernels/sample.wgsl; its uniform plus the row count B.

struct Params {
  V: u32,
  top_k: u32,    // ignored (0 in the benchmark)
  greedy: u32,
  inv_t: f32,
  top_p: f32,
  seed: u32,
  B: u32,        // rows (the tuned kernel takes it from the grid)
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // [B, V]
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>; // [B]
@group(0) @binding(3) var<storage, read_write> logp: array<f32>;   // [B]
@group(0) @binding(4) var<storage, read> streams: array<u32>;      // [B, 2]: request key, token index

const RED: u32 = {{RED}}u;

fn key_of(x: f32) -> u32 {
  let b = bitcast<u32>(select(x, 0.0, x == 0.0));
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn hash3(v0: vec3<u32>) -> vec3<u32> {
  var v = v0 * 1664525u + 1013904223u;
  v.x += v.y * v.z; v.y += v.z * v.x; v.z += v.x * v.y;
  v ^= v >> vec3<u32>(16u);
  v.x += v.y * v.z; v.y += v.z * v.x; v.z += v.x * v.y;
  return v;
}

/// Σ exp((l − m)·inv_t) over the row's tokens with key > above (or >= when
/// `inclusive`), in the reference's order: partial[j % RED], then a tree.
fn masked_sum(base: u32, m: f32, above: u32, inclusive: bool) -> f32 {
  var part: array<f32, RED>;
  for (var j = 0u; j < P.V; j++) {
    let l = logits[base + j];
    let k = key_of(l);
    if (k > above || (inclusive && k == above)) { part[j % RED] += exp((l - m) * P.inv_t); }
  }
  for (var s = RED / 2u; s > 0u; s >>= 1u) {
    for (var i = 0u; i < s; i++) { part[i] += part[i + s]; }
  }
  return part[0];
}

@compute @workgroup_size({{WG}})
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= P.B) { return; }
  let V = P.V;
  let base = row * V;
  var arg = 0u;
  var key_hi = key_of(logits[base]);
  var key_lo = key_hi;
  for (var j = 1u; j < V; j++) {
    let k = key_of(logits[base + j]);
    if (k > key_hi) { key_hi = k; arg = j; }
    key_lo = min(key_lo, k);
  }
  let m = logits[base + arg];
  let z = masked_sum(base, m, key_lo, true);
  if (P.greedy != 0u) {
    tokens[row] = arg;
    logp[row] = -log(z);
    return;
  }
  // top-p: smallest key x with mass(key > x) < p·Z
  var t = key_lo;
  if (P.top_p < 1.0) {
    let pz = P.top_p * z;
    var lo = key_lo;
    var hi = key_hi;
    loop {
      if (lo >= hi) { break; }
      let mid = lo + ((hi - lo) >> 1u);
      if (masked_sum(base, m, mid, false) < pz) { hi = mid; } else { lo = mid + 1u; }
    }
    t = lo;
  }
  // inverse CDF over {key >= t}: chunk sums, the owning chunk, then its walk
  let chunk = (V + RED - 1u) / RED;
  var sums: array<f32, RED>;
  for (var j = 0u; j < V; j++) {
    let l = logits[base + j];
    if (key_of(l) >= t) { sums[j / chunk] += exp((l - m) * P.inv_t); }
  }
  var total = 0.0;
  for (var i = 0u; i < RED; i++) { total += sums[i]; }
  let goal = f32(hash3(vec3<u32>(streams[2u * row], streams[2u * row + 1u], P.seed)).x >> 8u) * (1.0 / 16777216.0) * total;
  var run = 0.0;
  var owner = 0u;
  var start = 0.0;
  var found = false;
  for (var i = 0u; i < RED; i++) {
    if (sums[i] > 0.0 && (!found || run <= goal)) { owner = i; start = run; found = true; }
    run += sums[i];
  }
  var tok = 0xffffffffu;
  var last = 0u;
  run = start;
  for (var j = min(owner * chunk, V); j < min(owner * chunk + chunk, V); j++) {
    let l = logits[base + j];
    if (key_of(l) < t) { continue; }
    let e = exp((l - m) * P.inv_t);
    if (e > 0.0) { last = j; }
    run += e;
    if (run > goal) { tok = j; break; }
  }
  if (tok == 0xffffffffu) { tok = last; }
  tokens[row] = tok;
  logp[row] = (logits[base + tok] - m) * P.inv_t - log(z);
}
