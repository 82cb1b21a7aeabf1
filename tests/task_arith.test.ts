// The synthetic arithmetic task: problems and answers, traces that grade
// correct at every verbosity, zero reward for a cut trace, and a short
// supervised warm start that lowers the loss of the tiny model.
import { describe, expect, test } from "bun:test";
import { buildTinyTokenizer, tinyWeights, TINY_PRESETS } from "../src/model/tiny.ts";
import { tokenizerFromJson } from "../src/model/tokenizer.ts";
import type { Qwen2Config } from "../src/model/config.ts";
import { gradeResponse } from "../src/grade/index.ts";
import { packSequences, TrainModel } from "../src/train/model.ts";
import { Optimizer } from "../src/train/optim.ts";
import {
  COMPRESSED_STYLE,
  FULL_STYLE,
  arithTask,
  capReward,
  encodeExample,
  enumerateProblems,
  isHeldOut,
  makeProblems,
  promptText,
  verboseTrace,
  warmStartBatches,
  type ArithProblem,
  type TraceStyle,
} from "../src/tasks/index.ts";
import { evaluate } from "../src/train/validation.ts";
import { warmStart } from "../src/train/warm_start.ts";
import { gpuOrSkip, hasGpu } from "./helpers.ts";

const GPU = await hasGpu();
const TINY = buildTinyTokenizer();
const tok = tokenizerFromJson(TINY.tokenizerJson, TINY.tokenizerConfig, "tiny", [TINY.eosId]);
/** The task's reward of a response text (finished, no cap in the way). */
const textReward = (text: string, gold: string) => capReward(tok, { tokens: tok.encode(text), finished: true }, gold, 1 << 20);

/** Every style: each redundant part on or off. */
const STYLES: TraceStyle[] = [0, 1, 2, 3, 4, 5, 6, 7].map((m) => ({ restate: !!(m & 1), count: !!(m & 2), check: !!(m & 4) }));

/** The answer read back from the problem text alone (independent of the generator's operands). */
function answerFromText(problem: string): number {
  const m = /^Compute (\d+)([+-])(\d+)(?:\+(\d+))?\.$/.exec(problem);
  if (!m) throw new Error(`unexpected problem text: ${problem}`);
  const a = Number(m[1]);
  const b = Number(m[3]);
  if (m[2] === "-") return a - b;
  return a + b + (m[4] === undefined ? 0 : Number(m[4]));
}

/** The whole problem space up to 9, for exhaustive checks. */
const allProblems = () => enumerateProblems({ kinds: ["add", "sub", "add3"] });

describe("arith problems", () => {
  test("answers match the problem text; operands in range; deterministic per seed", () => {
    const a = makeProblems(300, 11, { kinds: ["add", "sub", "add3"] });
    const b = makeProblems(300, 11, { kinds: ["add", "sub", "add3"] });
    const c = makeProblems(300, 12, { kinds: ["add", "sub", "add3"] });
    expect(b).toEqual(a);
    expect(c.map((p) => p.id)).not.toEqual(a.map((p) => p.id));
    const kinds = new Set<string>();
    for (const p of a) {
      kinds.add(p.kind);
      expect(p.answer).toBe(String(answerFromText(p.problem)));
      expect(Number(p.answer)).toBeGreaterThanOrEqual(0);
      for (const x of p.operands) expect(x >= 0 && x <= 9 && Number.isInteger(x)).toBe(true);
      expect(p.id).toBe(`${p.kind}:${p.operands.join(":")}`);
    }
    expect([...kinds].sort()).toEqual(["add", "add3", "sub"]);
    // Default kinds are add and sub only.
    expect(new Set(makeProblems(200, 1).map((p) => p.kind))).toEqual(new Set(["add", "sub"]));
  });

  test("train and test splits are disjoint and cover the problem space", () => {
    const space = allProblems().filter((p) => p.kind !== "add3");
    expect(space.length).toBe(100 + 55); // every (a, b) sum and every a >= b difference
    const train = new Set(makeProblems(3000, 5, { split: "train" }).map((p) => p.id));
    const test_ = new Set(makeProblems(3000, 6, { split: "test" }).map((p) => p.id));
    for (const id of test_) expect(train.has(id)).toBe(false);
    expect(train.size + test_.size).toBe(space.length);
    for (const p of space) expect(test_.has(p.id)).toBe(isHeldOut(p));
    expect(enumerateProblems({ split: "test" }).map((p) => p.id).sort()).toEqual([...test_].sort());
    // Random draws reach every problem of the space (add3 included).
    expect(new Set(makeProblems(20000, 3, { kinds: ["add", "sub", "add3"], maxOperand: 4 }).map((p) => p.id)).size).toBe(25 + 15 + 125);
    expect(test_.size / space.length).toBeGreaterThan(0.1);
    expect(test_.size / space.length).toBeLessThan(0.3);
  });

  test("the wide variant (left operand 0..99, right 0..9): every problem once, the held-out split in the hundreds, traces as long as with single digits", () => {
    const wide = { maxOperand: 99, maxRight: 9 };
    const space = enumerateProblems(wide);
    // add: 100 x 10; sub: a - b with b <= min(a, 9): 1 + 2 + ... + 10 for a <= 9, then 10 for each a of 10..99.
    expect(space.length).toBe(1000 + 55 + 90 * 10);
    expect(new Set(space.map((p) => p.id)).size).toBe(space.length);
    for (const p of space) {
      expect(p.operands[0] >= 0 && p.operands[0] <= 99 && p.operands[1] >= 0 && p.operands[1] <= 9).toBe(true);
      expect(p.answer).toBe(String(answerFromText(p.problem)));
      expect(Number(p.answer)).toBeGreaterThanOrEqual(0);
    }
    const test_ = enumerateProblems({ ...wide, split: "test" });
    const train = enumerateProblems({ ...wide, split: "train" });
    expect(test_.length).toBe(382);
    expect(test_.length + train.length).toBe(space.length);
    for (const p of test_) expect(isHeldOut(p)).toBe(true);
    // The single-digit problems keep their side of the split (the partition is by the problem's id).
    const narrowTest = enumerateProblems({ split: "test" }).map((p) => p.id);
    expect(test_.map((p) => p.id).filter((id) => narrowTest.includes(id)).sort()).toEqual([...narrowTest].sort());
    // Random draws stay in range and reach every training problem.
    const drawn = makeProblems(40000, 9, { ...wide, split: "train" });
    for (const p of drawn) expect(p.operands[1] <= Math.min(9, p.operands[0]) || p.kind === "add").toBe(true);
    expect(new Set(drawn.map((p) => p.id)).size).toBe(train.length);
    // The counting chain takes one step per unit of the right operand: at most 9, as with single digits.
    for (const p of test_.slice(0, 50)) expect((verboseTrace(p, FULL_STYLE).split("\n")[1].match(/=/g) ?? []).length).toBe(p.operands[1] + 1);
  });

  test("bad options are refused by name", () => {
    expect(() => makeProblems(3, 1, { kinds: ["mul" as "add"] })).toThrow(/unknown kind "mul"/);
    expect(() => makeProblems(3, 1, { maxOperand: 0 })).toThrow(/maxOperand/);
    expect(() => makeProblems(3, 1, { maxOperand: 9, maxRight: 10 })).toThrow(/maxRight/);
    expect(() => enumerateProblems({ maxRight: 0 })).toThrow(/maxRight/);
    expect(() => makeProblems(-1, 1)).toThrow(/n must be/);
    expect(() => makeProblems(3, 1, { testFraction: 1 })).toThrow(/testFraction/);
  });
});

