/**
 * DAPO's sample-level options (arXiv 2503.14476), each independent and off
 * unless the config turns it on (SIRI does not say it used them):
 * - dynamic sampling: a group whose rewards are all equal has zero advantage
 *   everywhere and so no gradient; drop it and sample more prompts until the
 *   batch is full, within a limit on rounds;
 * - overlong filtering: a response cut at the cap is not known to be wrong,
 *   so its tokens are masked out of the loss instead of being punished;
 * - soft overlong punishment: a length penalty ramping from 0 to -1 over the
 *   last L_cache tokens below the cap, added to the correctness reward.
 */

/** True when every reward of the group is the same (within `tol`): no learning signal. */
export function isDegenerateGroup(rewards: ArrayLike<number>, tol = 0): boolean {
  if (rewards.length === 0) throw new Error("isDegenerateGroup: empty group");
  for (let i = 0; i < rewards.length; i++) {
    if (!Number.isFinite(rewards[i])) throw new Error(`isDegenerateGroup: rewards[${i}] is ${rewards[i]}; rewards must be finite`);
  }
  let lo = rewards[0];
  let hi = rewards[0];
  for (let i = 1; i < rewards.length; i++) {
    lo = Math.min(lo, rewards[i]);
    hi = Math.max(hi, rewards[i]);
  }
  return hi - lo <= tol;
}

/** Groups that carry a learning signal, and how many were dropped. */
export function filterGroups<G>(groups: readonly G[], rewardsOf: (g: G) => ArrayLike<number>, tol = 0): { kept: G[]; dropped: number } {
  const kept = groups.filter((g) => !isDegenerateGroup(rewardsOf(g), tol));
  return { kept, dropped: groups.length - kept.length };
}

export interface DynamicSamplingOptions<G> {
  /** Groups (prompts) the batch needs. */
  batchGroups: number;
  /** At most this many sampler calls; verl's max_num_gen_batches. */
  maxRounds: number;
  rewardsOf: (g: G) => ArrayLike<number>;
  /** Rewards closer than this count as equal (default 0: exactly equal). */
  tol?: number;
  /**
   * When the rounds run out before the batch is full: "partial" returns what
   * was kept with full = false (the trainer logs it and trains on less);
   * "error" throws, as verl does.
   */
  onShort?: "partial" | "error";
}

export interface DynamicSamplingResult<G> {
  /** Exactly batchGroups groups when full; fewer otherwise. Extra kept groups beyond the batch are discarded. */
  groups: G[];
  full: boolean;
  rounds: number;
  /** Groups sampled over all rounds. */
  sampled: number;
  /** Groups dropped for all-equal rewards. */
  dropped: number;
}

/**
 * Call `sample(round, missing)` until `batchGroups` groups with unequal
 * rewards have been collected or `maxRounds` calls were made. `missing` is
 * how many groups the batch still lacks; the sampler may return more (one
 * full generation batch per round, as DAPO does) or fewer.
 */
export async function dynamicSample<G>(
  sample: (round: number, missing: number) => G[] | Promise<G[]>,
  o: DynamicSamplingOptions<G>,
): Promise<DynamicSamplingResult<G>> {
  if (!Number.isInteger(o.batchGroups) || o.batchGroups < 1)
    throw new Error(`dynamicSample: batchGroups must be an integer >= 1, got ${o.batchGroups}`);
  if (!Number.isInteger(o.maxRounds) || o.maxRounds < 1)
    throw new Error(`dynamicSample: maxRounds must be an integer >= 1, got ${o.maxRounds}`);
  const kept: G[] = [];
  let sampled = 0;
  let dropped = 0;
  let rounds = 0;
  while (kept.length < o.batchGroups && rounds < o.maxRounds) {
    const got = await sample(rounds, o.batchGroups - kept.length);
    rounds++;
    sampled += got.length;
    const f = filterGroups(got, o.rewardsOf, o.tol);
    dropped += f.dropped;
    kept.push(...f.kept);
  }
  const full = kept.length >= o.batchGroups;
  if (!full && (o.onShort ?? "partial") === "error") {
    throw new Error(
      `dynamic sampling: only ${kept.length} of ${o.batchGroups} groups had unequal rewards after ${rounds} rounds ` +
        `(${dropped} of ${sampled} dropped); raise max rounds or check the data and reward`,
    );
  }
  return { groups: kept.slice(0, o.batchGroups), full, rounds, sampled, dropped };
}

