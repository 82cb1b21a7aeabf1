// Attention over the paged KV cache (grouped-query, causal).
// Legend: T query tokens, NH query heads, NKV kv heads, G = NH / NKV query
// heads per kv head (query head h reads kv head h / G, as HF's repeat_kv),
// HD head dim, BS block size, MB max blocks per sequence slot.
//   q, k, v, out   [T, NH|NKV, HD]                         {{T}}
//   kcache, vcache [num_blocks, BS, NKV, HD]                {{T}}
//   table          [max_seqs, MB] u32: physical block of each logical block
//   tokSeq, tokPos [T] u32: sequence slot and position of each query token
// Position p of slot s lives in block table[s*MB + p/BS], row p % BS.
// Accumulation is always f32; softmax is online (running max m, sum l), so
// scores of any magnitude stay finite.
//
// Entry points:
//   write_kv:       copy each token's k, v into its (slot, position) row.
//   prefill:        a workgroup owns BR "rows" = consecutive (token, group
//                   head) pairs of one kv head, so consecutive tokens of one
//                   sequence and all heads sharing a kv head read each K/V tile
//                   from workgroup memory once. Rows of different sequences
//                   in one workgroup are handled one sequence after another.
//   decode_partial: flash-decoding. Workgroup (chunk, kv head x row group,
//                   token) attends the G heads of one token over one chunk
//                   of the context; writes unnormalised (o, m, l).
//   decode_combine: merges the chunks' (o, m, l) of each (token, head).
//   decode_rows:    decode on CPU-backed adapters: one invocation per
//                   (token, head), no tiles, one dispatch.
//
// Training (packed sequences, no cache; recompute-style backward):
//   q [T, NH, HD], k, v [T, NKV, HD], segStart [T] u32 (first token of each
//   token's sequence: token t attends to keys segStart[t]..t), lse [T, NH] f32
//   (log-sum-exp of the scaled scores), stats [T, NH, 2] f32 scratch (lse, D).
//   train_forward: as prefill, rows = (token, group head) pairs of one kv
//                  head; keys of the tile's span [min segStart, max t] with
//                  the per-row mask; writes out and lse.
//   train_delta:   stats = (lse, D = sum_d dout * out) per (token, head).
//   train_dq:      the forward's row tiling; per key tile recomputes
//                  P = exp(S - lse), dS = P * (dP - D), and dq += dS k.
//   train_dkdv:    a workgroup owns BC keys of one kv head (TPR threads per
//                  key) and walks the query rows that can see them in tiles
//                  of BR rows: dv += P^T dout, dk += dS^T q. Every gradient
//                  element is summed by one thread in a fixed order: the
//                  backward is deterministic with no atomics. Its query span
//                  ends at the first token whose segStart is past the tile,
//                  found by bisection: segStart must be non-decreasing
//                  (sequences packed contiguously), which the wrapper's
//                  reference checks.
//
// Thread layout (prefill and decode_partial): WG = BR * TPR threads; thread
// (r, j) scores columns j, j+TPR, ... of its row and accumulates output dims
// j, j+TPR, ... in registers (at most MAXHD / TPR of them).
// Compile-time constants: ENABLE, T, BR, BC (keys per tile), TPR, MAXHD.

{{ENABLE}}

struct Params {
  T: u32,
  nh: u32,
  nkv: u32,
  hd: u32,
  bs: u32,
  maxBlocks: u32,
  scale: f32,
  chunkLen: u32, // decode: context positions per chunk (a multiple of BC)
  nChunks: u32,  // decode: chunks per (token, head) in the scratch buffers
}

const WG: u32 = {{BR}}u * {{TPR}}u;
const NEG: f32 = -1.0e30;   // "minus infinity" that keeps exp() and max() finite
const NEG_HALF: f32 = -5.0e29;
const NO_KEY: u32 = 0xffffffffu;
const LD: u32 = {{MAXHD}}u + 1u; // max row stride in workgroup memory (+1 against bank conflicts)
const DPT: u32 = {{MAXHD}}u / {{TPR}}u;
const CPT: u32 = {{BC}}u / {{TPR}}u;

@group(0) @binding(0) var<uniform> P: Params;

// write_kv bindings
@group(0) @binding(1) var<storage, read> k_in: array<{{T}}>;
@group(0) @binding(2) var<storage, read> v_in: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> kc_w: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> vc_w: array<{{T}}>;
@group(0) @binding(5) var<storage, read> table_w: array<u32>;
@group(0) @binding(6) var<storage, read> seq_w: array<u32>;
@group(0) @binding(7) var<storage, read> pos_w: array<u32>;

