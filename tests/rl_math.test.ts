// GRPO advantages, the clip-higher policy loss and its gradient, and DAPO's
// sample-level options, against hand-computed values and finite differences.
import { describe, expect, test } from "bun:test";
import { groupAdvantages, tokenAdvantages } from "../src/rl/advantages.ts";
import {
  addSoftOverlongPenalty,
  applySequenceMask,
  dynamicSample,
  filterGroups,
  isDegenerateGroup,
  overlongFilterWeights,
  softOverlongPenalty,
  truncatedMask,
} from "../src/rl/dapo.ts";
import { policyLoss } from "../src/rl/policy_loss.ts";
import { expectClose, randn } from "./helpers.ts";

// CPU math in f64, stored in Float32Array: one f32 rounding of values of
// order 1 (rel 6e-8), plus the f32 rounding of log(r) on input.
const F32 = { atol: 1e-6, rtol: 1e-6 };

describe("group advantages", () => {
  test("(R - mean) / (std + 1e-6), unbiased std, groups of 4, 3 and 1", () => {
    // [1,0,0,1]: mean 0.5, var (4 * 0.25) / 3, std 0.57735 -> +-0.866024
    // [2,0,1]:   mean 1, var (1 + 1 + 0) / 2 = 1 -> 1/(1+1e-6), -1/(1+1e-6), 0
    // [3]:       a group of one: mean 0, std 1 -> 3/(1+1e-6)
    const a = groupAdvantages([1, 0, 0, 1, 2, 0, 1, 3], [4, 3, 1]);
    const s = 0.8660239037870368;
    const u = 0.9999990000010001;
    expectClose(a, [s, -s, -s, s, u, -u, 0, 2.9999970000030003], F32.atol, F32.rtol, "advantages");
  });

  test("equal group sizes; an all-equal group has zero advantage", () => {
    // [1,0]: mean 0.5, std sqrt(0.5) -> +-0.70710578; [5,5]: 0
    const a = groupAdvantages([1, 0, 5, 5], 2);
    expectClose(a, [0.7071057811879616, -0.7071057811879616, 0, 0], F32.atol, F32.rtol, "advantages");
  });

  test("mean-only (Dr. GRPO)", () => {
    const a = groupAdvantages([1, 0, 0, 1, 2, 0, 1, 3], [4, 3, 1], { normalizeStd: false });
    expectClose(a, [0.5, -0.5, -0.5, 0.5, 1, -1, 0, 3], 0, 0, "mean-only advantages");
  });

  test("spread over tokens", () => {
    expectClose(tokenAdvantages([0.5, -2], [0, 0, 1, 1, 1, 0]), [0.5, 0.5, -2, -2, -2, 0.5], 0, 0, "token advantages");
    expect(() => tokenAdvantages([0.5], [0, 1])).toThrow(/seqOfToken\[1\] = 1/);
  });

  test("bad input", () => {
    expect(() => groupAdvantages([1, 2, 3], 2)).toThrow(/3 rewards do not split into groups of 2/);
    expect(() => groupAdvantages([1, 2, 3], [1, 1])).toThrow(/add up to 2 but there are 3/);
    expect(() => groupAdvantages([1, NaN], 2)).toThrow(/rewards\[1\] is NaN/);
  });
});

/**
 * Eight tokens, eps_low 0.2, eps_high 0.28 (clip range [0.8, 1.28]):
 *  0  A=+1 r=1.1  inside          term -1.1   dterm -1.1
 *  1  A=+1 r=1.5  clip-high       term -1.28  dterm 0
 *  2  A=+1 r=0.5  low, A>0: min is r*A, unclipped   term -0.5  dterm -0.5
 *  3  A=-1 r=0.5  clip-low        term +0.8   dterm 0
 *  4  A=-1 r=1.5  high, A<0: min is r*A, unclipped  term +1.5  dterm +1.5
 *  5  A=-2 r=0.9  inside          term +1.8   dterm +1.8
 *  6  A=0  r=2    no signal       term 0      dterm 0
 *  7  masked out (A=+1, r=3)
 * Responses: tokens 0-2 are response 0, 3-5 response 1, 6-7 response 2.
 */
