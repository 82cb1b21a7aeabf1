/**
 * One policy update (GRPO with DAPO's clip-higher, no KL) and one supervised
 * step, over micro-batches of packed sequences.
 *
 * Policy update, as verl does it: the old policy's log-probs are computed
 * once per step by a forward of the current weights (before any update)
 * (`oldLogp: "recompute"`), or taken from the rollouts themselves
 * (`oldLogp: "rollout"`: the behaviour policy's, as the sampler reported
 * them; see PolicyConfig.oldLogp);
 * the rollouts are split into `miniBatches` mini-batches, each one optimiser
 * step, repeated for `epochs`; each mini-batch is split into micro-batches
 * of at most `microBatchTokens` tokens whose gradients accumulate. With
 * token-mean aggregation the loss of a mini-batch is the sum over all its
 * response tokens divided by their count (DAPO), so the micro-batch losses
 * are divided by the mini-batch's token count, not their own.
 */
import type { Gpu } from "../gpu/index.ts";
import { STAT, STATS_LEN } from "../kernels/loss.ts";
import { rolloutMismatch, type MismatchStats } from "../rl/mismatch.ts";
import type { Aggregation } from "../rl/policy_loss.ts";
import type { StepMetrics } from "./metrics.ts";
import { packSequences, type PackedBatch, type TrainModel } from "./model.ts";
import type { Optimizer } from "./optim.ts";
import { optimizerStep } from "./precision.ts";

export interface Rollout {
  prompt: number[];
  response: number[];
  /** The response's advantage (same for every token). */
  advantage: number;
  /** 0 masks the whole response out of the loss (e.g. DAPO's overlong filter). */
  weight?: number;
  /** The sampler's log-prob of each response token (the behaviour policy); for the mismatch statistics and truncated IS. */
  rolloutLogp?: ArrayLike<number>;
}

export interface PolicyConfig {
  epsLow: number; // 0.2
  epsHigh: number; // 0.28 (clip-higher)
  /** Dual-clip constant c (verl's clip_ratio_c): for A < 0 a token's term is at most -A·c. 3; null = off. */
  clipRatioC: number | null;
  /** Truncated importance sampling cap C: weight min(pi_old / pi_rollout, C) per token. null = off (default). */
  tisCap: number | null;
  aggregation: Aggregation; // "token-mean" (DAPO)
  miniBatches: number; // optimiser steps per epoch
  epochs: number;
  microBatchTokens: number;
  temperature: number; // the rollout temperature (log-probs of softmax(logits / τ))
  /**
   * The "old" log-probs of the clip-higher ratio pi / pi_old:
   * "recompute" (verl's default, on-policy): the weights the step starts
   *   from, which on-policy are the weights that sampled the rollouts (up to
   *   the sampler's numerics);
   * "rollout": the rollouts' own log-probs (Rollout.rolloutLogp, the
   *   behaviour policy's). With bounded staleness (src/dist/learner.ts) a
   *   rollout may come from weights up to k updates old: recomputing would
   *   take the ratio against the current weights, so the clip would bound the
   *   step from weights that never produced the data; the behaviour policy's
   *   own log-probs keep the ratio what PPO means (as asynchronous RL systems
   *   do). Truncated IS (tisCap) weighs pi_old / pi_rollout, 1 here: the two
   *   are not combined.
   */
  oldLogp: OldLogp;
}

export type OldLogp = "recompute" | "rollout";

export const DEFAULT_POLICY: PolicyConfig = {
  epsLow: 0.2,
  epsHigh: 0.28,
  clipRatioC: 3,
  tisCap: null,
  aggregation: "token-mean",
  miniBatches: 1,
  epochs: 1,
  microBatchTokens: 4096,
  temperature: 1,
  oldLogp: "recompute",
};

export interface UpdateStats {
  loss: number;
  clipFracLow: number;
  clipFracHigh: number;
  /** Fraction of tokens with the dual-clip active (verl's pg_clipfrac_lower). */
  clipFracDual: number;
  /** Mean truncated-IS weight over the loss tokens (1 when off). */
  tisWeightMean: number;
  /** Sampler vs trainer log-probs over the step's response tokens; null when the rollouts carry no sampler log-probs. */
  mismatch: MismatchStats | null;
  approxKl: number;
  entropy: number;
  gradNorm: number;
  /** The largest gradient norm of the step's updates, a non-finite one if any was (the figure a skip reports). */
  gradNormMax?: number;
  tokens: number;
  updates: number;
  skipped: number; // updates skipped for a non-finite gradient
}