// prefill / decode_partial bindings
@group(0) @binding(1) var<storage, read> q: array<{{T}}>;
@group(0) @binding(2) var<storage, read> kc: array<{{T}}>;
@group(0) @binding(3) var<storage, read> vc: array<{{T}}>;
@group(0) @binding(4) var<storage, read> table: array<u32>;
@group(0) @binding(5) var<storage, read> tokSeq: array<u32>;
@group(0) @binding(6) var<storage, read> tokPos: array<u32>;
@group(0) @binding(7) var<storage, read_write> out: array<{{T}}>;          // prefill
@group(0) @binding(7) var<storage, read_write> partO: array<f32>;          // decode_partial [T, NH, nChunks, HD]
@group(0) @binding(8) var<storage, read_write> partML: array<f32>;         // decode_partial [T, NH, nChunks, 2]

// decode_combine bindings
@group(0) @binding(1) var<storage, read> pos_c: array<u32>;
@group(0) @binding(2) var<storage, read> partO_c: array<f32>;
@group(0) @binding(3) var<storage, read> partML_c: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_c: array<{{T}}>;

var<workgroup> Qs: array<f32, {{BR}}u * LD>;
var<workgroup> Ks: array<f32, {{BC}}u * LD>;
var<workgroup> Vs: array<f32, {{BC}}u * LD>;
var<workgroup> Ss: array<f32, {{BR}}u * {{BC}}u>;
var<workgroup> rowSeq: array<u32, {{BR}}>;
var<workgroup> rowPos: array<u32, {{BR}}>;
var<workgroup> rowTodo: array<u32, {{BR}}>;
var<workgroup> kvBase: array<u32, {{BC}}>; // cache offset of each key of the tile, NO_KEY past the end
var<workgroup> segSeq: u32;
var<workgroup> segEnd: u32;

@compute @workgroup_size(64)
fn write_kv(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let per = P.nkv * P.hd;
  if (i >= P.T * per) { return; }
  let t = i / per;
  let rest = i % per; // kv head * HD + d
  let pos = pos_w[t];
  let lb = pos / P.bs;
  if (lb >= P.maxBlocks) { return; } // outside the slot's block table: the wrapper's reference throws
  let phys = table_w[seq_w[t] * P.maxBlocks + lb];
  let dst = (phys * P.bs + pos % P.bs) * per + rest;
  kc_w[dst] = k_in[i];
  vc_w[dst] = v_in[i];
}

/** Row of the cache holding position p of slot `seq`, kv head kvh (element offset). */
fn cache_row(seq: u32, p: u32, kvh: u32) -> u32 {
  let phys = table[seq * P.maxBlocks + p / P.bs];
  return ((phys * P.bs + p % P.bs) * P.nkv + kvh) * P.hd;
}

/**
 * Stage keys/values [k0, k0 + BC) of slot `seq` (zeros at and past `end`).
 * The caller has put each key's cache offset in kvBase (via set_kv_base and a barrier).
 */
fn load_kv_tile(lid: u32) {
  let hd = P.hd;
  for (var idx = lid; idx < {{BC}}u * hd; idx += WG) {
    let c = idx / hd;
    let d = idx - c * hd;
    let src = kvBase[c];
    var kx = 0.0;
    var vx = 0.0;
    if (src != NO_KEY) {
      kx = f32(kc[src + d]);
      vx = f32(vc[src + d]);
    }
    Ks[c * (hd + 1u) + d] = kx;
    Vs[c * (hd + 1u) + d] = vx;
  }
}

/** Threads 0..BC-1 look up the cache rows of keys [k0, k0 + BC) once per tile. */
fn set_kv_base(lid: u32, seq: u32, kvh: u32, k0: u32, end: u32) {
  if (lid < {{BC}}u) {
    let p = k0 + lid;
    kvBase[lid] = select(NO_KEY, cache_row(seq, min(p, end - 1u), kvh), p < end);
  }
}

/** Scores of row r (columns j, j+TPR, ...) into Ss; masked entries NEG. */
fn score_tile(r: u32, j: u32, live: bool, rpos: u32, k0: u32, end: u32) {
  let ld = P.hd + 1u;
  var acc: array<f32, CPT>;
  for (var d = 0u; d < P.hd; d++) {
    let qd = Qs[r * ld + d];
    for (var i = 0u; i < CPT; i++) {
      acc[i] += qd * Ks[(j + i * {{TPR}}u) * ld + d];
    }
  }
  for (var i = 0u; i < CPT; i++) {
    let c = j + i * {{TPR}}u;
    let p = k0 + c;
    Ss[r * {{BC}}u + c] = select(NEG, acc[i], live && p < end && p <= rpos);
  }
}

struct Running {
  m: f32,
  l: f32,
}

