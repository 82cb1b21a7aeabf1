/**
 * Matrix product with an HF Linear weight (kernels/matmul.wgsl):
 * C[m, col0 + n] = sum_k A[m,k]·W[n,k] + bias[n], A [M,K], W [N,K], bias [N].
 *
 * Two paths, picked by M: decode (`gemv`, few rows; memory-bound on W, which
 * it reads once per MT rows) and prefill (many rows): `tiled` (shared-memory
 * tiles with a register tile per thread) on hardware GPUs, `rows` (no barrier,
 * no shared memory, workgroup-uniform A loads) on CPU-backed adapters, where
 * barriers and per-lane loads are what costs (benchmarks/RESULTS.md). `col0`/`ldc` let a
 * caller split a weight over the 128 MiB binding limit (the LM head) into
 * row chunks bound as {buffer, offset, size} and write each chunk's columns
 * into one C.
 *
 * Fused variants (one dispatch instead of two or three; each tested against
 * the composition of the references it replaces): `norm` RMS-normalises A's
 * rows with a gain first (rmsnorm → matmul), `up` multiplies a second weight
 * alongside and writes silu(A·Wᵀ)·(A·Uᵀ) (gate/up → swiglu), `residual` adds
 * the result into C (matmul → residual add).
 *
 * f16 operands (`f16Operands`, mixed-precision training; dtype f32): W (and
 * U) are f16 copies of the f32 master weights, A is f32 and rounded to f16
 * as it is loaded (src/kernels/f16_operands.ts), bias and C stay f32. Only
 * the plain, bias and residual variants exist there: the norm prologue would
 * round A before its normalisation, so mixed training normalises first.
 */
import type { Batch, Binding, Gpu, Kernel } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import type { Dtype } from "./common.ts";
import { addRef, swigluRef } from "./elementwise.ts";
import { operandConstants } from "./f16_operands.ts";
import { rmsnormRef } from "./rmsnorm.ts";

export type { Dtype };

export interface MatmulOptions {
  /** Row stride of C in elements (default N). */
  ldc?: number;
  /** First column of C written (default 0). */
  col0?: number;
  /** Write C as f32 even when A/W are f16 (LM-head logits). */
  outF32?: boolean;
  /** Force the kernel: "decode" (gemv) or "prefill" (`config.prefill`); default by M (`gemvMaxM`). */
  path?: "decode" | "prefill";
  /** Prologue: A's rows RMS-normalised with this gain [K] and eps first (Qwen2RMSNorm). */
  norm?: { gain: Binding; eps: number };
  /** Epilogue: W is the gate weight, this the up weight [N, K]; C = silu(A·Wᵀ)·(A·upᵀ). No bias. */
  up?: Binding;
  /** Epilogue: C += the product (the residual add). */
  residual?: boolean;
}

/** The fused variants compiled by `loadMatmul` (plain and bias are always there). */
const FUSED: { norm: boolean; glu: boolean; res: boolean; bias: boolean }[] = [
  { norm: true, glu: false, res: false, bias: true }, // input norm → q/k/v (+bias)
  { norm: true, glu: false, res: false, bias: false },
  { norm: true, glu: true, res: false, bias: false }, // post-attention norm → gate/up → SwiGLU
  { norm: false, glu: false, res: true, bias: false }, // o_proj / down_proj + residual
];

function variantKey(v: { norm: boolean; glu: boolean; res: boolean; bias: boolean }, outF32: boolean): string {
  return `${v.bias ? "b" : ""}${v.norm ? "n" : ""}${v.glu ? "g" : ""}${v.res ? "r" : ""}/${outF32}`;
}

/** CPU reference: C [M,N] = A [M,K] · W [N,K]ᵀ + bias, accumulated in f64. */
export function matmulRef(
  a: Float32Array,
  w: Float32Array,
  bias: Float32Array | null,
  M: number,
  N: number,
  K: number,
): Float32Array {
  if (a.length < M * K || w.length < N * K || (bias && bias.length < N)) {
    throw new RangeError(`matmulRef: A ${a.length} < ${M}x${K}, W ${w.length} < ${N}x${K} or bias ${bias?.length} < ${N}`);
  }
  const c = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      const ao = m * K;
      const wo = n * K;
      for (let k = 0; k < K; k++) s += a[ao + k] * w[wo + k];
      c[m * N + n] = s;
    }
  }
  return c;
}

