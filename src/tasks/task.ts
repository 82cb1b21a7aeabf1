/**
 * What the trainer needs of a task, and the one reward every task uses.
 *
 * A task is a leaf: problems with gold answers (training draws are a function
 * of the seed only; validation is held out), the prompt text, the reward of a
 * response (through src/grade/), and optionally warm-start examples as data.
 * The trainer drives generation, the warm start and the updates.
 */
import { lengthCappedReward, type RewardOptions } from "../grade/index.ts";
import type { LoadedTokenizer } from "../model/tokenizer.ts";

export interface TaskProblem {
  id: string;
  problem: string;
  answer: string;
}

/** One supervised example: prompt ids and the response ids that carry the loss. */
export interface Example {
  prompt: number[];
  response: number[];
}

/** A response as generated: token ids (stop token included) and whether it ended at a stop token. */
export interface Response {
  tokens: readonly number[];
  finished: boolean;
}

export interface Task {
  name: string;
  sample(n: number, seed: number): TaskProblem[];
  validation(n: number): TaskProblem[];
  /** The chat-rendered prompt, ending where the response starts. */
  prompt(p: TaskProblem): string;
  /** The length-capped reward of a response under the cap L(t). */
  reward(r: Response, gold: string, cap: number): { reward: number; correct: boolean };
  /** Warm-start batches (an endless stream, a function of the seed only); absent: the task has no warm-start data. */
  warmStartBatches?(batchSize: number, seed: number): Iterator<Example[]>;
}

/**
 * DeepScaleR's format rule with R1-Distill's template: the prompt opened
 * `<think>`, the response must close it, and the last `\boxed{}` after it is
 * the answer.
 */
export const THINK_REWARD: RewardOptions = { requireThink: true, promptOpensThink: true };

/**
 * SIRI's length-capped reward of generated ids: cut at the cap, decoded
 * without special tokens, 1 when the format rule holds and the answer is
 * equivalent to the gold one, else 0 (src/grade/reward.ts).
 */
export function capReward(tokenizer: LoadedTokenizer, r: Response, gold: string, cap: number) {
  return lengthCappedReward({
    tokens: r.tokens,
    cap,
    gold,
    finished: r.finished,
    decode: (ids) => tokenizer.decodeKnown(ids, { skipSpecialTokens: true }).text, // ids it lacks: left out, never a crash
    options: THINK_REWARD,
  });
}
