// Log-probability of the chosen token and the entropy of each row of logits:
// z = logits[t, :] / temperature, log p = z − logsumexp(z),
// logp[t] = log p[targets[t]], entropy[t] = −Σ p·log p.
// One workgroup per row (2-D grid when T is large). Each invocation keeps an
// online (max m, Σ e^(z−m), Σ e^(z−m)·(z−m)) over a strided slice in f32; the
// triples are merged by a tree reduction in workgroup memory. With
// S = Σ e^(z−M) and U = Σ e^(z−M)·(z−M) for the row max M:
//   log p_j = z_j − M − log S,   entropy = log S − U / S.
// "−∞" is the lowest finite f32 so that empty slices (V < WG) merge without
// inf − inf. A target ≥ V writes NaN (a caller error the host should catch).
//
// Subgroup variant (SG = "", on adapters with `subgroups`; SG = "//" compiles
// it out): each subgroup first merges its lanes' triples with subgroupMax /
// subgroupAdd, so the shared-memory tree only has to merge one triple per
// subgroup: it stops at stride subgroup_size (log2(WG / sg) levels instead of
// log2(WG), e.g. 5 instead of 8 barriers with subgroups of 8). That needs
// subgroup k to be invocations k·sg .. k·sg + sg − 1, which WGSL does not
// promise; every subgroup checks it, and if any is not, the workgroup
// merges the lanes' own triples with the full tree instead. Both orders are
// fixed, so results are deterministic.
{{SG}}enable subgroups;

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

const LOWEST: f32 = -0x1.fffffep+127f;

var<workgroup> wm: array<f32, {{WG}}>;
var<workgroup> ws: array<f32, {{WG}}>;
var<workgroup> wu: array<f32, {{WG}}>;
var<workgroup> not_blocked: atomic<u32>; // 1: some subgroup is not one aligned block of invocations

struct Acc { m: f32, s: f32, u: f32 }

// Rescale (m, s, u) to a new max m2 >= m: terms e^(z−m)·(z−m) become
// e^(z−m2)·((z−m) + (m−m2)).
fn rescale(a: Acc, m2: f32) -> Acc {
  let d = a.m - m2;
  let e = exp(d);
  return Acc(m2, a.s * e, (a.u + d * a.s) * e);
}

// One more logit z into (m, s, u).
fn push(a: Acc, z: f32) -> Acc {
  var acc = a;
  if (z > acc.m) { acc = rescale(acc, z); }
  let d = z - acc.m;
  let e = exp(d);
  acc.s += e;
  acc.u += e * d;
  return acc;
}

fn merge(a: Acc, b: Acc) -> Acc {
  let m = max(a.m, b.m);
  let x = rescale(a, m);
  let y = rescale(b, m);
  return Acc(m, x.s + y.s, x.u + y.u);
}

@compute @workgroup_size({{WG}})
fn chosen(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>,
          {{SG}}@builtin(subgroup_size) sg_size: u32,
) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= P.T) { return; } // uniform per workgroup
  let base = row * P.V;
  var acc = Acc(LOWEST, 0.0, 0.0);
  for (var j = lid.x; j < P.V; j += {{WG}}u) { acc = push(acc, logits[base + j] / P.temperature); }
  var stop = 1u; // smallest tree stride
  {{SG}}let own = acc;
  {{SG}}acc = rescale(acc, subgroupMax(acc.m));
  {{SG}}acc.s = subgroupAdd(acc.s);
  {{SG}}acc.u = subgroupAdd(acc.u);
  {{SG}}let block = lid.x / sg_size;
  {{SG}}let lanes = subgroupAdd(1u);
  {{SG}}let lo = subgroupMin(block);
  {{SG}}let hi = subgroupMax(block);
  {{SG}}if (lo != hi || lanes != sg_size) { atomicStore(&not_blocked, 1u); }
  {{SG}}if (workgroupUniformLoad(&not_blocked) == 0u) { stop = sg_size; } else { acc = own; }
  wm[lid.x] = acc.m;
  ws[lid.x] = acc.s;
  wu[lid.x] = acc.u;
  workgroupBarrier();
  for (var st = {{WG}}u / 2u; st >= stop; st >>= 1u) {
    if (lid.x < st) {
      let r = merge(Acc(wm[lid.x], ws[lid.x], wu[lid.x]), Acc(wm[lid.x + st], ws[lid.x + st], wu[lid.x + st]));
      wm[lid.x] = r.m;
      ws[lid.x] = r.s;
      wu[lid.x] = r.u;
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    let m = wm[0];
    let s = ws[0];
    let log_s = log(s);
    let tgt = targets[row];
    // NaN for a target out of range; built from a runtime value because a
    // constant NaN is a WGSL compile error.
    var lp = bitcast<f32>(0x7fc00000u | (tgt & 0u));
    if (tgt < P.V) { lp = logits[base + tgt] / P.temperature - m - log_s; }
    logp[row] = lp;
    entropy[row] = log_s - wu[0] / s;
  }
}

// ---- one invocation per row (CPU-backed adapters) ----
// The same online (m, s, u) as `chosen`, but one invocation sweeps its whole
// row in order: no workgroup memory, no barrier (where barriers are what
// costs). WG_ROW rows per workgroup; 2-D grid when T is large.
@compute @workgroup_size({{WG_ROW}})
fn chosen_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = (wid.y * nwg.x + wid.x) * {{WG_ROW}}u + lid.x;
  if (row >= P.T) { return; }
  let base = row * P.V;
  var acc = Acc(LOWEST, 0.0, 0.0);
  for (var j = 0u; j < P.V; j++) { acc = push(acc, logits[base + j] / P.temperature); }
  let log_s = log(acc.s);
  let tgt = targets[row];
  var lp = bitcast<f32>(0x7fc00000u | (tgt & 0u)); // NaN for a target out of range
  if (tgt < P.V) { lp = logits[base + tgt] / P.temperature - acc.m - log_s; }
  logp[row] = lp;
  entropy[row] = log_s - acc.u / acc.s;
}
