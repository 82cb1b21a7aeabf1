/**
 * Rollouts: G responses per prompt from the current policy, through one
 * inference engine made once per run and sized for the schedule's largest
 * cap and the validation budget (src/engine/size.ts). Each round starts from
 * an empty cache; a completion depends only on its request and the sampling
 * seed, so a resumed run draws exactly what an uninterrupted one would.
 */
import { Engine, occupancy, type GenerateStats, type SamplingOptions } from "../engine/generate.ts";
import { sizeEngine } from "../engine/size.ts";
import type { Gpu } from "../gpu/index.ts";
import { vocabLimit, type LoadedTokenizer } from "../model/tokenizer.ts";
import { addSoftOverlongPenalty } from "../rl/dapo.ts";
import type { Task, TaskProblem } from "../tasks/task.ts";
import type { TrainConfig } from "./config.ts";
import type { TrainModel } from "./model.ts";
import { PROMPT_TOKENS, rolloutBatch, rolloutBudget } from "./plan.ts";
import { rolloutModel, type RolloutModel } from "./rollout_model.ts";

/** One prompt's G responses, scored. */
export interface Group {
  problem: TaskProblem;
  prompt: number[];
  responses: number[][];
  /** The sampler's log-prob of each response token (the behaviour policy). */
  logprobs: number[][];
  /** Ended at a stop token (not at the cap). */
  finished: boolean[];
  rewards: number[];
  correct: boolean[];
}

/** Generation totals of a step (all rounds). */
export interface RolloutStats {
  tokens: number;
  seconds: number;
  decodeSteps: number;
  decodeRows: number;
  readbacks: number;
  maxBatch: number;
  /** Completions, and how many weight versions older than the policy being updated each came from (sum, max): 0 on-policy. */
  completions: number;
  versionLagSum: number;
  versionLagMax: number;
}

export function emptyRolloutStats(maxBatch: number): RolloutStats {
  return { tokens: 0, seconds: 0, decodeSteps: 0, decodeRows: 0, readbacks: 0, maxBatch, completions: 0, versionLagSum: 0, versionLagMax: 0 };
}

/** Where a step's rollouts come from: this process's engine (Rollouts) or workers over a broker (src/dist/learner.ts). */
export interface RolloutSource {
  /** A round's G rollouts per problem; `key` names the round (step.round), so a round prefetched under it is collected, not asked for again. */
  generate(problems: TaskProblem[], prompt: (p: TaskProblem) => string, G: number, cap: number, sampling: SamplingOptions, stats: RolloutStats, key?: string): Promise<Omit<Group, "rewards" | "correct">[]>;
  /**
   * Bounded staleness: ask for round `key` now, `ahead` updates before the
   * step that trains on it (generated meanwhile by whatever weights the
   * workers hold); a key already asked for is left alone. Sources that
   * cannot overlap generation with an update have none.
   */
  prefetch?(key: string, ahead: number, problems: TaskProblem[], prompt: (p: TaskProblem) => string, G: number, cap: number, sampling: SamplingOptions): Promise<void>;
  /** After an update: the rollouts that follow come from the new weights. */
  sync(): Promise<void>;
  /** Rounds prefetched for steps never reached are dropped here. */
  destroy(): void | Promise<void>;
}

export class Rollouts implements RolloutSource {
  private constructor(
    readonly roll: RolloutModel,
    readonly engine: Engine,
    readonly tokenizer: LoadedTokenizer,
    readonly stop: number[],
  ) {}

  /**
   * The rollout model (sharing or copying the trainer's weights) and its
   * engine. Slots hold the longest of PROMPT_TOKENS and the prompts of the
   * validation set and the first step, plus the largest budget.
   */
  static async create(gpu: Gpu, model: TrainModel, cfg: TrainConfig, task: Task, tokenizer: LoadedTokenizer, firstPrompts: TaskProblem[]): Promise<Rollouts> {
    const stop = [...new Set(tokenizer.eosTokenIds)];
    if (!stop.length) throw new Error("the tokenizer has no EOS token; rollouts could never finish before the cap");
    const dtype = cfg.rollout.dtype === "auto" ? (gpu.features.f16 ? "f16" : "f32") : cfg.rollout.dtype;
    const seen = [...task.validation(cfg.validation.problems), ...firstPrompts].map((p) => tokenizer.encode(task.prompt(p)).length);
    const promptTokens = Math.min(Math.max(PROMPT_TOKENS, ...seen), model.config.maxPositions - rolloutBudget(cfg));
    const opts = sizeEngine(model.config, dtype, gpu.limits.maxStorageBufferBindingSize, {
      what: "rollouts",
      maxBatch: rolloutBatch(cfg),
      promptTokens,
      newTokens: rolloutBudget(cfg),
      vocabLimit: vocabLimit(model.config.vocabSize, tokenizer),
    });
    const roll = await rolloutModel(gpu, model, dtype);
    try {
      return new Rollouts(roll, await Engine.create(roll.model, opts), tokenizer, stop);
    } catch (e) {
      roll.destroy();
      throw e;
    }
  }

