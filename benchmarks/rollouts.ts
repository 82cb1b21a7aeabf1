/**
 * The rollout engine inside a short run of the default (demo) preset:
 * rollout tokens/s of the RL steps, GPU -> CPU readbacks per generated token,
 * decode occupancy (running sequences per decode step / max batch) and the
 * GPU memory the trainer allocates per RL step.
 *
 *   bun benchmarks/rollouts.ts [--root DIR] [--steps 6] [--warm 150] [--out DIR]
 *
 * `--root` runs another checkout's code (e.g. main before a change) the same
 * way, so two trees are compared in one session on one machine. Everything is
 * counted from outside: readbacks are calls to Gpu.read (the read of a
 * token/log-prob pair counts as two), allocations are the bytes of
 * Gpu.buffer calls, occupancy is counted at the engine's decode method (or
 * from its own counters where it has them). The last line of stdout is one
 * JSON object.
 */
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { root: { type: "string" }, steps: { type: "string", default: "6" }, warm: { type: "string", default: "150" }, out: { type: "string" } } });
const root = resolve(values.root ?? join(import.meta.dir, ".."));
const imp = async (p: string) => import(join(root, p));
const { Gpu } = await imp("src/gpu/index.ts");
const { Engine } = await imp("src/engine/generate.ts");
const { resolveConfig } = await imp("src/train/config.ts");
const trainer = await imp("src/train/loop.ts").catch(() => imp("src/train/trainer.ts"));

// ---- counters
let inGen = 0;
let reads = 0;
let genTokens = 0;
let decodeSteps = 0;
let decodeRows = 0;
let maxBatch = 0;
let allocated = 0;
const origRead = Gpu.prototype.read;
Gpu.prototype.read = function (...a: unknown[]) {
  if (inGen) reads++;
  return origRead.apply(this, a);
};
const origBuffer = Gpu.prototype.buffer;
Gpu.prototype.buffer = function (data: ArrayBufferView | number, ...rest: unknown[]) {
  allocated += typeof data === "number" ? data : data.byteLength;
  return origBuffer.call(this, data, ...rest);
};
const origGenerate = Engine.prototype.generate;
Engine.prototype.generate = async function* (this: { stats?: { decodeSteps: number; decodeRows: number }; opts: { maxBatch: number } }, ...a: unknown[]) {
  inGen++;
  maxBatch = this.opts.maxBatch;
  try {
    for await (const c of origGenerate.apply(this, a)) {
      genTokens += c.tokens.length;
      yield c;
    }
  } finally {
    inGen--;
    if (this.stats) {
      decodeSteps += this.stats.decodeSteps;
      decodeRows += this.stats.decodeRows;
    }
  }
};
// An engine without its own counters: one decode call is one step over all its rows.
const origDecode = Engine.prototype.decode;
Engine.prototype.decode = function (this: { stats?: unknown }, seqs: unknown[], ...a: unknown[]) {
  if (this.stats === undefined) {
    decodeSteps++;
    decodeRows += seqs.length;
  }
  return origDecode.call(this, seqs, ...a);
};

// ---- the run: demo preset, fewer warm-start steps, a few RL steps
const out = values.out ?? join(tmpdir(), `siri-rollouts-${process.pid}`);
rmSync(out, { recursive: true, force: true });
const cfg = resolveConfig("demo", [{ source: "bench", values: { out, steps: Number(values.steps), warmStart: { steps: Number(values.warm) } } }]);
const gpu = await Gpu.open();
const perStep: { step: number; tokens: number; reads: number; steps: number; rows: number; bytes: number }[] = [];
let mark = { tokens: 0, reads: 0, steps: 0, rows: 0, bytes: 0 };
const snapshot = () => ({ tokens: genTokens, reads, steps: decodeSteps, rows: decodeRows, bytes: allocated });
const res = await trainer.train(gpu, cfg, {
  log: () => {},
  hooks: {
    progress: false,
    // Called once per RL step after its rollouts: what happened since the previous call is that step's generation
    // (and, from the second step on, the previous step's update, sync, metrics and checkpoint).
    rollouts: (step: number) => {
      const now = snapshot();
      perStep.push({ step, tokens: now.tokens - mark.tokens, reads: now.reads - mark.reads, steps: now.steps - mark.steps, rows: now.rows - mark.rows, bytes: now.bytes - mark.bytes });
      mark = now;
    },
  },
});
const rl = res.metrics;
const tokens = rl.reduce((a: number, m: { rollout_tokens: number }) => a + m.rollout_tokens, 0);
const seconds = rl.reduce((a: number, m: { rollout_tokens: number; rollout_tokens_per_s: number }) => a + (m.rollout_tokens_per_s > 0 ? m.rollout_tokens / m.rollout_tokens_per_s : 0), 0);
const later = perStep.slice(1); // step 0's window includes the warm start and the start-of-run validation
const sum = (k: "tokens" | "reads" | "steps" | "rows" | "bytes") => later.reduce((a, s) => a + s[k], 0);
const result = {
  adapter: gpu.adapter.description,
  root,
  rl_steps: rl.length,
  rollout_tokens: tokens,
  rollout_tokens_per_s: Math.round(tokens / seconds),
  step_time_s_mean: +(rl.reduce((a: number, m: { step_time_s: number }) => a + m.step_time_s, 0) / rl.length).toFixed(3),
  readbacks_per_token: +(sum("reads") / sum("tokens")).toFixed(5),
  decode_occupancy: +(sum("rows") / sum("steps") / maxBatch).toFixed(4),
  max_batch: maxBatch,
  allocated_bytes_per_step: later.map((s) => s.bytes),
};
for (const [k, v] of Object.entries(result)) console.log(`${k.padEnd(26)} ${Array.isArray(v) ? v.join(" ") : v}`);
console.log(JSON.stringify(result));
rmSync(out, { recursive: true, force: true });
gpu.destroy();
