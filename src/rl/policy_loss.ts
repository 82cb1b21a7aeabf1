/**
 * The policy loss SIRI trained with (verl's "vanilla" PPO loss with DAPO's
 * clip-higher), its gradient with respect to the new policy's log-probs, and
 * the per-update statistics, on the CPU. This is the reference the GPU loss
 * kernel is checked against.
 *
 * Per response token i (N tokens, the mini-batch's packed sequences):
 *   r_i     = exp(clamp(logp_new_i - logp_old_i, -20, 20))
 *   l1      = max(-A_i * r_i, -A_i * clip(r_i, 1 - eps_low, 1 + eps_high))   (clip-higher)
 *   term_i  = A_i < 0 ? min(l1, -A_i * c) : l1                               (dual-clip, c = 3)
 *   term_i *= w_i   (truncated importance sampling, off by default: w_i = min(pi_old / pi_rollout, C))
 * Gradient (d r / d logp_new = r): -A_i * r_i * w_i where the unclipped
 * branch is chosen, else 0. The clip-higher clip is active (no gradient)
 * when A > 0 and r > 1 + eps_high, or A < 0 and r < 1 - eps_low; the
 * dual-clip is active when A < 0 and r > c (a token whose ratio ran far
 * above 1 under a negative advantage stops pushing: its term is bounded by
 * -A * c); where the clamp bites (|log r| > 20) the gradient is 0, as
 * torch.clamp's is. With A = 0 the term and gradient are 0. At a kink the
 * gradient is one of the one-sided derivatives (which one does not matter:
 * a set of measure zero).
 *
 * Statistics, named as verl reports them: pg_clipfrac = clipFracLow +
 * clipFracHigh (the clip-higher branch chosen), pg_clipfrac_lower =
 * clipFracDual (the dual-clip chosen).
 *
 * Aggregation:
 *   "token-mean" (DAPO, verl's default): sum of terms over all response
 *     tokens / their count, so long responses weigh in per token;
 *   "seq-mean-token-mean" (the original GRPO): the mean over sequences of
 *     each sequence's token mean.
 * Under gradient accumulation, pass the whole mini-batch's token (or
 * sequence) count as `tokenCount` (`seqCount`), so micro-batch losses add up
 * to the mini-batch loss. With no response tokens at all (every sample
 * filtered) the loss and gradient are 0: nothing to learn from. A NaN log-prob
 * makes the loss NaN, so the trainer's skip-on-NaN check sees it.
 */

import { checkTisCap, tisWeight } from "./mismatch.ts";

export type Aggregation = "token-mean" | "seq-mean-token-mean";

/** Estimators of KL(old || new) from samples of the old policy, with r = pi_new / pi_old. */
export type KlEstimator = "k1" | "k2" | "k3";

export interface PolicyLossOptions {
  /** Lower clip, 1 - eps_low; 0.2 (PPO, DAPO). */
  epsLow?: number;
  /** Upper clip, 1 + eps_high; 0.28 (DAPO's clip-higher, leaves room for rare tokens to rise). */
  epsHigh?: number;
  /**
   * Dual-clip constant c (verl's clip_ratio_c): for A < 0 the term is at most
   * -A * c. Default 3; null turns the dual-clip off. Must be > 1.
   */
  clipRatioC?: number | null;
  /**
   * Truncated importance sampling cap C: each token's term is weighted by
   * min(pi_old / pi_rollout, C) (needs `logpRollout`). Default null (off). Must be >= 1.
   */
  tisCap?: number | null;
  aggregation?: Aggregation;
  /** Denominator override for token-mean: the mini-batch's response-token count. */
  tokenCount?: number;
  /** Denominator override for seq-mean-token-mean: the mini-batch's sequence count. */
  seqCount?: number;
  /** Statistic only: k3 = (r - 1) - log r (default, unbiased and >= 0), k1 = -log r, k2 = (log r)^2 / 2. */
  klEstimator?: KlEstimator;
  /**
   * Optional KL penalty against a reference policy (SIRI and DAPO: off, 0).
   * Adds coef * k3(ref, new) = coef * (exp(ref - new) - (ref - new) - 1) per token (verl's low_var_kl).
   */
  klCoef?: number;
}

