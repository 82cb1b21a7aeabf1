/**
 * Backward of the HF Linear y = x·Wᵀ + b (kernels/matmul_grad.wgsl), f32 only:
 * gradients are accumulated into f32 buffers (master-weight gradients), and
 * f16 activations would be converted before reaching here.
 *
 * Legend: M rows (tokens), N output features, K input features.
 *   dInput:  dx [M,K]  = dy [M,N] · W [N,K]   (or += with `accumulate`, to
 *            merge the q/k/v branches into one gradient, or a weight's chunks)
 *   dWeight: dw [N,K] += dy [M,N]ᵀ · x [M,K]  (always +=: micro-batches)
 *   dBias:   db [N]   += Σ_m dy [m,:]
 * A weight over the 128 MiB binding limit is processed in row chunks: bind
 * the chunk of W / dw as {buffer, offset, size}, pass the chunk's N, and
 * select its columns of dy with `ldy` (dy's row stride) and `col0` (the
 * chunk's first column); dInput accumulates over the chunks.
 * Every sum runs in a fixed order (no atomics): results are deterministic.
 */
import type { Batch, Binding, Gpu, Kernel } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { operandConstants } from "./f16_operands.ts";

export interface MatmulGradOptions {
  /** Row stride of dy in elements (default N). */
  ldy?: number;
  /** First column of dy read (default 0). */
  col0?: number;
}

/** CPU reference: dx [M,K] = dy [M,N] · W [N,K] (+ dx when `accumulate`), f64 sums. */
export function matmulDInputRef(
  dy: Float32Array,
  w: Float32Array,
  M: number,
  N: number,
  K: number,
  dx: Float32Array | null = null,
): Float32Array {
  if (dy.length < M * N || w.length < N * K || (dx && dx.length < M * K)) {
    throw new RangeError(`matmulDInputRef: dy ${dy.length} < ${M}x${N}, W ${w.length} < ${N}x${K} or dx ${dx?.length} < ${M}x${K}`);
  }
  const out = new Float32Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dy[m * N + n] * w[n * K + k];
      out[m * K + k] = dx ? dx[m * K + k] + s : s;
    }
  }
  return out;
}

/** CPU reference: dw [N,K] + dy [M,N]ᵀ · x [M,K], f64 sums (dw null: from zero). */
export function matmulDWeightRef(
  dy: Float32Array,
  x: Float32Array,
  M: number,
  N: number,
  K: number,
  dw: Float32Array | null = null,
): Float32Array {
  if (dy.length < M * N || x.length < M * K || (dw && dw.length < N * K)) {
    throw new RangeError(`matmulDWeightRef: dy ${dy.length} < ${M}x${N}, x ${x.length} < ${M}x${K} or dw ${dw?.length} < ${N}x${K}`);
  }
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let m = 0; m < M; m++) s += dy[m * N + n] * x[m * K + k];
      out[n * K + k] = dw ? dw[n * K + k] + s : s;
    }
  }
  return out;
}

/** CPU reference: db [N] + Σ_m dy [m,:], f64 sums (db null: from zero). */
export function matmulDBiasRef(dy: Float32Array, M: number, N: number, db: Float32Array | null = null): Float32Array {
  if (dy.length < M * N || (db && db.length < N)) {
    throw new RangeError(`matmulDBiasRef: dy ${dy.length} < ${M}x${N} or db ${db?.length} < ${N}`);
  }
  const out = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let m = 0; m < M; m++) s += dy[m * N + n];
    out[n] = db ? db[n] + s : s;
  }
  return out;
}

/** Tile sizes; defaults per kind of adapter in `matmulGradConfig`. */
export interface MatmulGradConfig {
  /** dInput/dWeight: threads along K and along rows of the result, register tile TM x TN, reduction slice BR. */
  WX: number;
  WY: number;
  TM: number;
  TN: number;
  BR: number;
  /** dBias: columns per workgroup, row lanes per column (power of two). */
  BX: number;
  BY: number;
  /**
   * dInput/dWeight kernel: "tiled" (shared-memory tiles; hardware GPUs) or
   * "rows" (no shared memory, no barrier: CPU-backed adapters; K not a
   * multiple of 4 falls back to tiled), with RM rows per workgroup and RWG
   * threads of 4 columns each.
   */
  form: "tiled" | "rows";
  RM: number;
  RWG: number;
}

