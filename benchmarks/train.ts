/**
 * Training throughput: tokens/s for forward + backward + AdamW over packed
 * micro-batches (supervised loss; the policy loss costs the same kernels
 * plus one [T] loss kernel), with a layer-count / shape of your choice.
 *
 *   bun benchmarks/train.ts [--model DIR] [--tokens 512] [--seqs 4] [--steps 5] [--precision f32|f16-mixed]
 *
 * Without --model it builds the tiny model. Then the dispatches a micro-batch
 * (forward + backward) and an optimiser step record, by kernel family, here
 * and extrapolated to the 1.5B config (benchmarks/dispatches.ts says how),
 * and GPU time per kernel family over one profiled step where the adapter
 * has timestamp queries. Last line: one JSON object.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/index.ts";
import { loadReferenceModel } from "../src/model/reference.ts";
import { QWEN2_1_5B } from "../src/model/config.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { TrainModel } from "../src/train/model.ts";
import { Optimizer, DEFAULT_OPTIM } from "../src/train/optim.ts";
import type { Precision } from "../src/train/precision.ts";
import { sftStep } from "../src/train/step.ts";
import { countTraining, formatTally, timeByFamily, total as tallyTotal } from "./dispatches.ts";
import { trackDeviceMemory } from "./memory.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    tokens: { type: "string", default: "512" },
    seqs: { type: "string", default: "4" },
    steps: { type: "string", default: "5" },
    precision: { type: "string", default: "f32" },
  },
});
const precision = values.precision as Precision;
if (precision !== "f32" && precision !== "f16-mixed") throw new Error(`--precision: f32 or f16-mixed, got ${values.precision}`);
const gpu = await Gpu.open();
const memory = trackDeviceMemory(gpu);
let dir = values.model;
if (!dir) {
  dir = mkdtempSync(join(tmpdir(), "siri-bench-train-"));
  makeTinyModel(dir, { preset: "tiny", seed: 1 });
}
const ref = loadReferenceModel(dir);
const V = ref.config.vocabSize;
const total = Number(values.tokens);
const nSeq = Number(values.seqs);
const per = Math.floor(total / nSeq);
const seqs = Array.from({ length: nSeq }, (_, s) => ({ tokens: Array.from({ length: per }, (_, i) => (s * 131 + i * 17 + 3) % V), lossFrom: 1 }));
const model = await TrainModel.create(gpu, ref.config, ref.weights, { precision });
const opt = await Optimizer.create(gpu, model.params, { ...DEFAULT_OPTIM, lr: 1e-4 });
await sftStep(model, opt, seqs); // warm-up: compiles every pipeline, allocates activations
await gpu.sync();
const steps = Number(values.steps);
const t0 = performance.now();
let loss = 0;
let skipped = 0;
for (let i = 0; i < steps; i++) {
  const r = await sftStep(model, opt, seqs);
  loss = r.loss;
  if (r.skipped) skipped++;
}
await gpu.sync();
const s = (performance.now() - t0) / 1000;
const tokens = nSeq * per * steps;
const params = model.params.reduce((a, p) => a + p.size, 0);
// 6·N·T for the matmuls (forward 2NT, backward 4NT) plus the recomputed forward (2NT) of checkpointing.
const flops = 8 * params * tokens;
const result = {
  adapter: gpu.adapter.description,
  model: values.model ?? "tiny (built)",
  precision,
  params,
  tokens_per_step: nSeq * per,
  steps,
  tokens_per_s: Math.round(tokens / s),
  ms_per_step: Math.round((s * 1000) / steps),
  approx_gflops: +(flops / s / 1e9).toFixed(2),
  final_loss: +loss.toFixed(4),
  skipped_steps: skipped, // f16-mixed: updates skipped for an overflow
  loss_scale: model.scaler?.scale ?? 1,
  peak_device_mib: Math.round(memory.peakBytes() / 2 ** 20), // buffers this process created (benchmarks/memory.ts)
};
for (const [k, v] of Object.entries(result)) console.log(`${k.padEnd(18)} ${v}`);
const counts: Record<string, number> = {};
for (const [name, c, T] of [["this model", ref.config, nSeq * per], ["1.5B config", QWEN2_1_5B, 4096]] as const) {
  const n = await countTraining(gpu, ref.config, c, T);
  console.log(`dispatches per micro-batch of ${T} tokens (${name}, ${c.numLayers} layers): ${tallyTotal(n.microBatch)} (${tallyTotal(n.perLayer)} per layer): ${formatTally(n.microBatch)}`);
  console.log(`dispatches per optimiser step (${name}): ${tallyTotal(n.optimizer)}: ${formatTally(n.optimizer)}`);
  const key = name === "this model" ? "model" : "1_5b";
  Object.assign(counts, { [`dispatches_micro_batch_${key}`]: tallyTotal(n.microBatch), [`dispatches_per_layer_${key}`]: tallyTotal(n.perLayer), [`dispatches_optimizer_${key}`]: tallyTotal(n.optimizer) });
}
if (gpu.startProfiling(4096)) {
  await sftStep(model, opt, seqs);
  await gpu.sync();
  const timings = await gpu.stopProfiling();
  const all = timings.reduce((a, t) => a + t.ms, 0);
  console.log(`GPU time by kernel family over one profiled step (timestamp queries, ${timings.length} dispatches, ${all.toFixed(1)} ms):`);
  for (const [family, ms, n] of timeByFamily(timings)) {
    console.log(`  ${family.padEnd(36)} ${ms.toFixed(2).padStart(9)} ms  ${n.toString().padStart(4)} dispatches  ${((100 * ms) / all).toFixed(1).padStart(5)}%`);
  }
  console.log("the slowest dispatches of that step:");
  for (const t of [...timings].sort((a, b) => b.ms - a.ms).slice(0, 16)) console.log(`  ${t.label.padEnd(48)} ${t.family.padEnd(36)} ${t.ms.toFixed(2).padStart(9)} ms`);
  counts.profiled_gpu_ms = +all.toFixed(2);
}
console.log(JSON.stringify({ ...result, ...counts }));
