/**
 * Attention over the paged KV cache (kernels/attention.wgsl): writing a
 * step's keys/values into the cache, causal prefill, and flash-decoding.
 *
 * Legend: T query tokens, NH query heads, NKV kv heads (G = NH / NKV query
 * heads share one kv head, as HF Qwen2's repeat_kv: head h reads kv head
 * floor(h / G)), HD head dim, BS block size, MB max blocks per sequence slot.
 *   q, out          [T, NH, HD]                          dtype
 *   k, v            [T, NKV, HD]                         dtype
 *   kcache, vcache  [num_blocks, BS, NKV, HD]            dtype
 *   blockTable      [max_seqs, MB] u32   physical block of each logical block
 *   tokSeq, tokPos  [T] u32              each query token's slot and position
 * Query token t attends to positions 0..tokPos[t] of slot tokSeq[t].
 *
 * Training (no cache): T tokens of several sequences packed one after another,
 *   q, out, dout, dq [T, NH, HD], k, v, dk, dv [T, NKV, HD]   dtype
 *   segStart [T] u32   index of the first token of each token's sequence
 *   lse [T, NH] f32    log-sum-exp of the scaled scores (saved for backward)
 * Token t attends to tokens segStart[t]..t. The backward recomputes the
 * probabilities from q, k and lse (FlashAttention-2 style), so no [T, T]
 * matrix is ever stored.
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu, Kernel } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { operandConstants } from "./f16_operands.ts";
import type { Dtype } from "./common.ts";

export type { Dtype };

// ---------------------------------------------------------------- CPU references

/** Shape of one attention call (the numbers every record function takes). */
export interface AttentionShape {
  T: number;
  nh: number;
  nKv: number;
  hd: number;
  blockSize: number;
  maxBlocks: number;
}

/** Element offset of (slot, position, kv head) in a paged cache; throws on a bad table. */
function cacheOffset(
  table: Uint32Array,
  seq: number,
  pos: number,
  kvh: number,
  nKv: number,
  hd: number,
  blockSize: number,
  maxBlocks: number,
  cacheLen: number,
  what: string,
): number {
  const lb = Math.floor(pos / blockSize);
  if (lb >= maxBlocks) throw new KernelError(`${what}: position ${pos} needs logical block ${lb}, table has ${maxBlocks} per slot`);
  const ti = seq * maxBlocks + lb;
  if (ti >= table.length) throw new KernelError(`${what}: slot ${seq} is outside the block table (${table.length / maxBlocks} slots)`);
  const phys = table[ti];
  const off = ((phys * blockSize + (pos % blockSize)) * nKv + kvh) * hd;
  if (off + hd > cacheLen) throw new KernelError(`${what}: slot ${seq} position ${pos} maps to block ${phys}, outside the cache`);
  return off;
}

/** Writes each token's k, v [T, NKV, HD] into the caches in place (the reference of writeKV). */
export function writeKVRef(
  k: Float32Array,
  v: Float32Array,
  kcache: Float32Array,
  vcache: Float32Array,
  blockTable: Uint32Array,
  tokSeq: Uint32Array,
  tokPos: Uint32Array,
  s: Omit<AttentionShape, "nh">,
): void {
  const per = s.nKv * s.hd;
  for (let t = 0; t < s.T; t++) {
    for (let h = 0; h < s.nKv; h++) {
      const dst = cacheOffset(blockTable, tokSeq[t], tokPos[t], h, s.nKv, s.hd, s.blockSize, s.maxBlocks, kcache.length, "writeKVRef");
      for (let d = 0; d < s.hd; d++) {
        kcache[dst + d] = k[t * per + h * s.hd + d];
        vcache[dst + d] = v[t * per + h * s.hd + d];
      }
    }
  }
}

/**
 * Causal GQA attention of every query token over its slot's positions
 * 0..tokPos[t], read through the block table (f64 arithmetic, two-pass
 * softmax with the max subtracted). Returns out [T, NH, HD].
 */
