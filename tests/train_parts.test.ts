// Training tensors larger than one storage binding: the embedding and LM head
// stored in row parts (a tiny model forced to small parts) train exactly as
// the model in one buffer does: log-probs, every gradient, AdamW steps, and
// the rollout engine that reads the parts.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../src/engine/generate.ts";
import { loadReferenceModel } from "../src/model/reference.ts";
import { makeTinyModel, type TinyPreset } from "../src/model/tiny.ts";
import { loadTokenizer } from "../src/model/tokenizer.ts";
import { packSequences, partRows, TrainModel } from "../src/train/model.ts";
import { Optimizer } from "../src/train/optim.ts";
import { DivergenceGuard } from "../src/train/divergence.ts";
import { rolloutModel } from "../src/train/rollout_model.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-parts-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));

describe("row parts (CPU)", () => {
  test("partRows: what fits one binding, the whole tensor when it fits, an error when one row does not", () => {
    expect(partRows(151936, 896, 128 * 2 ** 20)).toBe(37449);
    expect(partRows(151936, 1536, 128 * 2 ** 20)).toBe(21845);
    expect(partRows(100, 64, 1 << 30)).toBe(100);
    expect(() => partRows(10, 64, 100)).toThrow(/one row of 64 f32 values exceeds the max storage binding 100/);
  });
});

describe.skipIf(!GPU)("training over row parts", () => {
  for (const preset of ["tiny", "tiny-untied"] as TinyPreset[]) {
    test(`${preset} (padded vocabulary) with the embedding in parts of 100 rows = one buffer: log-probs, gradients, 3 AdamW steps, rollouts`, async () => {
      const gpu = await gpuOrSkip();
      const dir = join(ROOT, preset);
      makeTinyModel(dir, { preset, seed: 21, padRows: 24 });
      const ref = loadReferenceModel(dir);
      const tok = loadTokenizer(dir);
      const H = ref.config.hiddenSize;
      const limit = tok.size;
      const seqs = ["The quick brown fox jumps over the lazy dog.", "Let's think step by step", "boxed answer"].map((t) => ({ tokens: tok.encode(t), lossFrom: 2 }));
      const mb = packSequences(seqs);
      const T = mb.tokens.length;
      const r = randn(T, 3);
      // `given`: gradients to step with instead of the model's own (so AdamW over parts is compared on equal inputs).
      const run = async (maxParamBytes?: number, given?: Map<string, Float32Array>) => {
        const m = await TrainModel.create(gpu, ref.config, ref.weights, { vocabLimit: limit, maxParamBytes });
        // Clipping off: the global norm sums the parts in another order (ulp differences in the clip factor).
        const opt = await Optimizer.create(gpu, m.params, { lr: 1e-2, warmupSteps: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 0 });
        const b = gpu.batch();
        m.recordZeroGrad(b);
        m.recordForward(b, mb);
        b.submit();
        const logp = (await m.readLogp(T)).logp;
        gpu.write(m.buffers.dlogp, r.map((x, i) => x * mb.mask[i]));
        const bb = gpu.batch();
        m.recordBackward(bb, T);
        bb.submit();
        const grads = await m.readGrads();
        for (let step = 0; step < 3; step++) {
          if (given) for (const p of m.params) for (const part of p.parts) gpu.write(part.grad.buffer, given.get(p.name)!.subarray(part.offset, part.offset + part.size), part.grad.offset);
          expect((await opt.update()).skipped).toBe(false);
        }
        const weights = await m.readWeights();
        // Greedy rollouts through the engine that reads the trainer's buffers (parts = engine chunks).
        const roll = await rolloutModel(gpu, m, "f32");
        const e = await Engine.create(roll.model, { maxBatch: 3, maxSeqLen: 64, cacheTokens: 3 * 64, blockSize: 16, prefillChunk: 64, vocabLimit: limit });
        const gen: number[][] = [];
        for await (const c of e.generate(seqs.map((s, i) => ({ id: i, prompt: s.tokens, maxTokens: 8, stop: [] })), { temperature: 0, topP: 1, topK: 0, seed: 1 })) gen[c.id as number] = c.tokens;
        e.destroy();
        roll.destroy();
        const parts = m.byName.get("model.embed_tokens.weight")!.parts.length;
        opt.destroy();
        m.destroy();
        return { logp, grads, weights, gen, parts };
      };
      const whole = await run();
      const parted = await run(100 * H * 4);
      expect(whole.parts).toBe(1);
      expect(parted.parts).toBe(Math.ceil(ref.config.vocabSize / 100));
      // Same per-element sums: the LM head's columns and the gather are split, not reordered.
      expectClose(parted.logp, whole.logp, 0, 0, "log-probs");
      for (const [name, g] of whole.grads) {
        // dh sums the LM-head parts' contributions one after another: f32 reassociation only.
        expectClose(parted.grads.get(name)!, g, 1e-6, 1e-4, `gradient ${name}`);
      }
      // AdamW part by part from the same gradients: element-wise, so bit for bit.
      const a = await run(undefined, whole.grads);
      const c = await run(100 * H * 4, whole.grads);
      for (const [name, w] of a.weights) expectClose(c.weights.get(name)!, w, 0, 0, `weights ${name} after 3 AdamW steps`);
      expect(a.weights.get("model.embed_tokens.weight")).not.toEqual(ref.weights.get("model.embed_tokens.weight"));
      // Rollouts from the same weights, read from the parts as engine chunks.
      expect(c.gen).toEqual(a.gen);
      expect(c.gen.flat().length).toBe(3 * 8);
      expect(c.gen.flat().every((t) => t < limit)).toBe(true);

    }, 120_000);
  }

  test("the divergence guard's weight norm sums every part", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "guard");
    makeTinyModel(dir, { preset: "tiny", seed: 3 });
    const ref = loadReferenceModel(dir);
    const m = await TrainModel.create(gpu, ref.config, ref.weights, { maxParamBytes: 100 * ref.config.hiddenSize * 4 });
    expect(m.byName.get("model.embed_tokens.weight")!.parts.length).toBeGreaterThan(1);
    let sq = 0;
    for (const w of ref.weights.values()) for (const x of w) sq += x * x;
    const g = await DivergenceGuard.create(gpu, m.params);
    expectClose([await g.weightNorm()], [Math.sqrt(sq)], 0, 1e-5, "weight norm over parts");
    m.destroy();
  });
});
