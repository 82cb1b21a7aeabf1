// Losses of training and their gradients w.r.t. the chosen tokens'
// log-probabilities, plus the log-softmax backward that carries those
// gradients to the logits.
//
// policy / sft run as ONE workgroup: a micro-batch has at most ~1e5 loss
// tokens, a few hundred per invocation, which is noise next to the model's
// backward pass, and one workgroup makes the statistics a single fixed-order
// sum (the same bits every run) with no scratch buffer.
//
// Statistics (f32, STATS = 8 slots; counts are exact up to 2^24 tokens):
//   0 loss   Σ term / denom         4 Σ k3 = Σ (r − 1 − log r)   (KL(old‖new) estimate)
//   1 tokens Σ mask                 5 Σ r
//   2 clip-low count  (A < 0, r < 1 − ε_low)   6 dual-clip count (A < 0, r > c)
//   3 clip-high count (A > 0, r > 1 + ε_high)  7 Σ w (truncated-IS weights; = tokens when off)
// With accumulate = 1 the sums are added to what stats holds (micro-batches
// of one mini-batch into one buffer); else stats is overwritten.
//
// lsm_backward's subgroup variant (SG = "", adapters with `subgroups`; SG =
// "//" compiles it out): the (max, Σ) pairs are first merged within each
// subgroup, and the shared-memory tree stops at stride subgroup_size, as in
// kernels/logprob.wgsl (same alignment check, same fallback to the full tree).
{{SG}}enable subgroups;

const LOG_RATIO_CLAMP: f32 = 20.0; // as src/rl/policy_loss.ts (verl): r cannot overflow

var<workgroup> red: array<array<f32, 8>, {{WG}}>;

fn reduce8(lid: u32) {
  for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      for (var k = 0u; k < 8u; k++) { red[lid][k] += red[lid + s][k]; }
    }
    workgroupBarrier();
  }
}

// ---- policy: verl's vanilla PPO loss with DAPO's clip-higher, token-level ----
//   r  = exp(clamp(new − old, ±20))
//   l1 = max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high))        (clip-higher)
//   term = A < 0 ? min(l1, −A·c) : l1                         (dual-clip; clip_c = 0: off)
//   term *= w, w = min(exp(old − rollout), C)                 (truncated IS; tis_cap = 0: off, w = 1)
//   dlogp = −A·r·w / denom where the unclipped branch is chosen (and the
//   clamp did not bite), else 0; masked tokens get 0.
struct PolicyParams {
  n: u32,
  eps_low: f32,
  eps_high: f32,
  inv_denom: f32,
  accumulate: u32,
  clip_c: f32,
  log_tis_cap: f32,
  tis_on: u32,
}

@group(0) @binding(0) var<uniform> PP: PolicyParams;
@group(0) @binding(1) var<storage, read> po_new: array<f32>;
@group(0) @binding(2) var<storage, read> po_old: array<f32>;
@group(0) @binding(3) var<storage, read> po_adv: array<f32>;
@group(0) @binding(4) var<storage, read> po_mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> po_dlogp: array<f32>;
@group(0) @binding(6) var<storage, read_write> po_stats: array<f32>;
@group(0) @binding(7) var<storage, read> po_rollout: array<f32>; // the sampler's log-probs (read only when tis_on)