/**
 * CPU reference of the fused product as the composition it replaces:
 * rmsnormRef (norm) → matmulRef (+bias) [→ swigluRef with the up product]
 * [→ addRef into `residual`]. Returns C [M, N].
 */
export function matmulFusedRef(
  a: Float32Array,
  w: Float32Array,
  bias: Float32Array | null,
  M: number,
  N: number,
  K: number,
  f: { norm?: { gain: Float32Array; eps: number }; up?: Float32Array; residual?: Float32Array },
): Float32Array {
  const x = f.norm ? rmsnormRef(a, f.norm.gain, M, K, f.norm.eps) : a;
  let c = matmulRef(x, w, bias, M, N, K);
  if (f.up) c = swigluRef(c, matmulRef(x, f.up, null, M, N, K));
  if (f.residual) c = addRef(f.residual, c);
  return c;
}

/** Tile sizes; the tuned defaults are in `matmulConfig`. */
export interface MatmulConfig {
  /** Prefill kernel: "tiled" (shared memory, for GPUs) or "rows" (barrier-free, for CPU adapters). */
  prefill: "tiled" | "rows";
  /** tiled: threads along N and M, register tile TN x TM, K slice BK. */
  WX: number;
  WY: number;
  TM: number;
  TN: number;
  BK: number;
  /** rows: rows per workgroup, columns per thread, threads per workgroup. */
  RM: number;
  RN: number;
  RWG: number;
  /** gemv: threads, threads splitting K per column group (1: none, no reduction), columns per group, rows per pass over K. */
  WG: number;
  KS: number;
  NC: number;
  MT: number;
  /** Use gemv when M <= this. */
  gemvMaxM: number;
}

/** Tile sizes measured best (benchmarks/kernels.ts) on each kind of adapter. */
export function matmulConfig(gpu: Gpu): MatmulConfig {
  return gpu.adapter.isFallback
    ? { prefill: "rows", WX: 8, WY: 8, TM: 4, TN: 4, BK: 16, RM: 8, RN: 4, RWG: 32, WG: 64, KS: 1, NC: 2, MT: 4, gemvMaxM: 8 }
    : { prefill: "tiled", WX: 16, WY: 16, TM: 4, TN: 4, BK: 16, RM: 8, RN: 4, RWG: 64, WG: 128, KS: 32, NC: 2, MT: 4, gemvMaxM: 16 };
}

function bytesOf(b: Binding): number {
  if ("buffer" in b) return b.size ?? b.buffer.size - (b.offset ?? 0);
  return b.size;
}

function offsetOf(b: Binding): number {
  return "buffer" in b ? (b.offset ?? 0) : 0;
}

export interface Matmul {
  matmul(
    b: Batch,
    a: Binding,
    w: Binding,
    bias: Binding | null,
    c: Binding,
    M: number,
    N: number,
    K: number,
    opts?: MatmulOptions,
  ): void;
  readonly config: MatmulConfig;
}

/** Compile every matmul pipeline for `dtype` once; returns the recorder. */
/**
 * `opts.singleRowGemv`: also compile gemv with one row per pass over K, used
 * when M = 1 (a decode step at batch 1): the MT-row kernel would compute MT
 * rows, MT - 1 of them clamped copies of row 0 (measured 0.88 -> 0.76 ms a
 * decode step of the tiny model on lavapipe). A row's result is the same
 * bits either way: each row accumulates on its own, in the same order.
 */