/** Online-softmax update of row r with the tile's scores; o holds dims j, j+TPR, ... */
fn accumulate_tile(r: u32, j: u32, run: ptr<function, Running>, o: ptr<function, array<f32, DPT>>) {
  let ld = P.hd + 1u;
  var mt = NEG;
  for (var c = 0u; c < {{BC}}u; c++) {
    mt = max(mt, Ss[r * {{BC}}u + c]);
  }
  let mNew = max((*run).m, mt);
  let alpha = exp((*run).m - mNew); // 0 when the old max was NEG and a real score came
  var p: array<f32, {{BC}}>;
  var sum = 0.0;
  for (var c = 0u; c < {{BC}}u; c++) {
    let s = Ss[r * {{BC}}u + c];
    p[c] = select(0.0, exp(s - mNew), s > NEG_HALF);
    sum += p[c];
  }
  (*run).l = (*run).l * alpha + sum;
  (*run).m = mNew;
  let nd = (P.hd - j + {{TPR}}u - 1u) / {{TPR}}u;
  for (var i = 0u; i < nd; i++) {
    let d = j + i * {{TPR}}u;
    var a = (*o)[i] * alpha;
    for (var c = 0u; c < {{BC}}u; c++) {
      a += p[c] * Vs[c * ld + d];
    }
    (*o)[i] = a;
  }
}

@compute @workgroup_size({{BR}} * {{TPR}})
fn prefill(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let G = P.nh / P.nkv;
  let kvh = wid.y;
  let r = lid / {{TPR}}u;
  let j = lid % {{TPR}}u;
  let hd = P.hd;
  let ld = hd + 1u;

  // Rows of this workgroup: flattened (token, group head) pairs.
  if (lid < {{BR}}u) {
    let gr = wid.x * {{BR}}u + lid;
    let valid = gr < P.T * G;
    let t = min(gr / G, P.T - 1u);
    rowSeq[lid] = tokSeq[t];
    rowPos[lid] = min(tokPos[t], P.maxBlocks * P.bs - 1u);
    rowTodo[lid] = select(0u, 1u, valid);
  }
  for (var idx = lid; idx < {{BR}}u * hd; idx += WG) {
    let rr = idx / hd;
    let d = idx % hd;
    let gr = wid.x * {{BR}}u + rr;
    var x = 0.0;
    if (gr < P.T * G) {
      let t = gr / G;
      let h = kvh * G + gr % G;
      x = f32(q[(t * P.nh + h) * hd + d]) * P.scale;
    }
    Qs[rr * ld + d] = x;
  }

  loop {
    workgroupBarrier();
    // Next sequence among the rows still to do, and how many keys it needs.
    if (lid == 0u) {
      var end = 0u;
      var seq = 0u;
      var found = false;
      for (var rr = 0u; rr < {{BR}}u; rr++) {
        if (rowTodo[rr] == 1u) {
          if (!found) {
            found = true;
            seq = rowSeq[rr];
          }
          if (rowSeq[rr] == seq) {
            end = max(end, rowPos[rr] + 1u);
          }
        }
      }
      segSeq = seq;
      segEnd = end;
    }
    let end = workgroupUniformLoad(&segEnd);
    if (end == 0u) { break; }
    let seq = segSeq;
    let live = rowTodo[r] == 1u && rowSeq[r] == seq;
    let rpos = rowPos[r];

    var run = Running(NEG, 0.0);
    var o: array<f32, DPT>;
    for (var k0 = 0u; k0 < end; k0 += {{BC}}u) {
      set_kv_base(lid, seq, kvh, k0, end);
      workgroupBarrier();
      load_kv_tile(lid);
      workgroupBarrier();
      score_tile(r, j, live, rpos, k0, end);
      workgroupBarrier();
      accumulate_tile(r, j, &run, &o);
      workgroupBarrier();
    }
    if (live) {
      let gr = wid.x * {{BR}}u + r;
      let t = gr / G;
      let h = kvh * G + gr % G;
      let inv = 1.0 / run.l;
      let nd = (hd - j + {{TPR}}u - 1u) / {{TPR}}u;
      for (var i = 0u; i < nd; i++) {
        out[(t * P.nh + h) * hd + j + i * {{TPR}}u] = {{T}}(o[i] * inv);
      }
    }
    workgroupBarrier();
    if (live && j == 0u) {
      rowTodo[r] = 0u;
    }
  }
}