describe("arith traces and rewards", () => {
  test("every trace of every style grades correct; every counting step is a true equation", () => {
    const space = allProblems();
    expect(space.length).toBe(100 + 55 + 1000);
    for (const p of space) {
      for (const style of STYLES) {
        const text = verboseTrace(p, style);
        const r = textReward(text, p.answer);
        if (!r.correct || r.reward !== 1) throw new Error(`${p.id} ${JSON.stringify(style)}: trace does not grade correct:\n${text}`);
        expect(gradeResponse(text, p.answer, { afterThink: true }).extracted).toBe(p.answer);
        // A wrong gold answer must not pass.
        expect(textReward(text, String(Number(p.answer) + 1)).reward).toBe(0);
        // Every "x+y" / "x-y" term of every line before </think> evaluates to that line's last value.
        for (const line of text.split("</think>")[0].split("\n")) {
          if (!/^[\d+\-=]+\.$/.test(line)) continue;
          const terms = line.slice(0, -1).split("=");
          const value = (t: string) => answerFromText(`Compute ${t}.`);
          const last = Number(terms[terms.length - 1]);
          for (const t of terms.slice(0, -1)) if (value(t) !== last) throw new Error(`${p.id}: false step ${t} != ${last} in "${line}"`);
        }
      }
    }
  });

  test("token lengths: verbose traces are long, compressed ones short", () => {
    const ps = makeProblems(200, 2);
    const len = (p: ArithProblem, s: TraceStyle) => encodeExample(p, s, tok).response.length;
    const full = ps.map((p) => len(p, FULL_STYLE));
    const short = ps.map((p) => len(p, COMPRESSED_STYLE));
    expect(Math.min(...full)).toBeGreaterThanOrEqual(40);
    expect(Math.max(...full)).toBeLessThanOrEqual(120);
    expect(Math.max(...short)).toBeLessThanOrEqual(20);
    ps.forEach((p, i) => expect(full[i]).toBeGreaterThan(3 * short[i]));
    // The prompt is the chat-rendered user turn opening the assistant's <think>.
    const text = promptText(ps[0], tok);
    expect(text.startsWith(`${tok.bosToken}<｜User｜>${ps[0].problem} Let's think step by step.`)).toBe(true);
    expect(text.endsWith("<｜Assistant｜><think>\n")).toBe(true);
    expect(promptText(ps[0], tok, { instruction: "deepscaler" })).toContain("output the final answer within \\boxed{}.");
    // The example's response ends with end of sequence.
    expect(encodeExample(ps[0], FULL_STYLE, tok).response.at(-1)).toBe(TINY.eosId);
  });

  test("a trace cut anywhere before its closing brace scores 0; complete, it scores 1", () => {
    for (const p of makeProblems(12, 4, { kinds: ["add", "sub", "add3"] })) {
      for (const style of [FULL_STYLE, COMPRESSED_STYLE]) {
        const ids = encodeExample(p, style, tok).response; // trace + eos
        const n = ids.length;
        for (let cap = 1; cap < n - 1; cap++) {
          const r = capReward(tok, { tokens: ids, finished: false }, p.answer, cap);
          if (r.reward !== 0 || !r.truncated || r.length !== cap) throw new Error(`${p.id}: cut at ${cap}/${n} tokens scored ${r.reward}`);
          const text = tok.decode(ids.slice(0, cap), { skipSpecialTokens: true });
          expect(textReward(text, p.answer).reward).toBe(0);
        }
        // Cut right after the box closes (no end of sequence yet): a complete answer, as DeepScaleR counts it.
        expect(capReward(tok, { tokens: ids, finished: false }, p.answer, n - 1)).toMatchObject({ reward: 1, truncated: true });
        // The whole response, finished at end of sequence exactly at the cap, is not truncated.
        expect(capReward(tok, { tokens: ids, finished: true }, p.answer, n)).toMatchObject({ reward: 1, truncated: false, length: n });
        expect(capReward(tok, { tokens: ids, finished: true }, p.answer, n + 50)).toMatchObject({ reward: 1, truncated: false });
      }
    }
  });

  test("no </think> means no reward, even with the right box", () => {
    expect(textReward("3+4=7.\n\\boxed{7}", "7").reward).toBe(0);
    expect(textReward("3+4=7.\n</think>\n\\boxed{7}", "7").reward).toBe(1);
    expect(textReward("\\boxed{7}\n</think>\nso", "7").reward).toBe(0);
  });
});

