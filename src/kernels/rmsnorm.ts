/**
 * Qwen2 RMSNorm (kernels/rmsnorm.wgsl), computed in f32 whatever the storage,
 * and its backward (f32 only).
 *
 * Legend: rows tokens, dim features (1536 hidden; up to 8960).
 * HF's Qwen2RMSNorm rounds x·rsqrt(...) to the model dtype before the weight
 * multiply; here the whole expression is f32 and rounds once (≤ 1 f16 ulp of
 * difference, and closer to the exact value).
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params, STORAGE } from "../gpu/index.ts";
import { checkBinding, checkCount, dtypeConstants, grid, sameBuffer, type Dtype } from "./common.ts";

const WG = 256; // power of two (tree reduction)

/** out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * w, in f64 rounded to f32. */
export function rmsnormRef(x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): Float32Array {
  if (x.length !== rows * dim || w.length !== dim) {
    throw new Error(`rmsnormRef: x has ${x.length} elements (want ${rows}×${dim}), w ${w.length} (want ${dim})`);
  }
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const inv = 1 / Math.sqrt(ss / dim + Math.fround(eps));
    for (let i = 0; i < dim; i++) out[r * dim + i] = x[r * dim + i] * inv * w[i];
  }
  return out;
}

/**
 * Backward of rmsnormRef in f64: with inv = 1/sqrt(mean(x²) + eps) and
 * x̂ = x·inv, dx = inv·(dy·w − x̂·mean(dy·w·x̂)) and dw = Σ_rows dy·x̂
 * (returned fresh; the GPU kernel adds it into its dw).
 */
export function rmsnormBackwardRef(
  x: Float32Array,
  w: Float32Array,
  dy: Float32Array,
  rows: number,
  dim: number,
  eps: number,
): { dx: Float32Array; dw: Float32Array } {
  if (x.length !== rows * dim || dy.length !== rows * dim || w.length !== dim) {
    throw new Error(`rmsnormBackwardRef: x has ${x.length} elements, dy ${dy.length} (want ${rows}×${dim}), w ${w.length} (want ${dim})`);
  }
  const dx = new Float32Array(rows * dim);
  const dw = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i] ** 2;
    const inv = 1 / Math.sqrt(ss / dim + Math.fround(eps));
    let dot = 0; // Σ dy·w·x̂
    for (let i = 0; i < dim; i++) dot += dy[o + i] * w[i] * x[o + i] * inv;
    for (let i = 0; i < dim; i++) {
      const xh = x[o + i] * inv;
      dx[o + i] = inv * (dy[o + i] * w[i] - (xh * dot) / dim);
      dw[i] += dy[o + i] * xh;
    }
  }
  return { dx, dw: Float32Array.from(dw) };
}

/** Rows per dw partial sum in the backward (pass 2 of rmsnorm_backward). */
const CHUNK_ROWS = 32;

/**
 * Which form of the row reduction: "workgroup" (a workgroup per row, tree
 * reduction; hardware GPUs) or "row" (one invocation per row, serial sum;
 * CPU-backed adapters, where barriers are what costs).
 */
export type RowVariant = "workgroup" | "row";

export function rowVariant(gpu: Gpu): RowVariant {
  return gpu.adapter.isFallback ? "row" : "workgroup";
}

const WG_ROW = 64;