interface Micro {
  idx: number[]; // rollout indices
  batch: PackedBatch;
}

/** Split rollouts (by index) into micro-batches of at most `maxTokens` tokens. */
export function microBatches(rollouts: Rollout[], idx: number[], maxTokens: number): Micro[] {
  const out: Micro[] = [];
  let cur: number[] = [];
  let tokens = 0;
  const flush = () => {
    if (!cur.length) return;
    out.push({ idx: cur, batch: packSequences(cur.map((i) => ({ tokens: [...rollouts[i].prompt, ...rollouts[i].response], lossFrom: rollouts[i].prompt.length }))) });
    cur = [];
    tokens = 0;
  };
  for (const i of idx) {
    const n = rollouts[i].prompt.length + rollouts[i].response.length;
    if (tokens + n > maxTokens) flush();
    cur.push(i);
    tokens += n;
  }
  flush();
  return out;
}

/** Positions in a packed micro-batch whose log-prob belongs to each rollout's response tokens. */
function responsePositions(rollouts: Rollout[], m: Micro): number[][] {
  const out: number[][] = [];
  let o = 0;
  for (const i of m.idx) {
    const r = rollouts[i];
    out.push(r.response.map((_, j) => o + r.prompt.length - 1 + j));
    o += r.prompt.length + r.response.length;
  }
  return out;
}

/** Scratch buffers for the loss inputs, grown on demand. */
class LossInputs {
  cap = 0;
  logpOld!: GPUBuffer;
  logpRollout!: GPUBuffer;
  adv!: GPUBuffer;
  mask!: GPUBuffer;
  readonly stats: GPUBuffer;
  /** A mini-batch's log-probs then entropies, copied out micro-batch by micro-batch: [2 · tokens]. */
  seen: GPUBuffer | null = null;
  constructor(private readonly gpu: Gpu) {
    this.stats = gpu.buffer(STATS_LEN * 4, "policy.stats");
  }
  /** `seen` for a mini-batch of `tokens` tokens (grown on demand; the old one retired after the GPU is done with it). */
  ensureSeen(tokens: number): GPUBuffer {
    if (this.seen && this.seen.size >= 8 * tokens) return this.seen;
    this.seen?.destroy(); // every batch using it was read back (awaited) before
    this.seen = this.gpu.buffer(Math.max(8 * tokens, 2 * (this.seen?.size ?? 0)), "policy.seen");
    return this.seen;
  }
  ensure(T: number): void {
    if (T <= this.cap) return;
    if (this.cap) [this.logpOld, this.logpRollout, this.adv, this.mask].forEach((b) => b.destroy());
    this.cap = Math.max(T, 2 * this.cap);
    this.logpOld = this.gpu.buffer(this.cap * 4, "policy.logpOld");
    this.logpRollout = this.gpu.buffer(this.cap * 4, "policy.logpRollout");
    this.adv = this.gpu.buffer(this.cap * 4, "policy.adv");
    this.mask = this.gpu.buffer(this.cap * 4, "policy.mask");
  }
}

// One set per model, made on its first update and grown on demand: no buffers are created per step.
const lossInputs = new WeakMap<TrainModel, LossInputs>();
function inputsFor(model: TrainModel): LossInputs {
  let x = lossInputs.get(model);
  if (!x) lossInputs.set(model, (x = new LossInputs(model.gpu)));
  return x;
}

/** Log-probs of every rollout's response tokens under the model's current weights. */
export async function responseLogprobs(model: TrainModel, rollouts: Rollout[], cfg: Pick<PolicyConfig, "microBatchTokens" | "temperature">): Promise<{ logp: Float32Array[]; entropy: Float32Array[] }> {
  const logp: Float32Array[] = new Array(rollouts.length);
  const entropy: Float32Array[] = new Array(rollouts.length);
  for (const m of microBatches(rollouts, rollouts.map((_, i) => i), cfg.microBatchTokens)) {
    const b = model.gpu.batch();
    const T = model.recordForward(b, m.batch, cfg.temperature);
    b.submit();
    const r = await model.readLogp(T);
    responsePositions(rollouts, m).forEach((pos, k) => {
      logp[m.idx[k]] = Float32Array.from(pos, (p) => r.logp[p]);
      entropy[m.idx[k]] = Float32Array.from(pos, (p) => r.entropy[p]);
    });
  }
  return { logp, entropy };
}

