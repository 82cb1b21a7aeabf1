/** Small statistics shared by the trainer's metrics and the bench's report. */

/** The median (mean of the two middle values for an even count); NaN for no values. */
export function median(xs: readonly number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Standard error of the mean: sample standard deviation (n - 1) / sqrt(n);
 * NaN for fewer than two values. The bench reports it beside pass@1 over
 * problems (see src/bench/metrics.ts for why this one).
 */
export function standardError(xs: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  let m = 0;
  for (const x of xs) m += x;
  m /= n;
  let ss = 0;
  for (const x of xs) ss += (x - m) ** 2;
  return Math.sqrt(ss / (n - 1) / n);
}