function handCase() {
  const r = [1.1, 1.5, 0.5, 0.5, 1.5, 0.9, 2, 3];
  const logpOld = new Float32Array([-1.0, -2.0, -0.5, -3.0, -1.5, -0.25, -4.0, -2.0]);
  const logpNew = new Float32Array(r.map((x, i) => logpOld[i] + Math.log(x)));
  return {
    logpNew,
    logpOld,
    advantages: new Float32Array([1, 1, 1, -1, -1, -2, 0, 1]),
    mask: new Float32Array([1, 1, 1, 1, 1, 1, 1, 0]),
    seqOfToken: new Uint32Array([0, 0, 0, 1, 1, 1, 2, 2]),
    entropy: new Float32Array([0.5, 1.0, 1.5, 2.0, 0.0, 1.0, 1.0, 100]),
  };
}
const HAND_TERMS = [-1.1, -1.28, -0.5, 0.8, 1.5, 1.8, 0, 0];
const HAND_DTERM = [-1.1, 0, -0.5, 0, 1.5, 1.8, 0, 0];

describe("policy loss: hand-computed", () => {
  test("token-mean (DAPO): terms, loss, gradient, statistics", () => {
    const out = policyLoss(handCase());
    expectClose(out.terms, HAND_TERMS, F32.atol, F32.rtol, "terms");
    // (-1.1 - 1.28 - 0.5 + 0.8 + 1.5 + 1.8 + 0) / 7
    expectClose([out.loss], [0.1742857142857143], F32.atol, F32.rtol, "loss");
    expectClose(out.grad, HAND_DTERM.map((g) => g / 7), F32.atol, F32.rtol, "grad");
    const st = out.stats;
    expect(st.tokens).toBe(7);
    expectClose([st.clipFracLow, st.clipFracHigh], [1 / 7, 1 / 7], 1e-12, 0, "clip fractions");
    // k3 = mean of (r - 1) - log r over the 7 tokens; entropy = (0.5+1+1.5+2+0+1+1)/7; mean r = 8/7
    expectClose([st.approxKl, st.entropy, st.ratioMean], [0.12746675717101683, 1, 1.1428571428571428], F32.atol, F32.rtol, "stats");
    expect(st.refKl).toBe(0);
  });

  test("k1 and k2 estimators", () => {
    const k1 = policyLoss(handCase(), { klEstimator: "k1" }).stats.approxKl;
    const k2 = policyLoss(handCase(), { klEstimator: "k2" }).stats.approxKl;
    expectClose([k1, k2], [-0.01539038568612602, 0.1278819870124965], F32.atol, F32.rtol, "kl estimators");
  });

  test("seq-mean-token-mean (original GRPO)", () => {
    const out = policyLoss(handCase(), { aggregation: "seq-mean-token-mean" });
    // Response means: (-1.1-1.28-0.5)/3 = -0.96, (0.8+1.5+1.8)/3 = 1.36667, 0/1; loss = their mean.
    expectClose([out.loss], [0.1355555555555555], F32.atol, F32.rtol, "loss");
    // Weights 1/(3 responses * 3 tokens) for responses 0 and 1, 1/(3 * 1) for response 2.
    const w = [9, 9, 9, 9, 9, 9, 3, 1];
    expectClose(out.grad, HAND_DTERM.map((g, i) => g / w[i]), F32.atol, F32.rtol, "grad");
  });

  test("clip-higher: r = 1.25 is inside DAPO's [0.8, 1.28] but clipped by a symmetric 0.2", () => {
    const c = handCase();
    c.logpNew[0] = c.logpOld[0] + Math.log(1.25); // inside [0.8, 1.28], outside [0.8, 1.2]
    const dapo = policyLoss(c);
    const ppo = policyLoss(c, { epsHigh: 0.2 });
    expectClose([dapo.terms[0], ppo.terms[0]], [-1.25, -1.2], F32.atol, F32.rtol, "token 0 term");
    expectClose([dapo.grad[0], ppo.grad[0]], [-1.25 / 7, 0], F32.atol, F32.rtol, "token 0 grad");
    expect(ppo.stats.clipFracHigh).toBeCloseTo(2 / 7, 12);
  });

  test("micro-batches with the mini-batch's token count add up to the whole", () => {
    const c = handCase();
    const whole = policyLoss(c);
    const part = (lo: number, hi: number) =>
      policyLoss(
        {
          logpNew: c.logpNew.slice(lo, hi),
          logpOld: c.logpOld.slice(lo, hi),
          advantages: c.advantages.slice(lo, hi),
          mask: c.mask.slice(lo, hi),
        },
        { tokenCount: 7 },
      );
    const a = part(0, 3);
    const b = part(3, 8);
    expectClose([a.loss + b.loss], [whole.loss], 1e-12, 0, "summed loss");
    expectClose([...a.grad, ...b.grad], whole.grad, 0, 0, "concatenated grad");
  });

  test("reference KL term (off by default): coef * (exp(ref - new) - (ref - new) - 1)", () => {
    const c = { ...handCase(), logpRef: new Float32Array(8) };
    for (let i = 0; i < 8; i++) c.logpRef[i] = c.logpNew[i] - 0.5; // d = ref - new = -0.5 everywhere
    const out = policyLoss(c, { klCoef: 0.1 });
    const k = Math.exp(-0.5) + 0.5 - 1; // 0.1065306597
    const dk = 1 - Math.exp(-0.5); // d/dlogp_new of k
    expectClose(out.terms, HAND_TERMS.map((t, i) => (i < 7 ? t + 0.1 * k : 0)), 1e-6, 1e-6, "terms with KL");
    expectClose(out.grad, HAND_DTERM.map((g, i) => (i < 7 ? (g + 0.1 * dk) / 7 : 0)), 1e-6, 1e-6, "grad with KL");
    expectClose([out.stats.refKl], [k], 1e-6, 1e-6, "ref KL");
  });

  test("NaN log-probs give a NaN loss; no tokens give 0", () => {
    const c = handCase();
    c.logpNew[2] = NaN;
    expect(Number.isNaN(policyLoss(c).loss)).toBe(true);
    const none = policyLoss({ ...handCase(), mask: new Float32Array(8) });
    expect(none.loss).toBe(0);
    expectClose(none.grad, new Float32Array(8), 0, 0, "grad with no tokens");
    expect(none.stats.tokens).toBe(0);
  });

  test("bad input names the tensor", () => {
    const c = handCase();
    expect(() => policyLoss({ ...c, mask: new Float32Array(7) })).toThrow(/mask has 7 elements, logpNew has 8/);
    expect(() => policyLoss({ ...c, mask: new Float32Array(8).fill(0.5) })).toThrow(/mask\[0\] = 0.5/);
    expect(() => policyLoss({ ...c, seqOfToken: undefined }, { aggregation: "seq-mean-token-mean" })).toThrow(/needs seqOfToken/);
    expect(() => policyLoss(c, { klCoef: 0.1 })).toThrow(/needs logpRef/);
    expect(() => policyLoss(c, { tokenCount: 3 })).toThrow(/tokenCount 3 is less than the 7/);
  });
});

