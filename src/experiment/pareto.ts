/**
 * SIRI's claim in miniature, as an experiment: from one warm-started base,
 * RL runs of equal step count with (a) the cosine schedule, (b) a constant
 * cap at L_max, (c) a constant cap at L_min (and optionally (d) stair), each
 * for several seeds; every checkpoint (the cosine run's troughs and peaks,
 * the baselines' ends, the base itself) evaluated on the same held-out set at
 * the same budget (L_max) with avg@n; then one SVG (held-out accuracy against
 * mean response tokens, error bars = standard error across seeds) and a
 * Markdown table (means ± SE across seeds, and each SIRI checkpoint's margin
 * over the baselines' front, per seed then averaged).
 *
 * Layout of the output folder:
 *   experiment.json        the settings (a rerun with other settings is refused)
 *   base/                  the warm-started model every run starts from (made once)
 *   seed-S/ARM/            one `siri train` run folder per seed and arm
 *   pareto.json, pareto.md, pareto.svg
 * A rerun of the same command skips the base and every finished run (a run
 * folder with done.json), so an interrupted experiment continues.
 *
 * Uses the trainer's public functions only (config, warm start, train).
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { formatDuration } from "../bench/progress.ts";
import { escapeXml, niceTicks, toPixel, type PanelLayout } from "../bench/plot.ts";
import type { Gpu } from "../gpu/index.ts";
import { vocabLimit } from "../model/tokenizer.ts";
import { capRange, type PeriodicSchedule, type Schedule } from "../rl/schedule.ts";
import { writeFileAtomic } from "../run/atomic.ts";
import { openWeights, saveCheckpoint } from "../train/checkpoint.ts";
import { resolveConfig, type TrainConfig } from "../train/config.ts";
import { train } from "../train/loop.ts";
import { EVALS_FILE, readEvals, readMetrics, METRICS_FILE, type EvalRecord } from "../train/metrics.ts";
import { TrainModel } from "../train/model.ts";
import { Optimizer } from "../train/optim.ts";
import { baseModel, firstDifference, taskFor } from "../train/run_state.ts";
import { warmStart } from "../train/warm_start.ts";
import { dominated, frontMargin, meanSE, noiseBudget, type MeanSE, type NoiseBudget } from "./stats.ts";

export interface ParetoOptions {
  preset: string;
  seeds: number[];
  out: string;
  /** A few steps and a tiny evaluation: checks the machinery, measures nothing. */
  quick: boolean;
  /** Add the stair schedule as a fourth arm. */
  stair?: boolean;
  /** Samples per held-out problem (avg@n); default 8 (quick: 2); see README "SIRI against constant caps" for the power arithmetic. */
  n?: number;
  /** RL steps per run; default the preset's (quick: 4). */
  steps?: number;
  progress?: boolean;
  log?: (s: string) => void;
}

export interface Arm {
  /** Folder name and key: "cosine", "const-96", "const-32", "stair". */
  name: string;
  /** Legend text. */
  title: string;
  schedule: Schedule;
  /** The baselines define the front; the others are compared against it. */
  role: "siri" | "long" | "short";
}

export interface ParetoPlan {
  /** The config every RL run derives from (warm start settings included). */
  base: TrainConfig;
  arms: Arm[];
  seeds: number[];
  lMax: number;
  lMin: number;
  /** The evaluation every checkpoint gets. */
  evaluation: { problems: number; n: number; temperature: number; maxTokens: number };
}

/**
 * The experiment's task: the preset's add/sub with the left operand 0..99 and
 * the right one 0..9 (src/tasks/arith.md, "The wide variant"): 382 held-out
 * problems instead of 30, traces as long as the single-digit ones.
 */
export const WIDE_TASK = { maxOperand: 99, maxRight: 9 } as const;

