// Shared test helpers: one GPU per test process, element-wise comparison.
import { Gpu } from "../src/gpu/index.ts";
import { STAT, STATS_LEN } from "../src/kernels/loss.ts";
import type { PolicyLossResult } from "../src/rl/policy_loss.ts";

let shared: Promise<Gpu | null> | null = null;
export let noGpuReason = "";

/**
 * The GPU for GPU tests. Without an adapter, local runs skip GPU tests with
 * the reason printed; with CI=true a missing adapter is a failure.
 */
export function testGpu(): Promise<Gpu | null> {
  shared ??= Gpu.open().catch((e: Error) => {
    if (process.env.CI === "true") throw new Error(`CI=true and no WebGPU adapter: ${e.message}`);
    noGpuReason = e.message;
    console.warn(`[tests] GPU tests skipped: ${e.message}`);
    return null;
  });
  return shared;
}

let f16Warned = false;
/**
 * Whether this GPU runs f16 shaders (`shader-f16`), for the f16 variants of a
 * test. Without it a local run says once that those variants are skipped;
 * under CI=true it throws: CI's adapter (lavapipe) has the feature, so a
 * missing one is a broken set-up, not a reason to test less.
 */
export function hasF16(gpu: Gpu): boolean {
  if (gpu.features.f16) return true;
  const why = `the adapter ${gpu.adapter.description} has no shader-f16`;
  if (process.env.CI === "true") throw new Error(`CI=true and ${why}: the f16 variants cannot be tested`);
  if (!f16Warned) console.warn(`[tests] f16 variants skipped: ${why}`);
  f16Warned = true;
  return false;
}

/** The GPU, or throw (inside a test that has already checked). */
export async function gpuOrSkip(): Promise<Gpu> {
  const g = await testGpu();
  if (!g) throw new Error(`no GPU: ${noGpuReason}`);
  return g;
}

/**
 * True when GPU tests should run (top-level await in test files). Every
 * `describe.skipIf(!GPU)` in the suite relies on this: the only reason a GPU
 * test is skipped is "no WebGPU adapter" (printed once), and under CI=true
 * that case throws instead, so no GPU test is ever skipped in CI.
 */
export async function hasGpu(): Promise<boolean> {
  return (await testGpu()) !== null;
}

export interface CloseReport {
  ok: boolean;
  maxAbs: number;
  maxRel: number;
  worst: number;
  mismatches: string[];
}

/**
 * Every element: |got - want| <= atol + rtol * |want|; NaN/Inf mismatch fails.
 */
export function compare(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number): CloseReport {
  const mismatches: string[] = [];
  let maxAbs = 0;
  let maxRel = 0;
  let worst = -1;
  if (got.length !== want.length) {
    return { ok: false, maxAbs: Infinity, maxRel: Infinity, worst: -1, mismatches: [`length ${got.length} != ${want.length}`] };
  }
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    const d = Math.abs(g - w);
    const bad = !(d <= atol + rtol * Math.abs(w)) && !(g === w); // NaN fails, equal infinities pass
    if (Number.isNaN(g) !== Number.isNaN(w) || bad) {
      if (mismatches.length < 8) mismatches.push(`[${i}] got ${g} want ${w} (diff ${d})`);
      else if (mismatches.length === 8) mismatches.push("...");
    }
    if (Number.isFinite(d) && d > maxAbs) {
      maxAbs = d;
      worst = i;
    }
    if (Number.isFinite(d) && w !== 0) maxRel = Math.max(maxRel, d / Math.abs(w));
  }
  return { ok: mismatches.length === 0, maxAbs, maxRel, worst, mismatches };
}

/** Throws with the worst differences when any element is out of tolerance. */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number, what = ""): void {
  const r = compare(got, want, atol, rtol);
  if (!r.ok) {
    throw new Error(
      `${what}: ${r.mismatches.length} element(s) out of tolerance (atol ${atol}, rtol ${rtol}); ` +
        `max abs diff ${r.maxAbs} at [${r.worst}]\n  ${r.mismatches.join("\n  ")}`,
    );
  }
}

/** Deterministic pseudo-random floats in [-scale, scale). */
export function randn(n: number, seed = 1, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** The policy-loss reference's statistics in the GPU kernel's layout (sums, not fractions). */
export function policyStatsOf(ref: PolicyLossResult): Float32Array {
  const s = new Float32Array(STATS_LEN);
  const n = ref.stats.tokens;
  s[STAT.loss] = ref.loss;
  s[STAT.tokens] = n;
  s[STAT.clipLow] = Math.round(ref.stats.clipFracLow * n);
  s[STAT.clipHigh] = Math.round(ref.stats.clipFracHigh * n);
  s[STAT.klSum] = ref.stats.approxKl * n;
  s[STAT.ratioSum] = ref.stats.ratioMean * n;
  s[STAT.clipDual] = Math.round(ref.stats.clipFracDual * n);
  s[STAT.tisWeightSum] = ref.stats.tisWeightMean * n;
  return s;
}
