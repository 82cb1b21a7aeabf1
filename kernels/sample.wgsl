// Token sampling: one workgroup per row of logits [B, V].
//
// Per row (CPU reference with the same steps: src/kernels/sample.ts):
//   0. only ids < limit take part (a padded vocabulary: config vocab_size
//      above the tokenizer's size); the padded logits are never read, as if
//      they were -inf before temperature, top-k and top-p.
//   1. max logit (first index on ties), min logit;  Z = sum exp((l - max) / T)
//   2. greedy (T = 0): token = argmax, logp = log_softmax(l)[token]; done.
//   3. top-k: bisection on the order-preserving u32 key of the logit for the
//      largest key t_k with count(key >= t_k) >= k; every token tied at t_k
//      is kept (so ties never depend on index order).
//   4. top-p (HF): a token is kept when the mass of strictly higher logits
//      (within the top-k set, renormalised) is < p. That set is {key >= t_p}
//      with t_p the smallest key x whose mass above x is < p * Z_k: found by
//      bisection on the key. Ties are kept together.
//   5. draw u in [0,1) from a counter-based hash of (seed, request key, token
//      index) (the row's stream: a completion's draws depend on its request
//      only, whatever batch, slot or order it runs in), then
//      inverse CDF in index order over the kept tokens: each thread owns a
//      contiguous chunk, thread 0 scans the chunk sums, the owning thread
//      walks its chunk.
//   logp = log softmax(l / T)[token], before truncation (the behaviour policy).
// Every reduction has a fixed order, so a row's result is reproducible.
//
// Decode variant (ADV = "", PLAIN = "//"; the plain sampler: ADV = "//",
// PLAIN = ""): instead of writing tokens and logp, the lane that draws a
// row's token does that row's decode `advance` (kernels/decode.wgsl, CPU
// reference advanceRef in src/kernels/decode.ts) in the same dispatch:
// appends (token, log-prob bits) to the row's output window in `dec`, checks
// its stop ids and budget, and feeds the token to the next step (dec_tokens,
// dec_pos, and the stream index in `streams`, read above by lane 0 before
// the barrier that precedes the pick). One dispatch a decode step fewer.
// With GATHER = "" it also writes the next step's input embedding,
// x[row] = embed[dec_tokens[row]] (the whole vocabulary in one binding), as
// the embedding gather would: one more dispatch fewer. Bindings are
// numbered in the order the wrapper passes them, so the two variants number
// theirs differently.
//
// Subgroup variant (SG = "", adapters with `subgroups`; SG = "//" compiles it
// out): every workgroup reduction (max/argmax, min, the sums of the bisections
// and of Z) first reduces within each subgroup (subgroupAdd / Min / Max), so
// the shared-memory tree stops at stride subgroup_size: log2(WG / sg) barriers
// a reduction instead of log2(WG), ~32 bisection steps a row for top-p. As in
// kernels/logprob.wgsl this needs subgroup k to be invocations k·sg ..
// k·sg + sg − 1, which WGSL does not promise: it is checked once per
// workgroup, and where it fails every lane keeps its own value and the full
// tree runs. Both orders are fixed, so results stay reproducible per adapter.
{{SG}}enable subgroups;
{{ENABLE}}