export function attentionRef(
  q: Float32Array,
  kcache: Float32Array,
  vcache: Float32Array,
  blockTable: Uint32Array,
  tokSeq: Uint32Array,
  tokPos: Uint32Array,
  s: AttentionShape,
  scale: number,
): Float32Array {
  const { T, nh, nKv, hd } = s;
  const G = checkGroups(nh, nKv, "attentionRef");
  const out = new Float32Array(T * nh * hd);
  for (let t = 0; t < T; t++) {
    const n = tokPos[t] + 1;
    const rows = new Int32Array(n * nKv);
    for (let p = 0; p < n; p++) {
      for (let h = 0; h < nKv; h++) {
        rows[p * nKv + h] = cacheOffset(blockTable, tokSeq[t], p, h, nKv, hd, s.blockSize, s.maxBlocks, kcache.length, "attentionRef");
      }
    }
    const w = new Float64Array(n);
    for (let h = 0; h < nh; h++) {
      const kvh = Math.floor(h / G);
      const qo = (t * nh + h) * hd;
      let m = -Infinity;
      for (let p = 0; p < n; p++) {
        const ko = rows[p * nKv + kvh];
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[qo + d] * kcache[ko + d];
        w[p] = dot * scale;
        if (w[p] > m) m = w[p];
      }
      let l = 0;
      for (let p = 0; p < n; p++) l += w[p] = Math.exp(w[p] - m);
      for (let d = 0; d < hd; d++) {
        let acc = 0;
        for (let p = 0; p < n; p++) acc += w[p] * vcache[rows[p * nKv + kvh] + d];
        out[qo + d] = acc / l;
      }
    }
  }
  return out;
}

/**
 * Plain dense causal attention for one sequence, no cache: q [Tq, NH, HD] at
 * positions qPos, k and v [S, NKV, HD] for positions 0..S-1. A cross-check
 * of the paged reference.
 */
export function denseAttentionRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  qPos: ArrayLike<number>,
  nh: number,
  nKv: number,
  hd: number,
  scale: number,
): Float32Array {
  const Tq = qPos.length;
  const G = checkGroups(nh, nKv, "denseAttentionRef");
  const out = new Float32Array(Tq * nh * hd);
  for (let t = 0; t < Tq; t++) {
    for (let h = 0; h < nh; h++) {
      const kvh = Math.floor(h / G);
      const scores: number[] = [];
      for (let p = 0; p <= qPos[t]; p++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[(t * nh + h) * hd + d] * k[(p * nKv + kvh) * hd + d];
        scores.push(dot * scale);
      }
      const m = Math.max(...scores);
      const e = scores.map((x) => Math.exp(x - m));
      const l = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < hd; d++) {
        let acc = 0;
        e.forEach((w, p) => (acc += w * v[(p * nKv + kvh) * hd + d]));
        out[(t * nh + h) * hd + d] = acc / l;
      }
    }
  }
  return out;
}

/** Shape of one training attention call. */
export interface TrainShape {
  T: number;
  nh: number;
  nKv: number;
  hd: number;
}

/**
 * Checks that segStart describes sequences packed one after another: each
 * token starts a sequence (segStart[t] = t) or continues the previous
 * token's (segStart[t] = segStart[t-1]). The GPU backward relies on it.
 */
export function checkSegStart(segStart: Uint32Array, T: number, what: string): void {
  if (segStart.length < T) throw new KernelError(`${what}: segStart has ${segStart.length} entries, T = ${T}`);
  for (let t = 0; t < T; t++) {
    const s = segStart[t];
    if (s !== t && (t === 0 || s !== segStart[t - 1])) {
      throw new KernelError(
        `${what}: segStart[${t}] = ${s}; expected ${t} (a new sequence)` + (t > 0 ? ` or ${segStart[t - 1]} (as token ${t - 1})` : ""),
      );
    }
  }
}

function checkTrainArrays(s: TrainShape, what: string, arrays: Record<string, [Float32Array, number]>): void {
  for (const [name, [a, per]] of Object.entries(arrays)) {
    if (a.length !== s.T * per) throw new KernelError(`${what}: tensor ${name} has ${a.length} elements, expected ${s.T} x ${per}`);
  }
}

/**
 * Softmax weights (f64) of query head h of token t over keys segStart[t]..t,
 * and their log-sum-exp.
 */
function trainWeights(q: Float32Array, k: Float32Array, t: number, h: number, lo: number, s: TrainShape, G: number, scale: number) {
  const { nh, nKv, hd } = s;
  const kvh = Math.floor(h / G);
  const n = t - lo + 1;
  const w = new Float64Array(n);
  let m = -Infinity;
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let d = 0; d < hd; d++) dot += q[(t * nh + h) * hd + d] * k[((lo + i) * nKv + kvh) * hd + d];
    w[i] = dot * scale;
    if (w[i] > m) m = w[i];
  }
  let l = 0;
  for (let i = 0; i < n; i++) l += w[i] = Math.exp(w[i] - m);
  for (let i = 0; i < n; i++) w[i] /= l;
  return { w, lse: m + Math.log(l) };
}

