// Rotary position embedding, Qwen2/HF rotate-half convention, in place on
// x [T, H, hd]: for i < hd/2 with angle = pos[t] · inv_freq[i],
//   (x[i], x[i + hd/2]) <- (x1·cos − x2·sin, x2·cos + x1·sin).
// inv_freq comes from a table the wrapper computes on the CPU exactly as HF
// does in f32, and angle is one f32 multiply (correctly rounded in WGSL), so
// the angle is bit-identical to HF's. Angles reach ~32768 rad, where WGSL's
// sin/cos give no accuracy guarantee, so the angle is first reduced to
// [−π, π] by Cody-Waite: 2π = C1 + C2 + C3 with C1, C2 short enough that
// k·C1 and k·C2 are exact for k < 2^15 (angles below ~2e5). The constants
// come through the uniform so the compiler cannot fold them together.
// One invocation per (t, h, i); 2-D grid when large. Storage {{T}}, math f32.
{{ENABLE}}

struct Params {
  n: u32,        // T * H * half
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

// The angle a reduced to [−π, π] by Cody-Waite, as described above (every entry uses it).
fn reduce_angle(a: f32, c1: f32, c2: f32, c3: f32, inv_two_pi: f32) -> f32 {
  let k = round(a * inv_two_pi);
  return ((a - k * c1) - k * c2) - k * c3;
}

// (cos, sin) of token t's angle for frequency i.
fn cos_sin(t: u32, i: u32) -> vec2<f32> {
  let r = reduce_angle(f32(pos[t]) * inv_freq[i], P.c1, P.c2, P.c3, P.inv_two_pi);
  return vec2<f32>(cos(r), sin(r));
}

@compute @workgroup_size({{WG}})
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let idx = (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x;
  if (idx >= P.n) { return; }
  let i = idx % P.half;
  let th = idx / P.half;          // t * H + h
  let cs = cos_sin(th / P.H, i);
  let c = cs.x;
  let s = cs.y;
  let j = th * 2u * P.half + i;
  let x1 = f32(x[j]);
  let x2 = f32(x[j + P.half]);
  x[j] = {{T}}(x1 * c - x2 * s);
  x[j + P.half] = {{T}}(x2 * c + x1 * s);
}

// ---- rope_backward (training; f32 only) ----
// The rotation is orthogonal, so its adjoint is the rotation by −angle:
//   (dx1, dx2) = (dy1·cos + dy2·sin, dy2·cos − dy1·sin).
// In place on g [T, H, hd]: dy in, dx out. Same uniform and angle reduction
// as the forward, so forward and backward use bit-identical cos/sin.
@group(0) @binding(1) var<storage, read_write> g: array<f32>;   // [T, H, hd]

@compute @workgroup_size({{WG}})
fn rope_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
  let idx = (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x;
  if (idx >= P.n) { return; }
  let i = idx % P.half;
  let th = idx / P.half;
  let cs = cos_sin(th / P.H, i);
  let c = cs.x;
  let s = cs.y;
  let j = th * 2u * P.half + i;
  let d1 = g[j];
  let d2 = g[j + P.half];
  g[j] = d1 * c + d2 * s;
  g[j + P.half] = d2 * c - d1 * s;
}

// ---- rope_kv (inference): RoPE of q and k and the KV-cache write in one pass ----
// Reads the fused q/k/v product qkv [T, (nh + 2·nkv)·hd] (q heads, then k
// heads, then v heads of each token), writes rotated q to q_out [T, nh, hd]
// and rotated k and plain v into the paged caches [blocks, bs, nkv, hd] at
// the token's (slot, position) through the block table, exactly as rope then
// attention.write_kv would. One invocation per (t, head slot, i < hd/2);
// head slots 0..nh-1 are q heads, nh..nh+nkv-1 the k heads (which also copy
// their v head). Same angle computation as `rope`, so the values are identical.
struct KvParams {
  n: u32,        // T * (nh + nkv) * half
  nh: u32,
  nkv: u32,
  half: u32,
  c1: f32,
  c2: f32,
  c3: f32,
  inv_two_pi: f32,
  bs: u32,        // cache block size
  max_blocks: u32,
  scale: f32,     // rope_kv_attend: the attention's score scale (unused by the others)
}

@group(0) @binding(0) var<uniform> KP: KvParams;
@group(0) @binding(1) var<storage, read> qkv: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> q_out: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> kc: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> vc: array<{{T}}>;
@group(0) @binding(5) var<storage, read> table: array<u32>;
@group(0) @binding(6) var<storage, read> tok_seq: array<u32>;
@group(0) @binding(7) var<storage, read> tok_pos: array<u32>;
@group(0) @binding(8) var<storage, read> inv_freq_kv: array<f32>;

@compute @workgroup_size({{WG}})
fn rope_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let idx = (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x;
  if (idx >= KP.n) { return; }
  let half = KP.half;
  let hd = 2u * half;
  let i = idx % half;
  let slots = KP.nh + KP.nkv;
  let j = (idx / half) % slots;   // head slot
  let t = idx / (half * slots);
  let p = tok_pos[t];
  let r = reduce_angle(f32(p) * inv_freq_kv[i], KP.c1, KP.c2, KP.c3, KP.inv_two_pi);
  let c = cos(r);
  let s = sin(r);
  let row = t * (KP.nh + 2u * KP.nkv) * hd;   // token t's qkv row
  let src = row + j * hd + i;
  let x1 = f32(qkv[src]);
  let x2 = f32(qkv[src + half]);
  let y1 = {{T}}(x1 * c - x2 * s);
  let y2 = {{T}}(x2 * c + x1 * s);
  if (j < KP.nh) {
    let dst = (t * KP.nh + j) * hd + i;
    q_out[dst] = y1;
    q_out[dst + half] = y2;
    return;
  }
  let kvh = j - KP.nh;
  let lb = p / KP.bs;
  if (lb >= KP.max_blocks) { return; } // outside the slot's block table: the wrapper's reference throws
  let phys = table[tok_seq[t] * KP.max_blocks + lb];
  let dst = ((phys * KP.bs + p % KP.bs) * KP.nkv + kvh) * hd + i;
  kc[dst] = y1;
  kc[dst + half] = y2;
  let vsrc = src + KP.nkv * hd;
  vc[dst] = qkv[vsrc];
  vc[dst + half] = qkv[vsrc + half];
}

// ---- rope_kv_attend (decode on CPU-backed adapters): rope_kv + attention.decode_rows ----
// One invocation per (token t, query head h), for decode steps (one token
// per sequence): rotates its q head and its kv head's k as rope_kv does
// (each rounded to the storage type, as rope_kv stores them), the first
// query head of each kv group writes k and v into the cache at the token's
// position as rope_kv does, then attends as attention.decode_rows does (two
// passes over positions 0..pos, f32 scores and sums in the same order),
// taking the token's own position from its registers instead of the cache
// (no other invocation's write needs to be visible), and writes the output
// [T, nh, hd] to binding 2. The same bits as rope_kv then decode_rows, one
// dispatch instead of two. Uniform: KvParams with n = T·nh and `scale`.
@group(0) @binding(2) var<storage, read_write> att_out: array<{{T}}>;

// x rounded to the storage type and back, with integer operations: the
// shader compiler may fold f32(f16(x)) into x (it did on lavapipe), which
// would skip the rounding the cache round trip applies. Round to nearest
// even, f16 subnormals kept, overflow to inf (what the f16 stores do; the
// test against rope_kv + decode_rows checks it bit for bit).
fn round_store(x: f32) -> f32 {
  {{IF_F32}}return x;
{{IF_F16}}  let b = bitcast<u32>(x);
{{IF_F16}}  let sign = b & 0x80000000u;
{{IF_F16}}  let a = b & 0x7fffffffu;
{{IF_F16}}  if (a >= 0x7f800000u) { return x; }                                 // inf, NaN
{{IF_F16}}  if (a >= 0x477ff000u) { return bitcast<f32>(sign | 0x7f800000u); }  // >= 65520: inf
{{IF_F16}}  if (a >= 0x38800000u) {                                             // a normal f16: 10 mantissa bits
{{IF_F16}}    return bitcast<f32>(sign | ((a + 0xfffu + ((a >> 13u) & 1u)) & 0xffffe000u));
{{IF_F16}}  }
{{IF_F16}}  let r = round(bitcast<f32>(a) * 16777216.0) / 16777216.0;           // subnormal: multiples of 2^-24
{{IF_F16}}  return bitcast<f32>(sign | bitcast<u32>(r));
}

@compute @workgroup_size({{WG}})
fn rope_kv_attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
  let th = (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x; // t * nh + h
  if (th >= KP.n) { return; }
  let nh = KP.nh;
  let nkv = KP.nkv;
  let half = KP.half;
  let hd = 2u * half;
  let t = th / nh;
  let h = th % nh;
  let G = nh / nkv;
  let kvh = h / G;
  let p = tok_pos[t];
  let seq = tok_seq[t];
  let row = t * (nh + 2u * nkv) * hd;
  let qsrc = row + h * hd;
  let ksrc = row + (nh + kvh) * hd;
  let vsrc = ksrc + nkv * hd;
  var qr: array<f32, {{MAXHD}}>;
  var kr: array<f32, {{MAXHD}}>;
  var vr: array<f32, {{MAXHD}}>;
  for (var i = 0u; i < half; i++) {
    let r = reduce_angle(f32(p) * inv_freq_kv[i], KP.c1, KP.c2, KP.c3, KP.inv_two_pi);
    let c = cos(r);
    let s = sin(r);
    let x1 = f32(qkv[qsrc + i]);
    let x2 = f32(qkv[qsrc + i + half]);
    qr[i] = round_store(x1 * c - x2 * s);
    qr[i + half] = round_store(x2 * c + x1 * s);
    let k1 = f32(qkv[ksrc + i]);
    let k2 = f32(qkv[ksrc + i + half]);
    kr[i] = round_store(k1 * c - k2 * s);
    kr[i + half] = round_store(k2 * c + k1 * s);
    vr[i] = f32(qkv[vsrc + i]);
    vr[i + half] = f32(qkv[vsrc + i + half]);
  }
  let bs = KP.bs;
  let mb = KP.max_blocks;
  if (h % G == 0u && p / bs < mb) {
    let dst = ((table[seq * mb + p / bs] * bs + p % bs) * nkv + kvh) * hd;
    for (var d = 0u; d < hd; d++) {
      kc[dst + d] = {{T}}(kr[d]);
      vc[dst + d] = qkv[vsrc + d];
    }
  }
  let n = min(p, mb * bs - 1u) + 1u;
  var m = -1.0e30;
  for (var pp = 0u; pp < n; pp++) {
    var s = 0.0;
    if (pp == p) {
      for (var d = 0u; d < hd; d++) { s += qr[d] * kr[d]; }
    } else {
      let ko = ((table[seq * mb + pp / bs] * bs + pp % bs) * nkv + kvh) * hd;
      for (var d = 0u; d < hd; d++) { s += qr[d] * f32(kc[ko + d]); }
    }
    m = max(m, s * KP.scale);
  }
  var acc: array<f32, {{MAXHD}}>;
  var l = 0.0;
  for (var pp = 0u; pp < n; pp++) {
    var s = 0.0;
    if (pp == p) {
      for (var d = 0u; d < hd; d++) { s += qr[d] * kr[d]; }
      let w = exp(s * KP.scale - m);
      l += w;
      for (var d = 0u; d < hd; d++) { acc[d] += w * vr[d]; }
    } else {
      let ko = ((table[seq * mb + pp / bs] * bs + pp % bs) * nkv + kvh) * hd;
      for (var d = 0u; d < hd; d++) { s += qr[d] * f32(kc[ko + d]); }
      let w = exp(s * KP.scale - m);
      l += w;
      for (var d = 0u; d < hd; d++) { acc[d] += w * f32(vc[ko + d]); }
    }
  }
  for (var d = 0u; d < hd; d++) { att_out[th * hd + d] = {{T}}(acc[d] / l); }
}

// ---- rope_qk / rope_qk_backward (training): q and k in one dispatch ----
// q [T, nh, hd] and k [T, nkv, hd], each in place; one invocation per
// (t, head slot, i < hd/2), slots 0..nh-1 of q, then nkv of k. Exactly the
// arithmetic of `rope` (forward) and `rope_backward` (adjoint) applied to
// each buffer, so the results are the same bits as those two dispatches.
// Uniform: rope_kv's KvParams (bs and max_blocks unused).
@group(0) @binding(1) var<storage, read_write> qk_q: array<{{T}}>;    // [T, nh, hd]
@group(0) @binding(2) var<storage, read_write> qk_k: array<{{T}}>;    // [T, nkv, hd]
@group(0) @binding(3) var<storage, read> qk_pos: array<u32>;          // [T]
@group(0) @binding(4) var<storage, read> qk_inv_freq: array<f32>;     // [hd / 2]

// sign = 1: the forward rotation; sign = −1: its adjoint (rotation by −angle).
fn rope_qk_at(idx: u32, sign: f32) {
  let half = KP.half;
  let hd = 2u * half;
  let i = idx % half;
  let slots = KP.nh + KP.nkv;
  let h = (idx / half) % slots;
  let t = idx / (half * slots);
  let r = reduce_angle(f32(qk_pos[t]) * qk_inv_freq[i], KP.c1, KP.c2, KP.c3, KP.inv_two_pi);
  let c = cos(r);
  let s = sign * sin(r);
  if (h < KP.nh) {
    let j = (t * KP.nh + h) * hd + i;
    let x1 = f32(qk_q[j]);
    let x2 = f32(qk_q[j + half]);
    qk_q[j] = {{T}}(x1 * c - x2 * s);
    qk_q[j + half] = {{T}}(x2 * c + x1 * s);
  } else {
    let j = (t * KP.nkv + h - KP.nh) * hd + i;
    let x1 = f32(qk_k[j]);
    let x2 = f32(qk_k[j + half]);
    qk_k[j] = {{T}}(x1 * c - x2 * s);
    qk_k[j + half] = {{T}}(x2 * c + x1 * s);
  }
}

@compute @workgroup_size({{WG}})
fn rope_qk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
  let idx = (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x;
  if (idx >= KP.n) { return; }
  rope_qk_at(idx, 1.0);
}

@compute @workgroup_size({{WG}})
fn rope_qk_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
  let idx = (wid.y * nwg.x + wid.x) * {{WG}}u + lid.x;
  if (idx >= KP.n) { return; }
  rope_qk_at(idx, -1.0);
}