@compute @workgroup_size({{BR}} * {{TPR}})
fn decode_partial(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let G = P.nh / P.nkv;
  let rowGroups = (G + {{BR}}u - 1u) / {{BR}}u;
  let chunk = wid.x;
  let kvh = wid.y / rowGroups;
  let g0 = (wid.y % rowGroups) * {{BR}}u;
  let t = wid.z;
  let r = lid / {{TPR}}u;
  let j = lid % {{TPR}}u;
  let hd = P.hd;
  let ld = hd + 1u;

  if (lid == 0u) {
    segSeq = tokSeq[t];
    segEnd = min(tokPos[t], P.maxBlocks * P.bs - 1u) + 1u;
  }
  for (var idx = lid; idx < {{BR}}u * hd; idx += WG) {
    let rr = idx / hd;
    let d = idx % hd;
    var x = 0.0;
    if (g0 + rr < G) {
      x = f32(q[(t * P.nh + kvh * G + g0 + rr) * hd + d]) * P.scale;
    }
    Qs[rr * ld + d] = x;
  }
  let n = workgroupUniformLoad(&segEnd);
  let seq = segSeq;
  let start = chunk * P.chunkLen;
  let end = min(start + P.chunkLen, n);
  let live = g0 + r < G;
  let rpos = n - 1u;

  var run = Running(NEG, 0.0);
  var o: array<f32, DPT>;
  for (var k0 = start; k0 < end; k0 += {{BC}}u) {
    set_kv_base(lid, seq, kvh, k0, end);
    workgroupBarrier();
    load_kv_tile(lid);
    workgroupBarrier();
    score_tile(r, j, live, rpos, k0, end);
    workgroupBarrier();
    accumulate_tile(r, j, &run, &o);
    workgroupBarrier();
  }
  if (live && start < end) {
    let slot = (t * P.nh + kvh * G + g0 + r) * P.nChunks + chunk;
    let nd = (hd - j + {{TPR}}u - 1u) / {{TPR}}u;
    for (var i = 0u; i < nd; i++) {
      partO[slot * hd + j + i * {{TPR}}u] = o[i];
    }
    if (j == 0u) {
      partML[slot * 2u] = run.m;
      partML[slot * 2u + 1u] = run.l;
    }
  }
}

// decode_rows: decode for CPU-backed adapters (lavapipe), where workgroup
// barriers are what costs: one invocation per (token, head) walks its whole
// context with no shared tiles, two passes (the max score, then the
// exponentials and the weighted values in f32 registers), and writes the
// output directly: one dispatch instead of decode_partial + decode_combine.
// Same inputs and output as prefill's bindings.
@compute @workgroup_size(64)
fn decode_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let th = gid.x + gid.y * nwg.x * 64u; // (token, head)
  if (th >= P.T * P.nh) { return; }
  let t = th / P.nh;
  let h = th % P.nh;
  let kvh = h / (P.nh / P.nkv);
  let seq = tokSeq[t];
  let n = min(tokPos[t], P.maxBlocks * P.bs - 1u) + 1u;
  let hd = P.hd;
  let qo = th * hd;
  var m = NEG;
  for (var p = 0u; p < n; p++) {
    let ko = cache_row(seq, p, kvh);
    var s = 0.0;
    for (var d = 0u; d < hd; d++) { s += f32(q[qo + d]) * f32(kc[ko + d]); }
    m = max(m, s * P.scale);
  }
  var acc: array<f32, {{MAXHD}}>;
  var l = 0.0;
  for (var p = 0u; p < n; p++) {
    let ko = cache_row(seq, p, kvh);
    var s = 0.0;
    for (var d = 0u; d < hd; d++) { s += f32(q[qo + d]) * f32(kc[ko + d]); }
    let w = exp(s * P.scale - m);
    l += w;
    for (var d = 0u; d < hd; d++) { acc[d] += w * f32(vc[ko + d]); }
  }
  for (var d = 0u; d < hd; d++) { out[qo + d] = {{T}}(acc[d] / l); }
}

@compute @workgroup_size(64)
fn decode_combine(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let th = wid.x + wid.y * 65535u; // (token, head) index
  if (th >= P.T * P.nh) { return; }
  let t = th / P.nh;
  let n = min(pos_c[t], P.maxBlocks * P.bs - 1u) + 1u;
  let used = min((n + P.chunkLen - 1u) / P.chunkLen, P.nChunks); // chunks that saw keys
  let base = th * P.nChunks;
  var m = NEG;
  for (var c = 0u; c < used; c++) {
    m = max(m, partML_c[(base + c) * 2u]);
  }
  var l = 0.0;
  for (var c = 0u; c < used; c++) {
    l += partML_c[(base + c) * 2u + 1u] * exp(partML_c[(base + c) * 2u] - m);
  }
  let inv = 1.0 / l;
  for (var d = lid; d < P.hd; d += 64u) {
    var a = 0.0;
    for (var c = 0u; c < used; c++) {
      a += partO_c[(base + c) * P.hd + d] * exp(partML_c[(base + c) * 2u] - m);
    }
    out_c[th * P.hd + d] = {{T}}(a * inv);
  }
}

// ---------------------------------------------------------------- training
// With f16 operands (mixed-precision training; RND = rnd) every q, k, v and
// dout element is rounded to f16 as it is loaded; scores, the softmax, P and
// every sum stay f32.

{{RND_FN}}