/**
 * Training attention forward (dense, f64): out [T, NH, HD] and lse [T, NH],
 * the log-sum-exp of token t's scaled scores over keys segStart[t]..t.
 */
export function trainAttentionRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  segStart: Uint32Array,
  s: TrainShape,
  scale: number,
): { out: Float32Array; lse: Float32Array } {
  const what = "trainAttentionRef";
  const { T, nh, nKv, hd } = s;
  const G = checkGroups(nh, nKv, what);
  checkTrainArrays(s, what, { q: [q, nh * hd], k: [k, nKv * hd], v: [v, nKv * hd] });
  checkSegStart(segStart, T, what);
  const out = new Float32Array(T * nh * hd);
  const lse = new Float32Array(T * nh);
  for (let t = 0; t < T; t++) {
    const lo = segStart[t];
    for (let h = 0; h < nh; h++) {
      const kvh = Math.floor(h / G);
      const r = trainWeights(q, k, t, h, lo, s, G, scale);
      lse[t * nh + h] = r.lse;
      for (let d = 0; d < hd; d++) {
        let acc = 0;
        for (let i = 0; i < r.w.length; i++) acc += r.w[i] * v[((lo + i) * nKv + kvh) * hd + d];
        out[(t * nh + h) * hd + d] = acc;
      }
    }
  }
  return { out, lse };
}

/**
 * Training attention backward (dense, f64): with P the softmax weights
 * (recomputed here from q and k), D_t = sum_d dout·out (from the given out,
 * as the kernel does), dS = P (dP - D), dP = dout·vᵀ:
 *   dq = dS k scale, dk = dSᵀ q scale, dv = Pᵀ dout,
 * dk and dv summed over the query heads that share a kv head.
 */
export function trainAttentionBackwardRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  segStart: Uint32Array,
  out: Float32Array,
  dout: Float32Array,
  s: TrainShape,
  scale: number,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const what = "trainAttentionBackwardRef";
  const { T, nh, nKv, hd } = s;
  const G = checkGroups(nh, nKv, what);
  checkTrainArrays(s, what, { q: [q, nh * hd], k: [k, nKv * hd], v: [v, nKv * hd], out: [out, nh * hd], dout: [dout, nh * hd] });
  checkSegStart(segStart, T, what);
  const dq = new Float64Array(T * nh * hd);
  const dk = new Float64Array(T * nKv * hd);
  const dv = new Float64Array(T * nKv * hd);
  for (let t = 0; t < T; t++) {
    const lo = segStart[t];
    for (let h = 0; h < nh; h++) {
      const kvh = Math.floor(h / G);
      const qo = (t * nh + h) * hd;
      const { w } = trainWeights(q, k, t, h, lo, s, G, scale);
      let D = 0;
      for (let d = 0; d < hd; d++) D += dout[qo + d] * out[qo + d];
      for (let i = 0; i < w.length; i++) {
        const ko = ((lo + i) * nKv + kvh) * hd;
        let dp = 0;
        for (let d = 0; d < hd; d++) dp += dout[qo + d] * v[ko + d];
        const ds = w[i] * (dp - D) * scale;
        for (let d = 0; d < hd; d++) {
          dq[qo + d] += ds * k[ko + d];
          dk[ko + d] += ds * q[qo + d];
          dv[ko + d] += w[i] * dout[qo + d];
        }
      }
    }
  }
  return { dq: Float32Array.from(dq), dk: Float32Array.from(dk), dv: Float32Array.from(dv) };
}

// ---------------------------------------------------------------- GPU

/** Largest head dim the kernels' workgroup tiles hold. */
export const MAX_HEAD_DIM = 128;

/** Workgroup tiling of one entry point (compile-time constants). */
interface Tiling {
  BR: number; // rows (query token x head pairs) per workgroup
  BC: number; // keys per K/V tile
  TPR: number; // threads per row
}

/** Bytes of workgroup memory a tiling needs (f32 tiles, padded row stride). */
function sharedBytes(t: Tiling): number {
  const ld = MAX_HEAD_DIM + 1;
  return 4 * (t.BR * ld + 2 * t.BC * ld + t.BR * t.BC + 3 * t.BR + t.BC + 2);
}

/** The first tiling that fits the device's workgroup memory (biggest first). */
function pickTiling(gpu: Gpu, options: Tiling[], what: string, bytes = sharedBytes): Tiling {
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  const t = options.find((o) => bytes(o) <= limit);
  if (!t) throw new KernelError(`kernel ${what}: needs ${bytes(options.at(-1)!)} bytes of workgroup memory, adapter allows ${limit}`);
  return t;
}

