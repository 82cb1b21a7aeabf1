// A padded vocabulary (config vocab_size above the tokenizer's size, as every
// Qwen2 checkpoint has): generation never draws a padded id, and the
// trainer's log-probs and gradients are those of softmax over the real ids
// only (the distribution the sampler drew from). The tiny models here are
// biased toward the padded rows, so an unmasked sampler would draw them.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../src/engine/generate.ts";
import { loadModel } from "../src/engine/load.ts";
import { loadReferenceModel, referenceLogits } from "../src/model/reference.ts";
import { makeTinyModel, type TinyPreset } from "../src/model/tiny.ts";
import { loadTokenizer, vocabLimit } from "../src/model/tokenizer.ts";
import { packSequences, TrainModel } from "../src/train/model.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-padded-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));
const PAD = 40;

function padded(preset: TinyPreset, seed: number): string {
  const dir = join(ROOT, `${preset}-${seed}`);
  makeTinyModel(dir, { preset, seed, padRows: PAD, padBias: true });
  return dir;
}

/** log softmax over the first `limit` entries of each row (f64), at the target. */
function maskedLogp(logits: Float32Array, V: number, limit: number, tokens: number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i + 1 < tokens.length; i++) {
    const row = logits.subarray(i * V, i * V + limit);
    let mx = -Infinity;
    for (const x of row) mx = Math.max(mx, x);
    let z = 0;
    for (const x of row) z += Math.exp(x - mx);
    out.push(row[tokens[i + 1]] - mx - Math.log(z));
  }
  return out;
}

describe("padded tiny model (CPU)", () => {
  test("config vocab_size exceeds the tokenizer's size; the bias makes padded rows the likeliest", () => {
    const dir = padded("tiny", 3);
    const ref = loadReferenceModel(dir);
    const tok = loadTokenizer(dir);
    expect(ref.config.vocabSize).toBe(tok.size + PAD);
    expect(vocabLimit(ref.config.vocabSize, tok)).toBe(tok.size);
    const V = ref.config.vocabSize;
    const tokens = tok.encode("The quick brown fox");
    const logits = referenceLogits(ref.weights, ref.config, tokens);
    // Mass on the padded rows under the full softmax, per position: the unmasked distribution.
    for (let i = 0; i < tokens.length; i++) {
      const row = logits.subarray(i * V, (i + 1) * V);
      let mx = -Infinity;
      for (const x of row) mx = Math.max(mx, x);
      let all = 0;
      let pad = 0;
      row.forEach((x, j) => {
        const e = Math.exp(x - mx);
        all += e;
        if (j >= tok.size) pad += e;
      });
      expect(pad / all).toBeGreaterThan(0.99);
    }
  });
});

