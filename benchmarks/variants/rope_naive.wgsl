// Baseline for benchmarks/kernels.ts: one thread per (token, head) rotates
// its whole head serially, in place on x [T, H, hd]. The angle is the same
// f32 pos·inv_freq with the same Cody-Waite reduction as kernels/rope.wgsl
// (so it passes the same tolerance); only the work split differs.
{{ENABLE}}

struct Params {
  TH: u32,       // T * H
  H: u32,
  half: u32,     // hd / 2
  c1: f32,
  c2: f32,
  c3: f32,
  inv_two_pi: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<{{T}}>;  // [T, H, hd]
@group(0) @binding(2) var<storage, read> pos: array<u32>;         // [T]
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;    // [hd / 2]

@compute @workgroup_size({{WG}})
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let th = gid.x;
  if (th >= P.TH) { return; }
  let p = f32(pos[th / P.H]);
  let base = th * 2u * P.half;
  for (var i = 0u; i < P.half; i++) {
    let a = p * inv_freq[i];
    let k = round(a * P.inv_two_pi);
    let r = ((a - k * P.c1) - k * P.c2) - k * P.c3;
    let c = cos(r);
    let s = sin(r);
    let x1 = f32(x[base + i]);
    let x2 = f32(x[base + i + P.half]);
    x[base + i] = {{T}}(x1 * c - x2 * s);
    x[base + i + P.half] = {{T}}(x2 * c + x1 * s);
  }
}
