// Baseline for benchmarks/kernels.ts: attention over the paged KV cache with
// one thread per (query token, head) and a two-pass softmax over the context:
// pass 1 takes the max score, pass 2 recomputes each score, exponentiates
// and accumulates the weighted values in a private array. No K/V tiles in
// workgroup memory, no split of the context (kernels/attention.wgsl does both).
// Serves prefill and decode alike: token t attends to positions 0..pos[t] of
// slot seq[t], GQA head h reading kv head h / (nh / nKv).
{{ENABLE}}

struct Params {
  T: u32,
  nh: u32,
  nKv: u32,
  hd: u32,
  block_size: u32,
  max_blocks: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<{{T}}>;            // [T, nh, hd]
@group(0) @binding(2) var<storage, read> kcache: array<{{T}}>;       // [blocks, bs, nKv, hd]
@group(0) @binding(3) var<storage, read> vcache: array<{{T}}>;       // [blocks, bs, nKv, hd]
@group(0) @binding(4) var<storage, read> block_table: array<u32>;    // [slots, max_blocks]
@group(0) @binding(5) var<storage, read> tok_seq: array<u32>;        // [T]
@group(0) @binding(6) var<storage, read> tok_pos: array<u32>;        // [T]
@group(0) @binding(7) var<storage, read_write> out: array<{{T}}>;    // [T, nh, hd]

/// Element offset of (slot, position, kv head) in the paged cache.
fn row_of(seq: u32, p: u32, kvh: u32) -> u32 {
  let phys = block_table[seq * P.max_blocks + p / P.block_size];
  return ((phys * P.block_size + p % P.block_size) * P.nKv + kvh) * P.hd;
}

fn score(qo: u32, ko: u32) -> f32 {
  var s = 0.0;
  for (var d = 0u; d < P.hd; d++) { s += f32(q[qo + d]) * f32(kcache[ko + d]); }
  return s * P.scale;
}

@compute @workgroup_size({{WG}})
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let th = gid.x;
  if (th >= P.T * P.nh) { return; }
  let t = th / P.nh;
  let kvh = (th % P.nh) / (P.nh / P.nKv);
  let seq = tok_seq[t];
  let n = tok_pos[t] + 1u;
  let qo = th * P.hd;
  var m = -3.4028234e38;
  for (var p = 0u; p < n; p++) { m = max(m, score(qo, row_of(seq, p, kvh))); }
  var acc: array<f32, {{MAXHD}}>;
  var l = 0.0;
  for (var p = 0u; p < n; p++) {
    let ko = row_of(seq, p, kvh);
    let w = exp(score(qo, ko) - m);
    l += w;
    for (var d = 0u; d < P.hd; d++) { acc[d] += w * f32(vcache[ko + d]); }
  }
  for (var d = 0u; d < P.hd; d++) { out[qo + d] = {{T}}(acc[d] / l); }
}