/**
 * A response is truncated when it reached the cap without finishing (no EOS).
 * `finished[i]` says whether response i ended with EOS.
 */
export function truncatedMask(lengths: ArrayLike<number>, cap: number, finished?: ArrayLike<boolean>): boolean[] {
  if (!(cap >= 1)) throw new Error(`truncatedMask: cap must be >= 1 token, got ${cap}`);
  if (finished && finished.length !== lengths.length)
    throw new Error(`truncatedMask: finished has ${finished.length} entries, lengths has ${lengths.length}`);
  const out: boolean[] = [];
  for (let i = 0; i < lengths.length; i++) {
    if (!(lengths[i] >= 0) || lengths[i] > cap) throw new Error(`truncatedMask: lengths[${i}] = ${lengths[i]} is not in [0, cap ${cap}]`);
    out.push(lengths[i] >= cap && !(finished?.[i] ?? false));
  }
  return out;
}

/** Overlong filtering, per response: weight 0 for truncated responses, 1 otherwise. */
export function overlongFilterWeights(truncated: ArrayLike<boolean>): Float32Array {
  const out = new Float32Array(truncated.length);
  for (let i = 0; i < truncated.length; i++) out[i] = truncated[i] ? 0 : 1;
  return out;
}

/** Token loss mask with whole responses removed: out[i] = mask[i] * seqWeight[seqOfToken[i]]. */
export function applySequenceMask(mask: Float32Array, seqOfToken: ArrayLike<number>, seqWeight: ArrayLike<number>): Float32Array {
  if (seqOfToken.length !== mask.length)
    throw new Error(`applySequenceMask: seqOfToken has ${seqOfToken.length} entries, mask has ${mask.length}`);
  const out = new Float32Array(mask.length);
  for (let i = 0; i < mask.length; i++) {
    const s = seqOfToken[i];
    if (!Number.isInteger(s) || s < 0 || s >= seqWeight.length)
      throw new Error(`applySequenceMask: seqOfToken[${i}] = ${s} is not a response index in [0, ${seqWeight.length})`);
    out[i] = mask[i] * seqWeight[s];
  }
  return out;
}

/**
 * DAPO's soft overlong punishment for a response of `length` tokens:
 * 0 up to lMax - lCache, then ((lMax - lCache) - length) / lCache down to -1
 * at lMax, and -1 beyond. Under SIRI's schedule lMax is the step's cap L(t).
 */
export function softOverlongPenalty(length: number, lMax: number, lCache: number): number {
  if (!(lMax >= 1)) throw new Error(`softOverlongPenalty: lMax must be >= 1 token, got ${lMax}`);
  if (!(lCache > 0 && lCache <= lMax)) throw new Error(`softOverlongPenalty: lCache must be in (0, lMax = ${lMax}], got ${lCache}`);
  if (!(length >= 0)) throw new Error(`softOverlongPenalty: length must be >= 0, got ${length}`);
  const free = lMax - lCache;
  if (length <= free) return 0;
  if (length <= lMax) return (free - length) / lCache;
  return -1;
}

/** rewards[i] + softOverlongPenalty(lengths[i], lMax, lCache), as a new array. */
export function addSoftOverlongPenalty(
  rewards: ArrayLike<number>,
  lengths: ArrayLike<number>,
  lMax: number,
  lCache: number,
): Float32Array {
  if (rewards.length !== lengths.length)
    throw new Error(`addSoftOverlongPenalty: ${rewards.length} rewards but ${lengths.length} lengths`);
  const out = new Float32Array(rewards.length);
  for (let i = 0; i < rewards.length; i++) out[i] = rewards[i] + softOverlongPenalty(lengths[i], lMax, lCache);
  return out;
}
