// SIRI's length-capped reward (from DeepScaleR): the response is cut at the
// current rollout cap L(t); 1 if an answer is extracted from what is left and
// it is correct, else 0. Options: DeepScaleR's format rule, ±1 rewards, and
// DAPO's soft overlong punishment added on top.

import { isEquivalent, type GradeOptions } from "./equivalence.ts";
import { extractAnswer } from "./extract.ts";
import { softOverlongPenalty } from "../rl/dapo.ts";

export interface GradeResult {
  extracted: string | null;
  correct: boolean;
}

/** Extract the last boxed answer and grade it against `gold`. */
export function gradeResponse(response: string, gold: string, opts: { afterThink?: boolean } & GradeOptions = {}): GradeResult {
  const extracted = extractAnswer(response, { afterThink: opts.afterThink });
  const grade: GradeOptions = { approxDigits: opts.approxDigits, workBudget: opts.workBudget };
  return { extracted, correct: extracted !== null && isEquivalent(gold, extracted, grade) };
}

export interface RewardOptions {
  /**
   * DeepScaleR's format rule: no `<think>` ... `</think>` in the response, no
   * reward (and the answer is taken only after `</think>`). Default false.
   */
  requireThink?: boolean;
  /**
   * The chat template already opened `<think>` in the prompt (R1-Distill's
   * does), so the format rule asks the response only for `</think>`.
   */
  promptOpensThink?: boolean;
  /** Take the answer only after `</think>`; defaults to `requireThink`. */
  afterThink?: boolean;
  /** ±1 rewards: a wrong, missing or badly formatted answer scores -1 instead of 0. */
  signed?: boolean;
  /**
   * DAPO's soft overlong punishment, added to the correctness reward:
   * 0 up to maxTokens - cacheTokens, then linear down to -1 at maxTokens
   * (and -1 beyond). maxTokens defaults to the cap. DAPO: 20480 / 4096.
   */
  overlong?: { cacheTokens: number; maxTokens?: number };
  /** Numeric closeness of decimals to exact values (see GradeOptions.approxDigits); default off. */
  approxDigits?: number;
}

interface RewardCommon {
  /** The rollout cap L(t) in tokens: the response counts only up to here. */
  cap: number;
  /** The reference answer. */
  gold: string;
  options?: RewardOptions;
}

/**
 * What the trainer has: either the generated token ids and the tokenizer's
 * decode (the ids are cut at the cap here), or text the generator already
 * stopped at the cap, with its token count and whether it was cut.
 */
export type RewardInput =
  | (RewardCommon & {
      tokens: ArrayLike<number>;
      decode: (ids: number[]) => string;
      /** The generator stopped at end-of-sequence (so exactly `cap` tokens is not a cut). */
      finished?: boolean;
    })
  | (RewardCommon & { text: string; length: number; truncated: boolean });

export interface RewardResult {
  reward: number;
  correct: boolean;
  extracted: string | null;
  /** The format rule held (always true without requireThink). */
  formatOk: boolean;
  /** The response reached the cap (cut here, or by the generator). */
  truncated: boolean;
  /** Response tokens counted, after the cut. */
  length: number;
  /** The overlong punishment that was added (0 or negative). */
  overlong: number;
}

/** DAPO's soft overlong punishment of a response of `length` tokens (one rule: src/rl/dapo.ts). */
export function overlongPenalty(length: number, maxTokens: number, cacheTokens: number): number {
  return softOverlongPenalty(length, maxTokens, cacheTokens);
}

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new Error(`lengthCappedReward: ${name} must be an integer >= ${min}, got ${v}`);
}

/** The reward of one response under the current cap. */
export function lengthCappedReward(input: RewardInput): RewardResult {
  const opts = input.options ?? {};
  checkCount("cap", input.cap, 1);
  let text: string;
  let length: number;
  let truncated: boolean;
  if ("tokens" in input) {
    const n = input.tokens.length;
    truncated = n > input.cap || (n === input.cap && !input.finished);
    length = Math.min(n, input.cap);
    const ids = Array.from({ length }, (_, i) => input.tokens[i]);
    text = input.decode(ids);
  } else {
    checkCount("length", input.length, 0);
    if (input.length > input.cap) {
      throw new Error(
        `lengthCappedReward: text of ${input.length} tokens is longer than the cap ${input.cap}; ` +
          `pass token ids and decode to have it cut here`,
      );
    }
    text = input.text;
    length = input.length;
    truncated = input.truncated || input.length >= input.cap;
  }

  const requireThink = opts.requireThink ?? false;
  const formatOk = !requireThink || ((opts.promptOpensThink || text.includes("<think>")) && text.includes("</think>"));
  const afterThink = opts.afterThink ?? requireThink;
  const g = formatOk ? gradeResponse(text, input.gold, { afterThink, approxDigits: opts.approxDigits }) : { extracted: null, correct: false };

  let reward = g.correct ? 1 : opts.signed ? -1 : 0;
  let overlong = 0;
  if (opts.overlong) {
    const maxTokens = opts.overlong.maxTokens ?? input.cap;
    checkCount("options.overlong.cacheTokens", opts.overlong.cacheTokens, 1);
    checkCount("options.overlong.maxTokens", maxTokens, opts.overlong.cacheTokens);
    overlong = overlongPenalty(length, maxTokens, opts.overlong.cacheTokens);
    reward += overlong;
  }
  return { reward, correct: g.correct, extracted: g.extracted, formatOk, truncated, length, overlong };
}