/**
 * The wide task's warm start: 750 steps (the demo's 350 leave held-out accuracy at ~6%).
 * Chosen by benchmarks/pareto_base.ts before any RL run: the first multiple of 250
 * steps with greedy accuracy >= 30% on 256 training problems (250: 0.8%, 500: 15.2%,
 * 750: 37.5%; SFT loss 0.089, the single-digit task's 350-step figure).
 */
export const WIDE_WARM_START_STEPS = 750;

/** The settings of an experiment; pure (no GPU, no files). */
export function paretoPlan(o: ParetoOptions): ParetoPlan {
  if (!o.seeds.length) throw new Error("--seeds: give at least one seed, e.g. 1,2,3");
  for (const s of o.seeds) if (!Number.isInteger(s) || s < 0 || s >= 2 ** 31) throw new Error(`--seeds: each seed must be an integer in 0..2^31-1, got ${s}`);
  if (new Set(o.seeds).size !== o.seeds.length) throw new Error(`--seeds: a seed is repeated (${o.seeds.join(",")})`);
  if (o.n !== undefined && !(Number.isInteger(o.n) && o.n >= 1)) throw new Error(`--n: expected an integer >= 1, got ${o.n}`);
  if (o.steps !== undefined && !(Number.isInteger(o.steps) && o.steps >= 1)) throw new Error(`--steps: expected an integer >= 1, got ${o.steps}`);
  const quick: Record<string, unknown> = o.quick
    ? {
        // Seconds per run: a few tokens per rollout, 2 prompts x 2 rollouts, 4 held-out problems.
        steps: 4,
        promptsPerStep: 2,
        groupSize: 2,
        schedule: { kind: "cosine", lMax: 24, lMin: 8, period: 4 },
        warmStart: { steps: 4, batchSize: 4, lr: 3e-3, warmupSteps: 0 },
      }
    : {};
  const preset = resolveConfig(o.preset, [
    { source: "experiment", values: { task: WIDE_TASK, warmStart: { steps: WIDE_WARM_START_STEPS } } },
    { source: o.quick ? "--quick" : "experiment", values: quick },
  ]);
  if (preset.task.kind !== "arith") throw new Error(`experiment pareto: preset ${o.preset} trains on a dataset; the experiment needs the arith task's held-out split and warm start (use --preset demo)`);
  const sched = preset.schedule;
  if (sched.kind === "constant" || sched.kind === "piecewise") throw new Error(`experiment pareto: preset ${o.preset} has a ${sched.kind} schedule; the experiment compares a periodic one against constant caps at its L_max and L_min`);
  const { max: lMax, min: lMin } = capRange(sched);
  if (lMax === lMin) throw new Error(`experiment pareto: L_max = L_min = ${lMax}; nothing to compare`);
  const steps = o.steps ?? preset.steps;
  const n = o.n ?? (o.quick ? 2 : 8);
  const evaluation = { problems: o.quick ? 4 : 100000, n, temperature: preset.validation.temperature, maxTokens: lMax };
  const base = resolveConfig(o.preset, [
    { source: "experiment", values: { task: WIDE_TASK, warmStart: { steps: WIDE_WARM_START_STEPS } } },
    { source: "experiment", values: quick },
    {
      source: "experiment",
      values: {
        steps,
        // Every checkpoint gets the same evaluation: all held-out problems, avg@n, budget L_max.
        validation: { every: 0, problems: evaluation.problems, n, temperature: evaluation.temperature, maxTokens: lMax },
        // Resume points only at the end (the trough/peak checkpoints are written as always).
        checkpoint: { every: steps, keepLast: 1, keepExtremes: 0 },
      },
    },
  ]);
  const periodic = sched as PeriodicSchedule;
  const arms: Arm[] = [
    { name: "cosine", title: `SIRI cosine ${lMax}↔${lMin}, T=${periodic.period}`, schedule: { ...periodic, kind: "cosine" }, role: "siri" },
    { name: `const-${lMax}`, title: `constant cap ${lMax} (L_max)`, schedule: { kind: "constant", cap: lMax }, role: "long" },
    { name: `const-${lMin}`, title: `constant cap ${lMin} (L_min)`, schedule: { kind: "constant", cap: lMin }, role: "short" },
  ];
  if (o.stair) arms.push({ name: "stair", title: `stair ${lMax}↔${lMin}, T=${periodic.period}`, schedule: { ...periodic, kind: "stair" }, role: "siri" });
  return { base, arms, seeds: [...o.seeds], lMax, lMin, evaluation };
}

