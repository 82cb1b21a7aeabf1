/**
 * Rotary position embedding (kernels/rope.wgsl), Qwen2/HF rotate-half form,
 * applied in place to q or k laid out [T, H, hd]; and its backward (f32
 * only), the rotation by −angle applied in place to the gradient.
 *
 * inv_freq is computed here on the CPU with HF's f32 steps
 * (1 / f32(theta ** f32(2i / hd))) and uploaded once per (hd, theta): a GPU
 * pow would be a few ulp off, and at position 32768 one ulp of inv_freq is
 * ~2e-3 rad. The angle pos·inv_freq is then one f32 multiply on the GPU,
 * bit-identical to HF's.
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu, Kernel } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { attentionRef, MAX_HEAD_DIM, writeKVRef } from "./attention.ts";
import { checkBinding, checkCount, dtypeConstants, grid, sameBuffer, type Dtype } from "./common.ts";

const WG = 64;
const f = Math.fround;

/** HF's inv_freq in f32: 1 / theta^(f32(2i) / hd), each step rounded to f32. */
export function invFreqRef(hd: number, theta: number): Float32Array {
  const out = new Float32Array(hd / 2);
  for (let i = 0; i < hd / 2; i++) out[i] = f(1 / f(Math.pow(f(theta), f(f(2 * i) / hd))));
  return out;
}

/**
 * Reference with HF's f32 semantics: f32 inv_freq, angle = f32(pos·inv_freq);
 * cos/sin and the rotation in f64, rounded once. Returns a new array.
 */
export function ropeRef(x: Float32Array, pos: Uint32Array, T: number, H: number, hd: number, theta: number): Float32Array {
  const inv = invFreqRef(hd, theta);
  return rotate(x, pos, T, H, hd, (p, i) => f(p * inv[i]));
}

/**
 * Backward of ropeRef: the rotation is orthogonal, so dx is dy rotated by
 * −angle (same f32 angle as the forward). Returns a new array.
 */
export function ropeBackwardRef(dy: Float32Array, pos: Uint32Array, T: number, H: number, hd: number, theta: number): Float32Array {
  const inv = invFreqRef(hd, theta);
  return rotate(dy, pos, T, H, hd, (p, i) => -f(p * inv[i]));
}

/** Reference in exact (f64) arithmetic throughout: what f32 semantics approximate. */
export function ropeRefF64(x: Float32Array, pos: Uint32Array, T: number, H: number, hd: number, theta: number): Float32Array {
  return rotate(x, pos, T, H, hd, (p, i) => p * Math.pow(theta, -(2 * i) / hd));
}

function rotate(
  x: Float32Array,
  pos: Uint32Array,
  T: number,
  H: number,
  hd: number,
  angle: (p: number, i: number) => number,
): Float32Array {
  if (x.length !== T * H * hd || pos.length !== T || hd % 2) {
    throw new Error(`ropeRef: x has ${x.length} elements (want ${T}×${H}×${hd}, hd even), pos ${pos.length} (want ${T})`);
  }
  const half = hd / 2;
  const out = new Float32Array(x);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = angle(pos[t], i);
      const c = Math.cos(a);
      const s = Math.sin(a);
      for (let h = 0; h < H; h++) {
        const j = (t * H + h) * hd + i;
        const x1 = x[j];
        const x2 = x[j + half];
        out[j] = x1 * c - x2 * s;
        out[j + half] = x2 * c + x1 * s;
      }
    }
  }
  return out;
}

/** Shape of a rope_kv call: tokens, q and kv heads, head dim, theta, and the paged cache's geometry. */
export interface RopeKvShape {
  T: number;
  nh: number;
  nKv: number;
  hd: number;
  theta: number;
  blockSize: number;
  maxBlocks: number;
}

/**
 * Reference of rope_kv as the composition it replaces: split the fused
 * product qkv [T, (nh + 2·nKv)·hd] into q, k, v; ropeRef on q and k;
 * writeKVRef of k, v into the caches (in place). Returns the rotated q.
 */
