/**
 * Decode throughput of this checkout against another checkout of the
 * project (e.g. main) on the same tiny model, alternating between the two
 * (this, other, other, this, ...) so a shared, noisy machine slows both
 * alike. Each measurement is a fresh process (this file, run as a worker
 * against one checkout's sources): B requests decoding D tokens minus the
 * same requests decoding 1 token (prefill and the first sample), so (D - 1)
 * decode steps. Medians over rounds and their ratio are reported.
 *
 *   bun benchmarks/compare_generate.ts --other /path/to/main [--batches 1,64] [--decode 64] [--rounds 5]
 *
 * Last line: one JSON object.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const here = resolve(import.meta.dir, "..");

/** Worker: time B requests × maxTokens on the checkout at `root`; prints seconds for D and for 1 token. */
async function worker(root: string, modelDir: string, B: number, D: number): Promise<void> {
  const { Engine } = await import(join(root, "src/engine/generate.ts"));
  const { loadModel } = await import(join(root, "src/engine/load.ts"));
  const { Gpu } = await import(join(root, "src/gpu/index.ts"));
  const gpu = await Gpu.open();
  const m = await loadModel(gpu, modelDir, "f16");
  const V = m.config.vocabSize;
  const greedy = { temperature: 0, topP: 1, topK: 0, seed: 0 };
  const run = async (maxTokens: number) => {
    const reqs = Array.from({ length: B }, (_, i) => ({ id: i, prompt: Array.from({ length: 16 }, (_, j) => (j * 31 + i * 7 + 5) % V), maxTokens, stop: [] }));
    const engine = await Engine.create(m.model, { maxBatch: B, maxSeqLen: 16 + D, cacheTokens: B * (16 + D), blockSize: 16, prefillChunk: 1024 });
    const t0 = performance.now();
    let n = 0;
    for await (const c of engine.generate(reqs, greedy)) n += c.tokens.length;
    const s = (performance.now() - t0) / 1000;
    engine.destroy();
    if (n !== B * maxTokens) throw new Error(`generated ${n} tokens, expected ${B * maxTokens}`);
    return s;
  };
  await run(4); // compiles every pipeline
  const full = await run(D);
  const first = await run(1);
  console.log(JSON.stringify({ full, first }));
  process.exit(0);
}

const { values } = parseArgs({
  options: {
    other: { type: "string" },
    batches: { type: "string", default: "1,64" },
    decode: { type: "string", default: "64" },
    rounds: { type: "string", default: "5" },
    worker: { type: "string" }, // internal: root,modelDir,B,D
  },
});
if (values.worker) {
  const [root, modelDir, B, D] = values.worker.split(",");
  await worker(root, modelDir, Number(B), Number(D));
}
if (!values.other) throw new Error("compare_generate: --other DIR (a checkout of the project to compare with) is required");
const D = Number(values.decode);
const rounds = Number(values.rounds);
const batches = values.batches!.split(",").map(Number);
const { makeTinyModel } = await import(join(here, "src/model/tiny.ts"));
const dir = mkdtempSync(join(tmpdir(), "siri-compare-gen-"));
makeTinyModel(dir, { preset: "tiny", seed: 1 });
const roots: Record<string, string> = { this: here, other: resolve(values.other) };

function measure(name: string, B: number): number {
  const p = Bun.spawnSync([process.execPath, import.meta.path, "--worker", `${roots[name]},${dir},${B},${D}`], { stdout: "pipe", stderr: "pipe" });
  const last = p.stdout.toString().trim().split("\n").pop() ?? "";
  if (p.exitCode !== 0 || !last.startsWith("{")) throw new Error(`compare_generate: the ${name} worker failed (exit ${p.exitCode}): ${p.stderr.toString().slice(-500)}`);
  const { full, first } = JSON.parse(last) as { full: number; first: number };
  return full - first;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const out: Record<string, number | string> = { this: roots.this, other: roots.other, rounds, decode: D };
for (const B of batches) {
  const t: Record<string, number[]> = { this: [], other: [] };
  for (let r = 0; r < rounds; r++) for (const name of r % 2 ? ["other", "this"] : ["this", "other"]) t[name].push(measure(name, B));
  const tps = (name: string) => (B * (D - 1)) / median(t[name]);
  out[`decode_b${B}_this_tokens_per_s`] = Math.round(tps("this"));
  out[`decode_b${B}_other_tokens_per_s`] = Math.round(tps("other"));
  out[`decode_b${B}_ratio`] = +(tps("this") / tps("other")).toFixed(2);
  const fmt = (xs: number[]) => xs.map((x) => (1000 * x).toFixed(0)).join(" ");
  console.log(`batch ${B}: this ${Math.round(tps("this"))} tokens/s, other ${Math.round(tps("other"))} tokens/s, ratio ${(tps("this") / tps("other")).toFixed(2)} (decode ms per round: this ${fmt(t.this)}; other ${fmt(t.other)})`);
}
console.log(JSON.stringify(out));
