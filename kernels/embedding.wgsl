// Token embedding gather: out[t, :] = table[ids[t] - row0, :] for the tokens
// whose id falls in this table chunk [row0, row0 + rows); other rows of out
// are left untouched, so a vocabulary split into chunks (each under the
// storage-binding limit) is gathered by one dispatch per chunk.
// One invocation per output element (t, d); 2-D grid when large.
{{ENABLE}}

struct Params {
  T: u32,     // tokens
  D: u32,     // hidden size
  row0: u32,  // first vocabulary row held by `table`
  rows: u32,  // rows held by `table`
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;          // [T]
@group(0) @binding(2) var<storage, read> table: array<{{T}}>;      // [rows, D]
@group(0) @binding(3) var<storage, read_write> out: array<{{T}}>;  // [T, D]

@compute @workgroup_size({{WG}})
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
  // Groups are laid out [T, ceil(D / WG)] so no u32 product T*D is formed.
  let per_row = (P.D + {{WG}}u - 1u) / {{WG}}u;
  let g = wid.y * nwg.x + wid.x;
  let t = g / per_row;
  let d = (g % per_row) * {{WG}}u + lid.x;
  if (t >= P.T || d >= P.D) { return; }
  let r = ids[t] - P.row0; // wraps to a huge value when ids[t] < row0
  if (r >= P.rows) { return; }
  out[t * P.D + d] = table[r * P.D + d];
}

// ---- scatter_add: the backward of gather (training; f32 only) ----
// dTable[id − row0, :] += Σ_{t: ids[t] = id} dy[t, :] for the ids in
// [row0, row0 + rows), deterministic without float atomics: workgroup t
// works only when t is the FIRST token carrying its id (a parallel scan of
// ids[0 .. t)), and then sums the dy rows of every token with that id in
// ascending token order, so each table row has exactly one writer and a
// fixed summation order. Cost: the owner of an id scans the ids after it,
// O(U·T) broadcast u32 reads for U distinct ids (T = 16384, U = 5000: ~4e7,
// estimated, not measured, at about a millisecond on a datacentre GPU), plus
// one read of dy; no sort, no CPU work. On the software adapter it is
// quadratic in practice (T = 4096 mostly distinct ids, D = 256: 1 s
// measured); a sort-based grouping would be O(T log T).
// Each invocation keeps {{PER}} f32 accumulators (columns lid + j·WG of a
// block of WG·PER columns); wider rows loop over column blocks.
// One workgroup per token; 2-D grid when T is large.
struct SParams {
  T: u32,
  D: u32,
  row0: u32,
  rows: u32,
}

@group(0) @binding(0) var<uniform> S: SParams;
@group(0) @binding(1) var<storage, read> s_ids: array<u32>;           // [T]
@group(0) @binding(2) var<storage, read> s_dy: array<f32>;            // [T, D]
@group(0) @binding(3) var<storage, read_write> s_dtable: array<f32>;  // [rows, D], accumulated

var<workgroup> s_seen: atomic<u32>;

@compute @workgroup_size({{WG}})
fn scatter_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wid.y * nwg.x + wid.x;
  if (t >= S.T) { return; } // uniform per workgroup
  let id = s_ids[t];
  let row = id - S.row0; // wraps to a huge value when id < row0
  if (row >= S.rows) { return; } // uniform per workgroup
  // Does an earlier token carry the same id? Then that token's workgroup owns the row.
  if (lid.x == 0u) { atomicStore(&s_seen, 0u); }
  workgroupBarrier();
  var seen = 0u;
  for (var k = lid.x; k < t; k += {{WG}}u) {
    if (s_ids[k] == id) { seen = 1u; break; }
  }
  if (seen != 0u) { atomicOr(&s_seen, 1u); }
  workgroupBarrier();
  if (atomicLoad(&s_seen) != 0u) { return; }
  for (var d0 = 0u; d0 < S.D; d0 += {{WG}}u * {{PER}}u) {
    var acc = array<f32, {{PER}}>(); // zeroed explicitly for every column block
    for (var k = t; k < S.T; k++) {
      if (s_ids[k] != id) { continue; }
      let base = k * S.D + d0 + lid.x;
      for (var j = 0u; j < {{PER}}u; j++) {
        if (d0 + lid.x + j * {{WG}}u < S.D) { acc[j] += s_dy[base + j * {{WG}}u]; }
      }
    }
    let out = row * S.D + d0 + lid.x;
    for (var j = 0u; j < {{PER}}u; j++) {
      if (d0 + lid.x + j * {{WG}}u < S.D) { s_dtable[out + j * {{WG}}u] += acc[j]; }
    }
  }
}