describe("policy loss: gradient by finite differences", () => {
  // 64 tokens over 6 responses, ratios in about [0.6, 1.65] so both clips are hit.
  const N = 64;
  const logpOld = randn(N, 11, 2).map((x) => x - 2.5);
  const noise = randn(N, 12, 0.5);
  const logpNew = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    // Keep every ratio at least 0.02 away from the kinks at 0.8 and 1.28: the loss is not differentiable there.
    let d = noise[i];
    const r = Math.exp(d);
    if (Math.abs(r - 0.8) < 0.02 || Math.abs(r - 1.28) < 0.02) d += 0.05;
    logpNew[i] = logpOld[i] + d;
  }
  const seqOfToken = new Uint32Array(N).map((_, i) => Math.floor(i / 11));
  const seqAdv = groupAdvantages([1, 0, 0, 1, 1, 0], 3);
  const advantages = tokenAdvantages(seqAdv, seqOfToken);
  const mask = new Float32Array(N).map((_, i) => (i % 11 < 2 ? 0 : 1)); // the first two tokens of each are prompt
  const logpRef = new Float32Array(logpNew.map((x, i) => x + noise[(i * 7) % N] * 0.3));

  for (const aggregation of ["token-mean", "seq-mean-token-mean"] as const) {
    for (const klCoef of [0, 0.05]) {
      test(`${aggregation}, klCoef ${klCoef}`, () => {
        const inp = { logpNew, logpOld, advantages, mask, seqOfToken, logpRef };
        const opts = { aggregation, klCoef };
        const base = policyLoss(inp, opts);
        expect(base.stats.clipFracLow).toBeGreaterThan(0);
        expect(base.stats.clipFracHigh).toBeGreaterThan(0);
        const fd = new Float64Array(N);
        for (let i = 0; i < N; i++) {
          const p = logpNew.slice();
          const m = logpNew.slice();
          p[i] += 1e-3;
          m[i] -= 1e-3;
          const h = p[i] - m[i]; // the step actually taken in f32
          fd[i] = (policyLoss({ ...inp, logpNew: p }, opts).loss - policyLoss({ ...inp, logpNew: m }, opts).loss) / h;
        }
        // Central differences: error ~ h^2/6 * |f'''| ~ 1e-7 relative; the loss itself is f64.
        expectClose(base.grad, fd, 1e-7, 1e-4, `grad vs finite differences (${aggregation}, klCoef ${klCoef})`);
      });
    }
  }
});