export function ropeKvRef(
  qkv: Float32Array,
  kcache: Float32Array,
  vcache: Float32Array,
  blockTable: Uint32Array,
  tokSeq: Uint32Array,
  tokPos: Uint32Array,
  s: RopeKvShape,
): Float32Array {
  const { T, nh, nKv, hd } = s;
  const width = (nh + 2 * nKv) * hd;
  if (qkv.length !== T * width) throw new Error(`ropeKvRef: qkv has ${qkv.length} elements, want ${T}×${width}`);
  const part = (from: number, n: number) => {
    const out = new Float32Array(T * n);
    for (let t = 0; t < T; t++) out.set(qkv.subarray(t * width + from, t * width + from + n), t * n);
    return out;
  };
  const q = ropeRef(part(0, nh * hd), tokPos, T, nh, hd, s.theta);
  const k = ropeRef(part(nh * hd, nKv * hd), tokPos, T, nKv, hd, s.theta);
  writeKVRef(k, part((nh + nKv) * hd, nKv * hd), kcache, vcache, blockTable, tokSeq, tokPos, { T, nKv, hd, blockSize: s.blockSize, maxBlocks: s.maxBlocks });
  return q;
}

/**
 * Reference of `ropeKvAttend`: ropeKvRef (rotated q; k and v into the
 * caches, in place), then attentionRef of the rotated q over the caches.
 * Returns the attention output [T, nh, hd].
 */
export function ropeKvAttendRef(io: { qkv: Float32Array; kcache: Float32Array; vcache: Float32Array; blockTable: Uint32Array; tokSeq: Uint32Array; tokPos: Uint32Array }, s: RopeKvShape, scale: number): Float32Array {
  const q = ropeKvRef(io.qkv, io.kcache, io.vcache, io.blockTable, io.tokSeq, io.tokPos, s);
  return attentionRef(q, io.kcache, io.vcache, io.blockTable, io.tokSeq, io.tokPos, s, scale);
}

// Cody-Waite split of 2π: C1 has 8 significant bits, C2 9, so k·C1 and k·C2
// are exact in f32 for k < 2^15; C3 is the f32-rounded rest.
const TWO_PI = 2 * Math.PI;
const C1 = 201 / 32; // 6.28125
const C2 = Math.floor((TWO_PI - C1) * 2 ** 18) / 2 ** 18;
const C3 = f(TWO_PI - C1 - C2);