/** Deterministic shuffle (mini-batch split) from a seed. */
function shuffled(n: number, seed: number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  let s = (seed >>> 0) || 1;
  for (let i = n - 1; i > 0; i--) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const j = s % (i + 1);
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx;
}

/**
 * GRPO/DAPO policy update on a step's rollouts. Returns the statistics over
 * every micro-batch of every update.
 */
export async function policyUpdate(
  model: TrainModel,
  opt: Optimizer,
  rollouts: Rollout[],
  cfg: PolicyConfig,
  seed = 0,
  /** Tests: compute π_old by a forward of its own even where the update's forward could serve. */
  o: { separateOldForward?: boolean } = {},
): Promise<UpdateStats> {
  const gpu = model.gpu;
  // One mini-batch and one epoch: nothing updates the weights before the update's own forward, so it
  // sees the weights the step starts from. π_old recomputed (verl: with those same weights) is then that
  // forward's log-probs, as they are: the ratio is exactly 1 and no separate forward runs. Otherwise a
  // forward before any update; or, with oldLogp "rollout", the rollouts' own log-probs.
  const single = cfg.miniBatches === 1 && cfg.epochs === 1 && !o.separateOldForward;
  const onPolicy = single && cfg.oldLogp === "recompute";
  hasSamplerLogp(rollouts, cfg.tisCap); // refuse truncated IS without sampler log-probs before anything runs
  const given: readonly ArrayLike<number>[] | null = cfg.oldLogp === "rollout" ? behaviourLogprobs(rollouts, cfg) : onPolicy ? null : (await responseLogprobs(model, rollouts, cfg)).logp;
  /** The trainer's log-probs at the step's start (for the mismatch statistics), read from the update's forward when it sees those weights. */
  const start: Float32Array[] = new Array(rollouts.length);
  let mismatch = given && cfg.oldLogp === "recompute" ? stepMismatch(rollouts, given, cfg.tisCap) : null;
  const tis = cfg.tisCap !== null;
  const inputs = inputsFor(model);
  const sum = { loss: 0, clipLow: 0, clipHigh: 0, clipDual: 0, tisWeight: 0, kl: 0, tokens: 0, entropy: 0, gradNorm: 0, gradNormMax: 0, updates: 0, skipped: 0 };
  for (let epoch = 0; epoch < cfg.epochs; epoch++) {
    const order = shuffled(rollouts.length, seed * 1000 + epoch);
    const per = Math.ceil(rollouts.length / cfg.miniBatches);
    for (let mbStart = 0; mbStart < order.length; mbStart += per) {
      const mini = order.slice(mbStart, mbStart + per);
      const live = mini.filter((i) => (rollouts[i].weight ?? 1) > 0 && rollouts[i].response.length > 0);
      // Denominator of the mini-batch loss: its response tokens (token-mean) or its sequences.
      const denom =
        cfg.aggregation === "token-mean" ? live.reduce((a, i) => a + rollouts[i].response.length, 0) : live.length;
      if (denom === 0) continue;
      const zb = gpu.batch();
      model.recordZeroGrad(zb);
      zb.submit();
      let first = true;
      const micro = microBatches(rollouts, mini, cfg.microBatchTokens);
      const tokens = micro.reduce((a, m) => a + m.batch.tokens.length, 0);
      const seen = inputs.ensureSeen(tokens);
      let at = 0; // the micro-batch's first token in `seen`
      const read: { m: Micro; at: number; mask: Float32Array }[] = [];
      for (const m of micro) {
        const T = m.batch.tokens.length;
        inputs.ensure(T);
        const lpOld = new Float32Array(T);
        const lpRoll = tis ? new Float32Array(T) : null;
        const adv = new Float32Array(T);
        const mask = new Float32Array(T);
        responsePositions(rollouts, m).forEach((pos, k) => {
          const r = rollouts[m.idx[k]];
          const w = r.weight ?? 1;
          // seq-mean-token-mean: each sequence's tokens carry 1/|y| so that the
          // sum over them is the sequence mean; denom is the sequence count.
          const a = cfg.aggregation === "token-mean" ? r.advantage : r.advantage / r.response.length;
          pos.forEach((p, j) => {
            if (given) lpOld[p] = given[m.idx[k]][j];
            if (lpRoll) lpRoll[p] = r.rolloutLogp![j];
            adv[p] = a;
            mask[p] = w > 0 ? 1 : 0;
          });
        });
        if (given) gpu.write(inputs.logpOld, lpOld);
        if (lpRoll) gpu.write(inputs.logpRollout, lpRoll);
        gpu.write(inputs.adv, adv);
        gpu.write(inputs.mask, mask);
        const b = gpu.batch();
        model.recordForward(b, m.batch, cfg.temperature);
        model.loss.policy(b, model.buffers.logp, given ? inputs.logpOld : model.buffers.logp, inputs.adv, inputs.mask, model.buffers.dlogp, inputs.stats, T, {
          epsLow: cfg.epsLow,
          epsHigh: cfg.epsHigh,
          clipRatioC: cfg.clipRatioC,
          tisCap: cfg.tisCap,
          logpRollout: tis ? inputs.logpRollout : undefined,
          denom,
          accumulate: !first,
        });
        model.recordBackward(b, T, cfg.temperature);
        // Log-probs and entropies copied out, read once per mini-batch (no wait per micro-batch).
        b.copy(model.buffers.logp, 0, seen, 4 * at, 4 * T);
        b.copy(model.buffers.entropy, 0, seen, 4 * (tokens + at), 4 * T);
        b.submit();
        first = false;
        read.push({ m, at, mask });
        at += T;
      }
      const st = await gpu.readF32(inputs.stats, STATS_LEN);
      const both = await gpu.readF32(seen, 2 * tokens);
      for (const { m, at: o, mask } of read) {
        for (let p = 0; p < mask.length; p++) if (mask[p]) sum.entropy += both[tokens + o + p];
        if (single) responsePositions(rollouts, m).forEach((pos, k) => (start[m.idx[k]] = Float32Array.from(pos, (p) => both[o + p])));
      }
      const o = await optimizerStep(model, opt); // f16-mixed: unscale, skip on overflow, move the loss scale
      if (o.skipped) sum.skipped++;
      else sum.gradNorm += o.gradNorm;
      // The worst norm: a non-finite one, once seen, stays.
      if (Number.isFinite(sum.gradNormMax) && (!Number.isFinite(o.gradNorm) || o.gradNorm > sum.gradNormMax)) sum.gradNormMax = o.gradNorm;
      sum.updates++;
      sum.loss += st[STAT.loss];
      sum.tokens += st[STAT.tokens];
      sum.clipLow += st[STAT.clipLow];
      sum.clipHigh += st[STAT.clipHigh];
      sum.clipDual += st[STAT.clipDual];
      sum.tisWeight += st[STAT.tisWeightSum];
      sum.kl += st[STAT.klSum];
    }
  }
  // One update: the trainer's log-probs at the start came from the update's forward; rollouts it left out (empty,
  // zero weight) get one now (after the update: their tokens carried no loss, and a lone forward costs little).
  if (single) {
    const missing = rollouts.flatMap((_, i) => (start[i] ? [] : [i]));
    if (missing.length) {
      const more = await responseLogprobs(model, missing.map((i) => rollouts[i]), cfg);
      missing.forEach((i, k) => (start[i] = more.logp[k]));
    }
    mismatch = stepMismatch(rollouts, start, cfg.tisCap);
  }
  const t = Math.max(sum.tokens, 1);
  const u = Math.max(sum.updates, 1);
  return {
    loss: sum.loss / u,
    clipFracLow: sum.clipLow / t,
    clipFracHigh: sum.clipHigh / t,
    clipFracDual: sum.clipDual / t,
    tisWeightMean: sum.tokens > 0 ? sum.tisWeight / sum.tokens : 1,
    mismatch,
    approxKl: sum.kl / t,
    entropy: sum.entropy / t,
    gradNorm: sum.gradNorm / Math.max(sum.updates - sum.skipped, 1),
    gradNormMax: sum.gradNormMax,
    tokens: sum.tokens,
    updates: sum.updates,
    skipped: sum.skipped,
  };
}