export async function loadRmsNorm(gpu: Gpu, dtype: Dtype, variant: RowVariant = rowVariant(gpu)) {
  const c = { ...dtypeConstants(gpu, dtype, "rmsnorm"), WG, WG_ROW };
  const row = variant === "row";
  // The backward is f32-only (training keeps f32 activations and gradients).
  const [k, kDx, kPart, kFinal] = await Promise.all([
    gpu.kernel("rmsnorm", row ? "rmsnorm_row" : "rmsnorm", c),
    ...(dtype === "f32"
      ? [row ? "rmsnorm_backward_dx_row" : "rmsnorm_backward_dx", "rmsnorm_backward_dw_partial", "rmsnorm_backward_dw_final"].map((e) => gpu.kernel("rmsnorm", e, c))
      : [null, null, null]),
  ]);
  // a workgroup per row, or WG_ROW rows per workgroup
  const rowGroups = (rows: number, what: string) => grid(row ? Math.ceil(rows / WG_ROW) : rows, max, what);
  const bytes = dtype === "f16" ? 2 : 4;
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  // Backward scratch (inv per row, dw partials per row chunk), grown on demand.
  // Reused by every call: the GPU runs a batch's dispatches in order, so a
  // call's passes 2 and 3 read it before the next call's pass 1 overwrites it.
  const scratch: { inv: GPUBuffer | null; part: GPUBuffer | null } = { inv: null, part: null };
  const grow = (name: "inv" | "part", bytes: number): GPUBuffer => {
    const have = scratch[name];
    if (have && have.size >= bytes) return have;
    return (scratch[name] = gpu.device.createBuffer({ size: Math.max(256, bytes), usage: STORAGE, label: `rmsnorm backward ${name}` }));
  };
  return {
    /** out = rmsnorm(x) · w; x [rows, dim], w [dim]. */
    rmsnorm(b: Batch, x: Binding, w: Binding, out: Binding, rows: number, dim: number, eps: number): void {
      const what = "rmsnorm";
      checkCount(rows, "rows", what);
      checkCount(dim, "dim", what);
      if (!(eps > 0) || !Number.isFinite(eps)) throw new KernelError(`kernel ${what}: eps = ${eps} must be a positive number`);
      if (rows * dim > 0xffffffff) throw new KernelError(`kernel ${what}: rows·dim = ${rows * dim} overflows u32`);
      checkBinding(x, rows * dim, bytes, "x", what);
      checkBinding(w, dim, bytes, "w", what);
      checkBinding(out, rows * dim, bytes, "out", what);
      if (sameBuffer(out, x) || sameBuffer(out, w)) throw new KernelError(`kernel ${what}: out must not share a buffer with x or w`);
      if (rows === 0 || dim === 0) return;
      b.dispatch(k, {
        params: params().u32(rows).u32(dim).f32(eps),
        buffers: [x, w, out],
        groups: rowGroups(rows, what),
        label: "rmsnorm",
      });
    },
    /**
     * Backward (f32): dx [rows, dim] written (or added to dx with
     * `accumulate`: the residual add after a norm's backward, fused); dw [dim] += Σ_rows dy·x̂,
     * accumulated deterministically (row-chunk partials, then chunks in
     * order). f32 loaders only.
     */
    rmsnormBackward(
      b: Batch,
      x: Binding,
      w: Binding,
      dy: Binding,
      dx: Binding,
      dw: Binding,
      rows: number,
      dim: number,
      eps: number,
      opts: { accumulate?: boolean } = {},
    ): void {
      const what = "rmsnorm.backward";
      if (!kDx || !kPart || !kFinal) throw new KernelError(`kernel ${what} is f32-only; load the rmsnorm kernels with dtype "f32" for training`);
      checkCount(rows, "rows", what);
      checkCount(dim, "dim", what);
      if (!(eps > 0) || !Number.isFinite(eps)) throw new KernelError(`kernel ${what}: eps = ${eps} must be a positive number`);
      if (rows * dim > 0xffffffff) throw new KernelError(`kernel ${what}: rows·dim = ${rows * dim} overflows u32`);
      const named: [Binding, string][] = [[x, "x"], [w, "w"], [dy, "dy"], [dx, "dx"], [dw, "dw"]];
      for (const [buf, name] of named) checkBinding(buf, name === "w" || name === "dw" ? dim : rows * dim, 4, name, what);
      for (const [o, oName] of [[dx, "dx"], [dw, "dw"]] as const) {
        for (const [i, iName] of named) {
          if (iName !== oName && sameBuffer(o, i)) throw new KernelError(`kernel ${what}: ${oName} shares a buffer with ${iName}; give it its own`);
        }
      }
      if (rows === 0 || dim === 0) return;
      const chunks = Math.ceil(rows / CHUNK_ROWS);
      if (chunks > max) throw new KernelError(`kernel ${what}: ${rows} rows need ${chunks} row chunks, over ${max}; split the call`);
      if (chunks * dim > 0xffffffff) throw new KernelError(`kernel ${what}: chunks·dim overflows u32`);
      const inv = grow("inv", rows * 4);
      const part = grow("part", chunks * dim * 4);
      const p = () => params().u32(rows).u32(dim).f32(eps).u32(CHUNK_ROWS).u32(chunks).u32(opts.accumulate ? 1 : 0);
      const featureGroups = Math.ceil(dim / WG);
      b.dispatch(kDx, { params: p(), buffers: [x, w, dy, dx, inv], groups: rowGroups(rows, what), label: "rmsnorm_backward_dx" });
      b.dispatch(kPart, { params: p(), buffers: [x, dy, inv, part], groups: [featureGroups, chunks], label: "rmsnorm_backward_dw_partial" });
      b.dispatch(kFinal, { params: p(), buffers: [part, dw], groups: [featureGroups], label: "rmsnorm_backward_dw_final" });
    },
    /** Free the backward scratch. */
    destroy(): void {
      scratch.inv?.destroy();
      scratch.part?.destroy();
      scratch.inv = scratch.part = null;
    },
  };
}