/** The forward's tile shape (64 threads on the software adapter, 256 elsewhere); the rows form on CPU adapters. */
export function matmulGradConfig(gpu: Gpu): MatmulGradConfig {
  return gpu.adapter.isFallback
    ? { WX: 8, WY: 8, TM: 4, TN: 4, BR: 16, BX: 16, BY: 4, form: "rows", RM: 8, RWG: 16 }
    : { WX: 16, WY: 16, TM: 4, TN: 4, BR: 16, BX: 64, BY: 4, form: "tiled", RM: 8, RWG: 16 };
}

export interface MatmulGrad {
  /** dx [M,K] = dy [M,N] · W [N,K]; with `accumulate`, dx += dy · W. */
  dInput(
    b: Batch,
    dy: Binding,
    w: Binding,
    dx: Binding,
    M: number,
    N: number,
    K: number,
    opts?: MatmulGradOptions & { accumulate?: boolean },
  ): void;
  /** dw [N,K] += dy [M,N]ᵀ · x [M,K]. */
  dWeight(b: Batch, dy: Binding, x: Binding, dw: Binding, M: number, N: number, K: number, opts?: MatmulGradOptions): void;
  /** db [N] += Σ_m dy [m,:]. */
  dBias(b: Batch, dy: Binding, db: Binding, M: number, N: number, opts?: MatmulGradOptions): void;
  readonly config: MatmulGradConfig;
}

function bytesOf(b: Binding): number {
  if ("buffer" in b) return b.size ?? b.buffer.size - (b.offset ?? 0);
  return b.size;
}

/**
 * Compile the three backward pipelines once; returns their recorders. f32
 * values; with `f16Operands` (mixed-precision training) dy and x are rounded
 * to f16 as they are loaded and dInput's W is an f16 weight copy.
 */
