/**
 * Dispatch counts per decode step, prefill chunk, training micro-batch and
 * optimiser step at the 1.5B shapes (see benchmarks/dispatches.ts for how
 * each is counted), by kernel family.
 *
 *   bun benchmarks/count_dispatches.ts [--batch 64] [--chunk 512] [--tokens 4096]
 *
 * Last line: one JSON object.
 */
import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/index.ts";
import { QWEN2_1_5B } from "../src/model/config.ts";
import { TINY_PRESETS } from "../src/model/tiny.ts";
import { countInference, countOptimizer, countTraining, formatTally, total } from "./dispatches.ts";

const { values } = parseArgs({
  options: {
    batch: { type: "string", default: "64" },
    chunk: { type: "string", default: "512" },
    tokens: { type: "string", default: "4096" },
  },
});
const gpu = await Gpu.open();
const c = QWEN2_1_5B;
const dtype = gpu.features.f16 ? "f16" : "f32";
const L = c.numLayers;
const out: Record<string, unknown> = { adapter: gpu.adapter.description, config: "DeepSeek-R1-Distill-Qwen-1.5B", layers: L, dtype };
// Both attention forms: "tiled" is what a hardware GPU runs, "rows" what a CPU adapter runs.
for (const [B, form] of [1, Number(values.batch)].flatMap((b) => (["tiled", "rows"] as const).map((f) => [b, f] as const))) {
  const inf = await countInference(gpu, c, dtype, B, Number(values.chunk), form);
  console.log(`decode step, batch ${B}, ${form} attention: ${total(inf.decode)} dispatches (${(total(inf.decode) / L).toFixed(2)} per layer incl. embedding, LM head in ${inf.lmHeadChunks} weight chunks, sampling)`);
  console.log(`  ${formatTally(inf.decode)}`);
  out[`decode_b${B}_${form}`] = total(inf.decode);
  out[`decode_b${B}_${form}_by_family`] = Object.fromEntries(inf.decode);
  if (B === 1 && form === "tiled") {
    console.log(`prefill chunk of ${values.chunk} tokens: ${total(inf.prefill)} dispatches`);
    console.log(`  ${formatTally(inf.prefill)}`);
    out.prefill_chunk = total(inf.prefill);
    out.prefill_by_family = Object.fromEntries(inf.prefill);
    out.lm_head_chunks = inf.lmHeadChunks;
  }
}
const T = Number(values.tokens);
const tiny = { ...c, ...TINY_PRESETS.tiny };
const tr = await countTraining(gpu, tiny, c, T);
console.log(`per layer in training (forward + recomputing backward): ${total(tr.perLayer)}: ${formatTally(tr.perLayer)}`);
console.log(`training micro-batch of ${T} tokens (${L} layers, extrapolated): ${total(tr.microBatch)}`);
console.log(`  ${formatTally(tr.microBatch)}`);
const opt = await countOptimizer(gpu, c);
console.log(`optimiser step (grad norm + clip + AdamW; ${opt.tensors} tensors in ${opt.parts} parts, ${opt.chunks} arena chunks): ${total(tr.optimizer)}`);
console.log(`  ${formatTally(tr.optimizer)}`);
// The default run's model: the tiny shape with its own byte-level vocabulary (one arena chunk).
const demo = await countOptimizer(gpu, { ...tiny, vocabSize: 1024 });
console.log(`optimiser step, tiny model (${demo.tensors} tensors, ${demo.chunks} arena chunk): ${total(demo.tally)}: ${formatTally(demo.tally)}`);
Object.assign(out, {
  train_per_layer: total(tr.perLayer),
  train_micro_batch: total(tr.microBatch),
  train_micro_batch_tokens: T,
  optimizer_step: total(tr.optimizer),
  optimizer_arena_chunks: opt.chunks,
  optimizer_step_tiny: total(demo.tally),
  train_by_family: Object.fromEntries(tr.microBatch),
  optimizer_by_family: Object.fromEntries(tr.optimizer),
});
console.log(JSON.stringify(out));
gpu.destroy();
