/**
 * Qwen2 RMSNorm (kernels/rmsnorm.wgsl), computed in f32 whatever the storage.
 *
 * Legend: rows tokens, dim features (1536 hidden; up to 8960).
 * HF's Qwen2RMSNorm rounds x·rsqrt(...) to the model dtype before the weight
 * multiply; here the whole expression is f32 and rounds once (≤ 1 f16 ulp of
 * difference, and closer to the exact value).
 */
import type { Batch } from "../gpu/batch.ts";
import type { Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { checkBinding, checkCount, dtypeConstants, grid, sameBuffer, type Dtype } from "./elementwise.ts";

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

export async function loadRmsNorm(gpu: Gpu, dtype: Dtype) {
  const k = await gpu.kernel("rmsnorm", "rmsnorm", { ...dtypeConstants(gpu, dtype, "rmsnorm"), WG });
  const bytes = dtype === "f16" ? 2 : 4;
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
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
        groups: grid(rows, max, what),
        label: "rmsnorm",
      });
    },
  };
}
