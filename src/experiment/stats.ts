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

/**
 * Where the spread of a checkpoint's accuracy across seeds comes from, by a
 * two-way (seed x problem) decomposition of per-problem accuracies
 * acc[s][i] = (correct samples) / n of seed s on problem i:
 *   acc[s][i] = mu + run_s + problem_i + (run x problem)_si + sampling noise.
 * The residual of the two-way fit estimates var(run x problem) + the sampling
 * noise; the sampling noise is p(1 - p) / n (unbiased per cell); the variance
 * of the seed means is var(run) + residual / N. What the held-out set and n
 * control is residual / N; var(run), how differently RL runs of the same
 * settings end, only more seeds average out.
 */
export interface NoiseBudget {
  seeds: number;
  problems: number;
  n: number;
  /** SD of the per-seed accuracies. */
  seedSD: number;
  /** The part of it one evaluation's finite problems and samples explain: sqrt(residual / N). */
  evalSD: number;
  /** The rest: how differently the RL runs ended, sqrt(max(0, seedSD^2 - residual / N)). */
  runSD: number;
  /** var(run x problem): how much a problem's accuracy moves from run to run beyond the run's mean. */
  interactionVar: number;
  /** One sample's Bernoulli variance within a problem, p(1 - p) averaged over cells. */
  sampleVar: number;
}

export function noiseBudget(acc: readonly (readonly number[])[], n: number): NoiseBudget {
  const S = acc.length;
  const N = acc[0]?.length ?? 0;
  if (S < 2 || N < 2) throw new Error(`noiseBudget: needs at least 2 seeds and 2 problems, got ${S} x ${N}`);
  if (!(Number.isInteger(n) && n >= 2)) throw new Error(`noiseBudget: needs n >= 2 samples per problem, got ${n}`);
  for (const row of acc) {
    if (row.length !== N) throw new Error(`noiseBudget: every seed needs the same ${N} problems, got a row of ${row.length}`);
    for (const x of row) if (!(x >= 0 && x <= 1)) throw new Error(`noiseBudget: accuracies must be in [0, 1], got ${x}`);
  }
  const seedMeans = acc.map((r) => mean(r));
  const probMeans = Array.from({ length: N }, (_, i) => mean(acc.map((r) => r[i])));
  const grand = mean(seedMeans);
  let ss = 0;
  let pq = 0;
  for (let s = 0; s < S; s++)
    for (let i = 0; i < N; i++) {
      ss += (acc[s][i] - seedMeans[s] - probMeans[i] + grand) ** 2;
      pq += (acc[s][i] * (1 - acc[s][i]) * n) / (n - 1);
    }
  const residual = ss / ((S - 1) * (N - 1));
  const sampleVar = pq / (S * N);
  const seedVar = sampleStd(seedMeans) ** 2;
  return {
    seeds: S,
    problems: N,
    n,
    seedSD: Math.sqrt(seedVar),
    evalSD: Math.sqrt(residual / N),
    runSD: Math.sqrt(Math.max(0, seedVar - residual / N)),
    interactionVar: Math.max(0, residual - sampleVar / n),
    sampleVar,
  };
}

/**
 * The standard error of a mean difference between two checkpoints over
 * `seeds` seeds (paired by seed), each evaluated on `problems` problems with
 * avg@n: sqrt((runSD^2 + 2 interactionVar / N + 2 sampleVar / (N n)) / S),
 * with `runSD` the SD across seeds of the difference the RL runs themselves
 * make. The planning arithmetic of the experiment's evaluation size.
 */
export function differenceSE(o: { runSD: number; interactionVar: number; sampleVar: number; problems: number; n: number; seeds: number }): number {
  const perSeed = o.runSD ** 2 + (2 * o.interactionVar) / o.problems + (2 * o.sampleVar) / (o.problems * o.n);
  return Math.sqrt(perSeed / o.seeds);
}
