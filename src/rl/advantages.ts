/**
 * GRPO advantages: each response is scored against the other responses to the
 * same prompt. A_i = (R_i - mean(R_group)) / (std(R_group) + eps) with the
 * unbiased (n - 1) std, the same A for every token of response i. A group of
 * one has no peers, so it gets mean 0 and std 1 (verl's convention). The
 * mean-only variant (Dr. GRPO) drops the division by std, which otherwise
 * up-weights prompts whose rewards barely differ.
 */

export interface AdvantageOptions {
  /** Divide by the group's std (GRPO, default) or not (Dr. GRPO's mean-only). */
  normalizeStd?: boolean;
  /** Added to the std; 1e-6 as in GRPO / verl. */
  eps?: number;
}

/**
 * Group sizes as given: one number (all groups that size, responses of a
 * group adjacent) or one size per group (after dynamic sampling or
 * filtering, groups may differ).
 */
function groupSizes(n: number, sizes: number | ArrayLike<number>): number[] {
  let out: number[];
  if (typeof sizes === "number") {
    if (!Number.isInteger(sizes) || sizes < 1) throw new Error(`advantages: group size must be an integer >= 1, got ${sizes}`);
    if (n % sizes !== 0) throw new Error(`advantages: ${n} rewards do not split into groups of ${sizes}`);
    out = Array<number>(n / sizes).fill(sizes);
  } else {
    out = Array.from(sizes);
    for (let g = 0; g < out.length; g++) {
      if (!Number.isInteger(out[g]) || out[g] < 1) throw new Error(`advantages: groupSizes[${g}] must be an integer >= 1, got ${out[g]}`);
    }
    const sum = out.reduce((a, b) => a + b, 0);
    if (sum !== n) throw new Error(`advantages: group sizes add up to ${sum} but there are ${n} rewards`);
  }
  return out;
}

/** Mean and unbiased std of one group; a group of one gets mean 0, std 1. */
export function groupStats(r: ArrayLike<number>, start: number, size: number): { mean: number; std: number } {
  if (size === 1) return { mean: 0, std: 1 };
  let sum = 0;
  for (let i = start; i < start + size; i++) sum += r[i];
  const mean = sum / size;
  let ss = 0;
  for (let i = start; i < start + size; i++) ss += (r[i] - mean) ** 2;
  return { mean, std: Math.sqrt(ss / (size - 1)) };
}

/** One advantage per response; rewards of a group are adjacent. Computed in f64. */
export function groupAdvantages(
  rewards: ArrayLike<number>,
  sizes: number | ArrayLike<number>,
  opts: AdvantageOptions = {},
): Float32Array {
  const normalizeStd = opts.normalizeStd ?? true;
  const eps = opts.eps ?? 1e-6;
  for (let i = 0; i < rewards.length; i++) {
    if (!Number.isFinite(rewards[i])) throw new Error(`advantages: rewards[${i}] is ${rewards[i]}; rewards must be finite`);
  }
  const out = new Float32Array(rewards.length);
  let start = 0;
  for (const size of groupSizes(rewards.length, sizes)) {
    const { mean, std } = groupStats(rewards, start, size);
    for (let i = start; i < start + size; i++) {
      out[i] = normalizeStd ? (rewards[i] - mean) / (std + eps) : rewards[i] - mean;
    }
    start += size;
  }
  return out;
}

/** Spread each response's advantage over its tokens: out[token] = adv[seq[token]]. */
export function tokenAdvantages(seqAdv: ArrayLike<number>, seqOfToken: ArrayLike<number>): Float32Array {
  const out = new Float32Array(seqOfToken.length);
  for (let i = 0; i < seqOfToken.length; i++) {
    const s = seqOfToken[i];
    if (!Number.isInteger(s) || s < 0 || s >= seqAdv.length)
      throw new Error(`tokenAdvantages: seqOfToken[${i}] = ${s} is not a response index in [0, ${seqAdv.length})`);
    out[i] = seqAdv[s];
  }
  return out;
}