export interface PolicyLossInput {
  /** [N] log-probs of the sampled tokens under the policy being trained. */
  logpNew: Float32Array;
  /** [N] the same under the policy that sampled them (computed once per step). */
  logpOld: Float32Array;
  /** [N] the advantage of each token's response. */
  advantages: Float32Array;
  /** [N] 1 for response tokens that carry loss, 0 for prompt, padding or filtered tokens. */
  mask: Float32Array;
  /** [N] log-probs the sampler reported (the behaviour policy); needed when tisCap is set. */
  logpRollout?: Float32Array;
  /** [N] response index of each token; needed by seq-mean-token-mean. */
  seqOfToken?: Uint32Array;
  /** [N] entropy of the new policy at each token; passed through as its masked mean. */
  entropy?: Float32Array;
  /** [N] reference-policy log-probs; needed when klCoef > 0. */
  logpRef?: Float32Array;
}

export interface PolicyLossStats {
  /** Response tokens (mask 1) in this call. */
  tokens: number;
  /** Fraction of response tokens with the clip active below (A < 0, r < 1 - eps_low). */
  clipFracLow: number;
  /** Fraction with the clip active above (A > 0, r > 1 + eps_high). */
  clipFracHigh: number;
  /** Fraction with the dual-clip active (A < 0, r > c): verl's pg_clipfrac_lower. */
  clipFracDual: number;
  /** Mean truncated-IS weight over response tokens (1 when TIS is off). */
  tisWeightMean: number;
  /** Mean over response tokens of the chosen KL(old || new) estimator. */
  approxKl: number;
  /** Masked mean of `entropy`, or NaN when none was given. */
  entropy: number;
  /** Masked mean of the ratio r. */
  ratioMean: number;
  /** Mean reference-KL term (0 when klCoef is 0). */
  refKl: number;
}

export interface PolicyLossResult {
  /** The aggregated loss (to minimise). */
  loss: number;
  /** [N] d loss / d logp_new (0 on masked-out tokens). */
  grad: Float32Array;
  /** [N] term_i before aggregation (including the KL term; 0 on masked-out tokens). */
  terms: Float32Array;
  stats: PolicyLossStats;
}

/** verl's clip_ratio_c: the dual-clip bound for negative advantages. */
export const DEFAULT_CLIP_RATIO_C = 3;

/** Log-ratios are clamped to +-20 before exp (as verl does), so a wild token cannot make r overflow. */
export const LOG_RATIO_CLAMP = 20;

function checkLen(name: string, a: ArrayLike<number> | undefined, n: number): void {
  if (a && a.length !== n) throw new Error(`policyLoss: ${name} has ${a.length} elements, logpNew has ${n}`);
}

