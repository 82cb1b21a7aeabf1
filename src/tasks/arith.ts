/**
 * The synthetic math task of the default run: small-number sums and
 * differences with checkable integer answers, and reasoning traces whose
 * redundancy can be switched on and off, so a tiny model can show SIRI's
 * effect in miniature.
 *
 * A trace is the assistant's text after the chat template's `<think>\n`:
 *
 *   We are given 3+4.                      restate   (redundant)
 *   3+4=4+3=5+2=6+1=7+0=7.                 count     (redundant: one by one)
 *   3+4=7.                                 result    (always)
 *   Let me check:\n7-4=3, so it is right.  check     (redundant)
 *   The answer is 7.                       restate   (redundant)
 *   </think>\n\boxed{7}                    answer    (always)
 *
 * With everything on a trace costs ~40-110 tokens of the tiny tokenizer; the
 * compressed form ("3+4=7.\n</think>\n\boxed{7}") ~12. The counting chain
 * moves one unit at a time from the right operand to the left, so every step
 * is computable from the previous one (the verbose trace is an algorithm,
 * the compressed one needs the fact by heart). Numbers are written without
 * spaces because Qwen2's pre-tokenizer gives every digit its own token and a
 * space before a digit costs one more.
 *
 * Measured (tiny preset: hidden 64, 2 layers, vocab 521; lavapipe on 2
 * shared cores): add/sub up to 9, full traces 51-101 tokens (mean 66),
 * compressed 14-16, prompt 18 (32 with DeepScaleR's instruction). Warm start
 * at lr 3e-3, 16 traces a step, ~0.85 s a step: held-out greedy accuracy
 * 0.03 at 100 steps, 0.16-0.19 at 200, 0.34-0.44 at 300, 0.69-0.81 at 400.
 * After 400 steps, held-out accuracy by cap: 0.73 at 100+ tokens, 0.63 at
 * 80, 0.43 at 64, 0.07 at 48, 0 at 32 (responses still run ~60 tokens).
 * (Those figures are with the earlier mix, counting 0.8.) With the current
 * mix (counting 0.5), lr 3e-3 after 10 warm-up steps, 16 traces a step,
 * ~0.65 s a step on an otherwise idle machine: held-out greedy accuracy 0.17
 * at 200 steps, 0.27-0.30 at 250-350; sampled at temperature 1.0 on training
 * problems, responses run 14-99 tokens (median ~30-48) with accuracy ~0.3-0.4.
 *
 * The wide variant (`maxOperand` 99, `maxRight` 9; the Pareto experiment's
 * task, arith.md) keeps the same traces with a two-digit left operand: 1955
 * problems, 382 held out; full traces 51-119 tokens (mean 82). Its warm start
 * needs ~750 steps (greedy accuracy on training problems 0.8% at 250 steps,
 * 15% at 500, 38% at 750; SFT loss 0.089).
 */
import { DEEPSCALER_INSTRUCTION, renderPrompt } from "../data/prompt.ts";
import type { LoadedTokenizer } from "../model/tokenizer.ts";
import { hashString, seededUniform } from "../util/random.ts";
import { capReward, type Example, type Task } from "./task.ts";

export type ArithKind = "add" | "sub" | "add3";
export const ARITH_KINDS: readonly ArithKind[] = ["add", "sub", "add3"];

/** Short instruction (7 tiny-tokenizer tokens; DeepScaleR's costs 21). */
export const SHORT_INSTRUCTION = "Let's think step by step.";