/**
 * The sampler-vs-trainer mismatch of a step's rollouts, or null when they
 * carry no sampler log-probs (then truncated IS cannot run: an error).
 */
export function stepMismatch(rollouts: Rollout[], trainerLogp: readonly ArrayLike<number>[], tisCap: number | null): MismatchStats | null {
  if (!hasSamplerLogp(rollouts, tisCap)) return null;
  return rolloutMismatch(trainerLogp, rollouts.map((r) => r.rolloutLogp!), tisCap);
}

/** The behaviour policy's log-probs, per rollout (PolicyConfig.oldLogp "rollout"): each rollout's own, checked. */
function behaviourLogprobs(rollouts: Rollout[], cfg: PolicyConfig): ArrayLike<number>[] {
  if (cfg.tisCap !== null) throw new Error('policy.tisCap weighs pi_old / pi_rollout, which is 1 when policy.oldLogp is "rollout"; set tisCap to null or oldLogp to "recompute"');
  return rollouts.map((r, i) => {
    if (!r.rolloutLogp) throw new Error(`policy.oldLogp is "rollout" but rollout ${i} carries no sampler log-probs (Rollout.rolloutLogp)`);
    if (r.rolloutLogp.length !== r.response.length) throw new Error(`policy.oldLogp is "rollout" but rollout ${i} has ${r.rolloutLogp.length} sampler log-probs for ${r.response.length} response tokens`);
    return r.rolloutLogp;
  });
}