@compute @workgroup_size({{WG}})
fn policy(@builtin(local_invocation_id) lid3: vec3<u32>) {
  let lid = lid3.x;
  var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
  for (var i = lid; i < PP.n; i += {{WG}}u) {
    if (po_mask[i] == 0.0) {
      po_dlogp[i] = 0.0;
      continue;
    }
    let a = po_adv[i];
    let lr = po_new[i] - po_old[i];
    let lrc = clamp(lr, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
    let r = exp(lrc);
    let unclipped = r * a;
    let clipped = clamp(r, 1.0 - PP.eps_low, 1.0 + PP.eps_high) * a;
    var term: f32;
    var g: f32 = 0.0;
    if (clipped < unclipped) {
      term = -clipped;
      if (a > 0.0) { acc[3] += 1.0; } else { acc[2] += 1.0; }
    } else {
      term = -unclipped;
      if (lr == lrc) { g = -a * r; }
    }
    if (PP.clip_c > 0.0 && a < 0.0 && term > -a * PP.clip_c) {
      term = -a * PP.clip_c;
      g = 0.0;
      acc[6] += 1.0;
    }
    var w: f32 = 1.0;
    if (PP.tis_on != 0u) { w = exp(min(po_old[i] - po_rollout[i], PP.log_tis_cap)); }
    po_dlogp[i] = g * w * PP.inv_denom;
    acc[0] += term * w;
    acc[1] += 1.0;
    acc[4] += r - 1.0 - lrc;
    acc[5] += r;
    acc[7] += w;
  }
  red[lid] = acc;
  workgroupBarrier();
  reduce8(lid);
  if (lid < 8u) {
    var v = red[0][lid];
    if (lid == 0u) { v *= PP.inv_denom; }
    if (PP.accumulate != 0u) { v += po_stats[lid]; }
    po_stats[lid] = v;
  }
}

// ---- sft: mean negative log-likelihood over masked tokens ----
//   loss = −Σ mask·logp / denom,  dlogp = −mask / denom.
// Stats: 0 loss, 1 tokens; slots 2..7 are 0 (kept when accumulating).
struct SftParams {
  n: u32,
  inv_denom: f32,
  accumulate: u32,
}

@group(0) @binding(0) var<uniform> SP: SftParams;
@group(0) @binding(1) var<storage, read> sf_logp: array<f32>;
@group(0) @binding(2) var<storage, read> sf_mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> sf_dlogp: array<f32>;
@group(0) @binding(4) var<storage, read_write> sf_stats: array<f32>;

@compute @workgroup_size({{WG}})
fn sft(@builtin(local_invocation_id) lid3: vec3<u32>) {
  let lid = lid3.x;
  var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
  for (var i = lid; i < SP.n; i += {{WG}}u) {
    if (sf_mask[i] == 0.0) {
      sf_dlogp[i] = 0.0;
      continue;
    }
    sf_dlogp[i] = -SP.inv_denom;
    acc[0] -= sf_logp[i];
    acc[1] += 1.0;
  }
  red[lid] = acc;
  workgroupBarrier();
  reduce8(lid);
  if (lid < 8u) {
    var v = 0.0;
    if (lid == 0u) { v = red[0][0] * SP.inv_denom; } else if (lid == 1u) { v = red[0][1]; }
    if (SP.accumulate != 0u) { v += sf_stats[lid]; }
    sf_stats[lid] = v;
  }
}

// ---- lsm_backward: dlogits[t, j] = dlogp[t] · (onehot_j − softmax(z)_j) / τ ----
// z = logits[t, :] / τ; logp[t] = z[target] − logsumexp(z), so
// ∂logp/∂logits_j = (δ_j,target − p_j) / τ. One workgroup per row (2-D grid
// for many rows): an online (max, Σ e^(z − max)) per invocation, a tree
// merge, then a second pass writes the row. A target ≥ V writes NaN.
struct LsmParams {
  T: u32,
  V: u32,
  temperature: f32,
}

@group(0) @binding(0) var<uniform> LP: LsmParams;
@group(0) @binding(1) var<storage, read> ls_logits: array<f32>;     // [T, V]
@group(0) @binding(2) var<storage, read> ls_targets: array<u32>;    // [T]
@group(0) @binding(3) var<storage, read> ls_dlogp: array<f32>;      // [T]
@group(0) @binding(4) var<storage, read_write> ls_dlogits: array<f32>; // [T, V]

const LOWEST: f32 = -0x1.fffffep+127f; // finite "−∞": empty slices merge without inf − inf

var<workgroup> wm: array<f32, {{WG}}>;
var<workgroup> ws: array<f32, {{WG}}>;
var<workgroup> lsm_not_blocked: atomic<u32>; // 1: some subgroup is not one aligned block of invocations

@compute @workgroup_size({{WG}})
fn lsm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid3: vec3<u32>,
                {{SG}}@builtin(subgroup_size) sg_size: u32,
) {
  let lid = lid3.x;
  let row = wid.y * nwg.x + wid.x;
  if (row >= LP.T) { return; } // uniform per workgroup
  let base = row * LP.V;
  var m = LOWEST;
  var s = 0.0;
  for (var j = lid; j < LP.V; j += {{WG}}u) {
    let z = ls_logits[base + j] / LP.temperature;
    if (z > m) {
      s *= exp(m - z);
      m = z;
    }
    s += exp(z - m);
  }
  var stop = 1u; // smallest tree stride
  {{SG}}let mg = subgroupMax(m);
  {{SG}}let sg_s = subgroupAdd(s * exp(m - mg));
  {{SG}}let block = lid / sg_size;
  {{SG}}let lanes = subgroupAdd(1u);
  {{SG}}let lo = subgroupMin(block);
  {{SG}}let hi = subgroupMax(block);
  {{SG}}if (lo != hi || lanes != sg_size) { atomicStore(&lsm_not_blocked, 1u); }
  {{SG}}if (workgroupUniformLoad(&lsm_not_blocked) == 0u) { stop = sg_size; m = mg; s = sg_s; }
  wm[lid] = m;
  ws[lid] = s;
  workgroupBarrier();
  for (var st = {{WG}}u / 2u; st >= stop; st >>= 1u) {
    if (lid < st) {
      let m2 = max(wm[lid], wm[lid + st]);
      ws[lid] = ws[lid] * exp(wm[lid] - m2) + ws[lid + st] * exp(wm[lid + st] - m2);
      wm[lid] = m2;
    }
    workgroupBarrier();
  }
  let lse = wm[0] + log(ws[0]);
  let tgt = ls_targets[row];
  // NaN from a runtime value (a constant NaN does not compile) for a bad target.
  let bad = bitcast<f32>(0x7fc00000u | (tgt & 0u));
  let g = ls_dlogp[row] / LP.temperature;
  for (var j = lid; j < LP.V; j += {{WG}}u) {
    let p = exp(ls_logits[base + j] / LP.temperature - lse);
    var d = g * (select(0.0, 1.0, j == tgt) - p);
    if (tgt >= LP.V) { d = bad; }
    ls_dlogits[base + j] = d;
  }
}