/** The config of one RL run: the plan's, from the warm-started base, no warm start of its own. */
export function runConfig(plan: ParetoPlan, out: string, seed: number, arm: Arm): TrainConfig {
  return {
    ...structuredClone(plan.base),
    model: resolve(out, "base"),
    out: join(out, `seed-${seed}`, arm.name),
    seed,
    schedule: structuredClone(arm.schedule),
    warmStart: { ...plan.base.warmStart, steps: 0 },
  };
}

/**
 * The warm-started base: the preset's tiny model after its supervised warm
 * start, as the trainer does it before RL step 0 (same batches, same
 * optimiser settings), saved as a model folder (f32) in `<out>/base`.
 */
export async function makeBase(gpu: Gpu, plan: ParetoPlan, out: string, o: { progress: boolean; log: (s: string) => void; onStep?: (step: number, model: TrainModel, tokenizerDir: string) => Promise<boolean | void> }): Promise<void> {
  const dir = join(out, "base");
  if (existsSync(join(dir, "config.json"))) {
    o.log(`base: reusing ${dir}`);
    return;
  }
  const cfg: TrainConfig = { ...structuredClone(plan.base), out: join(out, "base-init") };
  const { dir: initDir, tokenizer } = baseModel(cfg); // the tiny model, made once in base-init/base
  const task = await taskFor(cfg, tokenizer);
  if (!task.warmStartBatches) throw new Error(`experiment pareto: task ${task.name} has no warm-start data`);
  const init = openWeights(initDir);
  const model = await TrainModel.create(gpu, init.config, (n) => init.reader.readF32(n), { vocabLimit: vocabLimit(init.config.vocabSize, tokenizer) }).finally(() => init.reader.close());
  try {
    model.reserve(cfg.policy.microBatchTokens);
    const opt = await Optimizer.create(gpu, model.params, { ...cfg.optim, lr: cfg.warmStart.lr, warmupSteps: cfg.warmStart.warmupSteps ?? 0 });
    try {
      let last = 0;
      const ws = await warmStart(model, opt, task.warmStartBatches(cfg.warmStart.batchSize, cfg.seed), {
        steps: cfg.warmStart.steps,
        microBatchTokens: cfg.policy.microBatchTokens,
        onProgress: async (p) => {
          if (o.progress && (p.step - last >= 50 || p.step === p.steps)) {
            last = p.step;
            o.log(`base: warm start ${p.step}/${p.steps}, loss ${p.loss.toFixed(3)}, ${formatDuration(p.seconds)}`);
          }
          // A caller's look at the model between steps (benchmarks/pareto_base.ts); true stops the warm start.
          return o.onStep ? await o.onStep(p.step, model, initDir) : undefined;
        },
      });
      o.log(`base: warm start ${ws.steps} steps in ${formatDuration(ws.seconds)}, loss ${ws.losses[0]?.toFixed(3)} -> ${ws.losses[ws.losses.length - 1]?.toFixed(3)}`);
      await saveCheckpoint(dir, model, null, { tokenizerDir: initDir, trainerState: { warm_start_steps: ws.steps, seed: cfg.seed, preset: cfg.preset, config: cfg }, dtype: "F32" });
    } finally {
      opt.destroy();
    }
  } finally {
    model.destroy();
  }
}

/** One evaluated checkpoint of one run. */
export interface CheckpointEval {
  seed: number;
  arm: string;
  /** "base" (the start), "trough-cycle1", "peak-cycle1", ..., or "final". */
  label: string;
  step: number;
  cap: number;
  accuracy: number;
  tokens: number;
  truncation: number;
  /** Binomial standard error of this one evaluation (fixed problems): sqrt(sum_i p_i (1 - p_i) / n_i) / N. */
  evalSE: number;
  problems: number;
  samples: number;
  /** Accuracy per held-out problem, in the order of the problems' ids (for the noise budget). */
  perProblem: number[];
}