/**
 * verl's vanilla loss beyond clip-higher, one token per row (eps 0.2 / 0.28,
 * dual-clip c = 3 unless stated; "clamp" rows have |log r| = 25 > 20):
 *  0  A=-1   r=1.5     below c: unclipped              term 1.5        dterm 1.5
 *  1  A=-1   r=2.9     just below c                    term 2.9        dterm 2.9
 *  2  A=-1   r=4       dual-clip: -A*c                 term 3          dterm 0
 *  3  A=-2   r=10      dual-clip                       term 6          dterm 0
 *  4  A=+1   r=4       A>0: clip-high, no dual-clip    term -1.28      dterm 0
 *  5  A=-0.5 clamp +25 r=e^20, dual-clip               term 1.5        dterm 0
 *  6  A=+1   clamp -25 r=e^-20, unclipped, clamped     term -e^-20     dterm 0
 *  7  A=+1   clamp +25 clip-high                       term -1.28      dterm 0
 *  8  A=-1   clamp -25 clip-low                        term 0.8        dterm 0
 *  9  A=0    r=5       no signal                       term 0          dterm 0
 * 10  A=+2   r=1       on-policy                       term -2         dterm -2
 */
function verlCase() {
  const lr = [Math.log(1.5), Math.log(2.9), Math.log(4), Math.log(10), Math.log(4), 25, -25, 25, -25, Math.log(5), 0];
  const logpOld = new Float32Array(lr.map((x, i) => -30 - i)); // far enough below 0 that new = old + lr stays a log-prob
  return {
    logpNew: new Float32Array(lr.map((x, i) => logpOld[i] + x)),
    logpOld,
    advantages: new Float32Array([-1, -1, -1, -2, 1, -0.5, 1, 1, -1, 0, 2]),
    mask: new Float32Array(11).fill(1),
  };
}
const E20 = Math.exp(-20);

