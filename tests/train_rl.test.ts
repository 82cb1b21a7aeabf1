// Policy-gradient training end to end on the GPU, and exact checkpoints.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../src/engine/generate.ts";
import { loadReferenceModel } from "../src/model/reference.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { groupAdvantages } from "../src/rl/advantages.ts";
import { loadCheckpoint, saveCheckpoint } from "../src/train/checkpoint.ts";
import { TrainModel } from "../src/train/model.ts";
import { Optimizer } from "../src/train/optim.ts";
import { rolloutModel } from "../src/train/rollout_model.ts";
import { policyLoss } from "../src/rl/policy_loss.ts";
import { rolloutMismatch } from "../src/rl/mismatch.ts";
import { DEFAULT_POLICY, policyUpdate, responseLogprobs, sftStep, type Rollout } from "../src/train/step.ts";
import { expectClose, gpuOrSkip, hasGpu, randn } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-rl-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));
const OPT = { lr: 2e-3, warmupSteps: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 };

describe.skipIf(!GPU)("policy training", () => {
  test("a tiny model learns a toy reward under the clip-higher GRPO loss", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "toy");
    makeTinyModel(dir, { preset: "tiny", seed: 21 });
    const ref = loadReferenceModel(dir);
    const V = ref.config.vocabSize;
    const model = await TrainModel.create(gpu, ref.config, ref.weights);
    const opt = await Optimizer.create(gpu, model.params, { ...OPT, lr: 1e-2 });
    const roll = await rolloutModel(gpu, model, "f32");
    const engine = await Engine.create(roll.model, { maxBatch: 32, maxSeqLen: 16, cacheTokens: 32 * 16, blockSize: 16, prefillChunk: 256, vocabLimit: V });
    // Reward: the share of response tokens in the lowest quarter of the vocabulary (≈ 0.25 at random init).
    const good = (t: number) => (t < V / 4 ? 1 : 0);
    const prompts = [
      [3, 50, 7],
      [9, 1, 88, 4],
      [120, 6],
      [44, 45, 46],
    ];
    const G = 8;
    const means: number[] = [];
    for (let step = 0; step < 14; step++) {
      const reqs = prompts.flatMap((p, i) => Array.from({ length: G }, (_, g) => ({ id: i * G + g, prompt: p, maxTokens: 6, stop: [] })));
      const done = new Map<number, number[]>();
      for await (const c of engine.generate(reqs, { temperature: 1, topP: 1, topK: 0, seed: 100 + step })) done.set(c.id as number, c.tokens);
      const responses = reqs.map((r) => done.get(r.id as number)!);
      const rewards = responses.map((toks) => toks.reduce((a, t) => a + good(t), 0) / toks.length);
      means.push(rewards.reduce((a, b) => a + b, 0) / rewards.length);
      const adv = groupAdvantages(rewards, G);
      const rollouts: Rollout[] = reqs.map((r, i) => ({ prompt: r.prompt, response: responses[i], advantage: adv[i] }));
      const s = await policyUpdate(model, opt, rollouts, { ...DEFAULT_POLICY, miniBatches: 2 }, step);
      expect(s.skipped).toBe(0);
      expect(Number.isFinite(s.loss) && s.gradNorm > 0).toBe(true);
      expect(s.clipFracLow + s.clipFracHigh).toBeLessThanOrEqual(1);
      await roll.sync();
    }
    console.log("mean reward per step", means.map((x) => x.toFixed(2)).join(" "));
    const first = (means[0] + means[1]) / 2;
    const last = (means[means.length - 1] + means[means.length - 2]) / 2;
    // 14 updates at lr 2e-3 move the share of "good" tokens from ~0.25 to well above it.
    expect(first).toBeLessThan(0.45);
    expect(last).toBeGreaterThan(first + 0.2);
    engine.destroy();
    opt.destroy();
    model.destroy();
  });

  test(`oldLogp "rollout": the ratio is taken against the rollouts' own log-probs (the behaviour policy), as the CPU reference loss computes it`, async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "behaviour");
    makeTinyModel(dir, { preset: "tiny", seed: 29 });
    const ref = loadReferenceModel(dir);
    const V = ref.config.vocabSize;
    const model = await TrainModel.create(gpu, ref.config, ref.weights);
    const opt = await Optimizer.create(gpu, model.params, OPT);
    const adv = [1, -1, 0.5, -0.5, 1.5, -1.5];
    const rollouts: Rollout[] = adv.map((advantage, i) => ({
      prompt: Array.from({ length: 3 + (i % 2) }, (_, j) => (i * 17 + j * 5 + 1) % V),
      response: Array.from({ length: 5 + (i % 3) }, (_, j) => (i * 29 + j * 11 + 3) % V),
      advantage,
    }));
    const cfg = { ...DEFAULT_POLICY, oldLogp: "rollout" as const, microBatchTokens: 4096 };
    // The policy now, and behaviour log-probs off from it by up to ±1.2 nats: ratios from 0.3 to 3.3, so the
    // low, high and dual clips all bite somewhere.
    const now = (await responseLogprobs(model, rollouts, cfg)).logp;
    const noise = randn(now.reduce((a, x) => a + x.length, 0), 5, 1.2);
    let o = 0;
    for (const [i, r] of rollouts.entries()) r.rolloutLogp = Float32Array.from(now[i], (x) => x + noise[o++]);
    const flat = (xs: ArrayLike<number>[]) => Float32Array.from(xs.flatMap((x) => Array.from(x)));
    const logpNew = flat(now);
    const N = logpNew.length;
    const inputs = { logpNew, advantages: flat(rollouts.map((r) => r.response.map(() => r.advantage))), mask: new Float32Array(N).fill(1) };
    const opts = { epsLow: cfg.epsLow, epsHigh: cfg.epsHigh, clipRatioC: cfg.clipRatioC, tokenCount: N };
    const want = policyLoss({ ...inputs, logpOld: flat(rollouts.map((r) => r.rolloutLogp!)) }, opts);
    const recomputed = policyLoss({ ...inputs, logpOld: logpNew }, opts);
    // The check can tell the two apart: the behaviour policy's ratio clips, the recomputed one (r = 1) does not.
    expect(want.stats.clipFracLow > 0 && want.stats.clipFracHigh > 0 && want.stats.clipFracDual > 0).toBe(true);
    expect(Math.abs(want.loss - recomputed.loss)).toBeGreaterThan(100 * (TOL.loss_stats.atol + TOL.loss_stats.rtol * Math.abs(want.loss)));
    const s = await policyUpdate(model, opt, rollouts, cfg, 0);
    expect([s.tokens, s.updates, s.skipped]).toEqual([N, 1, 0]);
    // The update's forward saw the weights the step starts from: the sampler-vs-trainer mismatch comes from it.
    const mm = rolloutMismatch(now, rollouts.map((r) => r.rolloutLogp!));
    expectClose([s.mismatch!.logpAbsMean, s.mismatch!.logpAbsMax, s.mismatch!.ratioMax, s.mismatch!.ratioMin], [mm.logpAbsMean, mm.logpAbsMax, mm.ratioMax, mm.ratioMin], TOL.loss_stats.atol, TOL.loss_stats.rtol, "mismatch vs the CPU's");
    expectClose([s.loss, s.approxKl], [want.loss, want.stats.approxKl], TOL.loss_stats.atol, TOL.loss_stats.rtol, "loss, approx KL vs the CPU reference");
    expect([s.clipFracLow, s.clipFracHigh, s.clipFracDual].map((f) => Math.round(f * N))).toEqual([want.stats.clipFracLow, want.stats.clipFracHigh, want.stats.clipFracDual].map((f) => Math.round(f * N)));
    // Misuse is an error naming the setting, before anything runs.
    await expect(policyUpdate(model, opt, rollouts, { ...cfg, tisCap: 2 }, 0)).rejects.toThrow(/policy.tisCap weighs pi_old \/ pi_rollout, which is 1 when policy.oldLogp is "rollout"/);
    await expect(policyUpdate(model, opt, [{ ...rollouts[0], rolloutLogp: undefined }], cfg, 0)).rejects.toThrow(/policy.oldLogp is "rollout" but rollout 0 carries no sampler log-probs/);
    opt.destroy();
    model.destroy();
  });

  test("one mini-batch, one epoch: π_old from the update's own forward = from a forward of its own (stats, mismatch, weights)", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "onpolicy");
    makeTinyModel(dir, { preset: "tiny", seed: 25 });
    const ref = loadReferenceModel(dir);
    const V = ref.config.vocabSize;
    const rollouts: Rollout[] = Array.from({ length: 12 }, (_, i) => {
      const response = Array.from({ length: i % 4 === 3 ? 0 : 3 + (i % 5) }, (_, j) => (i * 37 + j * 11 + 5) % V);
      return { prompt: [3 + i, 50, (7 * i) % V], response, advantage: ((i % 3) - 1) * 0.7, weight: i === 5 ? 0 : 1 };
    });
    // The sampler's log-probs: the model's own, nudged, so the mismatch and truncated IS have work to do.
    const probe = await TrainModel.create(gpu, ref.config, ref.weights);
    const own = await responseLogprobs(probe, rollouts, { microBatchTokens: 4096, temperature: 1 });
    probe.destroy();
    rollouts.forEach((r, i) => (r.rolloutLogp = own.logp[i].map((x, j) => x + 0.05 * Math.sin(i + 3 * j))));
    // Micro-batches of 40 tokens: several per mini-batch, as a run has them.
    const cfg = { ...DEFAULT_POLICY, microBatchTokens: 40, tisCap: 2 };
    const run = async (separateOldForward: boolean) => {
      const m = await TrainModel.create(gpu, ref.config, ref.weights);
      const o = await Optimizer.create(gpu, m.params, OPT);
      const s = await policyUpdate(m, o, rollouts, cfg, 3, { separateOldForward });
      const w = await m.readWeights();
      o.destroy();
      m.destroy();
      return { s, w };
    };
    const shortcut = await run(false);
    const separate = await run(true);
    expect(shortcut.s.updates).toBe(1);
    expect(shortcut.s.mismatch!.logpAbsMean).toBeGreaterThan(0.01);
    // The forwards compute every row alone (no sum over rows), so the log-probs, and all that follows, agree bit for bit.
    expect(shortcut.s).toEqual(separate.s);
    for (const [n, w] of separate.w) expect(Buffer.from(shortcut.w.get(n)!.buffer).equals(Buffer.from(w.buffer))).toBe(true);
  });

  test("checkpoint of weights and optimiser state round-trips exactly and resumes identically", async () => {
    const gpu = await gpuOrSkip();
    const dir = join(ROOT, "ckpt-base");
    makeTinyModel(dir, { preset: "tiny-untied", seed: 23 });
    const ref = loadReferenceModel(dir);
    const V = ref.config.vocabSize;
    const seqs = [0, 1, 2].map((s) => ({ tokens: Array.from({ length: 9 }, (_, i) => (s * 31 + i * 13 + 2) % V), lossFrom: 3 }));
    const a = await TrainModel.create(gpu, ref.config, ref.weights);
    const oa = await Optimizer.create(gpu, a.params, OPT);
    for (let i = 0; i < 2; i++) await sftStep(a, oa, seqs);
    const ck = join(ROOT, "ckpt");
    await saveCheckpoint(ck, a, oa, { tokenizerDir: dir, trainerState: { step: 2, note: "test" } });
    const loaded = loadCheckpoint(ck, a.params.map((p) => p.name));
    expect(loaded.trainerState!.step).toBe(2);
    expect(loaded.optimizer!.step).toBe(2);
    const wa = await a.readWeights();
    for (const [n, w] of wa) expect(Buffer.from(loaded.weights.get(n)!.buffer).equals(Buffer.from(w.buffer))).toBe(true);
    const b = await TrainModel.create(gpu, loaded.config, loaded.weights);
    const ob = await Optimizer.create(gpu, b.params, OPT);
    ob.loadState(loaded.optimizer!);
    const sa = await oa.readState();
    const sb = await ob.readState();
    sa.m.forEach((m, i) => expect(Buffer.from(sb.m[i].buffer).equals(Buffer.from(m.buffer))).toBe(true));
    sa.v.forEach((v, i) => expect(Buffer.from(sb.v[i].buffer).equals(Buffer.from(v.buffer))).toBe(true));
    // One more step from each: bit-identical weights.
    await sftStep(a, oa, seqs);
    await sftStep(b, ob, seqs);
    const [w1, w2] = [await a.readWeights(), await b.readWeights()];
    for (const [n, w] of w1) expect(Buffer.from(w2.get(n)!.buffer).equals(Buffer.from(w.buffer))).toBe(true);
    // The checkpoint is a loadable HF folder.
    const again = loadReferenceModel(ck);
    expect(again.config.vocabSize).toBe(V);
    [oa, ob].forEach((o) => o.destroy());
    [a, b].forEach((m) => m.destroy());
  });
});
