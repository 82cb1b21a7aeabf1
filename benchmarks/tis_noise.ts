/**
 * How much the rollout/trainer mismatch moves the policy gradient, and what
 * truncated importance sampling (TIS) does about it, at one model state.
 *
 *   bun benchmarks/tis_noise.ts --checkpoint DIR [--batches 4] [--prompts 16] [--group 8] [--cap 96] [--tis-cap 2]
 *
 * DIR is a training checkpoint of the arith task (e.g. runs/demo/checkpoints/
 * step-000000, the warm-started policy). For each batch (its own sampling
 * seed) it samples prompts x group rollouts with the f16 engine and, from the
 * same seed, with the f32 engine; computes the policy gradient of the default
 * objective (token-mean, clip-higher, dual-clip, one mini-batch: the update
 * `siri train` makes) without and with TIS; and samples a second f16 batch
 * with another seed for the sampling noise. Nothing is updated.
 *
 * Reported per engine: |Δ log p| between the sampler's log-probs and the
 * trainer's recomputed f32 ones, the extreme ratios pi_old / pi_rollout, the
 * mean TIS weight and the fraction the cap truncates; and, as fractions of
 * |g|: |g_TIS − g| (what the TIS correction changes: the mismatch-driven part
 * of the gradient) beside |g_a − g_b| (two independent batches: the sampling
 * noise every step has anyway). Last line: one JSON object.
 */
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/generate.ts";
import { Gpu } from "../src/gpu/index.ts";
import { loadTokenizer, vocabLimit } from "../src/model/tokenizer.ts";
import { groupAdvantages } from "../src/rl/advantages.ts";
import { arithTask, type ArithKind } from "../src/tasks/arith.ts";
import { loadCheckpoint } from "../src/train/checkpoint.ts";
import { DEMO } from "../src/train/config.ts";
import { TrainModel } from "../src/train/model.ts";
import type { Optimizer } from "../src/train/optim.ts";
import { rolloutModel, type RolloutModel } from "../src/train/rollout_model.ts";
import { policyUpdate, type Rollout, type UpdateStats } from "../src/train/step.ts";

const { values } = parseArgs({
  options: {
    checkpoint: { type: "string" },
    batches: { type: "string", default: "4" },
    prompts: { type: "string", default: "16" },
    group: { type: "string", default: "8" },
    cap: { type: "string", default: "96" },
    "tis-cap": { type: "string", default: "2" },
  },
});
if (!values.checkpoint) throw new Error("--checkpoint DIR is required (a training checkpoint of the arith task)");
const dir = values.checkpoint;
const [batches, prompts, G, cap, tisCap] = [values.batches, values.prompts, values.group, values.cap, values["tis-cap"]].map(Number);

const gpu = await Gpu.open();
const ck = loadCheckpoint(dir);
const tokenizer = loadTokenizer(dir);
// The trainer's log-probs and the sampler over the same ids (a padded vocabulary's extra rows excluded), as `siri train` does.
const vocab = vocabLimit(ck.config.vocabSize, tokenizer);
const model = await TrainModel.create(gpu, ck.config, ck.weights, { vocabLimit: vocab });
const task = arithTask(tokenizer, { kinds: DEMO.task.kinds as ArithKind[], maxOperand: DEMO.task.maxOperand });
const stop = [...new Set(tokenizer.eosTokenIds)];
const engines: Record<"f16" | "f32", RolloutModel> = { f16: await rolloutModel(gpu, model, "f16"), f32: await rolloutModel(gpu, model, "f32") };