describe("policy loss: dual-clip, the clamp, truncated IS (hand-computed)", () => {
  test("dual-clip c = 3 (the default): terms, gradient, pg_clipfrac and pg_clipfrac_lower", () => {
    const c = verlCase();
    const out = policyLoss(c);
    // The f32 log-probs carry lr with an error of up to half an ulp of 30 (1e-6), hence rtol 4e-6.
    expectClose(out.terms, [1.5, 2.9, 3, 6, -1.28, 1.5, -E20, -1.28, 0.8, 0, -2], 1e-12, 4e-6, "terms");
    expectClose(out.grad, [1.5, 2.9, 0, 0, 0, 0, 0, 0, 0, 0, -2].map((g) => g / 11), 1e-12, 4e-6, "grad");
    const st = out.stats;
    expect([st.clipFracLow, st.clipFracHigh, st.clipFracDual].map((f) => Math.round(f * 11))).toEqual([1, 2, 3]);
    expect(st.tisWeightMean).toBe(1);
  });

  test("dual-clip off (null) and c = 5", () => {
    const c = verlCase();
    const off = policyLoss(c, { clipRatioC: null });
    const e20 = Math.exp(20);
    // Without it, rows 2, 3 and 5 push without bound: -A*r (row 5 at the clamp, e^20, with no gradient).
    expectClose(off.terms, [1.5, 2.9, 4, 20, -1.28, 0.5 * e20, -E20, -1.28, 0.8, 0, -2], 1e-12, 4e-6, "terms, dual-clip off");
    expectClose(off.grad, [1.5, 2.9, 4, 20, 0, 0, 0, 0, 0, 0, -2].map((g) => g / 11), 1e-12, 4e-6, "grad, dual-clip off");
    expect(off.stats.clipFracDual).toBe(0);
    const c5 = policyLoss(c, { clipRatioC: 5 });
    expectClose(c5.terms, [1.5, 2.9, 4, 10, -1.28, 2.5, -E20, -1.28, 0.8, 0, -2], 1e-12, 4e-6, "terms, c = 5");
    expectClose(c5.grad, [1.5, 2.9, 4, 0, 0, 0, 0, 0, 0, 0, -2].map((g) => g / 11), 1e-12, 4e-6, "grad, c = 5");
    expect(Math.round(c5.stats.clipFracDual * 11)).toBe(2);
  });

  test("truncated IS: each term and gradient times min(pi_old / pi_rollout, C)", () => {
    const c = verlCase();
    // pi_old / pi_rollout per row: 1.5, 3 (capped at 2), 0.5, 1, ... (rows 4-10: 1).
    const d = [Math.log(1.5), Math.log(3), Math.log(0.5), 0, 0, 0, 0, 0, 0, 0, 0];
    const logpRollout = new Float32Array(c.logpOld.map((x, i) => x - d[i]));
    const w = [1.5, 2, 0.5, 1, 1, 1, 1, 1, 1, 1, 1];
    const out = policyLoss({ ...c, logpRollout }, { tisCap: 2 });
    expectClose(out.terms, [1.5, 2.9, 3, 6, -1.28, 1.5, -E20, -1.28, 0.8, 0, -2].map((t, i) => t * w[i]), 1e-12, 4e-6, "terms with TIS");
    expectClose(out.grad, [1.5, 2.9, 0, 0, 0, 0, 0, 0, 0, 0, -2].map((g, i) => (g * w[i]) / 11), 1e-12, 4e-6, "grad with TIS");
    expectClose([out.stats.tisWeightMean], [(1.5 + 2 + 0.5 + 8) / 11], 1e-12, 4e-6, "mean weight");
    // The sampler agreeing with the trainer: every weight is exactly 1.
    const same = policyLoss({ ...c, logpRollout: c.logpOld }, { tisCap: 2 });
    const plain = policyLoss(c);
    expect(same.stats.tisWeightMean).toBe(1);
    expectClose(same.grad, plain.grad, 0, 0, "grad, policies agreeing");
    expect(same.loss).toBe(plain.loss);
  });

  test("bad options name the setting", () => {
    const c = verlCase();
    expect(() => policyLoss(c, { clipRatioC: 1 })).toThrow(/clipRatioC \(dual-clip\) must be a number > 1/);
    expect(() => policyLoss(c, { tisCap: 2 })).toThrow(/tisCap needs logpRollout/);
    expect(() => policyLoss({ ...c, logpRollout: c.logpOld }, { tisCap: 0.5 })).toThrow(/truncated-IS cap must be a number >= 1/);
  });

  test("gradient by finite differences, ratios from 1 to far off-policy, away from the kinks", () => {
    // 120 tokens, log r in [-4, 4] (r from 0.02 to 55) and 8 past the clamp; both
    // signs of A; every log r at least 0.01 from the kinks log 0.8, log 1.28, log 3, ±20.
    const N = 120;
    const u = randn(2 * N, 31, 1);
    const kinks = [Math.log(0.8), Math.log(1.28), Math.log(3), -20, 20];
    const logpOld = new Float64Array(N);
    const logpNew = new Float64Array(N);
    const advantages = new Float32Array(N);
    for (let i = 0; i < N; i++) {
      let lr = i < 8 ? (i % 2 ? 1 : -1) * (21 + i) : 4 * Math.tanh(u[2 * i]);
      for (const k of kinks) if (Math.abs(lr - k) < 0.01) lr = k + 0.02;
      logpOld[i] = -40 + (i % 7);
      logpNew[i] = logpOld[i] + lr;
      advantages[i] = i % 13 === 0 ? 0 : u[2 * i + 1];
    }
    // policyLoss only indexes its arrays: f64 arrays give it unrounded perturbations.
    const as32 = (x: Float64Array) => x as unknown as Float32Array;
    const inp = { logpNew: as32(logpNew), logpOld: as32(logpOld), advantages, mask: new Float32Array(N).fill(1) };
    for (const clipRatioC of [3, null]) {
      const base = policyLoss(inp, { clipRatioC });
      if (clipRatioC) expect(base.stats.clipFracDual * N).toBeGreaterThan(10);
      const h = 1e-5;
      const fd = new Float64Array(N);
      for (let i = 0; i < N; i++) {
        const at = (d: number) => {
          const x = logpNew.slice();
          x[i] += d;
          return policyLoss({ ...inp, logpNew: as32(x) }, { clipRatioC }).loss;
        };
        fd[i] = (at(h) - at(-h)) / (2 * h);
      }
      // Central differences on smooth pieces: truncation h^2/6*|r*A| ~ 1e-9 relative; f64 rounding of
      // the loss (~1e7 with the dual-clip off: ulp 2e-9) over 2h = 2e-5 gives the absolute part (1e-4).
      expectClose(base.grad, fd, clipRatioC ? 1e-8 : 1e-3, 1e-6, `grad vs finite differences (c ${clipRatioC})`);
    }
  });
});

