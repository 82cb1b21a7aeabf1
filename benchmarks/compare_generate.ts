/**
 * Decode throughput of several checkouts of the project (this one, main, an
 * older commit) on the same tiny model, measured so that a shared, noisy
 * machine slows every side alike:
 *
 *  - each measurement is a fresh process (this file run as a worker against
 *    one checkout's sources; only the engine API every checkout shares is
 *    used: Engine.create / generate, loadModel, Gpu.open);
 *  - the checkouts take turns, the order rotating every round (A B, B A, ...);
 *  - inside a process, after a warm-up that compiles every pipeline, `reps`
 *    pairs of runs: B requests decoding D tokens and the same requests
 *    decoding 1 token (prefill and the first sample), in alternating order;
 *    the process's decode time is median(D-token runs) − median(1-token
 *    runs), i.e. (D − 1) decode steps, and its CPU time the same difference
 *    of process CPU time (user + system: on a software adapter the GPU's
 *    threads are this process's, so this counts the work, not the waiting);
 *  - per side: the median over rounds and the spread (min, max); the ratio
 *    of medians, and the median of per-round ratios (each round's sides ran
 *    back to back, under the same load);
 *  - the load average (1 min) before and after each measurement.
 *
 *   bun benchmarks/compare_generate.ts --other DIR [--trees NAME=DIR,...] [--batches 1,64] [--decode 512] [--rounds 7] [--reps 3]
 *
 * `--other DIR` compares this checkout ("this") with DIR ("other");
 * `--trees` names any set of checkouts instead (the first is the reference
 * of the ratios). Each checkout needs its own node_modules. Last line: one
 * JSON object.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const here = resolve(import.meta.dir, "..");

interface WorkerResult {
  /** Seconds of each D-token run and each 1-token run. */
  full: number[];
  first: number[];
  /** Process CPU seconds of the same runs. */
  fullCpu: number[];
  firstCpu: number[];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Worker: time B requests on the checkout at `root`; prints one JSON line (WorkerResult). */
async function worker(root: string, modelDir: string, B: number, D: number, reps: number): Promise<void> {
  const { Engine } = await import(join(root, "src/engine/generate.ts"));
  const { loadModel } = await import(join(root, "src/engine/load.ts"));
  const { Gpu } = await import(join(root, "src/gpu/index.ts"));
  const gpu = await Gpu.open();
  const m = await loadModel(gpu, modelDir, "f16");
  const V = m.config.vocabSize;
  const greedy = { temperature: 0, topP: 1, topK: 0, seed: 0 };
  const run = async (maxTokens: number): Promise<[number, number]> => {
    const reqs = Array.from({ length: B }, (_, i) => ({ id: i, prompt: Array.from({ length: 16 }, (_, j) => (j * 31 + i * 7 + 5) % V), maxTokens, stop: [] }));
    // vocabLimit: required by newer engines, ignored by older ones (the tiny model has no padding).
    const engine = await Engine.create(m.model, { maxBatch: B, maxSeqLen: 16 + D, cacheTokens: B * (16 + D), blockSize: 16, prefillChunk: 1024, vocabLimit: V });
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let n = 0;
    for await (const c of engine.generate(reqs, greedy)) n += c.tokens.length;
    const s = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    engine.destroy();
    if (n !== B * maxTokens) throw new Error(`generated ${n} tokens, expected ${B * maxTokens}`);
    return [s, (c.user + c.system) / 1e6];
  };
  await run(8); // compiles every pipeline
  const out: WorkerResult = { full: [], first: [], fullCpu: [], firstCpu: [] };
  for (let r = 0; r < reps; r++) {
    for (const which of r % 2 ? ["first", "full"] : ["full", "first"]) {
      const [s, cpu] = await run(which === "full" ? D : 1);
      if (which === "full") {
        out.full.push(s);
        out.fullCpu.push(cpu);
      } else {
        out.first.push(s);
        out.firstCpu.push(cpu);
      }
    }
  }
  console.log(JSON.stringify(out));
  process.exit(0);
}

const { values } = parseArgs({
  options: {
    other: { type: "string" },
    trees: { type: "string" },
    batches: { type: "string", default: "1,64" },
    decode: { type: "string", default: "512" },
    rounds: { type: "string", default: "7" },
    reps: { type: "string", default: "3" },
    worker: { type: "string" }, // internal: root,modelDir,B,D,reps
  },
});
if (values.worker) {
  const [root, modelDir, B, D, reps] = values.worker.split(",");
  await worker(root, modelDir, Number(B), Number(D), Number(reps));
}

const trees: [string, string][] = values.trees
  ? values.trees.split(",").map((t) => {
      const eq = t.indexOf("=");
      if (eq < 1) throw new Error(`compare_generate: --trees entries are NAME=DIR, got "${t}"`);
      return [t.slice(0, eq), resolve(t.slice(eq + 1))];
    })
  : values.other
    ? [
        ["this", here],
        ["other", resolve(values.other)],
      ]
    : [];