/** One point of the plot: a checkpoint across seeds. */
export interface ParetoPoint {
  key: string; // "cosine/trough-cycle1"
  arm: string;
  label: string;
  role: Arm["role"] | "base";
  step: number;
  cap: number;
  accuracy: MeanSE;
  tokens: MeanSE;
  truncation: MeanSE;
  /** Root mean square of the per-seed evaluation SEs: the noise of one evaluation alone. */
  evalSE: number;
  /** SIRI checkpoints: accuracy minus the baselines' front at the same tokens, per seed. */
  margin?: MeanSE;
  /** SIRI checkpoints: in how many seeds a baseline dominates the point. */
  dominatedIn?: number;
  /** With 2+ seeds: how much of the spread across seeds the evaluation explains, and how much the RL runs. */
  noise?: NoiseBudget;
}

export interface ParetoResult {
  plan: ParetoPlan;
  evals: CheckpointEval[];
  points: ParetoPoint[];
  table: string;
  svg: string;
}

/** The evaluation SE of one validation folder's samples.jsonl (fixed problems, binomial per problem). */
export function evalStandardError(records: readonly { problem_id: string; correct: boolean }[]): { se: number; problems: number; samples: number; perProblem: number[] } {
  const byProblem = new Map<string, { c: number; n: number }>();
  for (const r of records) {
    const g = byProblem.get(r.problem_id) ?? { c: 0, n: 0 };
    g.c += r.correct ? 1 : 0;
    g.n += 1;
    byProblem.set(r.problem_id, g);
  }
  const N = byProblem.size;
  if (!N) return { se: NaN, problems: 0, samples: 0, perProblem: [] };
  let v = 0;
  for (const { c, n } of byProblem.values()) v += ((c / n) * (1 - c / n)) / n;
  const perProblem = [...byProblem.keys()].sort().map((k) => byProblem.get(k)!.c / byProblem.get(k)!.n);
  return { se: Math.sqrt(v) / N, problems: N, samples: records.length, perProblem };
}

