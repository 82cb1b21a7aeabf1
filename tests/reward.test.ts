// SIRI's length-capped reward: truncation at the cap (token ids + decode, or
// pre-cut text), the format rule, ±1 rewards and DAPO's soft overlong
// punishment against its closed form.
import { describe, expect, test } from "bun:test";
import { lengthCappedReward, overlongPenalty } from "../src/grade/index.ts";

// A toy tokenizer: one token per character, so cuts are easy to reason about.
const encode = (s: string) => Array.from(s, (c) => c.codePointAt(0)!);
const decode = (ids: number[]) => String.fromCodePoint(...ids);

const RESPONSE = "<think>2+2 is 4</think> The answer is \\boxed{4}."; // 48 tokens
const BOX_END = RESPONSE.indexOf("}") + 1; // the box closes at this many tokens

describe("length-capped reward", () => {
  test("correct within the cap: 1; cut before the box closes: 0", () => {
    const tokens = encode(RESPONSE);
    const full = lengthCappedReward({ tokens, decode, cap: 1000, gold: "4" });
    expect(full).toEqual({ reward: 1, correct: true, extracted: "4", formatOk: true, truncated: false, length: tokens.length, overlong: 0 });
    const atBox = lengthCappedReward({ tokens, decode, cap: BOX_END, gold: "4" });
    expect(atBox.reward).toBe(1);
    expect(atBox.truncated).toBe(true);
    expect(atBox.length).toBe(BOX_END);
    const cut = lengthCappedReward({ tokens, decode, cap: BOX_END - 1, gold: "4" });
    expect(cut).toMatchObject({ reward: 0, correct: false, extracted: null, truncated: true, length: BOX_END - 1 });
  });

  test("a wrong answer, or no answer, scores 0", () => {
    expect(lengthCappedReward({ tokens: encode("\\boxed{5}"), decode, cap: 100, gold: "4" }).reward).toBe(0);
    expect(lengthCappedReward({ tokens: encode("I think 4"), decode, cap: 100, gold: "4" }).reward).toBe(0);
  });

  test("the cut uses the last box within the cap, not a later one", () => {
    const r = "first guess \\boxed{3}, no wait: \\boxed{4}";
    const cap = r.indexOf("no wait");
    expect(lengthCappedReward({ tokens: encode(r), decode, cap, gold: "3" }).reward).toBe(1);
    expect(lengthCappedReward({ tokens: encode(r), decode, cap: r.length, gold: "3" }).reward).toBe(0);
  });

  test("exactly cap tokens: truncated unless the generator stopped at EOS", () => {
    const tokens = encode(RESPONSE);
    expect(lengthCappedReward({ tokens, decode, cap: tokens.length, gold: "4" }).truncated).toBe(true);
    expect(lengthCappedReward({ tokens, decode, cap: tokens.length, gold: "4", finished: true }).truncated).toBe(false);
  });

  test("pre-cut text with a token count and a truncated flag", () => {
    const r = lengthCappedReward({ text: RESPONSE, length: 30, truncated: false, cap: 64, gold: "4" });
    expect(r).toMatchObject({ reward: 1, truncated: false, length: 30 });
    expect(lengthCappedReward({ text: RESPONSE, length: 64, truncated: false, cap: 64, gold: "4" }).truncated).toBe(true);
    expect(() => lengthCappedReward({ text: RESPONSE, length: 65, truncated: true, cap: 64, gold: "4" })).toThrow(/longer than the cap 64/);
  });

  test("bad arguments are named", () => {
    expect(() => lengthCappedReward({ tokens: [], decode, cap: 0, gold: "4" })).toThrow(/cap must be an integer >= 1/);
    expect(() => lengthCappedReward({ text: "", length: 1.5, truncated: false, cap: 8, gold: "4" })).toThrow(/length/);
    expect(() =>
      lengthCappedReward({ tokens: [], decode, cap: 8, gold: "4", options: { overlong: { cacheTokens: 0 } } }),
    ).toThrow(/overlong.cacheTokens/);
    expect(() =>
      lengthCappedReward({ tokens: [], decode, cap: 8, gold: "4", options: { overlong: { cacheTokens: 16 } } }),
    ).toThrow(/overlong.maxTokens/);
  });
});