  /** G responses for each problem, capped at `cap` new tokens; `stats` adds this round's counts. */
  async generate(problems: TaskProblem[], prompt: (p: TaskProblem) => string, G: number, cap: number, sampling: SamplingOptions, stats: RolloutStats): Promise<Omit<Group, "rewards" | "correct">[]> {
    const prompts = problems.map((p) => this.tokenizer.encode(prompt(p)));
    const reqs = rolloutRequests(prompts, G, cap, this.stop);
    const done = new Map<number, { tokens: number[]; logprobs: number[]; finished: boolean }>();
    const t0 = performance.now();
    for await (const c of this.engine.generate(reqs, sampling)) done.set(c.id as number, { tokens: c.tokens, logprobs: c.logprobs, finished: c.stopReason === "stop" });
    stats.seconds += (performance.now() - t0) / 1000;
    stats.completions += reqs.length; // on-policy: version lag 0
    addStats(stats, this.engine.stats);
    return groupCompletions(problems, prompts, G, done);
  }

  /** The rollout model follows the trainer's weights (after an update). */
  sync(): Promise<void> {
    return this.roll.sync();
  }

  destroy(): void {
    this.engine.destroy();
    this.roll.destroy();
  }
}

/** Request i*G+g is prompt i's g-th rollout; its index is its random stream key, wherever it runs. */
export function rolloutRequests(prompts: number[][], G: number, cap: number, stop: number[]): { id: number; key: number; prompt: number[]; maxTokens: number; stop: number[] }[] {
  return prompts.flatMap((prompt, i) => Array.from({ length: G }, (_, g) => ({ id: i * G + g, key: i * G + g, prompt, maxTokens: cap, stop })));
}

/** The completions by request index, as one group per problem. */
export function groupCompletions(problems: TaskProblem[], prompts: number[][], G: number, done: Map<number, { tokens: number[]; logprobs: number[]; finished: boolean }>): Omit<Group, "rewards" | "correct">[] {
  return problems.map((problem, i) => {
    const rs = Array.from({ length: G }, (_, g) => done.get(i * G + g)!);
    return { problem, prompt: prompts[i], responses: rs.map((r) => r.tokens), logprobs: rs.map((r) => r.logprobs), finished: rs.map((r) => r.finished) };
  });
}

/**
 * Each response's length-capped reward from the task (the engine stopped it
 * at the cap; a cut one has no answer and scores 0), plus DAPO's soft
 * overlong punishment when switched on; `hook` may change a group's rewards
 * (tests).
 */
export function scoreGroups(
  groups: Omit<Group, "rewards" | "correct">[],
  task: Task,
  cap: number,
  dapo: TrainConfig["dapo"],
  hook?: (group: number, rewards: number[], lengths: number[]) => number[],
): Group[] {
  return groups.map((g, i) => {
    const scored = g.responses.map((tokens, k) => task.reward({ tokens, finished: g.finished[k] }, g.problem.answer, cap));
    let rewards = scored.map((s) => s.reward);
    const lengths = g.responses.map((x) => x.length);
    if (dapo.softOverlong) rewards = Array.from(addSoftOverlongPenalty(rewards, lengths, cap, Math.max(1, Math.round(dapo.overlongCache * cap))));
    if (hook) rewards = hook(i, rewards.slice(), lengths);
    return { ...g, rewards, correct: scored.map((s) => s.correct) };
  });
}

export function addStats(into: RolloutStats, s: GenerateStats): void {
  into.tokens += s.tokens;
  into.decodeSteps += s.decodeSteps;
  into.decodeRows += s.decodeRows;
  into.readbacks += s.readbacks;
}

/** Mean running sequences per decode step over the engine's maxBatch. */
export function rolloutOccupancy(s: RolloutStats): number {
  return occupancy({ ...s });
}