function readSamples(dir: string): { problem_id: string; correct: boolean }[] {
  const path = join(dir, "samples.jsonl");
  if (!existsSync(path)) throw new Error(`experiment pareto: ${path} is missing (the validation of that checkpoint did not finish)`);
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

/** The checkpoints of one finished run, read back from its folder. */
export function readRun(runDir: string, seed: number, arm: Arm): CheckpointEval[] {
  const evals: EvalRecord[] = readEvals(join(runDir, EVALS_FILE));
  return evals
    .filter((e) => e.label === "start" || e.label === "final" || /^(trough|peak)-cycle\d+$/.test(e.label))
    .map((e) => {
      const s = evalStandardError(readSamples(join(runDir, "val", e.label)));
      return { seed, arm: arm.name, label: e.label === "start" ? "base" : e.label, step: e.step, cap: e.cap, accuracy: e.accuracy, tokens: e.length_mean, truncation: e.truncation_rate, evalSE: s.se, problems: s.problems, samples: s.samples, perProblem: s.perProblem };
    });
}

/** Points across seeds, with each SIRI checkpoint's margin over the same seed's baselines. */
export function aggregate(plan: ParetoPlan, evals: readonly CheckpointEval[]): ParetoPoint[] {
  const long = plan.arms.find((a) => a.role === "long")!;
  const short = plan.arms.find((a) => a.role === "short")!;
  const finalOf = (arm: Arm, seed: number) => evals.find((e) => e.arm === arm.name && e.seed === seed && e.label === "final");
  // The base is evaluated at the start of every run of a seed with the same sampling seed: one value per seed (the first arm's).
  const keyed = new Map<string, CheckpointEval[]>();
  for (const e of evals) {
    if (e.label === "base" && e.arm !== plan.arms[0].name) continue;
    const key = e.label === "base" ? "base" : `${e.arm}/${e.label}`;
    keyed.set(key, [...(keyed.get(key) ?? []), e]);
  }
  const points: ParetoPoint[] = [];
  for (const [key, es] of keyed) {
    const arm = plan.arms.find((a) => a.name === es[0].arm)!;
    const role = key === "base" ? "base" : arm.role;
    const p: ParetoPoint = {
      key,
      arm: key === "base" ? "base" : arm.name,
      label: es[0].label,
      role,
      step: es[0].step,
      cap: es[0].cap,
      accuracy: meanSE(es.map((e) => e.accuracy)),
      tokens: meanSE(es.map((e) => e.tokens)),
      truncation: meanSE(es.map((e) => e.truncation)),
      evalSE: Math.sqrt(es.reduce((a, e) => a + e.evalSE ** 2, 0) / es.length),
    };
    // The noise budget needs the same problems and samples in every seed (true of one experiment's evaluations).
    const n = Math.round(es[0].samples / Math.max(1, es[0].problems));
    if (es.length >= 2 && n >= 2 && es[0].problems >= 2 && es.every((e) => e.perProblem.length === es[0].problems && e.samples === es[0].samples)) p.noise = noiseBudget(es.map((e) => e.perProblem), n);
    if (role === "siri") {
      const margins: number[] = [];
      let dom = 0;
      for (const e of es) {
        const a = finalOf(long, e.seed);
        const b = finalOf(short, e.seed);
        if (!a || !b) continue; // that seed's baselines are not done yet
        const pt = { tokens: e.tokens, accuracy: e.accuracy };
        const base = [a, b].map((x) => ({ tokens: x.tokens, accuracy: x.accuracy }));
        margins.push(frontMargin(pt, base[0], base[1]));
        if (dominated(pt, base)) dom++;
      }
      if (margins.length) {
        p.margin = meanSE(margins);
        p.dominatedIn = dom;
      }
    }
    points.push(p);
  }
  const order = (p: ParetoPoint) => (p.role === "base" ? 0 : p.role === "siri" ? 1 : 2);
  return points.sort((a, b) => order(a) - order(b) || plan.arms.findIndex((x) => x.name === a.arm) - plan.arms.findIndex((x) => x.name === b.arm) || a.step - b.step);
}

/** "41.3 ± 2.1" (percent) or "41.3" when the SE is not defined (one seed). */
export function pm(m: MeanSE, scale: number, digits: number): string {
  const v = (m.mean * scale).toFixed(digits);
  return Number.isFinite(m.se) ? `${v} ± ${(m.se * scale).toFixed(digits)}` : v;
}

function pointName(p: ParetoPoint): string {
  return p.role === "base" ? "base (warm start, before RL)" : `${p.arm} ${p.label}`;
}

/** The Markdown table: one row per point, means ± SE across seeds. */
export function paretoTable(plan: ParetoPlan, points: readonly ParetoPoint[]): string {
  const e = plan.evaluation;
  const lines = [
    `Held-out accuracy (avg@${e.n}, temperature ${e.temperature}, budget ${e.maxTokens} tokens) and mean response tokens; mean ± standard error across seeds ${plan.seeds.join(", ")}.`,
    "Margin: accuracy minus the baselines' front (the chord between the two constant-cap runs' ends, flat beyond them) at the point's mean length, per seed, then mean ± SE.",
    "",
    "| checkpoint | step | cap | seeds | accuracy % | mean tokens | truncated % | eval SE (pts) | margin vs front (pts) | dominated |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const p of points) {
    const margin = p.margin ? pm(p.margin, 100, 1) : "-";
    const dom = p.dominatedIn !== undefined ? `${p.dominatedIn} of ${p.margin!.n}` : "-";
    lines.push(`| ${pointName(p)} | ${p.step} | ${p.cap} | ${p.accuracy.n} | ${pm(p.accuracy, 100, 1)} | ${pm(p.tokens, 1, 1)} | ${pm(p.truncation, 100, 1)} | ${(p.evalSE * 100).toFixed(1)} | ${margin} | ${dom} |`);
  }
  const noisy = points.filter((p) => p.noise);
  if (noisy.length) {
    lines.push(
      "",
      "Noise budget (points of accuracy): the SD of a checkpoint's accuracy across seeds, split into what the evaluation's finite problems and samples explain (sqrt(residual / N) of a seed x problem fit; it shrinks with more problems) and the rest, how differently the RL runs ended (only more seeds average it out).",
      "",
      "| checkpoint | seeds | SD across seeds | of it: evaluation | of it: RL runs | run x problem var | sample var |",
      "|---|---:|---:|---:|---:|---:|---:|",
    );
    for (const p of noisy) {
      const b = p.noise!;
      lines.push(`| ${pointName(p)} | ${b.seeds} | ${(b.seedSD * 100).toFixed(1)} | ${(b.evalSD * 100).toFixed(1)} | ${(b.runSD * 100).toFixed(1)} | ${b.interactionVar.toFixed(4)} | ${b.sampleVar.toFixed(4)} |`);
    }
  }
  return lines.join("\n") + "\n";
}

const COLORS: Record<string, string> = { base: "#7f7f7f", siri: "#d62728", long: "#1f77b4", short: "#2ca02c", stair: "#ff7f0e" };

function colorOf(p: { role: string; arm: string }): string {
  return p.arm === "stair" ? COLORS.stair : COLORS[p.role];
}

function shortLabel(p: ParetoPoint): string {
  if (p.role === "base") return "base";
  const m = /^(trough|peak)-cycle(\d+)$/.exec(p.label);
  if (m) return `${m[1] === "trough" ? "T" : "P"}${m[2]}`;
  return `cap ${p.cap}`;
}

/** Accuracy (%) against mean response tokens, error bars of ±1 SE on both axes, the baselines' front dashed. */
export function paretoPlotSvg(plan: ParetoPlan, points: readonly ParetoPoint[], title: string): string {
  for (const p of points) if (!Number.isFinite(p.accuracy.mean) || !Number.isFinite(p.tokens.mean)) throw new Error(`paretoPlotSvg: point ${p.key} has a non-finite value`);
  const W = 720;
  const H = 460;
  const se = (m: MeanSE) => (Number.isFinite(m.se) ? m.se : 0);
  const xs = points.flatMap((p) => [p.tokens.mean - se(p.tokens), p.tokens.mean + se(p.tokens)]);
  const ys = points.flatMap((p) => [100 * (p.accuracy.mean - se(p.accuracy)), 100 * (p.accuracy.mean + se(p.accuracy))]);
  const pad = (lo: number, hi: number, floor: number, ceil: number) => {
    const span = hi - lo || Math.max(Math.abs(hi) * 0.2, 1);
    return [Math.max(floor, lo - 0.08 * span), Math.min(ceil, hi + 0.08 * span)];
  };
  const [xMin, xMax] = pad(Math.min(...xs), Math.max(...xs), 0, Infinity);
  const [yMin, yMax] = pad(Math.min(...ys), Math.max(...ys), 0, 100);
  const panel: PanelLayout = { x0: 70, y0: 40, width: W - 70 - 250, height: H - 40 - 60, xMin, xMax, yMin, yMax };
  const px = (tokens: number, accPct: number) => toPixel(panel, tokens, accPct).map((v) => v.toFixed(1));
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
    `<rect x="${panel.x0}" y="${panel.y0}" width="${panel.width}" height="${panel.height}" fill="none" stroke="#333"/>`,
  ];
  for (const t of niceTicks(xMin, xMax)) {
    const [x] = px(t, yMin);
    out.push(`<line x1="${x}" y1="${panel.y0}" x2="${x}" y2="${panel.y0 + panel.height}" stroke="#eee"/>`, `<text x="${x}" y="${panel.y0 + panel.height + 16}" text-anchor="middle">${t}</text>`);
  }
  for (const t of niceTicks(yMin, yMax)) {
    const [, y] = px(xMin, t);
    out.push(`<line x1="${panel.x0}" y1="${y}" x2="${panel.x0 + panel.width}" y2="${y}" stroke="#eee"/>`, `<text x="${panel.x0 - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${t}</text>`);
  }
  out.push(
    `<text x="${panel.x0 + panel.width / 2}" y="${H - 22}" text-anchor="middle">mean response tokens (held-out, budget ${plan.evaluation.maxTokens})</text>`,
    `<text x="18" y="${panel.y0 + panel.height / 2}" text-anchor="middle" transform="rotate(-90 18 ${panel.y0 + panel.height / 2})">held-out accuracy % (avg@${plan.evaluation.n})</text>`,
  );
  // The baselines' front: the chord between the two constant-cap points (means across seeds).
  const long = points.find((p) => p.role === "long");
  const short = points.find((p) => p.role === "short");
  if (long && short) {
    const [x1, y1] = px(short.tokens.mean, 100 * short.accuracy.mean);
    const [x2, y2] = px(long.tokens.mean, 100 * long.accuracy.mean);
    out.push(`<line class="front" x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}" stroke="#555" stroke-dasharray="5,4"/>`);
  }
  // SIRI's checkpoints in order, joined by a thin line.
  for (const arm of plan.arms.filter((a) => a.role === "siri")) {
    const seq = points.filter((p) => p.arm === arm.name || (p.role === "base" && arm === plan.arms[0])).sort((a, b) => a.step - b.step);
    if (seq.length > 1) out.push(`<polyline fill="none" stroke="${colorOf({ role: "siri", arm: arm.name })}" stroke-opacity="0.35" points="${seq.map((p) => px(p.tokens.mean, 100 * p.accuracy.mean).join(",")).join(" ")}"/>`);
  }
  for (const p of points) {
    const c = colorOf(p);
    const [x, y] = px(p.tokens.mean, 100 * p.accuracy.mean);
    const [, yLo] = px(p.tokens.mean, 100 * (p.accuracy.mean - se(p.accuracy)));
    const [, yHi] = px(p.tokens.mean, 100 * (p.accuracy.mean + se(p.accuracy)));
    const [xLo] = px(p.tokens.mean - se(p.tokens), 0);
    const [xHi] = px(p.tokens.mean + se(p.tokens), 0);
    out.push(
      `<line class="err" x1="${x}" y1="${yLo}" x2="${x}" y2="${yHi}" stroke="${c}"/>`,
      `<line class="err" x1="${xLo}" y1="${y}" x2="${xHi}" y2="${y}" stroke="${c}"/>`,
      `<circle data-key="${escapeXml(p.key)}" cx="${x}" cy="${y}" r="4.5" fill="${c}"/>`,
      `<text x="${(Number(x) + 7).toFixed(1)}" y="${(Number(y) - 7).toFixed(1)}" fill="${c}">${escapeXml(shortLabel(p))}</text>`,
    );
  }
  // Legend.
  const lx = panel.x0 + panel.width + 16;
  let ly = panel.y0 + 8;
  const entries: [string, string][] = [["base (warm start)", COLORS.base], ...plan.arms.map((a): [string, string] => [a.title, colorOf({ role: a.role, arm: a.name })])];
  for (const [text, c] of entries) {
    out.push(`<circle cx="${lx + 5}" cy="${ly}" r="4.5" fill="${c}"/>`, `<text x="${lx + 16}" y="${ly + 4}">${escapeXml(text)}</text>`);
    ly += 20;
  }
  out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 12}" y2="${ly}" stroke="#555" stroke-dasharray="5,4"/>`, `<text x="${lx + 16}" y="${ly + 4}">baselines' front</text>`);
  ly += 20;
  out.push(
    `<text x="${lx}" y="${ly + 4}">T = trough (SIRI-low), P = peak</text>`,
    `<text x="${lx}" y="${ly + 22}">bars: ±1 SE across ${plan.seeds.length} seed(s)</text>`,
    `<text x="${lx}" y="${ly + 40}">${plan.evaluation.problems >= 1000 ? "all" : plan.evaluation.problems} held-out problems × ${plan.evaluation.n} samples</text>`,
  );
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** `now` without the object keys `like` does not have (recursively). */
export function onlyKeysOf(now: unknown, like: unknown): unknown {
  if (typeof now !== "object" || now === null || Array.isArray(now) || typeof like !== "object" || like === null || Array.isArray(like)) return now;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(now)) if (k in like) out[k] = onlyKeysOf(v, (like as Record<string, unknown>)[k]);
  return out;
}

