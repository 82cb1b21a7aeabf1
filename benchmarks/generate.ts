/**
 * End-to-end generation throughput: prefill tokens/s and decode tokens/s at
 * batch 1, 16 and 64, through the real engine (paged KV cache, batched
 * decode, GPU sampling, decoding on the GPU with one readback per window of
 * steps), and the readbacks per generated token of each full run.
 *
 *   bun benchmarks/generate.ts [--model DIR] [--dtype f32|f16] [--prompt 512] [--decode 256] [--reps 3] [--batches 1,16,64]
 *
 * Decode tokens/s at batch B: B requests decoding D tokens against the same
 * requests decoding 1 token (prefill and the first sample), `reps` of each
 * in alternating order, (D − 1)·B tokens over median(D-token runs) −
 * median(1-token runs): a decode step of the tiny model at batch 1 takes
 * ~1-2 ms here, so a few short runs are dominated by the machine's noise.
 * Comparing checkouts (e.g. against main): benchmarks/compare_generate.ts.
 *
 * Without --model it builds the tiny model (the software adapter's size).
 * Then the dispatches one decode step (batch 1 and the largest batch) and one
 * prefill chunk record, by kernel family, at this model's shapes and at the
 * 1.5B shapes (counted from the recorded forward, benchmarks/dispatches.ts),
 * and GPU time per kernel family over a profiled decode run where the
 * adapter has timestamp queries (each dispatch then gets its own pass, so the
 * profiled run is slower than the timed ones above).
 * The last line of stdout is one JSON object with every figure.
 */
import { mkdtempSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Engine, type GenerateStats, type GenRequest } from "../src/engine/generate.ts";
import { defaultDtype, loadModel } from "../src/engine/load.ts";
import { Gpu } from "../src/gpu/index.ts";
import { QWEN2_1_5B } from "../src/model/config.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { vocabLimit } from "../src/model/tokenizer.ts";
import { sizeEngine } from "../src/engine/size.ts";
import { countInference, formatTally, timeByFamily, total } from "./dispatches.ts";
import { trackDeviceMemory } from "./memory.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    dtype: { type: "string" },
    prompt: { type: "string", default: "512" },
    decode: { type: "string", default: "256" },
    reps: { type: "string", default: "3" },
    batches: { type: "string", default: "1,16,64" },
  },
});

const gpu = await Gpu.open();
const memory = trackDeviceMemory(gpu);
let dir = values.model;
if (!dir) {
  dir = mkdtempSync(join(tmpdir(), "siri-bench-gen-"));
  makeTinyModel(dir, { preset: "tiny", seed: 1 });
}
const dtype = defaultDtype(gpu, values.dtype);
const m = await loadModel(gpu, dir, dtype);
const V = m.config.vocabSize;
const P = Number(values.prompt);
const D = Number(values.decode);
const batches = values.batches!.split(",").map(Number);
const reps = Number(values.reps);
if (!(Number.isInteger(D) && D >= 2)) throw new Error(`bench:generate: --decode must be an integer >= 2, got ${values.decode}`);
if (!(Number.isInteger(reps) && reps >= 1)) throw new Error(`bench:generate: --reps must be an integer >= 1, got ${values.reps}`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const tokens = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 31 + salt * 7 + 5) % V);
const greedy = { temperature: 0, topP: 1, topK: 0, seed: 0 };

let lastStats: GenerateStats | null = null;
async function run(reqs: GenRequest[], maxBatch: number, prefillChunk: number): Promise<number> {
  const promptTokens = Math.max(...reqs.map((r) => r.prompt.length));
  const newTokens = Math.max(...reqs.map((r) => r.maxTokens));
  const engine = await Engine.create(m.model, sizeEngine(m.config, m.model.dtype, gpu.limits.maxStorageBufferBindingSize, { what: "bench:generate", maxBatch, promptTokens, newTokens, prefillChunk, vocabLimit: vocabLimit(m.config.vocabSize, m.tokenizer) }));
  const t0 = performance.now();
  let n = 0;
  for await (const c of engine.generate(reqs, greedy)) n += c.tokens.length;
  const s = (performance.now() - t0) / 1000;
  lastStats = engine.stats;
  engine.destroy();
  if (n !== reqs.reduce((a, r) => a + r.maxTokens, 0)) throw new Error(`generated ${n} tokens, expected every request to run to its budget`);
  return s;
}

