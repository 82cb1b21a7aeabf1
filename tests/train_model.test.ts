// The whole trainable model: gradients against finite differences of the
// independent CPU reference, and a tiny model that learns.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadReferenceModel, referenceLogits } from "../src/model/reference.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { Optimizer } from "../src/train/optim.ts";
import { keepsInternals, packSequences, TrainModel } from "../src/train/model.ts";
import { QWEN2_1_5B } from "../src/model/config.ts";
import { expectClose, gpuOrSkip, hasF16, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-train-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));

/** Σ_t mask_t · r_t · log p(target_t) over the sequences, with the f64-accumulating CPU reference. */
function refObjective(ref: ReturnType<typeof loadReferenceModel>, seqs: { tokens: number[]; lossFrom: number }[], r: Float32Array): number {
  const V = ref.config.vocabSize;
  let o = 0;
  let L = 0;
  for (const s of seqs) {
    const logits = referenceLogits(ref.weights, ref.config, s.tokens);
    for (let i = 0; i + 1 < s.tokens.length; i++) {
      if (i + 1 >= s.lossFrom) {
        const row = logits.subarray(i * V, (i + 1) * V);
        let mx = -Infinity;
        for (const x of row) mx = Math.max(mx, x);
        let z = 0;
        for (const x of row) z += Math.exp(x - mx);
        L += r[o + i] * (row[s.tokens[i + 1]] - mx - Math.log(z));
      }
    }
    o += s.tokens.length;
  }
  return L;
}

describe.skipIf(!GPU)("training model", () => {
  test("forward log-probs match the reference; every parameter's gradient matches central differences", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "fd");
    makeTinyModel(dir, { preset: "tiny-untied", seed: 5 });
    const ref = loadReferenceModel(dir);
    const V = ref.config.vocabSize;
    const seqs = [
      { tokens: [5, 17, 99, 3, 42], lossFrom: 2 },
      { tokens: [8, 1, 250, 77, 12, 64, 9], lossFrom: 3 },
    ].map((s) => ({ ...s, tokens: s.tokens.map((t) => t % V) }));
    const mb = packSequences(seqs);
    const T = mb.tokens.length;
    const r = randn(T, 3);
    const dlogp = new Float32Array(T).map((_, i) => mb.mask[i] * r[i]);
    const model = await TrainModel.create(gpu, ref.config, ref.weights);
    const b = gpu.batch();
    model.recordZeroGrad(b);
    model.recordForward(b, mb);
    b.submit();
    const { logp } = await model.readLogp(T);
    // Forward check against the reference log-probs.
    const want = new Float32Array(T);
    let o = 0;
    for (const s of seqs) {
      const logits = referenceLogits(ref.weights, ref.config, s.tokens);
      for (let i = 0; i + 1 < s.tokens.length; i++) {
        const row = logits.subarray(i * V, (i + 1) * V);
        let mx = -Infinity;
        for (const x of row) mx = Math.max(mx, x);
        let z = 0;
        for (const x of row) z += Math.exp(x - mx);
        want[o + i] = row[s.tokens[i + 1]] - mx - Math.log(z);
      }
      o += s.tokens.length;
    }
    const real = Array.from(mb.targets.keys()).filter((i) => i + 1 < T && mb.segStart[i + 1] === mb.segStart[i]);
    expectClose(real.map((i) => logp[i]), real.map((i) => want[i]), 1e-4, 1e-4, "training forward logp");
    gpu.write(model.buffers.dlogp, dlogp);
    const bb = gpu.batch();
    model.recordBackward(bb, T);
    bb.submit();
    const grads = await model.readGrads();
    // Central differences of the reference objective on parameters of every tensor:
    // the largest-gradient element and 3 seeded random ones per tensor (a full sweep of
    // ~100K parameters × 2 CPU forwards would take minutes; each kernel's own
    // finite-difference test covers every element).
    const h = 1e-2;
    const t = TOL.train_model_fd;
    for (const [name, g] of grads) {
      const w = ref.weights.get(name)!;
      let big = 0;
      for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[big])) big = i;
      const idx = [big, ...Array.from(randn(3, name.length + 11)).map((x) => Math.floor(Math.abs(x) * g.length) % g.length)];
      const fd: number[] = [];
      for (const i of idx) {
        const keep = w[i];
        w[i] = keep + h;
        const up = refObjective(ref, seqs, r);
        w[i] = keep - h;
        const down = refObjective(ref, seqs, r);
        w[i] = keep;
        fd.push((up - down) / (2 * h));
      }
      const scale = Math.abs(g[big]);
      expectClose(idx.map((i) => g[i]), fd, t.atol * Math.max(scale, 1e-3), t.rtol, `d objective / d ${name}`);
    }
    model.destroy();
  });

  test("supervised training drives the loss down on a small fixed corpus", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "sft");
    makeTinyModel(dir, { preset: "tiny", seed: 9 });
    const ref = loadReferenceModel(dir);
    const V = ref.config.vocabSize;
    // A fixed corpus: 4 sequences of 12 tokens, deterministic.
    const corpus = Array.from({ length: 4 }, (_, s) => ({ tokens: Array.from({ length: 12 }, (_, i) => (s * 53 + i * i * 7 + 3) % V), lossFrom: 1 }));
    const mb = packSequences(corpus);
    const T = mb.tokens.length;
    const denom = mb.mask.reduce((a, x) => a + x, 0);
    const model = await TrainModel.create(gpu, ref.config, ref.weights);
    const opt = await Optimizer.create(gpu, model.params, { lr: 3e-3, warmupSteps: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 });
    const stats = gpu.buffer(64, "sft.stats");
    const losses: number[] = [];
    for (let step = 0; step < 40; step++) {
      const b = gpu.batch();
      model.recordZeroGrad(b);
      model.recordForward(b, mb);
      model.loss.sft(b, model.buffers.logp, model.buffers.mask, model.buffers.dlogp, stats, T, denom);
      model.recordBackward(b, T);
      b.submit();
      const { logp } = await model.readLogp(T);
      let L = 0;
      for (let i = 0; i < T; i++) L -= mb.mask[i] * logp[i];
      losses.push(L / denom);
      const s = await opt.update();
      expect(s.skipped).toBe(false);
    }
    // Random init: loss ≈ ln V ≈ 6.4; 40 Adam steps at lr 3e-3 memorise 44 tokens.
    expect(losses[0]).toBeGreaterThan(Math.log(V) - 1);
    expect(losses[losses.length - 1]).toBeLessThan(losses[0] / 4);
    stats.destroy();
    opt.destroy();
    model.destroy();
  });
});