/** Whether every rollout carries the sampler's log-probs; an error when truncated IS needs them and some do not. */
function hasSamplerLogp(rollouts: Rollout[], tisCap: number | null): boolean {
  if (rollouts.every((r) => r.rolloutLogp)) return true;
  if (tisCap !== null) throw new Error("policy.tisCap is set but the rollouts carry no sampler log-probs (Rollout.rolloutLogp)");
  return false;
}

/** The statistics of an update that did not run (a non-finite reward). */
export function skippedUpdate(): UpdateStats {
  return { loss: NaN, clipFracLow: 0, clipFracHigh: 0, clipFracDual: 0, tisWeightMean: 1, mismatch: null, approxKl: 0, entropy: 0, gradNorm: NaN, tokens: 0, updates: 0, skipped: 1 };
}

/** The policy objective's and the mismatch's columns of metrics.jsonl (verl's names for the clip fractions). */
export function policyStepMetrics(s: UpdateStats): Pick<StepMetrics, PolicyMetricKey> {
  const mm = s.mismatch;
  return {
    pg_clipfrac: s.clipFracLow + s.clipFracHigh,
    pg_clipfrac_lower: s.clipFracDual,
    tis_weight_mean: s.tisWeightMean,
    mismatch_logp_abs_mean: mm ? mm.logpAbsMean : NaN,
    mismatch_logp_abs_max: mm ? mm.logpAbsMax : NaN,
    mismatch_ratio_max: mm ? mm.ratioMax : NaN,
    mismatch_ratio_min: mm ? mm.ratioMin : NaN,
  };
}
export type PolicyMetricKey = "pg_clipfrac" | "pg_clipfrac_lower" | "tis_weight_mean" | "mismatch_logp_abs_mean" | "mismatch_logp_abs_max" | "mismatch_ratio_max" | "mismatch_ratio_min";

/** One supervised step (mean NLL over the masked tokens of all sequences). */
export async function sftStep(
  model: TrainModel,
  opt: Optimizer,
  seqs: { tokens: number[]; lossFrom: number }[],
  microBatchTokens = 4096,
): Promise<{ loss: number; gradNorm: number; tokens: number; skipped: boolean }> {
  const gpu = model.gpu;
  const rollouts: Rollout[] = seqs.map((s) => ({ prompt: s.tokens.slice(0, s.lossFrom), response: s.tokens.slice(s.lossFrom), advantage: 0 }));
  const denom = rollouts.reduce((a, r) => a + r.response.length, 0);
  if (denom === 0) throw new Error("sftStep: no tokens carry loss");
  const stats = inputsFor(model).stats;
  const zb = gpu.batch();
  model.recordZeroGrad(zb);
  zb.submit();
  let first = true;
  for (const m of microBatches(rollouts, rollouts.map((_, i) => i), microBatchTokens)) {
    const T = m.batch.tokens.length;
    const b = gpu.batch();
    model.recordForward(b, m.batch);
    model.loss.sft(b, model.buffers.logp, model.buffers.mask, model.buffers.dlogp, stats, T, denom, !first);
    model.recordBackward(b, T);
    b.submit();
    first = false;
  }
  const st = await gpu.readF32(stats, STATS_LEN);
  const o = await optimizerStep(model, opt);
  return { loss: st[STAT.loss], gradNorm: o.gradNorm, tokens: denom, skipped: o.skipped };
}