export async function loadRope(gpu: Gpu, dtype: Dtype) {
  const c = { ...dtypeConstants(gpu, dtype, "rope"), WG, MAXHD: MAX_HEAD_DIM, IF_F32: dtype === "f32" ? "" : "//", IF_F16: dtype === "f32" ? "//" : "" };
  const [k, kKv, kAttend, kBack, kQk, kQkBack] = await Promise.all([
    gpu.kernel("rope", "rope", c),
    gpu.kernel("rope", "rope_kv", c),
    gpu.kernel("rope", "rope_kv_attend", c),
    // The backward is f32-only (training keeps f32 activation gradients).
    dtype === "f32" ? gpu.kernel("rope", "rope_backward", c) : null,
    gpu.kernel("rope", "rope_qk", c),
    dtype === "f32" ? gpu.kernel("rope", "rope_qk_backward", c) : null,
  ]);
  const bytes = dtype === "f16" ? 2 : 4;
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  // Tiny per-(hd, theta) tables, made on first use and kept for the loader's life.
  const tables = new Map<string, GPUBuffer>();
  const table = (hd: number, theta: number): GPUBuffer => {
    const key = `${hd}:${theta}`;
    let buf = tables.get(key);
    if (!buf) tables.set(key, (buf = gpu.buffer(invFreqRef(hd, theta), `rope.inv_freq[hd=${hd},theta=${theta}]`)));
    return buf;
  };
  // rope_kv and rope_kv_attend: shapes and bindings (`q`: the rotated q, or the attention output: [T, nh, hd] either way).
  const checkKv = (what: string, io: { qkv: Binding; kcache: Binding; vcache: Binding; blockTable: Binding; tokSeq: Binding; tokPos: Binding }, q: Binding, s: RopeKvShape, qName = "q"): void => {
    for (const [name, v] of Object.entries(s)) if (name !== "theta") checkCount(v, name, what);
    if (s.hd % 2 !== 0) throw new KernelError(`kernel ${what}: head_dim ${s.hd} must be even`);
    if (!(s.theta > 1) || !Number.isFinite(s.theta)) throw new KernelError(`kernel ${what}: rope_theta ${s.theta} must be a finite number > 1`);
    if (s.blockSize < 1 || s.maxBlocks < 1) throw new KernelError(`kernel ${what}: blockSize ${s.blockSize} and maxBlocks ${s.maxBlocks} must be >= 1`);
    const width = (s.nh + 2 * s.nKv) * s.hd;
    if (s.T * width > 0xffffffff) throw new KernelError(`kernel ${what}: T·(nh + 2·nkv)·hd overflows u32`);
    checkBinding(io.qkv, s.T * width, bytes, "qkv", what);
    checkBinding(q, s.T * s.nh * s.hd, bytes, qName, what);
    checkBinding(io.kcache, s.blockSize * s.nKv * s.hd, bytes, "kcache", what);
    checkBinding(io.vcache, s.blockSize * s.nKv * s.hd, bytes, "vcache", what);
    checkBinding(io.blockTable, s.maxBlocks, 4, "blockTable", what);
    checkBinding(io.tokSeq, s.T, 4, "tokSeq", what);
    checkBinding(io.tokPos, s.T, 4, "tokPos", what);
  };
  // Forward and backward share the uniform, the bindings and the grid.
  const record = (
    b: Batch,
    kernel: Kernel,
    what: string,
    bytesPer: number,
    x: Binding,
    pos: Binding,
    T: number,
    H: number,
    hd: number,
    theta: number,
  ): void => {
    for (const [v, n] of [[T, "T"], [H, "H"], [hd, "hd"]] as const) checkCount(v, n, what);
    if (hd % 2 !== 0) throw new KernelError(`kernel ${what}: head_dim ${hd} must be even`);
    if (!(theta > 1) || !Number.isFinite(theta)) throw new KernelError(`kernel ${what}: rope_theta ${theta} must be a finite number > 1`);
    if (T * H * hd > 0xffffffff) throw new KernelError(`kernel ${what}: T·H·hd overflows u32`);
    checkBinding(x, T * H * hd, bytesPer, "x", what);
    checkBinding(pos, T, 4, "pos", what);
    const n = (T * H * hd) / 2;
    if (n === 0) return;
    b.dispatch(kernel, {
      params: params().u32(n).u32(H).u32(hd / 2).f32(C1).f32(C2).f32(C3).f32(1 / TWO_PI),
      buffers: [x, pos, table(hd, theta)],
      groups: grid(Math.ceil(n / WG), max, what),
      label: what,
    });
  };
  // q [T, nh, hd] and k [T, nkv, hd] in one dispatch (training's forward and backward).
  const recordQk = (b: Batch, kernel: Kernel, what: string, bytesPer: number, q: Binding, kb: Binding, pos: Binding, s: { T: number; nh: number; nkv: number; hd: number; theta: number }): void => {
    for (const [name, v] of Object.entries(s)) if (name !== "theta") checkCount(v, name, what);
    if (s.hd % 2 !== 0) throw new KernelError(`kernel ${what}: head_dim ${s.hd} must be even`);
    if (!(s.theta > 1) || !Number.isFinite(s.theta)) throw new KernelError(`kernel ${what}: rope_theta ${s.theta} must be a finite number > 1`);
    if (s.T * (s.nh + s.nkv) * s.hd > 0xffffffff) throw new KernelError(`kernel ${what}: T·(nh + nkv)·hd overflows u32`);
    checkBinding(q, s.T * s.nh * s.hd, bytesPer, "q", what);
    checkBinding(kb, s.T * s.nkv * s.hd, bytesPer, "k", what);
    checkBinding(pos, s.T, 4, "pos", what);
    if (sameBuffer(q, kb)) throw new KernelError(`kernel ${what}: q and k share a buffer; each needs its own (both are written)`);
    const n = (s.T * (s.nh + s.nkv) * s.hd) / 2;
    if (n === 0) return;
    b.dispatch(kernel, {
      params: params().u32(n).u32(s.nh).u32(s.nkv).u32(s.hd / 2).f32(C1).f32(C2).f32(C3).f32(1 / TWO_PI).u32(0).u32(0),
      buffers: [q, kb, pos, table(s.hd, s.theta)],
      groups: grid(Math.ceil(n / WG), max, what),
      label: what,
    });
  };
  return {
    /** In place on x [T, H, hd] at positions pos (u32 [T]). */
    rope(b: Batch, x: Binding, pos: Binding, T: number, H: number, hd: number, theta: number): void {
      record(b, k, "rope", bytes, x, pos, T, H, hd, theta);
    },
    /**
     * Backward, in place on dx [T, H, hd] (f32): dy in, dx out (dy rotated
     * by −angle). f32 loaders only.
     */
    ropeBackward(b: Batch, dx: Binding, pos: Binding, T: number, H: number, hd: number, theta: number): void {
      if (!kBack) throw new KernelError(`kernel rope.rope_backward is f32-only; load the rope kernels with dtype "f32" for training`);
      record(b, kBack, "rope.rope_backward", 4, dx, pos, T, H, hd, theta);
    },
    /** `rope` of q [T, nh, hd] and of k [T, nkv, hd], in place, in one dispatch (the same bits as two `rope` calls). */
    ropeQk(b: Batch, q: Binding, kb: Binding, pos: Binding, s: { T: number; nh: number; nkv: number; hd: number; theta: number }): void {
      recordQk(b, kQk, "rope.rope_qk", bytes, q, kb, pos, s);
    },
    /** `ropeBackward` of dq and dk in one dispatch (f32 loaders only). */
    ropeQkBackward(b: Batch, dq: Binding, dk: Binding, pos: Binding, s: { T: number; nh: number; nkv: number; hd: number; theta: number }): void {
      if (!kQkBack) throw new KernelError(`kernel rope.rope_qk_backward is f32-only; load the rope kernels with dtype "f32" for training`);
      recordQk(b, kQkBack, "rope.rope_qk_backward", 4, dq, dk, pos, s);
    },
    /**
     * RoPE and the KV-cache write in one pass (inference): from the fused
     * q/k/v product qkv [T, (nh + 2·nKv)·hd], rotated q into q [T, nh, hd],
     * rotated k and v into the paged caches at (tokSeq[t], tokPos[t]).
     */
    ropeKv(
      b: Batch,
      io: { qkv: Binding; q: Binding; kcache: Binding; vcache: Binding; blockTable: Binding; tokSeq: Binding; tokPos: Binding },
      s: RopeKvShape,
    ): void {
      const what = "rope.rope_kv";
      checkKv(what, io, io.q, s);
      const n = (s.T * (s.nh + s.nKv) * s.hd) / 2;
      if (n === 0) return;
      b.dispatch(kKv, {
        params: params().u32(n).u32(s.nh).u32(s.nKv).u32(s.hd / 2).f32(C1).f32(C2).f32(C3).f32(1 / TWO_PI).u32(s.blockSize).u32(s.maxBlocks),
        buffers: [io.qkv, io.q, io.kcache, io.vcache, io.blockTable, io.tokSeq, io.tokPos, table(s.hd, s.theta)],
        groups: grid(Math.ceil(n / WG), max, what),
        label: what,
      });
    },
    /**
     * Decode steps on CPU-backed adapters (one token per sequence): `ropeKv`
     * then attention's one-pass decode (`decode_rows`) in one dispatch, one
     * invocation per (token, query head); writes the attention output `out`
     * [T, nh, hd] (no rotated q). The same bits as the two (kernels/rope.wgsl).
     */
    ropeKvAttend(
      b: Batch,
      io: { qkv: Binding; out: Binding; kcache: Binding; vcache: Binding; blockTable: Binding; tokSeq: Binding; tokPos: Binding },
      s: RopeKvShape,
      scale: number,
    ): void {
      const what = "rope.rope_kv_attend";
      checkKv(what, io, io.out, s, "out");
      if (s.hd > MAX_HEAD_DIM) throw new KernelError(`kernel ${what}: head_dim ${s.hd} is over ${MAX_HEAD_DIM}`);
      if (s.nh % s.nKv !== 0) throw new KernelError(`kernel ${what}: ${s.nh} query heads do not split into ${s.nKv} kv groups`);
      if (!(Number.isFinite(scale) && scale > 0)) throw new KernelError(`kernel ${what}: scale ${scale} must be a finite number > 0`);
      const n = s.T * s.nh;
      if (n === 0) return;
      b.dispatch(kAttend, {
        params: params().u32(n).u32(s.nh).u32(s.nKv).u32(s.hd / 2).f32(C1).f32(C2).f32(C3).f32(1 / TWO_PI).u32(s.blockSize).u32(s.maxBlocks).f32(scale),
        buffers: [io.qkv, io.out, io.kcache, io.vcache, io.blockTable, io.tokSeq, io.tokPos, table(s.hd, s.theta)],
        groups: grid(Math.ceil(n / WG), max, what),
        label: what,
      });
    },
    /** Free the inv_freq tables. */
    destroy(): void {
      for (const buf of tables.values()) buf.destroy();
      tables.clear();
    },
  };
}