export async function loadMatmul(gpu: Gpu, dtype: Dtype, config: Partial<MatmulConfig> = {}, opts: { f16Operands?: boolean; singleRowGemv?: boolean } = {}): Promise<Matmul> {
  const half = !!opts.f16Operands;
  if ((dtype === "f16" || half) && !gpu.features.f16) {
    throw new KernelError(`matmul: ${half ? "f16 operands need" : "dtype f16 needs"} the shader-f16 feature, which adapter "${gpu.adapter.description}" lacks`);
  }
  if (half && dtype !== "f32") throw new KernelError(`matmul: f16 operands go with dtype f32 (f32 A and C, f16 W), got ${dtype}`);
  const cfg = { ...matmulConfig(gpu), ...config };
  if (cfg.TM % 4 || cfg.TN % 4) throw new KernelError(`matmul: TM ${cfg.TM} and TN ${cfg.TN} must be multiples of 4`);
  if (cfg.prefill !== "tiled" && cfg.prefill !== "rows") throw new KernelError(`matmul: prefill "${cfg.prefill}" is not "tiled" or "rows"`);
  for (const [name, v] of Object.entries({ RM: cfg.RM, RN: cfg.RN, RWG: cfg.RWG })) {
    if (!Number.isInteger(v) || v < 1) throw new KernelError(`matmul: rows ${name} = ${v} must be a positive integer`);
  }
  if (cfg.KS & (cfg.KS - 1) || cfg.WG % cfg.KS) {
    throw new KernelError(`matmul: gemv KS ${cfg.KS} must be a power of two dividing WG ${cfg.WG}`);
  }
  const esize = dtype === "f16" ? 2 : 4;
  const wsize = half ? 2 : esize; // W and U
  const pipes = new Map<string, Kernel>();
  const loads: Promise<void>[] = [];
  const prefill: [string, number][] = cfg.prefill === "tiled" ? [["tiled", 1]] : [["rows", 1], ["rows", 4]];
  if (cfg.prefill === "tiled" && ((cfg.WX * cfg.WY) % cfg.BK || (cfg.WY * cfg.TM * cfg.BK) % (cfg.WX * cfg.WY))) {
    throw new KernelError(`matmul: tiled needs BK ${cfg.BK} to divide WX·WY and WX·WY to divide BM·BK (the norm prologue's staging)`);
  }
  // The SwiGLU variant keeps two accumulators per column: half the columns
  // per thread group keeps the register tile the size of the plain one's.
  const gluNC = (glu: boolean) => (glu ? Math.max(1, cfg.NC >> 1) : cfg.NC);
  const plain = [false, true].map((bias) => ({ norm: false, glu: false, res: false, bias }));
  const variants = half ? [...plain.map((v) => ({ ...v, outF32: false })), ...FUSED.filter((v) => !v.norm).map((v) => ({ ...v, outF32: false }))] : [
    ...plain.flatMap((v) => (dtype === "f16" ? [false, true] : [false]).map((outF32) => ({ ...v, outF32 }))),
    ...FUSED.map((v) => ({ ...v, outF32: false })),
    // the LM head: final norm in the prologue, f32 logits
    ...(dtype === "f16" ? [{ norm: true, glu: false, res: false, bias: false, outF32: true }] : []),
  ];
  const passes: [string, number, number][] = [...prefill.map(([e, V]): [string, number, number] => [e, V, cfg.MT]), ["gemv", 1, cfg.MT], ["gemv", 4, cfg.MT]];
  const singleRow = !!opts.singleRowGemv && cfg.MT > 1;
  if (singleRow) passes.push(["gemv", 1, 1], ["gemv", 4, 1]);
  for (const [entry, V, MT] of passes) {
    for (const v of variants) {
      // bindings after A (1) and W (2): U, bias, G, C, present ones only
      let nb = 3;
      const B_U = v.glu ? nb++ : 0;
      const B_BIAS = v.bias ? nb++ : 0;
      const B_G = v.norm ? nb++ : 0;
      const B_C = nb;
      const NC = gluNC(v.glu);
      const NV = MT * NC;
      const on = (x: boolean) => (x ? "" : "//");
      const wt = half ? "f16" : dtype;
      const consts = {
        ENABLE: dtype === "f16" || half ? "enable f16;" : "",
        ...operandConstants(half, V === 4),
        T: dtype,
        VW: V === 4 ? `vec4<${wt}>` : wt,
        TC: v.outF32 ? "f32" : dtype,
        IF_BIAS: on(v.bias),
        IF_GLU: on(v.glu),
        IF_NORM: on(v.norm),
        IF_RES: on(v.res),
        B_U,
        B_BIAS,
        B_G,
        B_C,
        V,
        VT: V === 4 ? `vec4<${dtype}>` : dtype,
        FT: V === 4 ? "vec4<f32>" : "f32",
        IF_V4: on(V === 4),
        IF_V1: on(V !== 4),
        WX: cfg.WX,
        WY: cfg.WY,
        TM: cfg.TM,
        TN: cfg.TN,
        BK: cfg.BK,
        RM: cfg.RM,
        RN: cfg.RN,
        RWG: cfg.RWG,
        WG: cfg.WG,
        KS: cfg.KS,
        IF_DIRECT: on(cfg.KS === 1),
        IF_REDUCE: on(cfg.KS !== 1),
        NC,
        MT,
        NRED: NV * (v.glu ? 2 : 1) + (v.norm ? MT : 0),
        U_OFF: v.glu ? NV : 0,
        SS_OFF: v.norm ? NV * (v.glu ? 2 : 1) : 0,
      };
      const key = `${entry}${entry === "tiled" ? "" : V}${MT === cfg.MT ? "" : "m1"}/${variantKey(v, v.outF32)}`;
      loads.push(gpu.kernel("matmul", entry, consts).then((k) => void pipes.set(key, k)));
    }
  }
  await Promise.all(loads);
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;

  function matmul(
    b: Batch,
    a: Binding,
    w: Binding,
    bias: Binding | null,
    c: Binding,
    M: number,
    N: number,
    K: number,
    opts: MatmulOptions = {},
  ): void {
    const ldc = opts.ldc ?? N;
    const col0 = opts.col0 ?? 0;
    const outF32 = !!opts.outF32 && dtype === "f16";
    for (const [name, v] of Object.entries({ M, N, K, ldc, col0 })) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new KernelError(`matmul: ${name} = ${v} is not a u32`);
    }
    if (M === 0 || N === 0) return;
    if (K === 0) throw new KernelError(`matmul: K = 0 (A [${M},0] · W [${N},0]ᵀ)`);
    if (col0 + N > ldc) throw new KernelError(`matmul: columns col0 ${col0} + N ${N} exceed ldc ${ldc}`);
    const cSize = outF32 ? 4 : esize;
    const v = { norm: !!opts.norm, glu: !!opts.up, res: !!opts.residual, bias: bias !== null };
    const need: [string, Binding | null, number][] = [
      ["A", a, M * K * esize],
      ["W", w, N * K * wsize],
      ["up", opts.up ?? null, N * K * wsize],
      ["bias", bias, N * esize],
      ["gain", opts.norm?.gain ?? null, K * esize],
      ["C", c, ((M - 1) * ldc + col0 + N) * cSize],
    ];
    for (const [name, buf, bytes] of need) {
      if (buf && bytesOf(buf) < bytes) {
        throw new KernelError(
          `matmul (${dtype}${half ? ", f16 operands" : ""}, M ${M} N ${N} K ${K}): binding ${name} has ${bytesOf(buf)} bytes, needs ${bytes}`,
        );
      }
    }
    const gemv = opts.path ? opts.path === "decode" : M <= cfg.gemvMaxM;
    // gemv and rows read A and W in vec4 units when every row starts 4-aligned
    const vec = [a, opts.norm?.gain].every((x) => !x || offsetOf(x) % (4 * esize) === 0) && [w, opts.up].every((x) => !x || offsetOf(x) % (4 * wsize) === 0);
    const V = K % 4 === 0 && vec ? 4 : 1;
    const single = gemv && M === 1 && singleRow;
    const name = gemv ? `gemv${V}${single ? "m1" : ""}` : cfg.prefill === "rows" ? `rows${V}` : "tiled";
    const k = pipes.get(`${name}/${variantKey(v, outF32)}`);
    if (!k) throw new KernelError(`matmul: no compiled variant ${JSON.stringify({ ...v, outF32 })} (fused variants: ${JSON.stringify(FUSED)}, f16/f32 output)`);
    const eps = opts.norm?.eps ?? 0;
    if (!Number.isFinite(eps) || eps < 0) throw new KernelError(`matmul: norm eps ${eps} must be a finite non-negative number`);
    const u = params().u32(M).u32(N).u32(K).u32(ldc).u32(col0).f32(eps);
    const buffers = [a, w, opts.up, bias, opts.norm?.gain, c].filter((x): x is Binding => !!x);
    let groups: [number, number];
    if (gemv) {
      const g = Math.ceil(N / (gluNC(v.glu) * (cfg.WG / cfg.KS)));
      groups = [Math.min(g, maxGroups), Math.ceil(g / maxGroups)];
    } else if (cfg.prefill === "rows") {
      groups = [Math.ceil(N / (cfg.RWG * cfg.RN)), Math.ceil(M / cfg.RM)];
    } else {
      groups = [Math.ceil(N / (cfg.WX * cfg.TN)), Math.ceil(M / (cfg.WY * cfg.TM))];
    }
    const fused = `${v.norm ? "+norm" : ""}${v.glu ? "+swiglu" : ""}${v.res ? "+residual" : ""}`;
    b.dispatch(k, { params: u, buffers, groups, label: `matmul.${name}${fused} ${M}x${N}x${K}` });
  }

  return { matmul, config: cfg };
}
