/**
 * The rollout/trainer mismatch: the sampler reports the log-prob of each
 * token it drew (the behaviour policy pi_rollout: the engine's kernels,
 * possibly f16 weights), and the trainer recomputes the same log-probs with
 * its own f32 forward (pi_old, the policy the loss's ratio is taken
 * against). They are the same distribution in exact arithmetic and differ
 * by rounding and kernel order in practice; the loss then treats samples of
 * pi_rollout as if pi_old had drawn them.
 *
 * Measured per step over the response tokens: mean and max |logp_old -
 * logp_rollout|, and the extreme ratios pi_old / pi_rollout.
 *
 * Truncated importance sampling (TIS; verl's tis_imp_ratio_cap, after
 * Yao et al., "Your efficient RL framework secretly brings you off-policy
 * RL training"): each token's loss term is weighted by
 *   w = min(pi_old / pi_rollout, C),
 * a constant (no gradient), which corrects the expectation for the
 * sampler's policy up to the truncation at C. Off by default.
 */

/** min(exp(logpOld - logpRollout), cap), computed as exp(min(diff, log cap)) so that it never overflows. */
export function tisWeight(logpOld: number, logpRollout: number, cap: number): number {
  return Math.exp(Math.min(logpOld - logpRollout, Math.log(cap)));
}

/** Throws unless `cap` is null (off) or a finite number >= 1. */
export function checkTisCap(cap: number | null | undefined, what: string): void {
  if (cap === null || cap === undefined) return;
  if (!(cap >= 1 && Number.isFinite(cap))) {
    throw new Error(`${what}: the truncated-IS cap must be a number >= 1 (or null for off), got ${cap}`);
  }
}

export interface MismatchStats {
  /** Response tokens compared. */
  tokens: number;
  /** Mean |logp_old - logp_rollout|. */
  logpAbsMean: number;
  /** Max |logp_old - logp_rollout|. */
  logpAbsMax: number;
  /** Largest pi_old / pi_rollout. */
  ratioMax: number;
  /** Smallest pi_old / pi_rollout. */
  ratioMin: number;
  /** Mean truncated-IS weight min(pi_old / pi_rollout, C); NaN when no cap is given. */
  tisWeightMean: number;
  /** Fraction of tokens whose weight the cap truncated; NaN when no cap is given. */
  tisTruncFrac: number;
}

/**
 * The mismatch over sequences of response tokens: `trainer[s][j]` is the
 * trainer's log-prob of token j of response s, `rollout[s][j]` the sampler's.
 */
export function rolloutMismatch(trainer: readonly ArrayLike<number>[], rollout: readonly ArrayLike<number>[], tisCap: number | null = null): MismatchStats {
  if (trainer.length !== rollout.length) throw new Error(`rolloutMismatch: ${trainer.length} trainer sequences, ${rollout.length} rollout sequences`);
  checkTisCap(tisCap, "rolloutMismatch");
  let tokens = 0;
  let sum = 0;
  let max = 0;
  let dMax = -Infinity;
  let dMin = Infinity;
  let wSum = 0;
  let trunc = 0;
  const logCap = tisCap === null ? Infinity : Math.log(tisCap);
  trainer.forEach((t, s) => {
    const r = rollout[s];
    if (t.length !== r.length) throw new Error(`rolloutMismatch: response ${s} has ${t.length} trainer log-probs and ${r.length} rollout log-probs`);
    for (let j = 0; j < t.length; j++) {
      const d = t[j] - r[j];
      if (Number.isNaN(d)) throw new Error(`rolloutMismatch: response ${s} token ${j}: log-prob difference is NaN (trainer ${t[j]}, rollout ${r[j]})`);
      tokens++;
      sum += Math.abs(d);
      max = Math.max(max, Math.abs(d));
      dMax = Math.max(dMax, d);
      dMin = Math.min(dMin, d);
      if (tisCap !== null) {
        wSum += tisWeight(t[j], r[j], tisCap);
        if (d > logCap) trunc++;
      }
    }
  });
  const none = tokens === 0;
  return {
    tokens,
    logpAbsMean: none ? 0 : sum / tokens,
    logpAbsMax: max,
    ratioMax: none ? 1 : Math.exp(dMax),
    ratioMin: none ? 1 : Math.exp(dMin),
    tisWeightMean: tisCap === null ? NaN : none ? 1 : wSum / tokens,
    tisTruncFrac: tisCap === null ? NaN : none ? 0 : trunc / tokens,
  };
}
