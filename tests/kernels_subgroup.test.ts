// Subgroup reductions: each kernel with a subgroup path is checked with the
// path forced on and forced off (the shared-memory tree alone), every
// element against the CPU reference. The software adapter has subgroups of 8.
import { describe, expect, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { loadLogprob, logprobRef } from "../src/kernels/logprob.ts";
import type { RowVariant } from "../src/kernels/rmsnorm.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();

describe.skipIf(!GPU)("logprob.chosen: subgroup merge and shared-memory tree", () => {
  async function run(gpu: Gpu, subgroups: boolean, logits: Float32Array, targets: Uint32Array, T: number, V: number, temperature: number, variant: RowVariant = "workgroup") {
    const lp = await loadLogprob(gpu, { subgroups, variant });
    const bufs = [gpu.buffer(logits, "logits"), gpu.buffer(targets, "targets"), gpu.buffer(T * 4, "logp"), gpu.buffer(T * 4, "entropy")];
    const b = gpu.batch();
    lp.chosen(b, bufs[0], bufs[1], bufs[2], bufs[3], T, V, temperature);
    b.submit();
    const out = { logp: await gpu.readF32(bufs[2], T), entropy: await gpu.readF32(bufs[3], T) };
    bufs.forEach((x) => x.destroy());
    return out;
  }

  test("both paths, and the one-invocation-per-row variant, match the reference: V 1, 7 (< one subgroup), 1000, 151936", async () => {
    const gpu = await gpuOrSkip();
    expect(gpu.features.subgroups).toBe(true); // the software adapter and every current GPU have them
    const t = TOL.logprob;
    for (const [T, V, temp, scale] of [[2, 1, 1, 3], [5, 7, 1, 2], [17, 1000, 0.6, 10], [3, 151936, 1, 10]]) {
      const logits = randn(T * V, 5 * T + V, scale);
      const targets = Uint32Array.from({ length: T }, (_, i) => (i * 7919 + 3) % V);
      const want = logprobRef(logits, targets, T, V, temp);
      for (const [subgroups, variant] of [[true, "workgroup"], [false, "workgroup"], [false, "row"]] as const) {
        const got = await run(gpu, subgroups, logits, targets, T, V, temp, variant);
        const what = `logprob T=${T} V=${V} ${variant} subgroups=${subgroups}`;
        expectClose(got.logp, want.logp, t.atol, t.rtol, `${what} logp`);
        expectClose(got.entropy, want.entropy, t.atol, t.rtol, `${what} entropy`);
      }
    }
  });

  test("asking for subgroups where the adapter has none is an error naming the feature", async () => {
    const gpu = await gpuOrSkip();
    const fake = { ...gpu, features: { ...gpu.features, subgroups: false }, adapter: gpu.adapter } as unknown as Gpu;
    await expect(loadLogprob(fake, { subgroups: true })).rejects.toThrow(/subgroups/);
    await expect(loadLogprob(gpu, { subgroups: true, variant: "row" })).rejects.toThrow(/not the row variant/);
  });
});
