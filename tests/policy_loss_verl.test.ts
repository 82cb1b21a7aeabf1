// The policy loss against verl's "vanilla" policy loss written out op by op
// (the formula SIRI trained with), on crafted inputs whose ratios run from
// on-policy to far off-policy; the GPU loss kernel against the reference on
// the same inputs, with and without the dual-clip and truncated IS.
import { describe, expect, test } from "bun:test";
import type { Gpu } from "../src/gpu/index.ts";
import { loadLoss, STAT, STATS_LEN } from "../src/kernels/loss.ts";
import { tisWeight } from "../src/rl/mismatch.ts";
import { policyLoss } from "../src/rl/policy_loss.ts";
import { expectClose, gpuOrSkip, hasGpu, policyStatsOf, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();

// ---------------------------------------------------------------- verl, op by op
//
// A value with its derivative with respect to this token's logp_new
// (forward mode; every op of the loss is element-wise, so one token's loss
// depends on its own logp_new only). The derivative rules are torch's:
// clamp passes the gradient inside [min, max] (ends included) and 0 outside;
// maximum / minimum send it to the larger / smaller argument and split it
// half and half on a tie; where() sends it to the chosen branch.
interface D {
  v: number;
  d: number;
}
const sub = (a: D, b: D): D => ({ v: a.v - b.v, d: a.d - b.d });
const scale = (k: number, a: D): D => ({ v: k * a.v, d: k * a.d });
const dexp = (a: D): D => ({ v: Math.exp(a.v), d: Math.exp(a.v) * a.d });
const clamp = (a: D, lo: number, hi: number): D => ({ v: Math.min(hi, Math.max(lo, a.v)), d: a.v >= lo && a.v <= hi ? a.d : 0 });
const maximum = (a: D, b: D): D => (a.v === b.v ? { v: a.v, d: (a.d + b.d) / 2 } : a.v > b.v ? a : b);
const minimum = (a: D, b: D): D => (a.v === b.v ? { v: a.v, d: (a.d + b.d) / 2 } : a.v < b.v ? a : b);
const constant = (v: number): D => ({ v, d: 0 });

interface VerlConfig {
  clipRatioLow: number;
  clipRatioHigh: number;
  clipRatioC: number;
  /** verl's tis_imp_ratio_cap; <= 0 off. */
  tisCap: number;
}

/**
 * verl's compute_policy_loss_vanilla for one token, then
 * `pg_losses * min(exp(old_log_prob - rollout_log_probs), tis_imp_ratio_cap)`:
 *   negative_approx_kl = clamp(log_prob - old_log_prob, -20, 20); ratio = exp(negative_approx_kl)
 *   pg_losses1 = -A * ratio; pg_losses2 = -A * clamp(ratio, 1 - low, 1 + high)
 *   clip_pg_losses1 = maximum(pg_losses1, pg_losses2); pg_clipfrac counts pg_losses2 > pg_losses1
 *   pg_losses3 = -A * clip_ratio_c; clip_pg_losses2 = min(pg_losses3, clip_pg_losses1)
 *   pg_clipfrac_lower counts (clip_pg_losses1 > pg_losses3) and A < 0
 *   pg_losses = where(A < 0, clip_pg_losses2, clip_pg_losses1)
 */
function verlToken(logProb: number, oldLogProb: number, A: number, cfg: VerlConfig, rolloutLogProb = oldLogProb) {
  const negativeApproxKl = clamp(sub({ v: logProb, d: 1 }, constant(oldLogProb)), -20, 20);
  const ratio = dexp(negativeApproxKl);
  const pgLosses1 = scale(-A, ratio);
  const pgLosses2 = scale(-A, clamp(ratio, 1 - cfg.clipRatioLow, 1 + cfg.clipRatioHigh));
  const clipPgLosses1 = maximum(pgLosses1, pgLosses2);
  const pgLosses3 = constant(-A * cfg.clipRatioC);
  const clipPgLosses2 = minimum(pgLosses3, clipPgLosses1);
  let pgLosses = A < 0 ? clipPgLosses2 : clipPgLosses1;
  if (cfg.tisCap > 0) pgLosses = scale(Math.min(Math.exp(oldLogProb - rolloutLogProb), cfg.tisCap), pgLosses);
  return { loss: pgLosses, clipfrac: pgLosses2.v > pgLosses1.v, clipfracLower: clipPgLosses1.v > pgLosses3.v && A < 0 };
}

/** token-mean over the masked tokens: loss, d loss / d logp_new, pg_clipfrac, pg_clipfrac_lower. */
function verlLoss(c: OffPolicyCase, cfg: VerlConfig) {
  const n = c.logpNew.length;
  const count = c.mask.reduce((a, m) => a + m, 0);
  const grad = new Float64Array(n);
  let loss = 0;
  let clip = 0;
  let lower = 0;
  for (let i = 0; i < n; i++) {
    if (!c.mask[i]) continue;
    const t = verlToken(c.logpNew[i], c.logpOld[i], c.advantages[i], cfg, c.logpRollout[i]);
    loss += t.loss.v / count;
    grad[i] = t.loss.d / count;
    clip += t.clipfrac ? 1 : 0;
    lower += t.clipfracLower ? 1 : 0;
  }
  return { loss, grad, pgClipfrac: clip / count, pgClipfracLower: lower / count };
}

// ---------------------------------------------------------------- crafted inputs

interface OffPolicyCase {
  logpNew: Float32Array;
  logpOld: Float32Array;
  logpRollout: Float32Array;
  advantages: Float32Array;
  mask: Float32Array;
}

/**
 * N tokens whose log-ratios run from on-policy to far off-policy: a quarter
 * within ±0.05 (r about 1), a quarter within ±0.7, a quarter within ±3
 * (r up to 20), an eighth beyond the ±20 clamp (up to ±30), an eighth exactly
 * on-policy (r = 1). Advantages of both signs (one in twelve 0), every
 * ninth token masked. Log-probs stay <= 0 like real ones. The rollout's
 * log-probs differ from the old ones by up to ±1.5 (to exercise the TIS
 * weight and its cap). Every value is nudged at least 2e-3 (in log r) off
 * the loss's kinks (r = 0.8, 1.28, c = 3, |log r| = 20), where the two
 * one-sided derivatives differ and f32 and f64 could pick other branches.
 */
function offPolicyCase(N: number, seed: number, kinks = [Math.log(0.8), Math.log(1.28), Math.log(3), -20, 20]): OffPolicyCase {
  const u = randn(5 * N, seed, 1);
  const c: OffPolicyCase = {
    logpNew: new Float32Array(N),
    logpOld: new Float32Array(N),
    logpRollout: new Float32Array(N),
    advantages: new Float32Array(N),
    mask: new Float32Array(N),
  };
  const unit = (x: number) => Math.tanh(x); // (-1, 1)
  for (let i = 0; i < N; i++) {
    const [a, b, d, e, f] = u.subarray(5 * i, 5 * i + 5);
    const band = i % 8;
    let lr =
      band < 2 ? 0.05 * unit(b)
      : band < 4 ? 0.7 * unit(b)
      : band < 6 ? 3 * unit(b)
      : band === 6 ? Math.sign(b || 1) * (20.5 + 9.5 * Math.abs(unit(d)))
      : 0;
    for (const k of kinks) if (Math.abs(lr - k) < 2e-3) lr = k + (lr >= k ? 2e-3 : -2e-3);
    // Both log-probs <= 0: the higher one at `top`, the other |lr| below it.
    const top = -0.01 - 4 * Math.abs(e);
    c.logpOld[i] = Math.fround(lr >= 0 ? top - lr : top);
    c.logpNew[i] = Math.fround(lr >= 0 ? top : top + lr);
    c.logpRollout[i] = Math.fround(Math.min(0, c.logpOld[i] + 1.5 * unit(f)));
    c.advantages[i] = i % 12 === 5 ? 0 : Math.fround(2 * a);
    c.mask[i] = i % 9 === 4 ? 0 : 1;
  }
  return c;
}

const VERL: VerlConfig = { clipRatioLow: 0.2, clipRatioHigh: 0.28, clipRatioC: 3, tisCap: 0 };
const OPTS = { epsLow: 0.2, epsHigh: 0.28 };

describe("policy loss vs verl's vanilla loss, op by op (crafted off-policy inputs)", () => {
  // 3,606 tokens, as the comparison the issue reports.
  const c = offPolicyCase(3606, 18);

  test("the inputs cover every branch, both signs of A, the clamp", () => {
    const ref = policyLoss(c, OPTS);
    const n = ref.stats.tokens;
    expect(ref.stats.clipFracLow * n).toBeGreaterThan(100);
    expect(ref.stats.clipFracHigh * n).toBeGreaterThan(100);
    expect(ref.stats.clipFracDual * n).toBeGreaterThan(100);
    let clamped = 0;
    let gradFree = 0;
    for (let i = 0; i < c.mask.length; i++) {
      if (!c.mask[i]) continue;
      if (Math.abs(c.logpNew[i] - c.logpOld[i]) > 20) clamped++;
      if (ref.grad[i] !== 0) gradFree++;
    }
    expect(clamped).toBeGreaterThan(100);
    expect(gradFree).toBeGreaterThan(1000);
  });

  test("loss, gradient and clip fractions match (dual-clip c = 3, the default)", () => {
    const ref = policyLoss(c, OPTS); // clipRatioC defaults to 3
    const v = verlLoss(c, VERL);
    const t = TOL.policy_ref_vs_verl;
    expectClose([ref.loss], [v.loss], t.atol, t.rtol, "loss");
    expectClose(ref.grad, v.grad, t.atol, t.rtol, "d loss / d logp_new");
    const s = ref.stats;
    expectClose([s.clipFracLow + s.clipFracHigh, s.clipFracDual], [v.pgClipfrac, v.pgClipfracLower], 0, 0, "pg_clipfrac, pg_clipfrac_lower");
  });

  test("c = 5 and the dual-clip off (c = +inf in verl's formula)", () => {
    for (const [ours, theirs] of [[5, 5], [null, Infinity]] as const) {
      const ref = policyLoss(c, { ...OPTS, clipRatioC: ours });
      const v = verlLoss(c, { ...VERL, clipRatioC: theirs });
      const t = TOL.policy_ref_vs_verl;
      expectClose([ref.loss], [v.loss], t.atol, t.rtol, `loss, c ${ours}`);
      expectClose(ref.grad, v.grad, t.atol, t.rtol, `gradient, c ${ours}`);
      expect(ref.stats.clipFracDual).toBe(v.pgClipfracLower);
    }
  });

  test("without the dual-clip the loss is far from verl's: the comparison can fail", () => {
    const off = policyLoss(c, { ...OPTS, clipRatioC: null });
    const v = verlLoss(c, VERL);
    let differ = 0;
    for (let i = 0; i < v.grad.length; i++) if (Math.abs(off.grad[i] - v.grad[i]) > 1e-9) differ++;
    expect(differ).toBeGreaterThan(100); // A < 0, 3 < r < e^20: -A·r instead of 0
    expect(Math.abs(off.loss / v.loss)).toBeGreaterThan(1e4); // terms up to |A|·e^20 ~ 1e9
  });

  test("truncated IS (cap 2): loss and gradient match verl's pg_losses * min(exp(old - rollout), cap)", () => {
    const ref = policyLoss(c, { ...OPTS, tisCap: 2 });
    const v = verlLoss(c, { ...VERL, tisCap: 2 });
    const t = TOL.policy_ref_vs_verl;
    expectClose([ref.loss], [v.loss], t.atol, t.rtol, "loss with TIS");
    expectClose(ref.grad, v.grad, t.atol, t.rtol, "gradient with TIS");
    // The weights span both sides of 1 and the cap bites somewhere.
    let capped = 0;
    let below = 0;
    for (let i = 0; i < c.mask.length; i++) {
      const w = tisWeight(c.logpOld[i], c.logpRollout[i], 2);
      if (w > 2 - 1e-12) capped++;
      if (w < 0.9) below++;
    }
    expect(capped).toBeGreaterThan(100);
    expect(below).toBeGreaterThan(100);
  });

  test("truncated IS is the identity when the sampler and the trainer agree", () => {
    const same = { ...c, logpRollout: c.logpOld };
    const ref = policyLoss(same, { ...OPTS, tisCap: 2 });
    const plain = policyLoss(c, OPTS);
    expect(ref.stats.tisWeightMean).toBe(1);
    expectClose([ref.loss], [plain.loss], 0, 0, "loss with TIS, policies agreeing");
    expectClose(ref.grad, plain.grad, 0, 0, "gradient with TIS, policies agreeing");
  });
});

// ---------------------------------------------------------------- the GPU kernel

describe.skipIf(!GPU)("loss.policy kernel vs the reference, off-policy", () => {
  async function run(gpu: Gpu, c: OffPolicyCase, o: { clipRatioC: number | null; tisCap?: number | null }) {
    const loss = await loadLoss(gpu);
    const N = c.logpNew.length;
    const ins = [c.logpNew, c.logpOld, c.advantages, c.mask, c.logpRollout].map((x, k) => gpu.buffer(x, `in${k}`));
    const dlogp = gpu.buffer(new Float32Array(N).fill(-99), "dlogp");
    const stats = gpu.buffer(new Float32Array(STATS_LEN).fill(-99), "stats");
    const denom = c.mask.reduce((a, m) => a + m, 0);
    const b = gpu.batch();
    loss.policy(b, ins[0], ins[1], ins[2], ins[3], dlogp, stats, N, { ...OPTS, denom, ...o, logpRollout: ins[4] });
    b.submit();
    const out = { dlogp: await gpu.readF32(dlogp, N), stats: await gpu.readF32(stats, STATS_LEN) };
    for (const x of [...ins, dlogp, stats]) x.destroy();
    return out;
  }

  const c = offPolicyCase(3606, 18);
  const cases: [string, { clipRatioC: number | null; tisCap?: number | null }][] = [
    ["dual-clip c = 3", { clipRatioC: 3 }],
    ["dual-clip c = 5, truncated IS cap 2", { clipRatioC: 5, tisCap: 2 }],
    ["dual-clip off, truncated IS cap 1.5", { clipRatioC: null, tisCap: 1.5 }],
  ];
  for (const [name, o] of cases) {
    test(name, async () => {
      const gpu = await gpuOrSkip();
      const ref = policyLoss(c, { ...OPTS, ...o });
      const got = await run(gpu, c, o);
      const t = TOL.loss_policy_grad;
      expectClose(got.dlogp, ref.grad, t.atol, t.rtol, `${name}: dlogp`);
      const want = policyStatsOf(ref);
      const counts = [STAT.tokens, STAT.clipLow, STAT.clipHigh, STAT.clipDual];
      expectClose(counts.map((k) => got.stats[k]), counts.map((k) => want[k]), 0, 0, `${name}: token and clip counts`);
      // Without the dual-clip, terms of |A|·e^20 dominate the sums; loss_stats's rtol covers their f32 rounding.
      const s = TOL.loss_stats;
      expectClose(got.stats, want, s.atol, s.rtol, `${name}: stats`);
    });
  }

  test("truncated IS with the sampler agreeing with the trainer: weights 1, same as off", async () => {
    const gpu = await gpuOrSkip();
    const same = { ...c, logpRollout: c.logpOld };
    const on = await run(gpu, same, { clipRatioC: 3, tisCap: 2 });
    const off = await run(gpu, same, { clipRatioC: 3, tisCap: null });
    expectClose(on.dlogp, off.dlogp, 0, 0, "dlogp, TIS on vs off");
    expectClose(on.stats, off.stats, 0, 0, "stats, TIS on vs off");
    expect(on.stats[STAT.tisWeightSum]).toBe(on.stats[STAT.tokens]);
  });

  test("tisCap without the sampler's log-probs, and a bad c, are refused", async () => {
    const gpu = await gpuOrSkip();
    const loss = await loadLoss(gpu);
    const x = [0, 1, 2, 3, 4, 5].map((k) => gpu.buffer(64, `x${k}`));
    const call = (o: { clipRatioC: number | null; tisCap?: number | null }) =>
      loss.policy(gpu.batch(), x[0], x[1], x[2], x[3], x[4], x[5], 16, { ...OPTS, denom: 16, ...o });
    expect(() => call({ clipRatioC: 3, tisCap: 2 })).toThrow(/tisCap needs logpRollout/);
    expect(() => call({ clipRatioC: 1 })).toThrow(/clipRatioC 1 must be > 1/);
    expect(() => call({ clipRatioC: 3, tisCap: 0.5 })).toThrow(/tisCap 0.5 must be >= 1/);
    for (const b of x) b.destroy();
  });
});
