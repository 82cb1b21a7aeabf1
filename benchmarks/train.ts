/**
 * Training throughput: tokens/s for forward + backward + AdamW over packed
 * micro-batches (supervised loss; the policy loss costs the same kernels
 * plus one [T] loss kernel), with a layer-count / shape of your choice.
 *
 *   bun benchmarks/train.ts [--model DIR] [--tokens 512] [--seqs 4] [--steps 5]
 *
 * Without --model it builds the tiny model. Last line: one JSON object.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/index.ts";
import { loadReferenceModel } from "../src/model/reference.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { TrainModel } from "../src/train/model.ts";
import { Optimizer, DEFAULT_OPTIM } from "../src/train/optim.ts";
import { sftStep } from "../src/train/step.ts";
import { trackDeviceMemory } from "./memory.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    tokens: { type: "string", default: "512" },
    seqs: { type: "string", default: "4" },
    steps: { type: "string", default: "5" },
  },
});
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
const model = await TrainModel.create(gpu, ref.config, ref.weights);
const opt = await Optimizer.create(gpu, model.params, { ...DEFAULT_OPTIM, lr: 1e-4 });
await sftStep(model, opt, seqs); // warm-up: compiles every pipeline, allocates activations
await gpu.sync();
const steps = Number(values.steps);
const t0 = performance.now();
let loss = 0;
for (let i = 0; i < steps; i++) loss = (await sftStep(model, opt, seqs)).loss;
await gpu.sync();
const s = (performance.now() - t0) / 1000;
const tokens = nSeq * per * steps;
const params = model.params.reduce((a, p) => a + p.size, 0);
// 6·N·T for the matmuls (forward 2NT, backward 4NT) plus the recomputed forward (2NT) of checkpointing.
const flops = 8 * params * tokens;
const result = {
  adapter: gpu.adapter.description,
  model: values.model ?? "tiny (built)",
  params,
  tokens_per_step: nSeq * per,
  steps,
  tokens_per_s: Math.round(tokens / s),
  ms_per_step: Math.round((s * 1000) / steps),
  approx_gflops: +(flops / s / 1e9).toFixed(2),
  final_loss: +loss.toFixed(4),
  peak_device_mib: Math.round(memory.peakBytes() / 2 ** 20), // buffers this process created (benchmarks/memory.ts)
};
for (const [k, v] of Object.entries(result)) console.log(`${k.padEnd(18)} ${v}`);
console.log(JSON.stringify(result));