export interface ArithOptions {
  /** Problem kinds drawn uniformly. Default add and sub. */
  kinds?: readonly ArithKind[];
  /** Operands are 0..maxOperand (sub: a >= b so answers stay >= 0). Default 9. */
  maxOperand?: number;
  /**
   * The operands after the first are 0..maxRight (default maxOperand). The
   * counting chain takes one step per unit of the right operand, so a small
   * maxRight keeps every trace as long as with single digits while a large
   * maxOperand multiplies the distinct problems (99 and 9: 1955 add/sub
   * problems, 391 held out, against 155 and 31 at 9 and 9).
   */
  maxRight?: number;
  /**
   * "train" / "test": a fixed partition of the operand tuples (by hash,
   * `testFraction` of them held out), so held-out accuracy is on unseen
   * problems; "all": no partition. Default "all".
   */
  split?: "train" | "test" | "all";
  testFraction?: number; // default 0.2
  /** The user turn's instruction after the problem: "short" (default), "deepscaler", or any text. */
  instruction?: "short" | "deepscaler" | string;
}

export interface ArithProblem {
  id: string; // e.g. "add:3:4"
  kind: ArithKind;
  operands: number[];
  problem: string; // the user-facing text, e.g. "Compute 3+4."
  answer: string; // the integer answer as text
}

/** Which redundant parts a trace carries. */
export interface TraceStyle {
  restate: boolean;
  count: boolean;
  check: boolean;
}
export const FULL_STYLE: TraceStyle = { restate: true, count: true, check: true };
export const COMPRESSED_STYLE: TraceStyle = { restate: false, count: false, check: false };

/** Probability of each redundant part in a warm-start trace. */
export interface StyleMix {
  restate: number;
  count: number;
  check: number;
}
/**
 * Mostly verbose, with every shorter combination present: the warm-started
 * policy starts long, and RL under a falling cap has shorter modes to select.
 * Counting is on half the time (it was 0.8): at 0.8 the shorter styles were
 * too rare to be sampled at temperature 1.0, so a compression cap below the
 * counting traces truncated nearly every rollout and left no reward signal.
 */
export const DEFAULT_MIX: StyleMix = { restate: 0.7, count: 0.5, check: 0.7 };

/** A string's hash in [0, 1): the fixed train/test partition. */
function hashUnit(key: string): number {
  return hashString(key) / 4294967296;
}

function checkOptions(opts: ArithOptions): Required<Omit<ArithOptions, "instruction">> {
  const kinds = opts.kinds ?? ["add", "sub"];
  const maxOperand = opts.maxOperand ?? 9;
  const maxRight = opts.maxRight ?? maxOperand;
  const split = opts.split ?? "all";
  const testFraction = opts.testFraction ?? 0.2;
  if (!kinds.length) throw new Error("arith task: kinds is empty; pick from add, sub, add3");
  for (const k of kinds) if (!ARITH_KINDS.includes(k)) throw new Error(`arith task: unknown kind "${k}" (known: ${ARITH_KINDS.join(", ")})`);
  if (!Number.isInteger(maxOperand) || maxOperand < 1 || maxOperand > 99) throw new Error(`arith task: maxOperand must be an integer in 1..99, got ${maxOperand}`);
  if (!Number.isInteger(maxRight) || maxRight < 1 || maxRight > maxOperand) throw new Error(`arith task: maxRight must be an integer in 1..maxOperand (${maxOperand}), got ${maxRight}`);
  if (!["train", "test", "all"].includes(split)) throw new Error(`arith task: split must be train, test or all, got "${split}"`);
  if (!(testFraction > 0 && testFraction < 1)) throw new Error(`arith task: testFraction must be in (0, 1), got ${testFraction}`);
  return { kinds, maxOperand, maxRight, split, testFraction };
}

/** The answer of a problem, computed from its operands. */
export function solve(kind: ArithKind, operands: readonly number[]): number {
  if (kind === "add") return operands[0] + operands[1];
  if (kind === "sub") return operands[0] - operands[1];
  return operands[0] + operands[1] + operands[2];
}

function expression(kind: ArithKind, x: readonly number[]): string {
  return kind === "sub" ? `${x[0]}-${x[1]}` : x.join("+");
}

function makeProblem(kind: ArithKind, operands: number[]): ArithProblem {
  return { id: `${kind}:${operands.join(":")}`, kind, operands, problem: `Compute ${expression(kind, operands)}.`, answer: String(solve(kind, operands)) };
}