/** One forward and backward of `mb` with d loss / d logp = r·mask: log-probs, every gradient, how many layers stack gate/up; destroys m. */
async function logpAndGrads(m: TrainModel, mb: ReturnType<typeof packSequences>, r: Float32Array) {
  const T = mb.tokens.length;
  const b = m.gpu.batch();
  m.recordZeroGrad(b);
  m.recordForward(b, mb);
  b.submit();
  const { logp } = await m.readLogp(T);
  m.gpu.write(m.buffers.dlogp, r.map((x, i) => x * mb.mask[i]));
  const bb = m.gpu.batch();
  m.recordBackward(bb, T);
  bb.submit();
  const out = { logp, grads: await m.readGrads(), stacked: m.gateUp.filter((x) => x !== null).length };
  m.destroy();
  return out;
}

describe.skipIf(!GPU)("LM head over token chunks", () => {
  test("chunked logits (64 rows) give the same log-probs and gradients as one chunk", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "chunk");
    makeTinyModel(dir, { preset: "tiny", seed: 31 });
    const ref = loadReferenceModel(dir);
    const V = ref.config.vocabSize;
    const seqs = [0, 1, 2].map((s) => ({ tokens: Array.from({ length: 50 + s * 7 }, (_, i) => (s * 17 + i * 29 + 1) % V), lossFrom: 5 }));
    const mb = packSequences(seqs);
    const T = mb.tokens.length; // 171 tokens: three chunks of 64, 64, 43
    const r = randn(T, 5);
    const one = await logpAndGrads(await TrainModel.create(gpu, ref.config, ref.weights), mb, r);
    const many = await logpAndGrads(await TrainModel.create(gpu, ref.config, ref.weights, { logitRows: 64 }), mb, r);
    expectClose(many.logp, one.logp, 0, 0, "chunked logp");
    for (const [name, g] of one.grads) expectClose(many.grads.get(name)!, g, 1e-6, 1e-4, `chunked grad ${name}`);
  });
});