describe("format rule (DeepScaleR)", () => {
  const opts = { requireThink: true };
  test("<think> and </think> required; answer only after </think>", () => {
    expect(lengthCappedReward({ tokens: encode(RESPONSE), decode, cap: 100, gold: "4", options: opts })).toMatchObject({ reward: 1, formatOk: true });
    const noOpen = "2+2 is 4</think> \\boxed{4}";
    expect(lengthCappedReward({ tokens: encode(noOpen), decode, cap: 100, gold: "4", options: opts })).toMatchObject({
      reward: 0, formatOk: false, extracted: null,
    });
    const noClose = "<think>2+2 is 4, \\boxed{4}";
    expect(lengthCappedReward({ tokens: encode(noClose), decode, cap: 100, gold: "4", options: opts })).toMatchObject({
      reward: 0, formatOk: false,
    });
    const insideOnly = "<think>\\boxed{4}</think> so four";
    expect(lengthCappedReward({ tokens: encode(insideOnly), decode, cap: 100, gold: "4", options: opts })).toMatchObject({
      reward: 0, formatOk: true, extracted: null,
    });
  });

  test("a cut before </think> fails the format rule", () => {
    const cap = RESPONSE.indexOf("</think>") + 3;
    expect(lengthCappedReward({ tokens: encode(RESPONSE), decode, cap, gold: "4", options: opts }).formatOk).toBe(false);
  });

  test("promptOpensThink: the chat template opened <think>, the response only closes it", () => {
    const r = "2+2 is 4</think> \\boxed{4}";
    const o = { requireThink: true, promptOpensThink: true };
    expect(lengthCappedReward({ tokens: encode(r), decode, cap: 100, gold: "4", options: o }).reward).toBe(1);
  });

  test("without the rule, a box inside unfinished thinking counts", () => {
    expect(lengthCappedReward({ tokens: encode("<think>\\boxed{4}"), decode, cap: 100, gold: "4" }).reward).toBe(1);
  });
});

describe("±1 rewards", () => {
  const o = { signed: true };
  test("correct 1, wrong / missing / cut -1", () => {
    expect(lengthCappedReward({ tokens: encode("\\boxed{4}"), decode, cap: 100, gold: "4", options: o }).reward).toBe(1);
    expect(lengthCappedReward({ tokens: encode("\\boxed{5}"), decode, cap: 100, gold: "4", options: o }).reward).toBe(-1);
    expect(lengthCappedReward({ tokens: encode("four"), decode, cap: 100, gold: "4", options: o }).reward).toBe(-1);
    expect(lengthCappedReward({ tokens: encode("\\boxed{4}"), decode, cap: 5, gold: "4", options: o }).reward).toBe(-1);
  });
});

describe("DAPO soft overlong punishment", () => {
  /** DAPO's formula, written from the paper for the comparison. */
  function dapo(len: number, lMax: number, lCache: number): number {
    if (len <= lMax - lCache) return 0;
    if (len <= lMax) return (lMax - lCache - len) / lCache;
    return -1;
  }

  test("overlongPenalty matches the closed form over the whole range (DAPO: 20480 / 4096)", () => {
    const lens: number[] = [];
    for (let l = 0; l <= 21_000; l += 7) lens.push(l);
    lens.push(16383, 16384, 16385, 18432, 20479, 20480, 20481);
    for (const l of lens) expect(overlongPenalty(l, 20480, 4096)).toBeCloseTo(dapo(l, 20480, 4096), 12);
    expect(overlongPenalty(16384, 20480, 4096)).toBe(0);
    expect(overlongPenalty(18432, 20480, 4096)).toBe(-0.5);
    expect(overlongPenalty(20480, 20480, 4096)).toBe(-1);
    expect(overlongPenalty(30000, 20480, 4096)).toBe(-1);
  });

  test("added to the correctness reward; L_max defaults to the cap", () => {
    const pad = "x".repeat(60);
    const text = `<think>${pad}</think> \\boxed{4}`; // 86 tokens
    const n = text.length;
    const cap = 100;
    const r = lengthCappedReward({ tokens: encode(text), decode, cap, gold: "4", options: { overlong: { cacheTokens: 20 } } });
    expect(r.correct).toBe(true);
    expect(r.overlong).toBeCloseTo((cap - 20 - n) / 20, 12);
    expect(r.reward).toBeCloseTo(1 + (cap - 20 - n) / 20, 12);
    const short = lengthCappedReward({ tokens: encode("\\boxed{4}"), decode, cap, gold: "4", options: { overlong: { cacheTokens: 20 } } });
    expect(short).toMatchObject({ reward: 1, overlong: 0 });
  });

  test("a response cut at the cap takes the full -1 at L_max, with ±1 on top", () => {
    const long = "y".repeat(500);
    const r = lengthCappedReward({
      tokens: encode(long), decode, cap: 256, gold: "4", options: { signed: true, overlong: { cacheTokens: 64 } },
    });
    expect(r).toMatchObject({ reward: -2, overlong: -1, length: 256, truncated: true, correct: false });
    const explicitMax = lengthCappedReward({
      tokens: encode(long), decode, cap: 256, gold: "4", options: { overlong: { cacheTokens: 64, maxTokens: 512 } },
    });
    expect(explicitMax.overlong).toBe(0); // 256 <= 512 - 64
  });
});
