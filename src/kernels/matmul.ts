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
 */
import type { Batch, Binding, Gpu, Kernel } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import type { Dtype } from "./common.ts";

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
export async function loadMatmul(gpu: Gpu, dtype: Dtype, config: Partial<MatmulConfig> = {}): Promise<Matmul> {
  if (dtype === "f16" && !gpu.features.f16) {
    throw new KernelError(`matmul: dtype f16 needs the shader-f16 feature, which adapter "${gpu.adapter.description}" lacks`);
  }
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
  const pipes = new Map<string, Kernel>();
  const loads: Promise<void>[] = [];
  const prefill: [string, number][] = cfg.prefill === "tiled" ? [["tiled", 1]] : [["rows", 1], ["rows", 4]];
  for (const [entry, V] of [...prefill, ["gemv", 1], ["gemv", 4]] as const) {
    for (const hasBias of [false, true]) {
      for (const outF32 of dtype === "f16" ? [false, true] : [false]) {
        const consts = {
          ENABLE: dtype === "f16" ? "enable f16;" : "",
          T: dtype,
          TC: outF32 ? "f32" : dtype,
          IF_BIAS: hasBias ? "" : "//",
          C_BINDING: hasBias ? 4 : 3,
          V,
          VT: V === 4 ? `vec4<${dtype}>` : dtype,
          IF_V4: V === 4 ? "" : "//",
          IF_V1: V === 4 ? "//" : "",
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
          IF_DIRECT: cfg.KS === 1 ? "" : "//",
          IF_REDUCE: cfg.KS === 1 ? "//" : "",
          NC: cfg.NC,
          MT: cfg.MT,
        };
        const key = `${entry}${entry === "tiled" ? "" : V}/${hasBias}/${outF32}`;
        loads.push(gpu.kernel("matmul", entry, consts).then((k) => void pipes.set(key, k)));
      }
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
    const need: [string, Binding | null, number][] = [
      ["A", a, M * K * esize],
      ["W", w, N * K * esize],
      ["bias", bias, N * esize],
      ["C", c, ((M - 1) * ldc + col0 + N) * cSize],
    ];
    for (const [name, buf, bytes] of need) {
      if (buf && bytesOf(buf) < bytes) {
        throw new KernelError(
          `matmul (${dtype}, M ${M} N ${N} K ${K}): binding ${name} has ${bytesOf(buf)} bytes, needs ${bytes}`,
        );
      }
    }
    const gemv = opts.path ? opts.path === "decode" : M <= cfg.gemvMaxM;
    // gemv and rows read A and W in vec4 units when every row starts 4-aligned
    const V = K % 4 === 0 && offsetOf(a) % (4 * esize) === 0 && offsetOf(w) % (4 * esize) === 0 ? 4 : 1;
    const name = gemv ? `gemv${V}` : cfg.prefill === "rows" ? `rows${V}` : "tiled";
    const k = pipes.get(`${name}/${bias !== null}/${outF32}`)!;
    const u = params().u32(M).u32(N).u32(K).u32(ldc).u32(col0);
    const buffers = bias ? [a, w, bias, c] : [a, w, c];
    let groups: [number, number];
    if (gemv) {
      const g = Math.ceil(N / (cfg.NC * (cfg.WG / cfg.KS)));
      groups = [Math.min(g, maxGroups), Math.ceil(g / maxGroups)];
    } else if (cfg.prefill === "rows") {
      groups = [Math.ceil(N / (cfg.RWG * cfg.RN)), Math.ceil(M / cfg.RM)];
    } else {
      groups = [Math.ceil(N / (cfg.WX * cfg.TN)), Math.ceil(M / (cfg.WY * cfg.TM))];
    }
    b.dispatch(k, { params: u, buffers, groups, label: `matmul.${name} ${M}x${N}x${K}` });
  }

  return { matmul, config: cfg };
}