describe.skipIf(!GPU)("padded vocabulary on the GPU", () => {
  for (const preset of ["tiny", "tiny-untied"] as TinyPreset[]) {
    test(`${preset}: generation at temperature 1 never draws a padded id (an unmasked sampler does)`, async () => {
      const gpu = await gpuOrSkip();
      const dir = padded(preset, 5);
      const m = await loadModel(gpu, dir, "f32");
      const tok = m.tokenizer;
      const prompt = tok.encode("Let's think step by step");
      const reqs = Array.from({ length: 16 }, (_, i) => ({ id: i, prompt, maxTokens: 12, stop: [] as number[] }));
      const run = async (limit: number | undefined) => {
        const e = await Engine.create(m.model, { maxBatch: 16, maxSeqLen: 64, cacheTokens: 16 * 64, blockSize: 16, prefillChunk: 64, vocabLimit: limit ?? m.config.vocabSize });
        const ids: number[] = [];
        const lps: number[] = [];
        try {
          for await (const c of e.generate(reqs, { temperature: 1, topP: 1, topK: 0, seed: 11 })) {
            ids.push(...c.tokens);
            lps.push(...c.logprobs);
          }
        } finally {
          e.destroy();
        }
        return { ids, lps };
      };
      const unmasked = await run(undefined);
      expect(unmasked.ids.filter((t) => t >= tok.size).length).toBeGreaterThan(unmasked.ids.length / 2);
      const masked = await run(vocabLimit(m.config.vocabSize, tok));
      expect(masked.ids.length).toBe(16 * 12);
      const bad = masked.ids.filter((t) => t >= tok.size);
      expect(bad).toEqual([]);
      expect(masked.lps.every((x) => Number.isFinite(x) && x <= 0)).toBe(true);
      expect(() => tok.decode(masked.ids)).not.toThrow();
      m.model.destroy();
    });
  }

  test("training log-probs are softmax over the real ids; gradients match central differences; padded rows get none", async () => {
    const gpu = await gpuOrSkip();
    const dir = padded("tiny-untied", 7);
    const ref = loadReferenceModel(dir);
    const tok = loadTokenizer(dir);
    const V = ref.config.vocabSize;
    const limit = tok.size;
    const seqs = [tok.encode("The quick brown fox jumps"), tok.encode("step by step")].map((tokens) => ({ tokens, lossFrom: 1 }));
    const mb = packSequences(seqs);
    const T = mb.tokens.length;
    const r = randn(T, 13);
    const model = await TrainModel.create(gpu, ref.config, ref.weights, { vocabLimit: limit });
    const b = gpu.batch();
    model.recordZeroGrad(b);
    model.recordForward(b, mb);
    b.submit();
    const { logp } = await model.readLogp(T);
    const want: number[] = [];
    const wantIdx: number[] = [];
    let o = 0;
    for (const s of seqs) {
      maskedLogp(referenceLogits(ref.weights, ref.config, s.tokens), V, limit, s.tokens).forEach((x, i) => {
        want.push(x);
        wantIdx.push(o + i);
      });
      o += s.tokens.length;
    }
    expectClose(wantIdx.map((i) => logp[i]), want, 1e-4, 1e-4, "masked training logp");
    // The unmasked log-softmax would differ by ~the padded mass (> 99%): the check above can fail.
    const full = maskedLogp(referenceLogits(ref.weights, ref.config, seqs[0].tokens), V, V, seqs[0].tokens);
    expect(Math.abs(full[0] - want[0])).toBeGreaterThan(1);

    gpu.write(model.buffers.dlogp, r.map((x, i) => x * mb.mask[i]));
    const bb = gpu.batch();
    model.recordBackward(bb, T);
    bb.submit();
    const grads = await model.readGrads();
    const H = ref.config.hiddenSize;
    for (const name of ["lm_head.weight", "model.embed_tokens.weight"]) {
      const g = grads.get(name)!;
      expect(g.subarray(limit * H).every((x) => x === 0)).toBe(true);
    }
    // Central differences of Σ r·mask·logp under the masked softmax (reference forward in f64 sums).
    const objective = () => {
      let L = 0;
      let off = 0;
      for (const s of seqs) {
        maskedLogp(referenceLogits(ref.weights, ref.config, s.tokens), V, limit, s.tokens).forEach((x, i) => {
          L += r[off + i] * mb.mask[off + i] * x;
        });
        off += s.tokens.length;
      }
      return L;
    };
    const h = 1e-2;
    const t = TOL.train_model_fd;
    for (const name of ["lm_head.weight", "model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight"]) {
      const g = grads.get(name)!;
      const w = ref.weights.get(name)!;
      const n = name.includes("layers") ? g.length : limit * H; // real rows only for the vocabulary tensors
      let big = 0;
      for (let i = 1; i < n; i++) if (Math.abs(g[i]) > Math.abs(g[big])) big = i;
      const idx = [big, ...Array.from(randn(2, name.length)).map((x) => Math.floor(Math.abs(x) * n) % n)];
      const fd = idx.map((i) => {
        const keep = w[i];
        w[i] = keep + h;
        const up = objective();
        w[i] = keep - h;
        const down = objective();
        w[i] = keep;
        return (up - down) / (2 * h);
      });
      expectClose(idx.map((i) => g[i]), fd, t.atol * Math.max(Math.abs(g[big]), 1e-3), t.rtol, `d objective / d ${name} (padded vocabulary)`);
    }
    model.destroy();
  });
});