function runDone(dir: string): boolean {
  return existsSync(join(dir, "done.json"));
}

/** Run (or continue) the experiment and write pareto.{json,md,svg} into `out`. */
export async function runPareto(gpu: Gpu, o: ParetoOptions): Promise<ParetoResult> {
  const log = o.log ?? ((s: string) => console.error(s));
  const progress = o.progress ?? true;
  const plan = paretoPlan(o);
  const out = o.out;
  // The settings that make runs comparable; a rerun must match them (the seed list may grow).
  const settings = { preset: o.preset, quick: o.quick, base: plan.base, arms: plan.arms, evaluation: plan.evaluation };
  const settingsPath = join(out, "experiment.json");
  if (existsSync(settingsPath)) {
    const old = JSON.parse(readFileSync(settingsPath, "utf8"));
    // Fields the trainer gained since the folder was made (absent there) are not differences.
    const diff = firstDifference(old, onlyKeysOf(JSON.parse(JSON.stringify(settings)), old));
    if (diff) throw new Error(`experiment pareto: ${out} holds an experiment with other settings (${diff}); pick another --out`);
  } else {
    mkdirSync(out, { recursive: true });
    writeFileAtomic(settingsPath, JSON.stringify(settings, null, 2) + "\n");
  }
  const t0 = performance.now();
  await makeBase(gpu, plan, out, { progress, log });
  const evals: CheckpointEval[] = [];
  for (const seed of plan.seeds) {
    for (const arm of plan.arms) {
      const cfg = runConfig(plan, out, seed, arm);
      if (!runDone(cfg.out)) {
        rmSync(cfg.out, { recursive: true, force: true }); // an unfinished run starts over
        const t = performance.now();
        log(`seed ${seed}, ${arm.name}: ${cfg.steps} RL steps (${formatDuration((performance.now() - t0) / 1000)} into the experiment)`);
        const r = await train(gpu, cfg, { hooks: { progress }, log });
        if (r.stopped !== "done") throw new Error(`experiment pareto: seed ${seed}, ${arm.name} stopped after ${r.stepsDone} steps; run the same command again to continue`);
        const steps = readMetrics(join(cfg.out, METRICS_FILE)).length;
        writeFileAtomic(join(cfg.out, "done.json"), JSON.stringify({ steps, seconds: (performance.now() - t) / 1000 }) + "\n");
      }
      evals.push(...readRun(cfg.out, seed, arm));
    }
  }
  const points = aggregate(plan, evals);
  const table = paretoTable(plan, points);
  const svg = paretoPlotSvg(plan, points, `SIRI vs constant caps (${o.preset}, wide arith${o.quick ? ", quick" : ""}): held-out accuracy against tokens`);
  writeFileAtomic(join(out, "pareto.json"), JSON.stringify({ plan, evals, points }, null, 2) + "\n");
  writeFileAtomic(join(out, "pareto.md"), table);
  writeFileAtomic(join(out, "pareto.svg"), svg);
  log(`experiment done in ${formatDuration((performance.now() - t0) / 1000)}; ${join(out, "pareto.md")}, pareto.svg, pareto.json`);
  return { plan, evals, points, table, svg };
}