/** Whether a problem's operand tuple belongs to the held-out part. */
export function isHeldOut(p: Pick<ArithProblem, "id">, testFraction = 0.2): boolean {
  return hashUnit(p.id) < testFraction;
}

/**
 * `n` problems drawn with replacement from the split's problem set,
 * deterministic per (seed, options).
 */
export function makeProblems(n: number, seed: number, opts: ArithOptions = {}): ArithProblem[] {
  if (!Number.isInteger(n) || n < 0) throw new Error(`makeProblems: n must be a non-negative integer, got ${n}`);
  if (!Number.isInteger(seed)) throw new Error(`makeProblems: seed must be an integer, got ${seed}`);
  const o = checkOptions(opts);
  const rand = seededUniform(seed);
  const int = (hi: number) => Math.floor(rand() * (hi + 1)); // 0..hi
  const out: ArithProblem[] = [];
  let tries = 0;
  while (out.length < n) {
    if (++tries > 1000 * (n + 10)) throw new Error(`makeProblems: split "${o.split}" of ${o.kinds.join("/")} up to ${o.maxOperand} is (nearly) empty`);
    const kind = o.kinds[Math.floor(rand() * o.kinds.length)];
    let operands: number[];
    if (kind === "add") operands = [int(o.maxOperand), int(o.maxRight)];
    else if (kind === "sub") {
      const a = int(o.maxOperand);
      operands = [a, int(Math.min(a, o.maxRight))];
    } else operands = [int(o.maxOperand), int(o.maxRight), int(o.maxRight)];
    const p = makeProblem(kind, operands);
    if (o.split !== "all" && isHeldOut(p, o.testFraction) !== (o.split === "test")) continue;
    out.push(p);
  }
  return out;
}

/** Every problem of the split once, in a fixed order (e.g. a complete held-out set). */
export function enumerateProblems(opts: ArithOptions = {}): ArithProblem[] {
  const o = checkOptions(opts);
  const out: ArithProblem[] = [];
  const r = Array.from({ length: o.maxOperand + 1 }, (_, i) => i);
  const q = r.slice(0, o.maxRight + 1); // the operands after the first
  for (const kind of o.kinds) {
    const tuples = kind === "add" ? r.flatMap((a) => q.map((b) => [a, b])) : kind === "sub" ? r.flatMap((a) => q.filter((b) => b <= a).map((b) => [a, b])) : r.flatMap((a) => q.flatMap((b) => q.map((c) => [a, b, c])));
    for (const t of tuples) {
      const p = makeProblem(kind, t);
      if (o.split === "all" || isHeldOut(p, o.testFraction) === (o.split === "test")) out.push(p);
    }
  }
  return out;
}

/** "a+b=(a+1)+(b-1)=...=(a+b)+0=a+b" (sub: both sides step down). */
function chain(kind: "add" | "sub", a: number, b: number): string {
  let s = kind === "add" ? `${a}+${b}` : `${a}-${b}`;
  for (let i = 1; i <= b; i++) s += kind === "add" ? `=${a + i}+${b - i}` : `=${a - i}-${b - i}`;
  return `${s}=${solve(kind, [a, b])}.\n`;
}

/** The reasoning trace of a problem (the response after `<think>\n`), without the end-of-sequence token. */
export function verboseTrace(p: Pick<ArithProblem, "kind" | "operands">, style: TraceStyle = FULL_STYLE): string {
  const { kind, operands: x } = p;
  const ans = solve(kind, x);
  let s = "";
  if (style.restate) s += `We are given ${expression(kind, x)}.\n`;
  if (kind === "add3") {
    const ab = x[0] + x[1];
    if (style.count) s += chain("add", x[0], x[1]) + chain("add", ab, x[2]);
    s += `${x[0]}+${x[1]}+${x[2]}=${ab}+${x[2]}=${ans}.\n`;
    if (style.check) s += `Let me check:\n${ans}-${x[2]}-${x[1]}=${x[0]}, so it is right.\n`;
  } else {
    if (style.count) s += chain(kind, x[0], x[1]);
    s += `${expression(kind, x)}=${ans}.\n`;
    if (style.check) s += `Let me check:\n${kind === "add" ? `${ans}-${x[1]}` : `${ans}+${x[1]}`}=${x[0]}, so it is right.\n`;
  }
  if (style.restate) s += `The answer is ${ans}.\n`;
  return `${s}</think>\n\\boxed{${ans}}`;
}