// train_forward bindings (q at 1 as above)
@group(0) @binding(2) var<storage, read> tk: array<{{T}}>;
@group(0) @binding(3) var<storage, read> tv: array<{{T}}>;
@group(0) @binding(4) var<storage, read> segStart: array<u32>;
@group(0) @binding(5) var<storage, read_write> tOut: array<{{T}}>;
@group(0) @binding(6) var<storage, read_write> tLse: array<f32>;

// train_delta bindings
@group(0) @binding(1) var<storage, read> d_out: array<{{T}}>;
@group(0) @binding(2) var<storage, read> d_dout: array<{{T}}>;
@group(0) @binding(3) var<storage, read> d_lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_stats: array<f32>;

// train_dq / train_dkdv bindings (q, tk, tv, segStart at 1..4 as above)
@group(0) @binding(5) var<storage, read> tdOut: array<{{T}}>;
@group(0) @binding(6) var<storage, read> tStats: array<f32>;
@group(0) @binding(7) var<storage, read_write> tdq: array<{{T}}>;  // train_dq
@group(0) @binding(7) var<storage, read_write> tdk: array<{{T}}>;  // train_dkdv
@group(0) @binding(8) var<storage, read_write> tdv: array<{{T}}>;  // train_dkdv

var<workgroup> dOs: array<f32, {{BR}}u * LD>;
var<workgroup> Ps: array<f32, {{BR}}u * {{BC}}u>;
var<workgroup> rowTok: array<u32, {{BR}}>;
var<workgroup> rowLo: array<u32, {{BR}}>;
var<workgroup> rowLive: array<u32, {{BR}}>;
var<workgroup> rowLse: array<f32, {{BR}}>;
var<workgroup> rowD: array<f32, {{BR}}>;
var<workgroup> spanLo: u32;
var<workgroup> spanHi: u32;

const RPT: u32 = {{BR}}u / {{TPR}}u; // train_dkdv: query rows scored per thread

/**
 * Rows [r0, r0 + BR) of (token, group head) pairs of kv head kvh: token,
 * first key and liveness of each, and q * scale into Qs. `nt` threads.
 */
fn train_rows(lid: u32, nt: u32, r0: u32, G: u32, kvh: u32) {
  let hd = P.hd;
  if (lid < {{BR}}u) {
    let gr = r0 + lid;
    let t = min(gr / G, P.T - 1u);
    rowTok[lid] = t;
    rowLo[lid] = min(segStart[t], t);
    rowLive[lid] = select(0u, 1u, gr < P.T * G);
  }
  for (var idx = lid; idx < {{BR}}u * hd; idx += nt) {
    let rr = idx / hd;
    let d = idx - rr * hd;
    let gr = r0 + rr;
    var x = 0.0;
    if (gr < P.T * G) {
      x = {{RND}}(f32(q[((gr / G) * P.nh + kvh * G + gr % G) * hd + d])) * P.scale;
    }
    Qs[rr * (hd + 1u) + d] = x;
  }
}

/** dout rows and (lse, D) of the same rows as train_rows. */
fn train_rows_grad(lid: u32, nt: u32, r0: u32, G: u32, kvh: u32) {
  let hd = P.hd;
  if (lid < {{BR}}u) {
    let gr = r0 + lid;
    var lse = 0.0;
    var dd = 0.0;
    if (gr < P.T * G) {
      let th = (gr / G) * P.nh + kvh * G + gr % G;
      lse = tStats[2u * th];
      dd = tStats[2u * th + 1u];
    }
    rowLse[lid] = lse;
    rowD[lid] = dd;
  }
  for (var idx = lid; idx < {{BR}}u * hd; idx += nt) {
    let rr = idx / hd;
    let d = idx - rr * hd;
    let gr = r0 + rr;
    var x = 0.0;
    if (gr < P.T * G) {
      x = {{RND}}(f32(tdOut[((gr / G) * P.nh + kvh * G + gr % G) * hd + d]));
    }
    dOs[rr * (hd + 1u) + d] = x;
  }
}

/** Thread 0: the keys the live rows need, [min first key, max token + 1). */
fn train_span(lid: u32) {
  if (lid == 0u) {
    var lo = 0xffffffffu;
    var hi = 0u;
    for (var rr = 0u; rr < {{BR}}u; rr++) {
      if (rowLive[rr] == 1u) {
        lo = min(lo, rowLo[rr]);
        hi = max(hi, rowTok[rr] + 1u);
      }
    }
    spanLo = min(lo, hi);
    spanHi = hi;
  }
}