struct Params {
  V: u32,        // row stride of logits (the model's vocab_size)
  top_k: u32,    // 0 = off
  greedy: u32,   // 1: argmax
  inv_t: f32,    // 1 / temperature (1 when greedy)
  top_p: f32,    // >= 1 = off
  seed: u32,
  limit: u32,    // ids >= limit (a padded vocabulary's rows) are masked out
  row0: u32,     // decode variant: this dispatch's first row among the R rows of dec
  K: u32,        // decode variant: steps per window
  s: u32,        // decode variant: this step's index in the window
  out_base: u32, // decode variant: u32 index in `dec` where the output window starts
  H: u32,        // decode variant with GATHER: hidden size (an embedding row)
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;     // [B, V]
{{PLAIN}}@group(0) @binding(2) var<storage, read_write> tokens: array<u32>; // [B]
{{PLAIN}}@group(0) @binding(3) var<storage, read_write> logp: array<f32>;   // [B]
{{PLAIN}}@group(0) @binding(4) var<storage, read> streams: array<u32>;      // [B, 2]: request key, token index
{{ADV}}@group(0) @binding(2) var<storage, read_write> streams: array<u32>;    // [B, 2]
{{ADV}}@group(0) @binding(3) var<storage, read_write> dec_tokens: array<u32>; // [R] next forward's input ids
{{ADV}}@group(0) @binding(4) var<storage, read_write> dec_pos: array<u32>;    // [R] next forward's positions
{{ADV}}@group(0) @binding(5) var<storage, read_write> dec: array<u32>;        // row states [R, STATE], window [R, K, 2] at out_base
{{GATHER}}@group(0) @binding(6) var<storage, read> embed: array<{{T}}>;        // [vocabulary, H]
{{GATHER}}@group(0) @binding(7) var<storage, read_write> x: array<{{T}}>;      // [R, H] the next forward's input
{{GATHER}}var<workgroup> next_tok: u32;
{{ADV}}const MAX_STOP: u32 = {{MAX_STOP}}u;
{{ADV}}const STATE: u32 = 4u + MAX_STOP;

const WG: u32 = {{WG}}u;

var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> pick: vec2<u32>; // (owning thread, 0) chosen by thread 0
var<workgroup> pick_start: f32; // exclusive prefix of the owning thread's chunk
var<workgroup> pick_target: f32;
var<workgroup> not_blocked: atomic<u32>; // 1: some subgroup is not one aligned block of invocations

/// Order-preserving map f32 -> u32 (-0 folded onto +0).
fn key_of(x: f32) -> u32 {
  let b = bitcast<u32>(select(x, 0.0, x == 0.0));
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

/// PCG-style 3D hash (Jarzynski & Olano 2020 construction); all lanes mixed.
fn hash3(v0: vec3<u32>) -> vec3<u32> {
  var v = v0 * 1664525u + 1013904223u;
  v.x += v.y * v.z; v.y += v.z * v.x; v.z += v.x * v.y;
  v ^= v >> vec3<u32>(16u);
  v.x += v.y * v.z; v.y += v.z * v.x; v.z += v.x * v.y;
  return v;
}

/// Uniform in [0, 1) with 24 random bits, from (seed, request key, token index).
fn uniform01(seed: u32, key: u32, index: u32) -> f32 {
  let h = hash3(vec3<u32>(key, index, seed));
  return f32(h.x >> 8u) * (1.0 / 16777216.0);
}

fn reduce_sum_f(v: f32, lid: u32, stop: u32) -> f32 {
  var x = v;
  {{SG}}x = select(v, subgroupAdd(v), stop > 1u);
  red_f[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s >= stop; s >>= 1u) {
    if (lid < s) { red_f[lid] = red_f[lid] + red_f[lid + s]; }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&red_f[0]);
  workgroupBarrier(); // everyone has read red_f[0] before it is written again
  return r;
}

fn reduce_sum_u(v: u32, lid: u32, stop: u32) -> u32 {
  var x = v;
  {{SG}}x = select(v, subgroupAdd(v), stop > 1u);
  red_u[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s >= stop; s >>= 1u) {
    if (lid < s) { red_u[lid] = red_u[lid] + red_u[lid + s]; }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&red_u[0]);
  workgroupBarrier();
  return r;
}

fn reduce_min_u(v: u32, lid: u32, stop: u32) -> u32 {
  var x = v;
  {{SG}}x = select(v, subgroupMin(v), stop > 1u);
  red_u[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s >= stop; s >>= 1u) {
    if (lid < s) { red_u[lid] = min(red_u[lid], red_u[lid + s]); }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&red_u[0]);
  workgroupBarrier();
  return r;
}

/// Max key with the lowest index among equal keys; returns (key, index).
fn reduce_argmax(k: u32, i: u32, lid: u32, stop: u32) -> vec2<u32> {
  var kk = k;
  var ii = i;
  // the subgroup's max key, then the lowest index holding it
  {{SG}}let km = subgroupMax(k);
  {{SG}}let im = subgroupMin(select(0xffffffffu, i, k == km));
  {{SG}}kk = select(k, km, stop > 1u);
  {{SG}}ii = select(i, im, stop > 1u);
  red_u[lid] = kk;
  red_i[lid] = ii;
  workgroupBarrier();
  for (var s = WG / 2u; s >= stop; s >>= 1u) {
    if (lid < s) {
      let ka = red_u[lid];
      let kb = red_u[lid + s];
      let ib = red_i[lid + s];
      if (kb > ka || (kb == ka && ib < red_i[lid])) {
        red_u[lid] = kb;
        red_i[lid] = ib;
      }
    }
    workgroupBarrier();
  }
  let r = vec2<u32>(workgroupUniformLoad(&red_u[0]), workgroupUniformLoad(&red_i[0]));
  workgroupBarrier();
  return r;
}

/// Decode variant: kernels/decode.wgsl's `advance` for row `r` of this dispatch (`streams` is
/// bound from the dispatch's first row; dec, dec_tokens and dec_pos from row 0).
{{ADV}}fn advance(r: u32, tok: u32, lp: f32) {
{{ADV}}  let i = P.row0 + r;
{{ADV}}  advance_row(r, i, tok, lp);
{{GATHER}}  next_tok = dec_tokens[i]; // the next input: the token fed on, or a stopped row's last one
{{ADV}}}

{{ADV}}fn advance_row(r: u32, i: u32, tok: u32, lp: f32) {
{{ADV}}  let st = i * STATE;
{{ADV}}  if (dec[st + 1u] != 0u) { return; }
{{ADV}}  let o = P.out_base + (i * P.K + P.s) * 2u;
{{ADV}}  dec[o] = tok;
{{ADV}}  dec[o + 1u] = bitcast<u32>(lp);
{{ADV}}  let n = dec[st] + 1u;
{{ADV}}  dec[st] = n;
{{ADV}}  var stop = n >= dec[st + 2u];
{{ADV}}  let ns = min(dec[st + 3u], MAX_STOP);
{{ADV}}  for (var j = 0u; j < ns; j++) {
{{ADV}}    if (dec[st + 4u + j] == tok) { stop = true; }
{{ADV}}  }
{{ADV}}  if (stop) {
{{ADV}}    dec[st + 1u] = 1u;
{{ADV}}    return;
{{ADV}}  }
{{ADV}}  dec_tokens[i] = tok;
{{ADV}}  dec_pos[i] = dec_pos[i] + 1u;
{{ADV}}  streams[2u * r + 1u] = n;
{{ADV}}}

/// Decode variant with GATHER: every lane copies part of the next input's embedding row
/// (after the advance lane has set next_tok; workgroupUniformLoad is the barrier).
{{GATHER}}fn gather_next(r: u32, lid: u32) {
{{GATHER}}  let tok = workgroupUniformLoad(&next_tok);
{{GATHER}}  let o = (P.row0 + r) * P.H;
{{GATHER}}  for (var d = lid; d < P.H; d += WG) { x[o + d] = embed[tok * P.H + d]; }
{{GATHER}}}

@compute @workgroup_size({{WG}})
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
          {{SG}}@builtin(subgroup_size) sg_size: u32,
) {
  // Smallest tree stride: 1 (the full tree), or the subgroup size once the subgroups are
  // known to be aligned blocks of sg_size invocations (checked once per workgroup).
  var stop = 1u;
  {{SG}}let block = lid / sg_size;
  {{SG}}let lanes = subgroupAdd(1u);
  {{SG}}if (subgroupMin(block) != subgroupMax(block) || lanes != sg_size || sg_size > WG) { atomicStore(&not_blocked, 1u); }
  {{SG}}if (workgroupUniformLoad(&not_blocked) == 0u) { stop = sg_size; }
  // Only ids < limit exist: the rows above (a checkpoint's vocabulary padding)
  // are never read, so every step below sees softmax over [0, limit) only.
  let V = P.limit;
  let row = wid.x;
  let base = row * P.V;

  // 1. max key (first index), min key
  var kmax = 0u;
  var imax = 0xffffffffu;
  var kmin = 0xffffffffu;
  for (var j = lid; j < V; j += WG) {
    let k = key_of(logits[base + j]);
    if (imax == 0xffffffffu || k > kmax) { kmax = k; imax = j; }
    kmin = min(kmin, k);
  }
  let am = reduce_argmax(kmax, imax, lid, stop);
  let key_hi = am.x;
  let arg = am.y;
  let key_lo = reduce_min_u(kmin, lid, stop);
  let m = logits[base + arg];
  let inv_t = P.inv_t;

  var z_part = 0.0;
  for (var j = lid; j < V; j += WG) {
    z_part += exp((logits[base + j] - m) * inv_t);
  }
  let z = reduce_sum_f(z_part, lid, stop);

  if (P.greedy != 0u) {
    if (lid == 0u) {
      let lp = -log(z);
      {{PLAIN}}tokens[row] = arg;
      {{PLAIN}}logp[row] = lp;
      {{ADV}}advance(row, arg, lp);
    }
    {{GATHER}}gather_next(row, lid);
    return;
  }

  // 3. top-k threshold: largest key t with count(key >= t) >= k
  var t = key_lo;
  var zk = z;
  if (P.top_k > 0u && P.top_k < V) {
    var lo = key_lo;
    var hi = key_hi;
    loop {
      if (lo >= hi) { break; }
      let d = hi - lo;
      let mid = lo + (d >> 1u) + (d & 1u);
      var c = 0u;
      for (var j = lid; j < V; j += WG) {
        c += select(0u, 1u, key_of(logits[base + j]) >= mid);
      }
      if (reduce_sum_u(c, lid, stop) >= P.top_k) { lo = mid; } else { hi = mid - 1u; }
    }
    t = lo;
    var zp = 0.0;
    for (var j = lid; j < V; j += WG) {
      let l = logits[base + j];
      if (key_of(l) >= t) { zp += exp((l - m) * inv_t); }
    }
    zk = reduce_sum_f(zp, lid, stop);
  }

  // 4. top-p threshold: smallest key x >= t with mass(key > x) < p * Z_k
  if (P.top_p < 1.0) {
    let pz = P.top_p * zk;
    var lo = t;
    var hi = key_hi;
    loop {
      if (lo >= hi) { break; }
      let mid = lo + ((hi - lo) >> 1u);
      var g = 0.0;
      for (var j = lid; j < V; j += WG) {
        let l = logits[base + j];
        if (key_of(l) > mid) { g += exp((l - m) * inv_t); }
      }
      if (reduce_sum_f(g, lid, stop) < pz) { hi = mid; } else { lo = mid + 1u; }
    }
    t = lo;
  }

  // 5. inverse CDF in index order over {key >= t}
  let chunk = (V + WG - 1u) / WG;
  let j0 = min(lid * chunk, V);
  let j1 = min(j0 + chunk, V);
  var c = 0.0;
  for (var j = j0; j < j1; j++) {
    let l = logits[base + j];
    if (key_of(l) >= t) { c += exp((l - m) * inv_t); }
  }
  red_f[lid] = c;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var i = 0u; i < WG; i++) { total += red_f[i]; }
    let goal = uniform01(P.seed, streams[2u * row], streams[2u * row + 1u]) * total;
    var run = 0.0;
    var owner = 0u;
    var start = 0.0;
    var found = false;
    for (var i = 0u; i < WG; i++) {
      let ci = red_f[i];
      if (ci > 0.0 && (!found || run <= goal)) { owner = i; start = run; found = true; }
      run += ci;
    }
    pick = vec2<u32>(owner, 0u);
    pick_start = start;
    pick_target = goal;
  }
  workgroupBarrier();
  if (lid == pick.x) {
    let goal = pick_target;
    var run = pick_start;
    var tok = 0xffffffffu;
    var last = 0u;
    for (var j = j0; j < j1; j++) {
      let l = logits[base + j];
      if (key_of(l) >= t) {
        let e = exp((l - m) * inv_t);
        if (e > 0.0) { last = j; }
        run += e;
        if (run > goal) { tok = j; break; }
      }
    }
    if (tok == 0xffffffffu) { tok = last; } // rounding left the goal past the end
    let lp = (logits[base + tok] - m) * inv_t - log(z);
    {{PLAIN}}tokens[row] = tok;
    {{PLAIN}}logp[row] = lp;
    {{ADV}}advance(row, tok, lp);
  }
  {{GATHER}}gather_next(row, lid);
}
