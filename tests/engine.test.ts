// The GPU Qwen2 engine against the independent CPU reference (src/model/reference.ts),
// and batched generation against one-at-a-time generation.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine, occupancy, type Completion, type GenRequest } from "../src/engine/generate.ts";
import { loadModel, sequenceLogits, type LoadedModel } from "../src/engine/load.ts";
import { loadReferenceModel, referenceLogits } from "../src/model/reference.ts";
import { makeTinyModel, type TinyDtype, type TinyPreset } from "../src/model/tiny.ts";
import { expectClose, gpuOrSkip, hasF16, hasGpu } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
// f16 compute needs shader-f16; adapters without it are covered by the f32 cases (the skip names why).
const F16 = GPU && hasF16(await gpuOrSkip());
const ROOT = mkdtempSync(join(tmpdir(), "siri-engine-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));

function tiny(preset: TinyPreset, dtype: TinyDtype = "f32", seed = 7): string {
  const dir = join(ROOT, `${preset}-${dtype}-${seed}`);
  makeTinyModel(dir, { preset, dtype, seed });
  return dir;
}

// Token ids inside the tiny vocabulary, deterministic.
function someTokens(n: number, vocab: number, salt = 1): number[] {
  return Array.from({ length: n }, (_, i) => (i * 37 + salt * 101 + 11) % vocab);
}

describe.skipIf(!GPU)("whole-model logits vs the CPU reference", () => {
  const cases: [TinyPreset, TinyDtype][] = [
    ["tiny", "f32"],
    ["tiny-gqa", "f32"],
    ["tiny-mqa", "f32"],
    ["tiny-untied", "f32"],
    ["tiny", "bf16"],
    ["tiny", "f16"],
  ];
  for (const [preset, ckptDtype] of cases) {
    test(`${preset}, ${ckptDtype} checkpoint, f32 compute`, async () => {
      const gpu = await gpuOrSkip();
      const dir = tiny(preset, ckptDtype);
      const ref = loadReferenceModel(dir);
      const m = await loadModel(gpu, dir, "f32");
      // 70 tokens: more than one prefill chunk of 64, so chunked prefill over the cache is covered.
      const tokens = someTokens(70, m.config.vocabSize);
      const got = await sequenceLogits(m.model, tokens);
      const want = referenceLogits(ref.weights, ref.config, tokens);
      m.model.destroy();
      const t = TOL.model_logits_f32;
      expectClose(got, want, t.atol, t.rtol, `${preset}/${ckptDtype} logits`);
    });
  }

  test.skipIf(!F16)("the LM head over the residual stream itself (decode's rows) gives the gathered rows' logits bit for bit", async () => {
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, tiny("tiny", "f32"), "f16");
    const tokens = someTokens(40, m.config.vocabSize, 5);
    const gathered = await sequenceLogits(m.model, tokens, 16, false);
    const direct = await sequenceLogits(m.model, tokens, 16, true);
    m.model.destroy();
    expect(gathered.every(Number.isFinite)).toBe(true);
    expect(Buffer.from(direct.buffer).equals(Buffer.from(gathered.buffer))).toBe(true);
  });

  test.skipIf(!F16)("f16 compute stays within the f16 tolerance", async () => {
    const gpu = await gpuOrSkip();
    const dir = tiny("tiny", "f32");
    const ref = loadReferenceModel(dir);
    const m = await loadModel(gpu, dir, "f16");
    const tokens = someTokens(20, m.config.vocabSize, 3);
    const got = await sequenceLogits(m.model, tokens);
    const want = referenceLogits(ref.weights, ref.config, tokens);
    m.model.destroy();
    const t = TOL.model_logits_f16;
    expectClose(got, want, t.atol, t.rtol, "f16 logits");
  });
});

async function runAll(m: LoadedModel, reqs: GenRequest[], maxBatch: number, cacheTokens: number): Promise<Map<string | number, Completion>> {
  const engine = await Engine.create(m.model, { maxBatch, maxSeqLen: 64, cacheTokens, blockSize: 16, prefillChunk: 32, vocabLimit: m.config.vocabSize });
  const out = new Map<string | number, Completion>();
  for await (const c of engine.generate(reqs, { temperature: 0, topP: 1, topK: 0, seed: 1 })) out.set(c.id, c);
  expect(engine.cache.freeBlockCount).toBe(Math.ceil(cacheTokens / 16));
  expect(engine.cache.freeSlotCount).toBe(maxBatch);
  engine.destroy();
  return out;
}

describe.skipIf(!GPU)("batched generation", () => {
  test("batched greedy decode gives exactly the tokens of one-at-a-time decode", async () => {
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, tiny("tiny", "f32", 11), "f32");
    const V = m.config.vocabSize;
    const lens = [3, 9, 17, 30, 5];
    const reqs: GenRequest[] = lens.map((n, i) => ({ id: i, prompt: someTokens(n, V, i + 2), maxTokens: 12 + i, stop: [] }));
    const batched = await runAll(m, reqs, 5, 5 * 64);
    for (const r of reqs) {
      const single = await runAll(m, [r], 1, 64);
      expect(batched.get(r.id)!.tokens).toEqual(single.get(r.id)!.tokens);
      expect(batched.get(r.id)!.tokens.length).toBe(r.maxTokens);
      expectClose(batched.get(r.id)!.logprobs, single.get(r.id)!.logprobs, 1e-5, 1e-4, `logprobs of ${r.id}`);
    }
    m.model.destroy();
  });

  test("greedy tokens follow the reference model's argmax", async () => {
    const gpu = await gpuOrSkip();
    const dir = tiny("tiny", "f32", 13);
    const m = await loadModel(gpu, dir, "f32");
    const ref = loadReferenceModel(dir);
    const prompt = someTokens(6, m.config.vocabSize, 9);
    const out = await runAll(m, [{ id: "a", prompt, maxTokens: 8, stop: [] }], 1, 64);
    const seq = [...prompt];
    const V = m.config.vocabSize;
    for (const tok of out.get("a")!.tokens) {
      const logits = referenceLogits(ref.weights, ref.config, seq);
      const last = logits.subarray((seq.length - 1) * V);
      let best = 0;
      for (let i = 1; i < V; i++) if (last[i] > last[best]) best = i;
      // A near-tie could legitimately flip; require the chosen token to be within 1e-4 of the max.
      expect(last[best] - last[tok]).toBeLessThanOrEqual(1e-4);
      seq.push(tok);
    }
    m.model.destroy();
  });

  test("slots are freed and reused: 7 requests through 2 slots, stop tokens end sequences", async () => {
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, tiny("tiny", "f32", 17), "f32");
    const V = m.config.vocabSize;
    // Find what greedy produces first for one prompt, then use that token as a stop token.
    const probe = await runAll(m, [{ id: 0, prompt: someTokens(4, V, 1), maxTokens: 3, stop: [] }], 1, 64);
    const stopTok = probe.get(0)!.tokens[1];
    const reqs: GenRequest[] = Array.from({ length: 7 }, (_, i) => ({ id: i, prompt: someTokens(4 + i, V, 1 + (i % 2 ? 0 : i)), maxTokens: 10, stop: [stopTok] }));
    const out = await runAll(m, reqs, 2, 2 * 64);
    expect(out.size).toBe(7);
    const first = out.get(0)!;
    expect(first.stopReason).toBe("stop");
    expect(first.tokens[first.tokens.length - 1]).toBe(stopTok);
    for (const c of out.values()) {
      const hit = c.tokens.indexOf(stopTok);
      if (c.stopReason === "stop") expect(hit).toBe(c.tokens.length - 1);
      else {
        expect(hit).toBe(-1);
        expect(c.tokens.length).toBe(10);
      }
      for (const lp of c.logprobs) expect(Number.isFinite(lp) && lp <= 0).toBe(true);
    }
    m.model.destroy();
  });

  test("sampled completions are the same whatever the batch, order, cache size, prefill chunk, decode window or round", async () => {
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, tiny("tiny", "f32", 23), "f32");
    const V = m.config.vocabSize;
    // 12 requests: three prompts (3, 31 and 59 tokens) sampled 4 times each (G = 4, distinct
    // keys), budgets 6..28, a stop set of 8 ids (the most the GPU decoder checks) so that some
    // sequences end early.
    // Flash-decoding chunks of 32 keys: the longer contexts span 2-3 chunks.
    const stop = Array.from({ length: 8 }, (_, i) => (i * 19 + 3) % V);
    const reqs: GenRequest[] = Array.from({ length: 12 }, (_, i) => ({ id: i, prompt: someTokens(3 + 28 * (i % 3), V, 5 + (i % 3)), maxTokens: 6 + 2 * i, stop }));
    const sampling = { temperature: 1, topP: 0.9, topK: 0, seed: 1234 };
    const run = async (engine: Engine, order: GenRequest[]) => {
      const out = new Map<string | number, Completion>();
      for await (const c of engine.generate(order, sampling)) out.set(c.id, c);
      return out;
    };
    const make = (maxBatch: number, maxSeqLen: number, prefillChunk: number, syncEvery?: number) =>
      Engine.create(m.model, { maxBatch, maxSeqLen, cacheTokens: maxBatch * maxSeqLen, blockSize: 16, prefillChunk, decodeChunk: 32, syncEvery, vocabLimit: m.config.vocabSize });
    const base = await make(12, 96, 64);
    const want = await run(base, reqs);
    const again = await run(base, [...reqs].reverse()); // the same engine, a second round, another order
    base.destroy();
    const shuffled = [5, 11, 0, 7, 2, 9, 4, 1, 10, 3, 8, 6].map((i) => reqs[i]);
    const variants: [string, number, number, number, number | undefined, GenRequest[]][] = [
      ["batch 3, reversed, windows of 3 steps", 3, 96, 16, 3, reqs.slice().reverse()],
      ["batch 1, shuffled, a readback every step", 1, 96, 32, 1, shuffled],
      ["batch 5, larger slots", 5, 320, 8, undefined, shuffled],
    ];
    const results: [string, Map<string | number, Completion>][] = [["second round", again]];
    for (const [name, maxBatch, maxSeqLen, chunk, syncEvery, order] of variants) {
      const e = await make(maxBatch, maxSeqLen, chunk, syncEvery);
      results.push([name, await run(e, order)]);
      e.destroy();
    }
    let stopped = 0;
    for (const r of reqs) {
      const w = want.get(r.id)!;
      if (w.stopReason === "stop") stopped++;
      for (const [name, got] of results) {
        const g = got.get(r.id)!;
        expect(`${name} ${r.id}: ${g.tokens.join(",")} ${g.stopReason}`).toBe(`${name} ${r.id}: ${w.tokens.join(",")} ${w.stopReason}`);
        expectClose(g.logprobs, w.logprobs, TOL.exact.atol, TOL.exact.rtol, `${name}: logprobs of ${r.id}`);
      }
    }
    // The run exercised early stops and budget ends, and the same prompt's samples differ.
    expect(stopped).toBeGreaterThan(0);
    expect(stopped).toBeLessThan(reqs.length);
    const firstPrompt = reqs.filter((_, i) => i % 3 === 0).map((r) => want.get(r.id)!.tokens.join(","));
    expect(new Set(firstPrompt).size).toBeGreaterThan(1);
    m.model.destroy();
  });

  test("counts: one readback per prefill and per decode window; occupancy is running sequences per step over the batch", async () => {
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, tiny("tiny", "f32", 29), "f32");
    const V = m.config.vocabSize;
    const engine = await Engine.create(m.model, { maxBatch: 4, maxSeqLen: 64, cacheTokens: 4 * 64, blockSize: 16, prefillChunk: 64, syncEvery: 8, vocabLimit: V });
    // Four requests with budgets 20, 20, 20, 4 and no stop ids: one prefill (first tokens), then
    // windows of min(8, budget left): 3 steps (the short one ends), then 8 and 8 for the other three.
    const reqs: GenRequest[] = [20, 20, 20, 4].map((n, i) => ({ id: i, prompt: someTokens(5, V, i), maxTokens: n, stop: [] }));
    let tokens = 0;
    for await (const c of engine.generate(reqs, { temperature: 1, topP: 1, topK: 0, seed: 3 })) tokens += c.tokens.length;
    expect(tokens).toBe(64);
    // The last window was submitted ahead, while the one before it ran (every row had budget after it).
    expect(engine.stats).toEqual({ decodeSteps: 3 + 8 + 8, decodeRows: 4 * 3 + 3 * 16, readbacks: 1 + 3, tokens: 64, windowsAhead: 1, maxBatch: 4 });
    expect(occupancy(engine.stats)).toBeCloseTo(60 / 19 / 4, 12);
    engine.destroy();
    m.model.destroy();
  });

  test("running decode windows ahead changes no completion, early stops and an abandoned call included", async () => {
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, tiny("tiny", "f32", 31), "f32");
    const V = m.config.vocabSize;
    const stop = Array.from({ length: 8 }, (_, i) => (i * 23 + 5) % V);
    const reqs: GenRequest[] = Array.from({ length: 4 }, (_, i) => ({ id: i, prompt: someTokens(4 + 5 * i, V, 3 + i), maxTokens: 9 + 7 * i, stop: i % 2 ? stop : [] }));
    const sampling = { temperature: 1, topP: 0.95, topK: 0, seed: 77 };
    const run = async (runAhead: boolean, maxBatch: number) => {
      const engine = await Engine.create(m.model, { maxBatch, maxSeqLen: 64, cacheTokens: maxBatch * 64, blockSize: 16, prefillChunk: 32, syncEvery: 3, runAhead, vocabLimit: V });
      // An abandoned call first: the engine must come back clean from a window left in flight.
      for await (const _ of engine.generate(reqs, sampling)) break;
      const out = new Map<string | number, Completion>();
      // All four at once (nothing waits: windows run ahead), then one at a time.
      for await (const c of engine.generate(reqs, sampling)) out.set(c.id, c);
      ahead.push(engine.stats.windowsAhead);
      const single = new Map<string | number, Completion>();
      for (const r of reqs) for await (const c of engine.generate([r], sampling)) single.set(c.id, c);
      engine.destroy();
      return [out, single];
    };
    const ahead: number[] = [];
    const [want, wantSingle] = await run(false, 4);
    const [got, gotSingle] = await run(true, 4);
    let stopped = 0;
    for (const r of reqs) {
      for (const [name, g, w] of [["batch", got, want], ["single", gotSingle, wantSingle], ["single vs batch", gotSingle, want]] as const) {
        const a = g.get(r.id)!;
        const b = w.get(r.id)!;
        expect(`${name} ${r.id}: ${a.tokens.join(",")} ${a.stopReason}`).toBe(`${name} ${r.id}: ${b.tokens.join(",")} ${b.stopReason}`);
        expectClose(a.logprobs, b.logprobs, TOL.exact.atol, TOL.exact.rtol, `${name}: logprobs of ${r.id}`);
      }
      if (want.get(r.id)!.stopReason === "stop") stopped++;
    }
    expect(stopped).toBeGreaterThan(0); // a row stopped inside a window that had a successor in flight
    expect(ahead[0]).toBe(0);
    expect(ahead[1]).toBeGreaterThan(2);
    m.model.destroy();
  });

  test("a request that can never fit is a clear error", async () => {
    const gpu = await gpuOrSkip();
    const m = await loadModel(gpu, tiny("tiny", "f32", 19), "f32");
    const engine = await Engine.create(m.model, { maxBatch: 1, maxSeqLen: 32, cacheTokens: 32, blockSize: 16, prefillChunk: 16, vocabLimit: m.config.vocabSize });
    const gen = engine.generate([{ id: "big", prompt: someTokens(30, m.config.vocabSize), maxTokens: 10, stop: [] }], { temperature: 0, topP: 1, topK: 0, seed: 0 });
    await expect(gen.next()).rejects.toThrow(/big.*exceeds max sequence length 32/);
    engine.destroy();
    m.model.destroy();
  });
});
