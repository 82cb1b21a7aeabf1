// Dynamic loss scaling (mixed-precision training): x[i] *= s over n f32
// elements, in place. The trainer scales d loss / d logp by the loss scale S
// before the backward (so f16 operands of small gradients do not flush to
// zero) and divides the accumulated f32 gradients by S in the optimiser.
// One invocation per element; the grid may be 2-D (linear index as in
// elementwise.wgsl).

struct Params {
  n: u32,
  s: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size({{WG}})
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x;
  if (i >= P.n) { return; }
  x[i] = x[i] * P.s;
}