// Prefill: 16 rows x 4 threads; decode: 8 rows (a kv head's query heads) x 8 threads.
const PREFILL_TILINGS: Tiling[] = [
  { BR: 16, BC: 16, TPR: 4 },
  { BR: 8, BC: 8, TPR: 8 },
];
const DECODE_TILINGS: Tiling[] = [
  { BR: 8, BC: 16, TPR: 8 },
  { BR: 8, BC: 8, TPR: 8 },
];

// Training: forward as prefill; dq holds q, dout rows and k, v tiles; dkdv
// owns BC keys (TPR threads each) and walks BR query rows at a time.
const TRAIN_FWD_TILINGS: Tiling[] = PREFILL_TILINGS;
const TRAIN_DQ_TILINGS: Tiling[] = [
  { BR: 16, BC: 8, TPR: 4 },
  { BR: 8, BC: 8, TPR: 8 },
];
const TRAIN_DKDV_TILINGS: Tiling[] = [
  { BR: 8, BC: 16, TPR: 4 },
  { BR: 8, BC: 8, TPR: 8 },
];

/** Bytes of workgroup memory of train_dq / train_dkdv (dout rows, P tile, row stats on top of the prefill tiles). */
function trainSharedBytes(t: Tiling): number {
  return sharedBytes(t) + 4 * (t.BR * (MAX_HEAD_DIM + 1) + t.BR * t.BC + 5 * t.BR + 2);
}

/** Workgroups of flash-decoding to aim for (enough to fill a big GPU). */
const DECODE_TARGET_GROUPS = 512;

function checkGroups(nh: number, nKv: number, what: string): number {
  if (!(nKv > 0) || nh % nKv !== 0) throw new KernelError(`${what}: n_heads ${nh} is not a multiple of n_kv_heads ${nKv}`);
  return nh / nKv;
}

function u32Arg(v: number, name: string, what: string, min = 0): void {
  if (!Number.isInteger(v) || v < min || v > 0xffffffff) throw new KernelError(`kernel ${what}: ${name} = ${v} is not an integer >= ${min}`);
}

function bindingBytes(b: Binding): number {
  if ("buffer" in b) return b.size ?? b.buffer.size - (b.offset ?? 0);
  return b.size;
}

function checkBinding(b: Binding, bytes: number, name: string, what: string): void {
  const have = bindingBytes(b);
  if (have < bytes) throw new KernelError(`kernel ${what}: tensor ${name} binds ${have} bytes, needs at least ${bytes}`);
}

/** Validates a call's shape and bindings common to writeKV, prefill and decode. */
function checkShape(s: AttentionShape, what: string): void {
  u32Arg(s.T, "T", what);
  u32Arg(s.nh, "n_heads", what, 1);
  u32Arg(s.nKv, "n_kv_heads", what, 1);
  u32Arg(s.hd, "head_dim", what, 1);
  u32Arg(s.blockSize, "block_size", what, 1);
  u32Arg(s.maxBlocks, "max_blocks", what, 1);
  checkGroups(s.nh, s.nKv, `kernel ${what}`);
  if (s.hd > MAX_HEAD_DIM) throw new KernelError(`kernel ${what}: head_dim ${s.hd} is over the supported ${MAX_HEAD_DIM}`);
  if (s.maxBlocks * s.blockSize > 0xffffffff) throw new KernelError(`kernel ${what}: max_blocks x block_size overflows u32`);
}

/** Chunking of the context for flash-decoding (chunkLen is a multiple of bc). */
export function decodeChunks(T: number, nKv: number, rowGroups: number, maxCtx: number, bc: number, chunkLen?: number) {
  let len = chunkLen;
  if (len === undefined) {
    const perChunk = Math.max(1, T * nKv * rowGroups);
    const want = Math.max(1, Math.min(Math.ceil(DECODE_TARGET_GROUPS / perChunk), Math.ceil(maxCtx / bc)));
    len = Math.ceil(Math.ceil(maxCtx / want) / bc) * bc;
  }
  if (!Number.isInteger(len) || len <= 0 || len % bc !== 0) throw new Error(`attention decode: chunkLen ${len} must be a positive multiple of ${bc}`);
  return { chunkLen: len, nChunks: Math.ceil(maxCtx / len) };
}

