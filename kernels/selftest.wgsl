// Self-test kernels for the device layer (not used by the model).
// spin: each invocation iterates a 32-bit LCG `P.iters` times from its own
// seed; the result is exact, so the CPU reference (src/gpu/selftest.ts)
// must match bit for bit. With large `iters` it makes a kernel that runs for
// hundreds of milliseconds, which is what the Bun event-pump test needs.

struct Params {
  n: u32,
  iters: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size({{WG}})
fn spin(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= P.n) { return; }
  var x = i * 2654435761u + 1u;
  for (var k = 0u; k < P.iters; k++) {
    x = x * 1664525u + 1013904223u;
  }
  out[i] = x;
}
