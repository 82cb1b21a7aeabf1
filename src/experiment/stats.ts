/**
 * The few statistics the experiments report: a mean with its standard error
 * across seeds, and a point's accuracy margin over the front two baselines
 * span. Pure functions, checked against hand computations in the tests.
 */

/** The arithmetic mean; NaN for no values. */
export function mean(xs: readonly number[]): number {
  if (!xs.length) return NaN;
  return xs.reduce((a, x) => a + x, 0) / xs.length;
}

/** The sample standard deviation (n - 1 in the denominator); NaN for fewer than two values. */
export function sampleStd(xs: readonly number[]): number {
  if (xs.length < 2) return NaN;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

/** The standard error of the mean, s / sqrt(n); NaN for fewer than two values (one seed has no spread to measure). */
export function standardError(xs: readonly number[]): number {
  return sampleStd(xs) / Math.sqrt(xs.length);
}

/** Mean and standard error of per-seed values, and the values themselves. */
export interface MeanSE {
  mean: number;
  se: number;
  n: number;
  values: number[];
}

export function meanSE(xs: readonly number[]): MeanSE {
  for (const x of xs) if (!Number.isFinite(x)) throw new Error(`meanSE: a non-finite value (${x}) among ${JSON.stringify(xs)}`);
  return { mean: mean(xs), se: standardError(xs), n: xs.length, values: [...xs] };
}

/** A point of the accuracy-vs-tokens plane. */
export interface TokAcc {
  tokens: number;
  accuracy: number;
}

/**
 * The baselines' front at `tokens`: the accuracy on the chord between the
 * short-cap and the long-cap baseline (what mixing the two policies would
 * reach at that mean length), held flat beyond the chord's ends (beyond the
 * long end more tokens buy nothing; below the short end the short baseline's
 * accuracy is the bar, a conservative choice since no baseline is that brief).
 */
export function frontAccuracy(a: TokAcc, b: TokAcc, tokens: number): number {
  const [lo, hi] = a.tokens <= b.tokens ? [a, b] : [b, a];
  if (tokens <= lo.tokens) return lo.accuracy;
  if (tokens >= hi.tokens) return hi.accuracy;
  return lo.accuracy + ((tokens - lo.tokens) / (hi.tokens - lo.tokens)) * (hi.accuracy - lo.accuracy);
}

/** Accuracy above (> 0) or below (< 0) the baselines' front at the point's mean length. */
export function frontMargin(p: TokAcc, a: TokAcc, b: TokAcc): number {
  return p.accuracy - frontAccuracy(a, b, p.tokens);
}

/** Whether some baseline is at least as accurate with at most as many tokens, and strictly better in one. */
export function dominated(p: TokAcc, baselines: readonly TokAcc[]): boolean {
  return baselines.some((q) => q.tokens <= p.tokens && q.accuracy >= p.accuracy && (q.tokens < p.tokens || q.accuracy > p.accuracy));
}