export interface Attention {
  writeKV(
    b: Batch,
    k: Binding,
    v: Binding,
    kcache: Binding,
    vcache: Binding,
    blockTable: Binding,
    tokSeq: Binding,
    tokPos: Binding,
    T: number,
    nKv: number,
    hd: number,
    blockSize: number,
    maxBlocks: number,
  ): void;
  prefill(
    b: Batch,
    q: Binding,
    kcache: Binding,
    vcache: Binding,
    blockTable: Binding,
    tokSeq: Binding,
    tokPos: Binding,
    out: Binding,
    T: number,
    nh: number,
    nKv: number,
    hd: number,
    blockSize: number,
    maxBlocks: number,
    scale: number,
  ): void;
  /** As prefill; `chunkLen` (a multiple of `decodeTileKeys`) overrides the chunking heuristic. */
  decode(
    b: Batch,
    q: Binding,
    kcache: Binding,
    vcache: Binding,
    blockTable: Binding,
    tokSeq: Binding,
    tokPos: Binding,
    out: Binding,
    T: number,
    nh: number,
    nKv: number,
    hd: number,
    blockSize: number,
    maxBlocks: number,
    scale: number,
    chunkLen?: number,
  ): void;
  /**
   * Training forward over packed sequences (no cache): out [T, NH, HD] and
   * lse f32 [T, NH]. segStart must describe contiguous sequences (checkSegStart).
   */
  trainForward(
    b: Batch,
    q: Binding,
    k: Binding,
    v: Binding,
    segStart: Binding,
    out: Binding,
    lse: Binding,
    T: number,
    nh: number,
    nKv: number,
    hd: number,
    scale: number,
  ): void;
  /**
   * Training backward: writes (does not accumulate) dq [T, NH, HD] and
   * dk, dv [T, NKV, HD] from the forward's out and lse and the output
   * gradient dout. Deterministic: no atomics, fixed summation order.
   */
  trainBackward(
    b: Batch,
    q: Binding,
    k: Binding,
    v: Binding,
    segStart: Binding,
    out: Binding,
    dout: Binding,
    lse: Binding,
    dq: Binding,
    dk: Binding,
    dv: Binding,
    T: number,
    nh: number,
    nKv: number,
    hd: number,
    scale: number,
  ): void;
  /** Keys per decode tile: a forced chunkLen must be a multiple of it. */
  readonly decodeTileKeys: number;
  /** Bytes of decode and training-backward scratch held (for tests and memory accounting). */
  scratchBytes(): number;
  /** Frees the scratch buffers (after every batch using them has executed). */
  destroy(): void;
}

/**
 * Which form of the kernels: "tiled" (K/V tiles in workgroup memory, decode
 * split over context chunks + a combine; hardware GPUs) or "rows" (one
 * invocation per (token, head), or per (key, kv head) for dk/dv, no tiles
 * and no barriers; decode in one dispatch; CPU-backed adapters, where
 * barriers cost more than the tiles save: benchmarks/RESULTS.md). Prefill
 * uses the tiled kernel in both forms.
 */
export type AttentionForm = "tiled" | "rows";

export function attentionForm(gpu: Gpu): AttentionForm {
  return gpu.adapter.isFallback ? "rows" : "tiled";
}

/**
 * Compiles every attention pipeline for `dtype` once; returns the record
 * functions. `f16Operands` (dtype f32, mixed-precision training): the training
 * kernels round q, k, v and dout to f16 as they load them (f32 softmax and sums).
 * `trainHeadDim`: the "rows" training kernels are compiled for that head dim
 * only (fixed loop trip counts, accumulators in registers: the training model
 * passes its own); their calls must then use it.
 */