export async function loadMatmulGrad(gpu: Gpu, config: Partial<MatmulGradConfig> = {}, opts: { f16Operands?: boolean } = {}): Promise<MatmulGrad> {
  const half = !!opts.f16Operands;
  if (half && !gpu.features.f16) throw new KernelError(`matmul_grad: f16 operands need the shader-f16 feature, which adapter "${gpu.adapter.description}" lacks`);
  const cfg = { ...matmulGradConfig(gpu), ...config };
  if (cfg.TM % 4 || cfg.TN % 4) throw new KernelError(`matmul_grad: TM ${cfg.TM} and TN ${cfg.TN} must be multiples of 4`);
  if (cfg.BY & (cfg.BY - 1)) throw new KernelError(`matmul_grad: BY ${cfg.BY} must be a power of two`);
  if (cfg.form !== "tiled" && cfg.form !== "rows") throw new KernelError(`matmul_grad: form ${JSON.stringify(cfg.form)} is not "tiled" or "rows"`);
  const consts = { WX: cfg.WX, WY: cfg.WY, TM: cfg.TM, TN: cfg.TN, BR: cfg.BR, BX: cfg.BX, BY: cfg.BY, RM: cfg.RM, RWG: cfg.RWG, ENABLE: half ? "enable f16;" : "", ...operandConstants(half) };
  const rowsForm = cfg.form === "rows";
  const entries = ["dinput", "dweight", "bias", ...(rowsForm ? ["dinput_rows", "dweight_rows"] : [])];
  const [kIn, kW, kB, kInRows, kWRows]: (Kernel | undefined)[] = await Promise.all(
    entries.map((e) => gpu.kernel("matmul_grad", e, { ...consts, TB: half && e.startsWith("dinput") ? "f16" : "f32" })),
  );
  const wsize = half ? 2 : 4; // dInput's W
  const BM = cfg.WY * cfg.TM;
  const BN = cfg.WX * cfg.TN;
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;

  /** Checks shapes and binding sizes (dy's from ldy/col0); returns ldy and col0. */
  function validate(
    what: string,
    dims: { M: number; N: number; K?: number },
    opts: MatmulGradOptions,
    dy: Binding,
    bindings: [string, Binding, number][],
  ): { ldy: number; col0: number } {
    const { M, N } = dims;
    const ldy = opts.ldy ?? N;
    const col0 = opts.col0 ?? 0;
    for (const [name, v] of Object.entries({ ...dims, ldy, col0 })) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new KernelError(`${what}: ${name} = ${v} is not a u32`);
    }
    if (col0 + N > ldy) throw new KernelError(`${what}: dy columns col0 ${col0} + N ${N} exceed its row stride ldy ${ldy}`);
    const dyBytes = M === 0 || N === 0 ? 0 : ((M - 1) * ldy + col0 + N) * 4;
    for (const [name, buf, bytes] of [["dy", dy, dyBytes] as [string, Binding, number], ...bindings]) {
      if (bytesOf(buf) < bytes) {
        throw new KernelError(`${what} (${JSON.stringify({ ...dims, ldy, col0 })}): binding ${name} has ${bytesOf(buf)} bytes, needs ${bytes}`);
      }
    }
    return { ldy, col0 };
  }

  /** The rows form where it applies (CPU adapters, K a multiple of 4). */
  const useRows = (K: number) => rowsForm && K % 4 === 0;

  function grid(what: string, cols: number, rows: number, K = cols): [number, number] {
    const g: [number, number] = useRows(K) ? [Math.ceil(cols / (4 * cfg.RWG)), Math.ceil(rows / cfg.RM)] : [Math.ceil(cols / BN), Math.ceil(rows / BM)];
    if (g[0] > maxGroups || g[1] > maxGroups) {
      throw new KernelError(`${what}: grid ${g.join("x")} exceeds ${maxGroups} workgroups per dimension; split the call`);
    }
    return g;
  }

  function dInput(
    b: Batch,
    dy: Binding,
    w: Binding,
    dx: Binding,
    M: number,
    N: number,
    K: number,
    opts: MatmulGradOptions & { accumulate?: boolean } = {},
  ): void {
    const what = "matmul_grad.dInput";
    const { ldy, col0 } = validate(what, { M, N, K }, opts, dy, [
      ["W", w, N * K * wsize],
      ["dx", dx, M * K * 4],
    ]);
    if (M === 0 || K === 0) return;
    if (N === 0) {
      // an empty sum: dx = 0, or dx unchanged when accumulating
      if (!opts.accumulate) {
        const r = "buffer" in dx ? dx : { buffer: dx, offset: 0 };
        b.clear(r.buffer, r.offset ?? 0, M * K * 4);
      }
      return;
    }
    const u = params().u32(M).u32(N).u32(K).u32(ldy).u32(col0).u32(opts.accumulate ? 1 : 0);
    b.dispatch(useRows(K) ? kInRows! : kIn!, { params: u, buffers: [dy, w, dx], groups: grid(what, K, M), label: `matmul_grad.dinput ${M}x${N}x${K}` });
  }

  function dWeight(
    b: Batch,
    dy: Binding,
    x: Binding,
    dw: Binding,
    M: number,
    N: number,
    K: number,
    opts: MatmulGradOptions = {},
  ): void {
    const what = "matmul_grad.dWeight";
    const { ldy, col0 } = validate(what, { M, N, K }, opts, dy, [
      ["x", x, M * K * 4],
      ["dw", dw, N * K * 4],
    ]);
    if (M === 0 || N === 0 || K === 0) return; // dw += 0
    const u = params().u32(M).u32(N).u32(K).u32(ldy).u32(col0).u32(1);
    b.dispatch(useRows(K) ? kWRows! : kW!, { params: u, buffers: [dy, x, dw], groups: grid(what, K, N), label: `matmul_grad.dweight ${M}x${N}x${K}` });
  }

  function dBias(b: Batch, dy: Binding, db: Binding, M: number, N: number, opts: MatmulGradOptions = {}): void {
    const what = "matmul_grad.dBias";
    const { ldy, col0 } = validate(what, { M, N }, opts, dy, [
      ["db", db, N * 4],
    ]);
    if (M === 0 || N === 0) return; // db += 0
    const groups = Math.ceil(N / cfg.BX);
    if (groups > maxGroups) throw new KernelError(`${what}: N ${N} needs ${groups} workgroups, over ${maxGroups}; split the call`);
    const u = params().u32(M).u32(N).u32(0).u32(ldy).u32(col0).u32(1);
    b.dispatch(kB!, { params: u, buffers: [dy, db], groups: [groups], label: `matmul_grad.bias ${M}x${N}` });
  }

  return { dInput, dWeight, dBias, config: cfg };
}