const results: Record<string, number | string> = { adapter: gpu.adapter.description, model: values.model ?? "tiny (built)", dtype, load_average_start: loadavg()[0] };
// Warm-up: compiles every pipeline.
await run([{ id: 0, prompt: tokens(32, 0), maxTokens: 4, stop: [] }], 1, 256);
// Prefill: one prompt of P tokens and a single new token; subtract a 1-token-prompt run.
const tPrefill = await run([{ id: 0, prompt: tokens(P, 1), maxTokens: 1, stop: [] }], 1, Math.min(P, 512));
const tOne = await run([{ id: 0, prompt: tokens(1, 1), maxTokens: 1, stop: [] }], 1, 16);
results.prefill_tokens = P;
results.prefill_tokens_per_s = Math.round(P / Math.max(tPrefill - tOne, 1e-9));
for (const B of batches) {
  const reqs = Array.from({ length: B }, (_, i) => ({ id: i, prompt: tokens(16, i), maxTokens: D, stop: [] }));
  const full: number[] = [];
  const first: number[] = [];
  for (let r = 0; r < reps; r++) {
    for (const which of r % 2 ? [first, full] : [full, first]) {
      which.push(await run(which === full ? reqs : reqs.map((q) => ({ ...q, maxTokens: 1 })), B, 1024));
      if (which === full) results[`decode_b${B}_readbacks_per_token`] = +(lastStats!.readbacks / lastStats!.tokens).toFixed(4);
    }
  }
  // (D - 1) decode steps of B tokens each; prefill and the first sample are subtracted.
  results[`decode_b${B}_tokens_per_s`] = Math.round((B * (D - 1)) / Math.max(median(full) - median(first), 1e-9));
  results[`decode_b${B}_ms_per_step`] = +((1000 * (median(full) - median(first))) / (D - 1)).toFixed(3);
}
results.load_average_end = loadavg()[0];
results.peak_device_mib = Math.round(memory.peakBytes() / 2 ** 20); // buffers this process created (benchmarks/memory.ts)
for (const [k, v] of Object.entries(results)) console.log(`${k.padEnd(28)} ${v}`);

const Bmax = Math.max(...batches);
for (const [name, c] of [["this model", m.config], ["1.5B shapes", QWEN2_1_5B]] as const) {
  const key = name === "this model" ? "model" : "1_5b";
  for (const B of [...new Set([1, Bmax])]) {
    const n = await countInference(gpu, c, dtype, B, 512);
    console.log(`dispatches per decode step (${name}, ${c.numLayers} layers, batch ${B}): ${total(n.decode)}: ${formatTally(n.decode)}`);
    results[`dispatches_decode_b${B}_${key}`] = total(n.decode);
    if (B === 1) {
      console.log(`dispatches per prefill chunk of 512 tokens (${name}): ${total(n.prefill)}: ${formatTally(n.prefill)}`);
      results[`dispatches_prefill_chunk_${key}`] = total(n.prefill);
    }
  }
}
if (gpu.startProfiling(4096)) {
  const steps = 8;
  const reqs = Array.from({ length: Bmax }, (_, i) => ({ id: i, prompt: tokens(16, i), maxTokens: steps, stop: [] }));
  await run(reqs, Bmax, 1024);
  const timings = await gpu.stopProfiling();
  const all = timings.reduce((a, t) => a + t.ms, 0);
  console.log(`GPU time by kernel family, batch ${Bmax}: prefill of 16-token prompts + ${steps - 1} decode steps (timestamp queries, ${timings.length} dispatches, ${all.toFixed(1)} ms):`);
  for (const [family, ms, n] of timeByFamily(timings)) {
    console.log(`  ${family.padEnd(36)} ${ms.toFixed(2).padStart(9)} ms  ${n.toString().padStart(4)} dispatches  ${((100 * ms) / all).toFixed(1).padStart(5)}%`);
  }
  results.profiled_gpu_ms = +all.toFixed(2);
}
console.log(JSON.stringify(results));
m.model.destroy();
gpu.destroy();