export async function loadAttention(
  gpu: Gpu,
  dtype: Dtype,
  form: AttentionForm = attentionForm(gpu),
  opts: { f16Operands?: boolean; trainHeadDim?: number } = {},
): Promise<Attention> {
  const half = !!opts.f16Operands;
  const fixedHd = opts.trainHeadDim;
  if (fixedHd !== undefined && !(Number.isInteger(fixedHd) && fixedHd >= 1 && fixedHd <= MAX_HEAD_DIM)) {
    throw new KernelError(`kernel attention: trainHeadDim ${fixedHd} must be an integer in 1..${MAX_HEAD_DIM}`);
  }
  if (half && (dtype !== "f32" || !gpu.features.f16)) throw new KernelError(`kernel attention: f16 operands need dtype f32 (got ${dtype}) and the shader-f16 feature`);
  if (dtype !== "f32" && dtype !== "f16") throw new KernelError(`kernel attention: dtype "${dtype}" is not f32 or f16`);
  if (dtype === "f16" && !gpu.features.f16) {
    throw new KernelError(`kernel attention: dtype f16 needs the shader-f16 feature, which adapter "${gpu.adapter.description}" lacks`);
  }
  const el = dtype === "f16" ? 2 : 4;
  // RHD / HDL: the "rows" training kernels' accumulator size and loop bound over d.
  const rowsHd = fixedHd === undefined ? { RHD: MAX_HEAD_DIM, HDL: "P.hd" } : { RHD: fixedHd, HDL: `${fixedHd}u` };
  const base = { T: dtype, ENABLE: dtype === "f16" || half ? "enable f16;" : "", MAXHD: MAX_HEAD_DIM, ...rowsHd, ...operandConstants(half) };
  const pt = pickTiling(gpu, PREFILL_TILINGS, "attention.prefill");
  const dt = pickTiling(gpu, DECODE_TILINGS, "attention.decode_partial");
  const ft = pickTiling(gpu, TRAIN_FWD_TILINGS, "attention.train_forward");
  const qt = pickTiling(gpu, TRAIN_DQ_TILINGS, "attention.train_dq", trainSharedBytes);
  const kt = pickTiling(gpu, TRAIN_DKDV_TILINGS, "attention.train_dkdv", trainSharedBytes);
  const small = { BR: 1, BC: 1, TPR: 1 }; // write_kv, decode_combine and train_delta use no tiles
  const rows = form === "rows";
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  const [kWrite, kPrefill, kPartial, kCombine, kTrainFwd, kDelta, kDq, kDkdv]: Kernel[] = await Promise.all([
    gpu.kernel("attention", "write_kv", { ...base, ...small }),
    gpu.kernel("attention", "prefill", { ...base, ...pt }),
    gpu.kernel("attention", "decode_partial", { ...base, ...dt }),
    // decode_combine, or the whole decode in the "rows" form
    rows ? gpu.kernel("attention", "decode_rows", { ...base, ...pt }) : gpu.kernel("attention", "decode_combine", { ...base, ...small }),
    gpu.kernel("attention", rows ? "train_forward_rows" : "train_forward", { ...base, ...ft }),
    gpu.kernel("attention", "train_delta", { ...base, ...small }),
    gpu.kernel("attention", rows ? "train_dq_rows" : "train_dq", { ...base, ...qt }),
    gpu.kernel("attention", rows ? "train_dkdv_rows" : "train_dkdv", { ...base, ...kt }),
  ]);
  // a dispatch of one invocation per item, 64 per workgroup, 2-D when large
  const perItem = (n: number): [number, number] => {
    const g = Math.ceil(n / 64);
    return [Math.min(g, maxGroups), Math.ceil(g / maxGroups)];
  };

  let partO: GPUBuffer | null = null;
  let partML: GPUBuffer | null = null;
  const retired: GPUBuffer[] = []; // outgrown scratch: a recorded batch may still use it
  function scratch(bytesO: number, bytesML: number): [GPUBuffer, GPUBuffer] {
    if (!partO || partO.size < bytesO) {
      if (partO) retired.push(partO);
      partO = gpu.buffer(Math.max(bytesO, partO ? partO.size * 2 : 0), "attention.decode.partO");
    }
    if (!partML || partML.size < bytesML) {
      if (partML) retired.push(partML);
      partML = gpu.buffer(Math.max(bytesML, partML ? partML.size * 2 : 0), "attention.decode.partML");
    }
    return [partO, partML];
  }
  let stats: GPUBuffer | null = null; // training backward: (lse, D) per (token, head)
  function statsScratch(bytes: number): GPUBuffer {
    if (!stats || stats.size < bytes) {
      if (stats) retired.push(stats);
      stats = gpu.buffer(Math.max(bytes, stats ? stats.size * 2 : 0), "attention.train.stats");
    }
    return stats;
  }

  function checkTrain(s: TrainShape, scale: number, what: string, tensors: Record<string, [Binding, number]>) {
    u32Arg(s.T, "T", what);
    u32Arg(s.nh, "n_heads", what, 1);
    u32Arg(s.nKv, "n_kv_heads", what, 1);
    u32Arg(s.hd, "head_dim", what, 1);
    checkGroups(s.nh, s.nKv, `kernel ${what}`);
    if (s.hd > MAX_HEAD_DIM) throw new KernelError(`kernel ${what}: head_dim ${s.hd} is over the supported ${MAX_HEAD_DIM}`);
    if (rows && fixedHd !== undefined && s.hd !== fixedHd) throw new KernelError(`kernel ${what}: head_dim ${s.hd}, but these kernels were loaded for head dim ${fixedHd} (trainHeadDim)`);
    if (!Number.isFinite(scale)) throw new KernelError(`kernel ${what}: scale ${scale} is not finite`);
    for (const [name, [b, bytes]] of Object.entries(tensors)) checkBinding(b, bytes, name, what);
  }

  function trainUniforms(s: TrainShape, scale: number) {
    return uniforms({ ...s, blockSize: 0, maxBlocks: 0 }, scale);
  }

  /** Row tiles of (token, group head) pairs per kv head, checked against the dispatch limit. */
  function rowTiles(s: TrainShape, br: number, what: string): number {
    const tiles = Math.ceil((s.T * (s.nh / s.nKv)) / br);
    if (tiles > maxGroups) throw new KernelError(`kernel ${what}: ${s.T} tokens x ${s.nh / s.nKv} heads need ${tiles} workgroups, over ${maxGroups} (split the call)`);
    return tiles;
  }

  function uniforms(s: AttentionShape, scale: number, chunkLen = 0, nChunks = 0) {
    return params().u32(s.T).u32(s.nh).u32(s.nKv).u32(s.hd).u32(s.blockSize).u32(s.maxBlocks).f32(scale).u32(chunkLen).u32(nChunks);
  }

  function checkAttn(s: AttentionShape, scale: number, q: Binding, kc: Binding, vc: Binding, table: Binding, seq: Binding, pos: Binding, out: Binding, what: string) {
    checkShape(s, what);
    if (!Number.isFinite(scale)) throw new KernelError(`kernel ${what}: scale ${scale} is not finite`);
    checkBinding(q, s.T * s.nh * s.hd * el, "q", what);
    checkBinding(out, s.T * s.nh * s.hd * el, "out", what);
    checkBinding(kc, s.blockSize * s.nKv * s.hd * el, "kcache", what);
    checkBinding(vc, s.blockSize * s.nKv * s.hd * el, "vcache", what);
    checkBinding(table, s.maxBlocks * 4, "blockTable", what);
    checkBinding(seq, s.T * 4, "tokSeq", what);
    checkBinding(pos, s.T * 4, "tokPos", what);
  }

  return {
    decodeTileKeys: dt.BC,

    writeKV(b, k, v, kcache, vcache, blockTable, tokSeq, tokPos, T, nKv, hd, blockSize, maxBlocks) {
      const what = "attention.write_kv";
      const s = { T, nh: nKv, nKv, hd, blockSize, maxBlocks };
      checkShape(s, what);
      checkBinding(k, T * nKv * hd * el, "k", what);
      checkBinding(v, T * nKv * hd * el, "v", what);
      checkBinding(kcache, blockSize * nKv * hd * el, "kcache", what);
      checkBinding(vcache, blockSize * nKv * hd * el, "vcache", what);
      checkBinding(blockTable, maxBlocks * 4, "blockTable", what);
      checkBinding(tokSeq, T * 4, "tokSeq", what);
      checkBinding(tokPos, T * 4, "tokPos", what);
      const groups = Math.ceil((T * nKv * hd) / 64);
      const y = Math.ceil(groups / maxGroups);
      b.dispatch(kWrite, {
        params: uniforms(s, 1),
        buffers: [k, v, kcache, vcache, blockTable, tokSeq, tokPos],
        groups: [Math.min(groups, maxGroups), y],
        label: what,
      });
    },

    prefill(b, q, kcache, vcache, blockTable, tokSeq, tokPos, out, T, nh, nKv, hd, blockSize, maxBlocks, scale) {
      const what = "attention.prefill";
      const s = { T, nh, nKv, hd, blockSize, maxBlocks };
      checkAttn(s, scale, q, kcache, vcache, blockTable, tokSeq, tokPos, out, what);
      const tiles = Math.ceil((T * (nh / nKv)) / pt.BR);
      if (tiles > maxGroups) throw new KernelError(`kernel ${what}: ${T} tokens x ${nh / nKv} heads need ${tiles} workgroups, over ${maxGroups} (split the call)`);
      b.dispatch(kPrefill, {
        params: uniforms(s, scale),
        buffers: [q, kcache, vcache, blockTable, tokSeq, tokPos, out],
        groups: [tiles, nKv],
        label: what,
      });
    },

    decode(b, q, kcache, vcache, blockTable, tokSeq, tokPos, out, T, nh, nKv, hd, blockSize, maxBlocks, scale, chunkLen) {
      const what = "attention.decode";
      const s = { T, nh, nKv, hd, blockSize, maxBlocks };
      checkAttn(s, scale, q, kcache, vcache, blockTable, tokSeq, tokPos, out, what);
      if (T === 0) return;
      if (T > maxGroups) throw new KernelError(`kernel ${what}: ${T} tokens over ${maxGroups} (split the call)`);
      if (rows) {
        b.dispatch(kCombine, {
          params: uniforms(s, scale),
          buffers: [q, kcache, vcache, blockTable, tokSeq, tokPos, out],
          groups: perItem(T * nh),
          label: `${what}.rows`,
        });
        return;
      }
      const rowGroups = Math.ceil(nh / nKv / dt.BR);
      const c = decodeChunks(T, nKv, rowGroups, maxBlocks * blockSize, dt.BC, chunkLen);
      if (c.nChunks > maxGroups) throw new KernelError(`kernel ${what}: ${c.nChunks} chunks over ${maxGroups}; pass a longer chunkLen`);
      const [pO, pML] = scratch(T * nh * c.nChunks * hd * 4, T * nh * c.nChunks * 2 * 4);
      const u = uniforms(s, scale, c.chunkLen, c.nChunks);
      b.dispatch(kPartial, {
        params: u,
        buffers: [q, kcache, vcache, blockTable, tokSeq, tokPos, pO, pML],
        groups: [c.nChunks, nKv * rowGroups, T],
        label: `${what}.partial`,
      });
      const th = T * nh;
      b.dispatch(kCombine, {
        params: u,
        buffers: [tokPos, pO, pML, out],
        groups: [Math.min(th, 65535), Math.ceil(th / 65535)],
        label: `${what}.combine`,
      });
    },

    trainForward(b, q, k, v, segStart, out, lse, T, nh, nKv, hd, scale) {
      const what = "attention.train_forward";
      const s = { T, nh, nKv, hd };
      checkTrain(s, scale, what, {
        q: [q, T * nh * hd * el],
        k: [k, T * nKv * hd * el],
        v: [v, T * nKv * hd * el],
        segStart: [segStart, T * 4],
        out: [out, T * nh * hd * el],
        lse: [lse, T * nh * 4],
      });
      b.dispatch(kTrainFwd, {
        params: trainUniforms(s, scale),
        buffers: [q, k, v, segStart, out, lse],
        groups: rows ? perItem(T * nh) : [rowTiles(s, ft.BR, what), nKv],
        label: what,
      });
    },

    trainBackward(b, q, k, v, segStart, out, dout, lse, dq, dk, dv, T, nh, nKv, hd, scale) {
      const what = "attention.train_backward";
      const s = { T, nh, nKv, hd };
      const qBytes = T * nh * hd * el;
      const kBytes = T * nKv * hd * el;
      checkTrain(s, scale, what, {
        q: [q, qBytes],
        k: [k, kBytes],
        v: [v, kBytes],
        segStart: [segStart, T * 4],
        out: [out, qBytes],
        dout: [dout, qBytes],
        lse: [lse, T * nh * 4],
        dq: [dq, qBytes],
        dk: [dk, kBytes],
        dv: [dv, kBytes],
      });
      if (T === 0) return;
      const dqTiles = rowTiles(s, qt.BR, what);
      const keyTiles = Math.ceil(T / kt.BC);
      if (keyTiles > maxGroups) throw new KernelError(`kernel ${what}: ${T} tokens need ${keyTiles} key tiles, over ${maxGroups} (split the call)`);
      const st = statsScratch(T * nh * 2 * 4);
      const u = trainUniforms(s, scale);
      const th = T * nh;
      const dGroups = Math.ceil(th / 64);
      b.dispatch(kDelta, {
        params: u,
        buffers: [out, dout, lse, st],
        groups: [Math.min(dGroups, maxGroups), Math.ceil(dGroups / maxGroups)],
        label: `${what}.delta`,
      });
      b.dispatch(kDq, { params: u, buffers: [q, k, v, segStart, dout, st, dq], groups: rows ? perItem(th) : [dqTiles, nKv], label: `${what}.dq` });
      b.dispatch(kDkdv, { params: u, buffers: [q, k, v, segStart, dout, st, dk, dv], groups: rows ? perItem(T * nKv) : [keyTiles, nKv], label: `${what}.dkdv` });
    },

    scratchBytes() {
      return (partO?.size ?? 0) + (partML?.size ?? 0) + (stats?.size ?? 0);
    },

    destroy() {
      for (const buf of [...retired, partO, partML, stats]) buf?.destroy();
      retired.length = 0;
      partO = partML = stats = null;
    },
  };
}