/** A random style: each redundant part present with its probability. */
export function sampleStyle(rand: () => number, mix: StyleMix = DEFAULT_MIX): TraceStyle {
  return { restate: rand() < mix.restate, count: rand() < mix.count, check: rand() < mix.check };
}

function instructionText(i: ArithOptions["instruction"]): string {
  if (i === undefined || i === "short") return SHORT_INSTRUCTION;
  if (i === "deepscaler") return DEEPSCALER_INSTRUCTION;
  return i;
}

/** The chat-rendered user turn (problem + instruction) ending with the assistant's `<think>\n`. */
export function promptText(p: Pick<ArithProblem, "problem">, tokenizer: LoadedTokenizer, opts: Pick<ArithOptions, "instruction"> = {}): string {
  if (!tokenizer.chatTemplate) throw new Error("arith task: the tokenizer has no chat_template (tokenizer_config.json)");
  return renderPrompt(p.problem, tokenizer.chatTemplate, { bos_token: tokenizer.bosToken, eos_token: tokenizer.eosToken }, { instruction: instructionText(opts.instruction) });
}

/** The end-of-sequence id a trace ends with (the tokenizer's first eos id). */
function eosId(tokenizer: LoadedTokenizer): number {
  const id = tokenizer.eosTokenIds[0];
  if (id === undefined) throw new Error("arith task: the tokenizer has no eos token (tokenizer_config.json eos_token)");
  return id;
}

/** Token ids of prompt and response (trace + end of sequence), for supervised steps. */
export function encodeExample(p: ArithProblem, style: TraceStyle, tokenizer: LoadedTokenizer, opts: Pick<ArithOptions, "instruction"> = {}): { prompt: number[]; response: number[] } {
  return { prompt: tokenizer.encode(promptText(p, tokenizer, opts)), response: [...tokenizer.encode(verboseTrace(p, style)), eosId(tokenizer)] };
}

/**
 * Endless warm-start batches of `batchSize` traces (train split unless
 * `task.split` says otherwise), each trace's style drawn from `mix`; a
 * function of the seed only.
 */
export function* warmStartBatches(tokenizer: LoadedTokenizer, batchSize: number, seed: number, task: ArithOptions = {}, mix: StyleMix = DEFAULT_MIX): Generator<Example[]> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`arith warm start: batchSize must be a positive integer, got ${batchSize}`);
  const opts: ArithOptions = { split: "train", ...task };
  const rand = seededUniform(seed ^ 0x5eed);
  for (let step = 0; ; step++) yield makeProblems(batchSize, seed * 100003 + step, opts).map((p) => encodeExample(p, sampleStyle(rand, mix), tokenizer, opts));
}

/** The arithmetic task for the trainer: train/test split by operand tuple, SIRI's reward, warm-start traces. */
export function arithTask(tokenizer: LoadedTokenizer, o: { kinds: ArithKind[]; maxOperand: number; maxRight?: number | null }): Task {
  const opts = { kinds: o.kinds, maxOperand: o.maxOperand, maxRight: o.maxRight ?? undefined };
  return {
    name: "arith",
    sample: (n, seed) => makeProblems(n, seed, { ...opts, split: "train" }),
    // The held-out split itself, each problem once (no draws with replacement), up to n.
    validation: (n) => enumerateProblems({ ...opts, split: "test" }).slice(0, n),
    prompt: (p) => promptText(p, tokenizer),
    reward: (r, gold, cap) => capReward(tokenizer, r, gold, cap),
    warmStartBatches: (batchSize, seed) => warmStartBatches(tokenizer, batchSize, seed, opts),
  };
}