async function sample(roll: RolloutModel, seed: number): Promise<Rollout[]> {
  const problems = task.sample(prompts, seed);
  const enc = problems.map((p) => tokenizer.encode(task.prompt(p)));
  const maxSeqLen = Math.ceil((Math.max(...enc.map((p) => p.length)) + cap) / 16) * 16;
  const maxBatch = Math.min(64, prompts * G);
  const engine = await Engine.create(roll.model, { maxBatch, maxSeqLen, cacheTokens: maxBatch * maxSeqLen, blockSize: 16, prefillChunk: 512, vocabLimit: vocab });
  const reqs = enc.flatMap((prompt, i) => Array.from({ length: G }, (_, g) => ({ id: i * G + g, prompt, maxTokens: cap, stop })));
  const out: Rollout[] = new Array(reqs.length);
  const rewards = new Array<number>(reqs.length);
  try {
    for await (const c of engine.generate(reqs, { temperature: DEMO.rollout.temperature, topP: 1, topK: 0, seed })) {
      const i = c.id as number;
      const p = Math.floor(i / G);
      rewards[i] = task.reward({ tokens: c.tokens, finished: c.stopReason === "stop" }, problems[p].answer, cap).reward;
      out[i] = { prompt: enc[p], response: c.tokens, rolloutLogp: c.logprobs, advantage: 0 };
    }
  } finally {
    engine.destroy();
  }
  const adv = groupAdvantages(rewards, G);
  out.forEach((r, i) => (r.advantage = adv[i]));
  return out;
}

// policyUpdate computes the gradient, then asks the optimiser to step: this one does not.
const noStep = { update: async () => ({ gradNorm: 0, lr: 0, clip: 1, skipped: false }) } as unknown as Optimizer;

async function gradient(rollouts: Rollout[], cap: number | null): Promise<{ g: Float64Array; stats: UpdateStats }> {
  const stats = await policyUpdate(model, noStep, rollouts, { ...DEMO.policy, oldLogp: "recompute", tisCap: cap, temperature: DEMO.rollout.temperature }, 0);
  const grads = await model.readGrads();
  const g = new Float64Array(model.params.reduce((a, p) => a + p.size, 0));
  let o = 0;
  for (const p of model.params) {
    g.set(grads.get(p.name)!, o);
    o += p.size;
  }
  return { g, stats };
}

const norm = (x: Float64Array) => Math.sqrt(x.reduce((a, v) => a + v * v, 0));
const distFrac = (a: Float64Array, b: Float64Array) => norm(a.map((v, i) => v - b[i])) / norm(b);

interface Row {
  engine: string;
  batch: number;
  logp_abs_mean: number;
  logp_abs_max: number;
  ratio_min: number;
  ratio_max: number;
  tis_weight_mean: number;
  tis_trunc_frac: number;
  tis_change: number; // |g_TIS - g| / |g|
  sampling_noise: number; // |g_a - g_b| / |g| (f16 only)
}
const rows: Row[] = [];
for (let k = 0; k < batches; k++) {
  const seed = 1000 + k;
  for (const name of ["f16", "f32"] as const) {
    const rs = await sample(engines[name], seed);
    const plain = await gradient(rs, null);
    const tis = await gradient(rs, tisCap);
    const mm = tis.stats.mismatch!;
    let noise = NaN;
    if (name === "f16") noise = distFrac((await gradient(await sample(engines.f16, seed + 5000), null)).g, plain.g);
    rows.push({
      engine: name,
      batch: k,
      logp_abs_mean: mm.logpAbsMean,
      logp_abs_max: mm.logpAbsMax,
      ratio_min: mm.ratioMin,
      ratio_max: mm.ratioMax,
      tis_weight_mean: mm.tisWeightMean,
      tis_trunc_frac: mm.tisTruncFrac,
      tis_change: distFrac(tis.g, plain.g),
      sampling_noise: noise,
    });
    const r = rows[rows.length - 1];
    console.log(
      `${name} batch ${k}: |Δlogp| mean ${r.logp_abs_mean.toExponential(2)} max ${r.logp_abs_max.toExponential(2)}, ratio ${r.ratio_min.toFixed(4)}..${r.ratio_max.toFixed(4)}, ` +
        `TIS weight mean ${r.tis_weight_mean.toFixed(6)} truncated ${(100 * r.tis_trunc_frac).toFixed(2)}%, |g_TIS-g|/|g| ${r.tis_change.toExponential(2)}` +
        (name === "f16" ? `, sampling noise |g_a-g_b|/|g| ${r.sampling_noise.toFixed(3)}` : ""),
    );
  }
}
console.log(JSON.stringify({ adapter: gpu.adapter.description, checkpoint: dir, batches, prompts, group: G, cap, tisCap, rows }));
for (const e of Object.values(engines)) e.destroy();
model.destroy();
process.exit(0);
