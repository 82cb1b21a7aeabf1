// Baseline for benchmarks/kernels.ts: one thread per row scans the whole
// vocabulary serially, two passes (max, then Σ e^(z−m) and Σ e^(z−m)(z−m)),
// versus kernels/logprob.wgsl's workgroup per row with an online tree merge.
// Sums are blocked (runs of 256 terms added into the total) so a 151936-term
// f32 sum stays within the kernel's tolerance.
// Same uniform and bindings as kernels/logprob.wgsl's chosen.

struct Params {
  T: u32,
  V: u32,
  temperature: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;          // [T, V]
@group(0) @binding(2) var<storage, read> targets: array<u32>;         // [T]
@group(0) @binding(3) var<storage, read_write> logp: array<f32>;      // [T]
@group(0) @binding(4) var<storage, read_write> entropy: array<f32>;   // [T]

@compute @workgroup_size({{WG}})
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= P.T) { return; }
  let base = row * P.V;
  var m = -3.4028234e38;
  for (var j = 0u; j < P.V; j++) { m = max(m, logits[base + j] / P.temperature); }
  var s = 0.0;
  var u = 0.0;
  var bs = 0.0;
  var bu = 0.0;
  for (var j = 0u; j < P.V; j++) {
    let d = logits[base + j] / P.temperature - m;
    let e = exp(d);
    bs += e;
    bu += e * d;
    if ((j & 255u) == 255u) { s += bs; u += bu; bs = 0.0; bu = 0.0; }
  }
  s += bs;
  u += bu;
  let log_s = log(s);
  let tgt = min(targets[row], P.V - 1u); // targets are checked in range on the host
  logp[row] = logits[base + tgt] / P.temperature - m - log_s;
  entropy[row] = log_s - u / s;
}
