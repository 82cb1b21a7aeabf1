/**
 * x *= s in place over f32 elements (kernels/loss_scale.wgsl): the loss
 * scale applied to d loss / d logp before a mixed-precision backward.
 */
import type { Batch, Binding, Gpu } from "../gpu/index.ts";
import { KernelError, params } from "../gpu/index.ts";
import { checkBinding, checkCount, grid } from "./common.ts";

const WG = 64;

/** CPU reference: x · s in f32 (one rounding, as the kernel's f32 product). */
export function scaleRef(x: Float32Array, s: number): Float32Array {
  return x.map((v) => v * Math.fround(s));
}

export interface LossScale {
  /** x[0..n) *= s. */
  scale(b: Batch, x: Binding, n: number, s: number): void;
}

export async function loadLossScale(gpu: Gpu): Promise<LossScale> {
  const k = await gpu.kernel("loss_scale", "scale", { WG });
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  return {
    scale(b, x, n, s) {
      const what = "loss_scale.scale";
      checkCount(n, "n", what);
      checkBinding(x, n, 4, "x", what);
      if (!Number.isFinite(s)) throw new KernelError(`kernel ${what}: the scale ${s} is not finite`);
      if (n === 0) return;
      b.dispatch(k, { params: params().u32(n).f32(s), buffers: [x], groups: grid(Math.ceil(n / WG), max, what), label: `loss_scale ${n}` });
    },
  };
}
