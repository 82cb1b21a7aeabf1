/**
 * How long the Pareto experiment's warm start must be on the wide task
 * (src/tasks/arith.md, "The wide variant"), chosen before any RL run and
 * without the held-out split.
 *
 *   bun benchmarks/pareto_base.ts [--out /tmp/pareto-base] [--max 2000] [--every 250] [--target 0.3]
 *
 * Runs the experiment's warm start (`makeBase` of src/experiment/pareto.ts:
 * the same batches, optimiser and seed) for up to --max steps (default 2000); every --every
 * steps it measures greedy accuracy (budget L_max) on 256 problems of the
 * TRAINING split and saves the model as `<out>/step-K`. It stops at the first
 * K whose training accuracy reaches --target (0.3: the single-digit task's
 * base sat there, ~24% held-out and 30-40% on training problems), and prints
 * one line per K and a last JSON line. The rule was fixed before the run.
 * The optimiser's learning rate is constant after its warm-up, so step-K is
 * the model a K-step warm start makes: copy it to `<experiment out>/base`
 * and the experiment reuses it.
 */
import { parseArgs } from "node:util";
import { paretoPlan, makeBase } from "../src/experiment/pareto.ts";
import { Gpu } from "../src/gpu/index.ts";
import { loadTokenizer } from "../src/model/tokenizer.ts";
import { saveCheckpoint } from "../src/train/checkpoint.ts";
import { taskFor } from "../src/train/run_state.ts";
import { evaluate } from "../src/train/validation.ts";

const { values } = parseArgs({ options: { out: { type: "string", default: "/tmp/pareto-base" }, max: { type: "string", default: "2000" }, every: { type: "string", default: "250" }, target: { type: "string", default: "0.3" } } });
const max = Number(values.max);
const every = Number(values.every);
const target = Number(values.target);
if (!(Number.isInteger(max) && max >= 1 && Number.isInteger(every) && every >= 1 && target > 0 && target <= 1)) throw new Error("--max and --every must be integers >= 1, --target in (0, 1]");

const plan = paretoPlan({ preset: "demo", seeds: [1], out: values.out, quick: false });
plan.base.warmStart = { ...plan.base.warmStart, steps: max };
const gpu = await Gpu.open();
const adapter = gpu.adapter.description;
const rows: { step: number; trainAccuracy: number; meanLength: number; seconds: number }[] = [];
const t0 = performance.now();
await makeBase(gpu, plan, values.out, {
  progress: false,
  log: (s) => console.error(s),
  onStep: async (step, model, tokenizerDir) => {
    if (step % every !== 0) return;
    const tokenizer = loadTokenizer(tokenizerDir);
    const task = await taskFor(plan.base, tokenizer);
    const ev = await evaluate(gpu, model, tokenizer, task, task.sample(256, 4242), { cap: plan.lMax });
    await saveCheckpoint(`${values.out}/step-${step}`, model, null, { tokenizerDir, trainerState: { warm_start_steps: step, seed: plan.base.seed, preset: plan.base.preset, config: { ...plan.base, warmStart: { ...plan.base.warmStart, steps: step } } }, dtype: "F32" });
    rows.push({ step, trainAccuracy: ev.accuracy, meanLength: ev.meanLength, seconds: (performance.now() - t0) / 1000 });
    console.log(`step ${step}: greedy accuracy on 256 training problems ${(ev.accuracy * 100).toFixed(1)}%, mean length ${ev.meanLength.toFixed(1)}, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    return ev.accuracy >= target;
  },
});
gpu.destroy();
console.log(JSON.stringify({ adapter, target, chosen: rows.find((r) => r.trainAccuracy >= target)?.step ?? max, rows }));