/** Keys/values [k0, k0 + BC) of kv head kvh into Ks, Vs (zeros at and past `end`). */
fn train_load_kv(lid: u32, nt: u32, kvh: u32, k0: u32, end: u32) {
  let hd = P.hd;
  for (var idx = lid; idx < {{BC}}u * hd; idx += nt) {
    let c = idx / hd;
    let d = idx - c * hd;
    let p = k0 + c;
    var kx = 0.0;
    var vx = 0.0;
    if (p < end) {
      let src = (p * P.nkv + kvh) * hd + d;
      kx = {{RND}}(f32(tk[src]));
      vx = {{RND}}(f32(tv[src]));
    }
    Ks[c * (hd + 1u) + d] = kx;
    Vs[c * (hd + 1u) + d] = vx;
  }
}

/** Scaled score of Qs row r and Ks column c (the same sum order in forward and backward). */
fn train_dot_qk(r: u32, c: u32) -> f32 {
  let ld = P.hd + 1u;
  var acc = 0.0;
  for (var d = 0u; d < P.hd; d++) {
    acc += Qs[r * ld + d] * Ks[c * ld + d];
  }
  return acc;
}

/** dout row r . value column c. */
fn train_dot_dov(r: u32, c: u32) -> f32 {
  let ld = P.hd + 1u;
  var acc = 0.0;
  for (var d = 0u; d < P.hd; d++) {
    acc += dOs[r * ld + d] * Vs[c * ld + d];
  }
  return acc;
}

/** Key p is visible to row r: live, in the row's sequence, not after it. */
fn train_visible(r: u32, p: u32) -> bool {
  return rowLive[r] == 1u && p >= rowLo[r] && p <= rowTok[r];
}

@compute @workgroup_size({{BR}} * {{TPR}})
fn train_forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let G = P.nh / P.nkv;
  let kvh = wid.y;
  let r = lid / {{TPR}}u;
  let j = lid % {{TPR}}u;
  train_rows(lid, WG, wid.x * {{BR}}u, G, kvh);
  workgroupBarrier();
  train_span(lid);
  let lo = workgroupUniformLoad(&spanLo);
  let hi = workgroupUniformLoad(&spanHi);

  var run = Running(NEG, 0.0);
  var o: array<f32, DPT>;
  for (var k0 = lo; k0 < hi; k0 += {{BC}}u) {
    train_load_kv(lid, WG, kvh, k0, hi);
    workgroupBarrier();
    for (var i = 0u; i < CPT; i++) {
      let c = j + i * {{TPR}}u;
      Ss[r * {{BC}}u + c] = select(NEG, train_dot_qk(r, c), train_visible(r, k0 + c));
    }
    workgroupBarrier();
    accumulate_tile(r, j, &run, &o);
    workgroupBarrier();
  }
  if (rowLive[r] == 1u) {
    let gr = wid.x * {{BR}}u + r;
    let th = (gr / G) * P.nh + kvh * G + gr % G;
    let inv = 1.0 / run.l;
    let nd = (P.hd - j + {{TPR}}u - 1u) / {{TPR}}u;
    for (var i = 0u; i < nd; i++) {
      tOut[th * P.hd + j + i * {{TPR}}u] = {{T}}(o[i] * inv);
    }
    if (j == 0u) {
      tLse[th] = run.m + log(run.l);
    }
  }
}

@compute @workgroup_size(64)
fn train_delta(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let th = gid.x + gid.y * nwg.x * 64u; // (token, head)
  if (th >= P.T * P.nh) { return; }
  var acc = 0.0;
  for (var d = 0u; d < P.hd; d++) {
    acc += {{RND}}(f32(d_dout[th * P.hd + d])) * f32(d_out[th * P.hd + d]);
  }
  d_stats[2u * th] = d_lse[th];
  d_stats[2u * th + 1u] = acc;
}

@compute @workgroup_size({{BR}} * {{TPR}})
fn train_dq(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let G = P.nh / P.nkv;
  let kvh = wid.y;
  let r = lid / {{TPR}}u;
  let j = lid % {{TPR}}u;
  let ld = P.hd + 1u;
  train_rows(lid, WG, wid.x * {{BR}}u, G, kvh);
  train_rows_grad(lid, WG, wid.x * {{BR}}u, G, kvh);
  workgroupBarrier();
  train_span(lid);
  let lo = workgroupUniformLoad(&spanLo);
  let hi = workgroupUniformLoad(&spanHi);
  let lse = rowLse[r];
  let dd = rowD[r];
  let nd = (P.hd - j + {{TPR}}u - 1u) / {{TPR}}u;

  var acc: array<f32, DPT>;
  for (var k0 = lo; k0 < hi; k0 += {{BC}}u) {
    train_load_kv(lid, WG, kvh, k0, hi);
    workgroupBarrier();
    for (var i = 0u; i < CPT; i++) {
      let c = j + i * {{TPR}}u;
      var ds = 0.0;
      if (train_visible(r, k0 + c)) {
        let p = exp(train_dot_qk(r, c) - lse);
        ds = p * (train_dot_dov(r, c) - dd);
      }
      Ss[r * {{BC}}u + c] = ds;
    }
    workgroupBarrier();
    for (var i = 0u; i < nd; i++) {
      let d = j + i * {{TPR}}u;
      var a = acc[i];
      for (var c = 0u; c < {{BC}}u; c++) {
        a += Ss[r * {{BC}}u + c] * Ks[c * ld + d];
      }
      acc[i] = a;
    }
    workgroupBarrier();
  }
  if (rowLive[r] == 1u) {
    let gr = wid.x * {{BR}}u + r;
    let th = (gr / G) * P.nh + kvh * G + gr % G;
    for (var i = 0u; i < nd; i++) {
      tdq[th * P.hd + j + i * {{TPR}}u] = {{T}}(acc[i] * P.scale);
    }
  }
}