// ---- lsm_backward, one invocation per row (CPU-backed adapters) ----
// The same online (max, Σ) as `lsm_backward`, one invocation sweeping its
// row in order, then writing it: no workgroup memory, no barrier. WG_ROW rows
// per workgroup; 2-D grid when T is large.
@compute @workgroup_size({{WG_ROW}})
fn lsm_backward_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid3: vec3<u32>) {
  let row = (wid.y * nwg.x + wid.x) * {{WG_ROW}}u + lid3.x;
  if (row >= LP.T) { return; }
  let base = row * LP.V;
  var m = LOWEST;
  var s = 0.0;
  for (var j = 0u; j < LP.V; j++) {
    let z = ls_logits[base + j] / LP.temperature;
    if (z > m) {
      s *= exp(m - z);
      m = z;
    }
    s += exp(z - m);
  }
  let lse = m + log(s);
  let tgt = ls_targets[row];
  let bad = bitcast<f32>(0x7fc00000u | (tgt & 0u)); // NaN for a target out of range
  let g = ls_dlogp[row] / LP.temperature;
  for (var j = 0u; j < LP.V; j++) {
    let p = exp(ls_logits[base + j] / LP.temperature - lse);
    var d = g * (select(0.0, 1.0, j == tgt) - p);
    if (tgt >= LP.V) { d = bad; }
    ls_dlogits[base + j] = d;
  }
}
