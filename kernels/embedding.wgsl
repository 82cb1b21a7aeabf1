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
// [row0, row0 + rows), deterministic without float atomics. The host groups
// the tokens by id (it packed them: `groupTokens` in src/kernels/embedding.ts)
// into one u32 index: starts [U + 1] (group g's tokens are order[starts[g] ..
// starts[g + 1])), then the group ids [U], then order [T] (token positions,
// ascending within each group). Workgroup (g, column block) sums its group's
// dy rows in ascending token order and adds the sum onto the table row: each
// row has exactly one writer, a fixed summation order, and the work is one
// read of dy (O(T·D)), however few or many distinct ids there are.
// One invocation per (group, column); 2-D grid when U·ceil(D / WG) is large.
struct SParams {
  T: u32,
  D: u32,
  row0: u32,
  rows: u32,
  U: u32,     // distinct ids (groups)
}

@group(0) @binding(0) var<uniform> S: SParams;
@group(0) @binding(1) var<storage, read> s_index: array<u32>;         // [U + 1 + U + T]
@group(0) @binding(2) var<storage, read> s_dy: array<f32>;            // [T, D]
@group(0) @binding(3) var<storage, read_write> s_dtable: array<f32>;  // [rows, D], accumulated

@compute @workgroup_size({{WG}})
fn scatter_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
  let per_row = (S.D + {{WG}}u - 1u) / {{WG}}u;
  let w = wid.y * nwg.x + wid.x;
  let g = w / per_row;
  let d = (w % per_row) * {{WG}}u + lid.x;
  if (g >= S.U || d >= S.D) { return; }
  let row = s_index[S.U + 1u + g] - S.row0; // wraps to a huge value when id < row0
  if (row >= S.rows) { return; }
  let order0 = 2u * S.U + 1u;
  var acc = 0.0;
  for (var i = s_index[g]; i < s_index[g + 1u]; i++) {
    acc += s_dy[s_index[order0 + i] * S.D + d];
  }
  s_dtable[row * S.D + d] += acc;
}