describe.skipIf(!GPU)("arith warm start", () => {
  test("a short supervised warm start lowers the loss on held-out traces", async () => {
    const gpu = await gpuOrSkip();
    const config: Qwen2Config = {
      ...TINY_PRESETS.tiny,
      ropeTheta: 10000,
      rmsNormEps: 1e-6,
      vocabSize: TINY.size,
      maxPositions: 1024,
      bosTokenId: TINY.bosId,
      eosTokenIds: [TINY.eosId],
      torchDtype: "float32",
    };
    const values = new Map([...tinyWeights(config, 3)].map(([k, v]) => [k, v.data]));
    const model = await TrainModel.create(gpu, config, values);
    const opt = await Optimizer.create(gpu, model.params, { lr: 3e-3, warmupSteps: 0, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 });
    // Fixed held-out batch: mean NLL of its response tokens, from the forward's log-probs.
    const held = makeProblems(6, 77, { split: "test" }).map((p) => {
      const e = encodeExample(p, FULL_STYLE, tok);
      return { tokens: [...e.prompt, ...e.response], lossFrom: e.prompt.length };
    });
    const mb = packSequences(held);
    const T = mb.tokens.length;
    const heldLoss = async () => {
      const b = gpu.batch();
      model.recordForward(b, mb);
      b.submit();
      const { logp } = await model.readLogp(T);
      let s = 0;
      let n = 0;
      for (let i = 0; i < T; i++) if (mb.mask[i]) (s -= logp[i]), n++;
      return s / n;
    };
    try {
      const before = await heldLoss();
      const seen: number[] = [];
      const r = await warmStart(model, opt, warmStartBatches(tok, 8, 1), {
        steps: 40,
        onProgress: (p) => {
          seen.push(p.step);
          return p.step === 12; // stop early: the callback bounds the run
        },
      });
      const after = await heldLoss();
      expect(seen).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
      expect(r.steps).toBe(12);
      expect(r.losses.every(Number.isFinite)).toBe(true);
      // Random init: ≈ ln V ≈ 6.3 nats per token. 12 steps of 8 traces at lr 3e-3
      // learn the trace's fixed words and digit/punctuation rhythm.
      expect(before).toBeGreaterThan(Math.log(TINY.size) - 1);
      expect(after).toBeLessThan(before - 2);
      expect(r.losses[r.losses.length - 1]).toBeLessThan(r.losses[0] - 2);
      // Greedy evaluation through the engine: lengths within the cap, grading agrees with textReward().
      const probs = makeProblems(4, 5, { split: "test" });
      const ev = await evaluate(gpu, model, tok, arithTask(tok, { kinds: ["add", "sub"], maxOperand: 9 }), probs, { cap: 24 });
      expect(ev.responses.map((x) => x.id)).toEqual(probs.map((p) => p.id));
      ev.responses.forEach((x, i) => {
        expect(x.length).toBeGreaterThan(0);
        expect(x.length).toBeLessThanOrEqual(24);
        if (x.length < 24) expect(x.truncated).toBe(false); // stopped at end of sequence
        expect(x.correct).toBe(textReward(x.text, probs[i].answer).correct);
      });
      expect(ev.accuracy).toBe(ev.responses.filter((x) => x.correct).length / 4);
    } finally {
      opt.destroy();
      model.destroy();
    }
  }, 60_000);
});