/** The loss, its gradient w.r.t. logp_new, and the statistics. Computed in f64. */
export function policyLoss(inp: PolicyLossInput, opts: PolicyLossOptions = {}): PolicyLossResult {
  const epsLow = opts.epsLow ?? 0.2;
  const epsHigh = opts.epsHigh ?? 0.28;
  const aggregation = opts.aggregation ?? "token-mean";
  const klEst = opts.klEstimator ?? "k3";
  const klCoef = opts.klCoef ?? 0;
  const clipC = opts.clipRatioC === undefined ? DEFAULT_CLIP_RATIO_C : opts.clipRatioC;
  const tisCap = opts.tisCap ?? null;
  if (clipC !== null && !(clipC > 1 && Number.isFinite(clipC))) throw new Error(`policyLoss: clipRatioC (dual-clip) must be a number > 1 or null for off, got ${clipC}`);
  checkTisCap(tisCap, "policyLoss");
  if (!(epsLow >= 0 && epsLow < 1)) throw new Error(`policyLoss: epsLow must be in [0, 1), got ${epsLow}`);
  if (!(epsHigh >= 0)) throw new Error(`policyLoss: epsHigh must be >= 0, got ${epsHigh}`);
  if (aggregation !== "token-mean" && aggregation !== "seq-mean-token-mean")
    throw new Error(`policyLoss: aggregation must be "token-mean" or "seq-mean-token-mean", got "${aggregation}"`);
  if (!(klCoef >= 0)) throw new Error(`policyLoss: klCoef must be >= 0, got ${klCoef}`);
  const n = inp.logpNew.length;
  checkLen("logpOld", inp.logpOld, n);
  checkLen("advantages", inp.advantages, n);
  checkLen("mask", inp.mask, n);
  checkLen("seqOfToken", inp.seqOfToken, n);
  checkLen("entropy", inp.entropy, n);
  checkLen("logpRef", inp.logpRef, n);
  checkLen("logpRollout", inp.logpRollout, n);
  if (tisCap !== null && !inp.logpRollout) throw new Error("policyLoss: tisCap needs logpRollout (the sampler's log-probs)");
  if (klCoef > 0 && !inp.logpRef) throw new Error("policyLoss: klCoef > 0 needs logpRef (reference-policy log-probs)");
  if (aggregation === "seq-mean-token-mean" && !inp.seqOfToken)
    throw new Error("policyLoss: aggregation seq-mean-token-mean needs seqOfToken (the response index of each token)");

  const terms = new Float32Array(n);
  const dterm = new Float64Array(n); // d term_i / d logp_new_i before aggregation weights
  const termF64 = new Float64Array(n);
  let tokens = 0;
  let clipLow = 0;
  let clipHigh = 0;
  let clipDual = 0;
  let wSum = 0;
  let klSum = 0;
  let entSum = 0;
  let ratioSum = 0;
  let refKlSum = 0;
  for (let i = 0; i < n; i++) {
    const m = inp.mask[i];
    if (m !== 0 && m !== 1) throw new Error(`policyLoss: mask[${i}] = ${m}; the loss mask must be 0 or 1`);
    if (m === 0) continue;
    tokens++;
    const a = inp.advantages[i];
    const lr = inp.logpNew[i] - inp.logpOld[i];
    const lrc = Math.min(LOG_RATIO_CLAMP, Math.max(-LOG_RATIO_CLAMP, lr));
    const r = Math.exp(lrc);
    const clipped = Math.min(1 + epsHigh, Math.max(1 - epsLow, r));
    const unclippedTerm = r * a;
    const clippedTerm = clipped * a;
    let t: number;
    let g: number;
    if (clippedTerm < unclippedTerm) {
      // The clipped branch is the min: no gradient through r.
      t = -clippedTerm;
      g = 0;
      if (a > 0) clipHigh++;
      else clipLow++;
    } else {
      t = -unclippedTerm;
      g = lr === lrc ? -a * r : 0; // the clamp, where it bites, stops the gradient too
    }
    if (clipC !== null && a < 0 && t > -a * clipC) {
      // Dual-clip: the term is bounded by -A * c, a constant.
      t = -a * clipC;
      g = 0;
      clipDual++;
    }
    const w = tisCap === null ? 1 : tisWeight(inp.logpOld[i], inp.logpRollout![i], tisCap);
    t *= w;
    g *= w;
    wSum += w;
    if (klCoef > 0) {
      const d = inp.logpRef![i] - inp.logpNew[i];
      const k = Math.exp(d) - d - 1;
      t += klCoef * k;
      g += klCoef * (1 - Math.exp(d));
      refKlSum += k;
    }
    termF64[i] = t;
    terms[i] = t;
    dterm[i] = g;
    ratioSum += r;
    klSum += klEst === "k3" ? r - 1 - lrc : klEst === "k1" ? -lrc : 0.5 * lrc * lrc;
    if (inp.entropy) entSum += inp.entropy[i];
  }

  const grad = new Float32Array(n);
  let loss = 0;
  if (aggregation === "token-mean") {
    const denom = opts.tokenCount ?? tokens;
    if (opts.tokenCount !== undefined && !(opts.tokenCount >= tokens))
      throw new Error(`policyLoss: tokenCount ${opts.tokenCount} is less than the ${tokens} response tokens given`);
    if (denom > 0) {
      for (let i = 0; i < n; i++) {
        if (inp.mask[i] === 0) continue;
        loss += termF64[i] / denom;
        grad[i] = dterm[i] / denom;
      }
    }
  } else {
    const seq = inp.seqOfToken!;
    const count = new Map<number, number>();
    for (let i = 0; i < n; i++) if (inp.mask[i] === 1) count.set(seq[i], (count.get(seq[i]) ?? 0) + 1);
    const seqs = opts.seqCount ?? count.size;
    if (opts.seqCount !== undefined && !(opts.seqCount >= count.size))
      throw new Error(`policyLoss: seqCount ${opts.seqCount} is less than the ${count.size} sequences with response tokens`);
    if (seqs > 0) {
      for (let i = 0; i < n; i++) {
        if (inp.mask[i] === 0) continue;
        const w = 1 / (seqs * count.get(seq[i])!);
        loss += termF64[i] * w;
        grad[i] = dterm[i] * w;
      }
    }
  }

  const frac = (x: number) => (tokens > 0 ? x / tokens : 0);
  return {
    loss,
    grad,
    terms,
    stats: {
      tokens,
      clipFracLow: frac(clipLow),
      clipFracHigh: frac(clipHigh),
      clipFracDual: frac(clipDual),
      tisWeightMean: tokens > 0 ? wSum / tokens : 1,
      approxKl: frac(klSum),
      entropy: inp.entropy ? frac(entSum) : NaN,
      ratioMean: frac(ratioSum),
      refKl: frac(refKlSum),
    },
  };
}
