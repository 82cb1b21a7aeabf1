// A kernel with an exact CPU reference and an adjustable run time.
import { Gpu, params } from "./index.ts";

export function spinReference(n: number, iters: number): Uint32Array {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    let x = (Math.imul(i, 2654435761) + 1) >>> 0;
    for (let k = 0; k < iters; k++) x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x;
  }
  return out;
}

export interface SpinResult {
  n: number;
  iters: number;
  ms: number;
  mismatches: number;
}

/** Run the spin kernel once; `n` invocations of `iters` LCG steps each. */
export async function runSpin(gpu: Gpu, n: number, iters: number): Promise<SpinResult> {
  const k = await gpu.kernel("selftest", "spin", { WG: 64 });
  const out = gpu.buffer(n * 4, "spin-out");
  const t0 = performance.now();
  gpu.batch().dispatch(k, { params: params().u32(n).u32(iters), buffers: [out], groups: [Math.ceil(n / 64)] }).submit();
  const got = await gpu.readU32(out, n);
  const ms = performance.now() - t0;
  out.destroy();
  const ref = spinReference(n, iters);
  let mismatches = 0;
  for (let i = 0; i < n; i++) if (got[i] !== ref[i]) mismatches++;
  return { n, iters, ms, mismatches };
}