if (trees.length < 2) throw new Error("compare_generate: --other DIR (a checkout to compare with) or --trees NAME=DIR,NAME=DIR,... is required");
const D = Number(values.decode);
const rounds = Number(values.rounds);
const reps = Number(values.reps);
if (!(Number.isInteger(D) && D >= 2)) throw new Error(`compare_generate: --decode must be an integer >= 2, got ${values.decode}`);
if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error(`compare_generate: --rounds must be an integer >= 1, got ${values.rounds}`);
if (!(Number.isInteger(reps) && reps >= 1)) throw new Error(`compare_generate: --reps must be an integer >= 1, got ${values.reps}`);
const batches = values.batches!.split(",").map(Number);
const { makeTinyModel } = await import(join(here, "src/model/tiny.ts"));
const dir = mkdtempSync(join(tmpdir(), "siri-compare-gen-"));
makeTinyModel(dir, { preset: "tiny", seed: 1 });

interface Measurement {
  /** Milliseconds of wall and CPU time per decode step. */
  ms: number;
  cpuMs: number;
  load: [number, number];
}

function measure(root: string, name: string, B: number): Measurement {
  const load0 = loadavg()[0];
  const p = Bun.spawnSync([process.execPath, import.meta.path, "--worker", `${root},${dir},${B},${D},${reps}`], { stdout: "pipe", stderr: "pipe" });
  const last = p.stdout.toString().trim().split("\n").pop() ?? "";
  if (p.exitCode !== 0 || !last.startsWith("{")) throw new Error(`compare_generate: the ${name} worker failed (exit ${p.exitCode}): ${p.stderr.toString().slice(-500)}`);
  const r = JSON.parse(last) as WorkerResult;
  const steps = D - 1;
  return {
    ms: (1000 * (median(r.full) - median(r.first))) / steps,
    cpuMs: (1000 * (median(r.fullCpu) - median(r.firstCpu))) / steps,
    load: [load0, loadavg()[0]],
  };
}

const fmt = (x: number, d = 3) => x.toFixed(d);
const out: Record<string, unknown> = { trees: Object.fromEntries(trees), rounds, reps, decode: D, load_start: loadavg()[0] };
for (const B of batches) {
  const t = new Map<string, Measurement[]>(trees.map(([n]) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    // Rotate the order every round: A B C, B C A, C A B, ...
    const order = trees.map((_, i) => trees[(i + r) % trees.length]);
    for (const [name, root] of order) {
      const m = measure(root, name, B);
      t.get(name)!.push(m);
      console.log(`batch ${B} round ${r + 1} ${name.padEnd(8)} ${fmt(m.ms)} ms/step (${Math.round((1000 * B) / m.ms)} tokens/s), cpu ${fmt(m.cpuMs)} ms/step, load ${m.load[0].toFixed(2)} -> ${m.load[1].toFixed(2)}`);
    }
  }
  const [refName] = trees[0];
  const ref = t.get(refName)!;
  for (const [name] of trees) {
    const ms = t.get(name)!.map((m) => m.ms);
    const cpu = t.get(name)!.map((m) => m.cpuMs);
    const tps = (x: number) => Math.round((1000 * B) / x);
    const key = `b${B}_${name}`;
    out[`${key}_tokens_per_s`] = tps(median(ms));
    out[`${key}_ms_per_step`] = { median: +fmt(median(ms)), min: +fmt(Math.min(...ms)), max: +fmt(Math.max(...ms)) };
    out[`${key}_cpu_ms_per_step`] = { median: +fmt(median(cpu)), min: +fmt(Math.min(...cpu)), max: +fmt(Math.max(...cpu)) };
    let line = `batch ${B} ${name.padEnd(8)} ${tps(median(ms))} tokens/s (median of ${rounds}; ${fmt(median(ms))} ms/step, range ${fmt(Math.min(...ms))}-${fmt(Math.max(...ms))}); cpu ${fmt(median(cpu))} ms/step (range ${fmt(Math.min(...cpu))}-${fmt(Math.max(...cpu))})`;
    if (name !== refName) {
      const refMs = ref.map((m) => m.ms);
      const ratio = median(refMs) / median(ms);
      const perRound = median(refMs.map((x, i) => x / ms[i]));
      const cpuRatio = median(ref.map((m) => m.cpuMs)) / median(cpu);
      out[`${key}_speedup_vs_${refName}`] = { medians: +ratio.toFixed(2), per_round_median: +perRound.toFixed(2), cpu: +cpuRatio.toFixed(2) };
      line += `; ${ratio.toFixed(2)}x ${refName} (per-round median ${perRound.toFixed(2)}x, cpu ${cpuRatio.toFixed(2)}x)`;
    }
    console.log(line);
  }
}
out.load_end = loadavg()[0];
rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify(out));
