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