describe("DAPO: dynamic sampling", () => {
  test("all-equal groups carry no signal", () => {
    expect(isDegenerateGroup([1, 1, 1, 1])).toBe(true);
    expect(isDegenerateGroup([0, 0, 0, 0])).toBe(true);
    expect(isDegenerateGroup([1, 0, 1, 1])).toBe(false);
    expect(isDegenerateGroup([0.5, 0.5 + 1e-9], 1e-6)).toBe(true);
    expect(isDegenerateGroup([0.5, 0.5 + 1e-9])).toBe(false);
    const { kept, dropped } = filterGroups([[1, 1], [1, 0], [0, 0], [0, 1]], (g) => g);
    expect(kept).toEqual([[1, 0], [0, 1]]);
    expect(dropped).toBe(2);
  });

  test("samples until the batch is full, keeps order, trims the excess", async () => {
    type G = { id: string; rewards: number[] };
    const rounds: G[][] = [
      [{ id: "a", rewards: [1, 1] }, { id: "b", rewards: [1, 0] }, { id: "c", rewards: [0, 0] }, { id: "d", rewards: [0, 1] }],
      [{ id: "e", rewards: [1, 0] }, { id: "f", rewards: [0, 0] }, { id: "g", rewards: [1, 0] }, { id: "h", rewards: [0, 1] }],
      [{ id: "i", rewards: [1, 0] }],
    ];
    const asked: number[] = [];
    const res = await dynamicSample<G>(
      async (round, missing) => {
        asked.push(missing);
        return rounds[round];
      },
      { batchGroups: 4, maxRounds: 5, rewardsOf: (g) => g.rewards },
    );
    expect(res.groups.map((g) => g.id)).toEqual(["b", "d", "e", "g"]);
    expect(asked).toEqual([4, 2]);
    expect({ full: res.full, rounds: res.rounds, sampled: res.sampled, dropped: res.dropped }).toEqual({
      full: true,
      rounds: 2,
      sampled: 8,
      dropped: 3,
    });
  });

  test("the round limit: partial batch by default, or an error", async () => {
    const sampler = () => [[1, 1], [0, 1], [0, 0]];
    const res = await dynamicSample(sampler, { batchGroups: 3, maxRounds: 2, rewardsOf: (g) => g });
    expect(res.groups).toEqual([[0, 1], [0, 1]]);
    expect(res.full).toBe(false);
    expect(res.rounds).toBe(2);
    expect(res.dropped).toBe(4);
    await expect(dynamicSample(sampler, { batchGroups: 3, maxRounds: 2, rewardsOf: (g) => g, onShort: "error" })).rejects.toThrow(
      /only 2 of 3 groups had unequal rewards after 2 rounds/,
    );
  });
});