describe.skipIf(!GPU)("layer internals kept by the forward", () => {
  test("kept (no recompute) = recomputed per layer in the backward: log-probs, every gradient; f32 and f16-mixed", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "keep");
    makeTinyModel(dir, { preset: "tiny", seed: 43 });
    const ref = loadReferenceModel(dir);
    const V = ref.config.vocabSize;
    expect(keepsInternals(ref.config, 4096)).toBe(true); // the default run's model keeps them
    expect(keepsInternals(QWEN2_1_5B, 4096)).toBe(false); // real models recompute
    const seqs = [0, 1, 2].map((s) => ({ tokens: Array.from({ length: 20 + s * 11 }, (_, i) => (s * 19 + i * 23 + 2) % V), lossFrom: 3 }));
    const mb = packSequences(seqs);
    const r = randn(mb.tokens.length, 7);
    // Loss scale 1: the gradients stay in f16's range (what is compared is the recompute, not the scaling).
    const lossScale = { init: 1, growthInterval: 2000 };
    for (const precision of hasF16(gpu) ? (["f32", "f16-mixed"] as const) : (["f32"] as const)) {
      const kept = await logpAndGrads(await TrainModel.create(gpu, ref.config, ref.weights, { precision, lossScale }), mb, r);
      const recomputed = await logpAndGrads(await TrainModel.create(gpu, ref.config, ref.weights, { precision, lossScale, keepActivationBytes: 0 }), mb, r);
      // f32: the kept forward normalises on its own (as the recompute does), the plain forward in the products'
      // prologue: the log-probs differ by f32 rounding. f16-mixed runs the norms on their own in both.
      const t = precision === "f32" ? 1e-5 : 0;
      expectClose(kept.logp, recomputed.logp, t, t, `${precision} log-probs, kept vs recomputed`);
      for (const [name, g] of recomputed.grads) expectClose(kept.grads.get(name)!, g, 1e-6, 1e-4, `${precision} grad ${name}, kept vs recomputed`);
    }
  });
});

describe.skipIf(!GPU)("stacked gate/up in the backward", () => {
  test("gate and up stacked in the arena (one product, one gradient product) = kept apart: log-probs, every gradient", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "stack");
    makeTinyModel(dir, { preset: "tiny-gqa", seed: 41 });
    const ref = loadReferenceModel(dir);
    const V = ref.config.vocabSize;
    const { hiddenSize: H, intermediateSize: I } = ref.config;
    const seqs = [0, 1].map((s) => ({ tokens: Array.from({ length: 30 + s * 9 }, (_, i) => (s * 13 + i * 37 + 3) % V), lossFrom: 4 }));
    const mb = packSequences(seqs);
    const T = mb.tokens.length;
    const r = randn(T, 6);
    // Apart: arena chunks too small for the gate/up pair (2·I·H·4 bytes), the embedding split to fit them.
    const stacked = await logpAndGrads(await TrainModel.create(gpu, ref.config, ref.weights), mb, r);
    const apart = await logpAndGrads(await TrainModel.create(gpu, ref.config, ref.weights, { maxArenaBytes: 1.5 * I * H * 4, maxParamBytes: I * H * 4 }), mb, r);
    expect([stacked.stacked, apart.stacked]).toEqual([ref.config.numLayers, 0]);
    expectClose(stacked.logp, apart.logp, 0, 0, "log-probs (the forward is the same)");
    // dh sums over 2I in one product instead of I then I: f32 reassociation only.
    for (const [name, g] of apart.grads) expectClose(stacked.grads.get(name)!, g, 1e-6, 1e-4, `gradient ${name}, stacked vs apart`);
  });
});