@compute @workgroup_size({{BC}} * {{TPR}})
fn train_dkdv(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let nt = {{BC}}u * {{TPR}}u;
  let G = P.nh / P.nkv;
  let kvh = wid.y;
  let c = lid / {{TPR}}u;
  let j = lid % {{TPR}}u;
  let ld = P.hd + 1u;
  let k0 = wid.x * {{BC}}u;
  let k1 = min(k0 + {{BC}}u, P.T);
  let key = k0 + c;
  let keyLive = key < P.T;
  if (lid == 0u) {
    // First token at or after k1 whose sequence starts at or after k1: no
    // later query sees this tile (segStart is non-decreasing).
    var a = k1;
    var b = P.T;
    while (a < b) {
      let m = (a + b) / 2u;
      if (segStart[m] >= k1) { b = m; } else { a = m + 1u; }
    }
    spanHi = a;
  }
  train_load_kv(lid, nt, kvh, k0, k1);
  let rowsEnd = workgroupUniformLoad(&spanHi) * G;
  let nd = (P.hd - j + {{TPR}}u - 1u) / {{TPR}}u;

  var dk: array<f32, DPT>;
  var dv: array<f32, DPT>;
  for (var r0 = k0 * G; r0 < rowsEnd; r0 += {{BR}}u) {
    train_rows(lid, nt, r0, G, kvh);
    train_rows_grad(lid, nt, r0, G, kvh);
    workgroupBarrier();
    for (var i = 0u; i < RPT; i++) {
      let rr = j + i * {{TPR}}u;
      var p = 0.0;
      var ds = 0.0;
      if (keyLive && train_visible(rr, key)) {
        p = exp(train_dot_qk(rr, c) - rowLse[rr]);
        ds = p * (train_dot_dov(rr, c) - rowD[rr]);
      }
      Ps[rr * {{BC}}u + c] = p;
      Ss[rr * {{BC}}u + c] = ds;
    }
    workgroupBarrier();
    for (var i = 0u; i < nd; i++) {
      let d = j + i * {{TPR}}u;
      var a = dv[i];
      var b = dk[i];
      for (var rr = 0u; rr < {{BR}}u; rr++) {
        a += Ps[rr * {{BC}}u + c] * dOs[rr * ld + d];
        b += Ss[rr * {{BC}}u + c] * Qs[rr * ld + d]; // Qs holds q * scale: dk = dS^T q scale
      }
      dv[i] = a;
      dk[i] = b;
    }
    workgroupBarrier();
  }
  if (keyLive) {
    let base = (key * P.nkv + kvh) * P.hd;
    for (var i = 0u; i < nd; i++) {
      tdk[base + j + i * {{TPR}}u] = {{T}}(dk[i]);
      tdv[base + j + i * {{TPR}}u] = {{T}}(dv[i]);
    }
  }
}

// ---- training, one invocation per row (CPU-backed adapters) ----
// The same results as train_forward / train_dq / train_dkdv with no shared
// tiles and no barriers (where barriers are what costs): an invocation per
// (token, head) for the forward and dq, per (key, kv head) for dk and dv,
// walking its keys (queries) serially in f32. Same bindings as the tiled
// entry points; the wrapper picks one form per adapter kind. Loaded for one
// head dim (the training model's), HDL is that constant and RHD equals it: the
// loops over d have a fixed trip count and the accumulators fit registers;
// otherwise HDL is P.hd and RHD the largest head dim.

/** Query row th (token t, head h), each element as the products read it. */
fn train_row_q(th: u32) -> array<f32, {{RHD}}> {
  var r: array<f32, {{RHD}}>;
  for (var d = 0u; d < {{HDL}}; d++) { r[d] = {{RND}}(f32(q[th * P.hd + d])); }
  return r;
}

/** Scaled score of a query row (train_row_q) against key p of kv head kvh. */
fn train_score(qr: array<f32, {{RHD}}>, p: u32, kvh: u32) -> f32 {
  var s = 0.0;
  let ko = (p * P.nkv + kvh) * P.hd;
  for (var d = 0u; d < {{HDL}}; d++) { s += qr[d] * {{RND}}(f32(tk[ko + d])); }
  return s * P.scale;
}