describe("DAPO: overlong filtering and soft punishment", () => {
  test("truncated = reached the cap without EOS; their tokens leave the loss mask", () => {
    const trunc = truncatedMask([10, 16, 16, 3], 16, [true, false, true, false]);
    expect(trunc).toEqual([false, true, false, false]);
    const w = overlongFilterWeights(trunc);
    expectClose(w, [1, 0, 1, 1], 0, 0, "weights");
    const mask = new Float32Array([0, 1, 1, 0, 1, 1, 1, 1, 0, 1]);
    const seq = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3];
    expectClose(applySequenceMask(mask, seq, w), [0, 1, 1, 0, 0, 0, 1, 1, 0, 1], 0, 0, "filtered mask");
    expect(() => truncatedMask([17], 16)).toThrow(/lengths\[0\] = 17 is not in \[0, cap 16\]/);
  });

  test("filtered responses contribute nothing to the loss", () => {
    const c = handCase();
    const w = overlongFilterWeights([false, true, false]); // response 1 (tokens 3-5) was truncated
    const filtered = policyLoss({ ...c, mask: applySequenceMask(c.mask, c.seqOfToken, w) });
    // Remaining tokens 0, 1, 2, 6: (-1.1 - 1.28 - 0.5 + 0) / 4
    expectClose([filtered.loss], [-0.72], F32.atol, F32.rtol, "loss");
    expectClose(filtered.grad, [-1.1 / 4, 0, -0.5 / 4, 0, 0, 0, 0, 0], F32.atol, F32.rtol, "grad");
  });

  test("soft overlong punishment: DAPO's L_max 20480, L_cache 4096", () => {
    const got = [0, 16384, 16385, 18432, 20480, 30000].map((n) => softOverlongPenalty(n, 20480, 4096));
    expectClose(got, [0, 0, -1 / 4096, -0.5, -1, -1], 1e-15, 0, "penalty");
    expectClose(addSoftOverlongPenalty([1, 1, 0], [100, 17408, 20480], 20480, 4096), [1, 0.75, -1], 0, 0, "rewards");
    expect(() => softOverlongPenalty(10, 100, 0)).toThrow(/lCache must be in \(0, lMax = 100\]/);
    expect(() => addSoftOverlongPenalty([1], [1, 2], 100, 10)).toThrow(/1 rewards but 2 lengths/);
  });
});