@compute @workgroup_size(64)
fn train_forward_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let th = gid.x + gid.y * nwg.x * 64u; // (token, head)
  if (th >= P.T * P.nh) { return; }
  let t = th / P.nh;
  let kvh = (th % P.nh) / (P.nh / P.nkv);
  let lo = min(segStart[t], t);
  let qr = train_row_q(th);
  var m = NEG;
  for (var p = lo; p <= t; p++) { m = max(m, train_score(qr, p, kvh)); }
  var acc: array<f32, {{RHD}}>;
  var l = 0.0;
  for (var p = lo; p <= t; p++) {
    let w = exp(train_score(qr, p, kvh) - m);
    l += w;
    let vo = (p * P.nkv + kvh) * P.hd;
    for (var d = 0u; d < {{HDL}}; d++) { acc[d] += w * {{RND}}(f32(tv[vo + d])); }
  }
  for (var d = 0u; d < {{HDL}}; d++) { tOut[th * P.hd + d] = {{T}}(acc[d] / l); }
  tLse[th] = m + log(l);
}

/** dout row th, each element as the products read it. */
fn train_row_dout(th: u32) -> array<f32, {{RHD}}> {
  var r: array<f32, {{RHD}}>;
  for (var d = 0u; d < {{HDL}}; d++) { r[d] = {{RND}}(f32(tdOut[th * P.hd + d])); }
  return r;
}

/** A dout row (train_row_dout) · v of key p (kv head kvh). */
fn train_dov(orow: array<f32, {{RHD}}>, p: u32, kvh: u32) -> f32 {
  var s = 0.0;
  let vo = (p * P.nkv + kvh) * P.hd;
  for (var d = 0u; d < {{HDL}}; d++) { s += orow[d] * {{RND}}(f32(tv[vo + d])); }
  return s;
}

@compute @workgroup_size(64)
fn train_dq_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let th = gid.x + gid.y * nwg.x * 64u; // (token, head)
  if (th >= P.T * P.nh) { return; }
  let t = th / P.nh;
  let kvh = (th % P.nh) / (P.nh / P.nkv);
  let lse = tStats[2u * th];
  let dd = tStats[2u * th + 1u];
  let qr = train_row_q(th);
  let orow = train_row_dout(th);
  var acc: array<f32, {{RHD}}>;
  for (var p = min(segStart[t], t); p <= t; p++) {
    let ds = exp(train_score(qr, p, kvh) - lse) * (train_dov(orow, p, kvh) - dd);
    let ko = (p * P.nkv + kvh) * P.hd;
    for (var d = 0u; d < {{HDL}}; d++) { acc[d] += ds * {{RND}}(f32(tk[ko + d])); }
  }
  for (var d = 0u; d < {{HDL}}; d++) { tdq[th * P.hd + d] = {{T}}(acc[d] * P.scale); }
}

@compute @workgroup_size(64)
fn train_dkdv_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let pk = gid.x + gid.y * nwg.x * 64u; // (key, kv head)
  if (pk >= P.T * P.nkv) { return; }
  let key = pk / P.nkv;
  let kvh = pk % P.nkv;
  let G = P.nh / P.nkv;
  // This key's k and v rows, kept: each (query, head) below reads them once more.
  var kr: array<f32, {{RHD}}>;
  var vr: array<f32, {{RHD}}>;
  let ko = (key * P.nkv + kvh) * P.hd;
  for (var d = 0u; d < {{HDL}}; d++) {
    kr[d] = {{RND}}(f32(tk[ko + d]));
    vr[d] = {{RND}}(f32(tv[ko + d]));
  }
  var dk: array<f32, {{RHD}}>;
  var dv: array<f32, {{RHD}}>;
  // queries that see this key: from the key itself to the end of its sequence (segStart is non-decreasing)
  for (var t = key; t < P.T && segStart[t] <= key; t++) {
    for (var g = 0u; g < G; g++) {
      let th = t * P.nh + kvh * G + g;
      let qr = train_row_q(th);
      let orow = train_row_dout(th);
      var s = 0.0;
      var o = 0.0;
      for (var d = 0u; d < {{HDL}}; d++) {
        s += qr[d] * kr[d];
        o += orow[d] * vr[d];
      }
      let pr = exp(s * P.scale - tStats[2u * th]);
      let ds = pr * (o - tStats[2u * th + 1u]);
      for (var d = 0u; d < {{HDL}}; d++) {
        dv[d] += pr * orow[d];
        dk[d] += ds * qr[d] * P.scale;
      }
    }
  }
  let base = pk * P.hd;
  for (var d = 0u; d < {{HDL}}; d++) {
    tdk[base + d] = {{T}}(dk[d]);
    tdv[base + d] = {{T}}(dv[d]);
  }
}
