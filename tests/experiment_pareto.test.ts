// The Pareto experiment: statistics against hand computations, aggregation and
// outputs on hand-made evaluations, and `--quick` end to end on the GPU.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseSeeds } from "../src/commands/experiment.ts";
import { aggregate, evalStandardError, onlyKeysOf, paretoPlan, paretoPlotSvg, paretoTable, runConfig, runPareto, type CheckpointEval } from "../src/experiment/pareto.ts";
import { differenceSE, dominated, frontAccuracy, frontMargin, mean, meanSE, noiseBudget, sampleStd, standardError } from "../src/experiment/stats.ts";
import { capAt } from "../src/rl/schedule.ts";
import { DEMO } from "../src/train/config.ts";
import { readEvals, readMetrics } from "../src/train/metrics.ts";
import { expectClose, gpuOrSkip, hasGpu } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const ROOT = mkdtempSync(join(tmpdir(), "siri-pareto-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));
const { atol, rtol } = TOL.stats_f64;
const close = (got: number[], want: number[], what: string) => expectClose(got, want, atol, rtol, what);

describe("statistics (hand computations)", () => {
  test("mean, sample std (n - 1), standard error", () => {
    // [1, 2, 3, 4]: mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; s = sqrt(5/3); SE = s / 2.
    close([mean([1, 2, 3, 4]), sampleStd([1, 2, 3, 4]), standardError([1, 2, 3, 4])], [2.5, Math.sqrt(5 / 3), Math.sqrt(5 / 3) / 2], "[1,2,3,4]");
    // Two values a, b: s = |a - b| / sqrt(2), SE = |a - b| / 2.
    close([standardError([0.5, 0.7])], [0.1], "two values");
    // Three accuracies 0.30, 0.36, 0.27: mean 0.31; deviations -0.01, 0.05, -0.04; s^2 = 0.0042 / 2 = 0.0021.
    close([mean([0.3, 0.36, 0.27]), standardError([0.3, 0.36, 0.27])], [0.31, Math.sqrt(0.0021 / 3)], "three seeds");
    expect(Number.isNaN(standardError([0.4]))).toBe(true); // one seed: no spread to measure
    expect(Number.isNaN(mean([]))).toBe(true);
    expect(() => meanSE([0.1, NaN])).toThrow(/non-finite/);
    const m = meanSE([0.5, 0.7]);
    expect(m.n).toBe(2);
    expect(m.values).toEqual([0.5, 0.7]);
  });

  test("the baselines' front: chord between the two, flat beyond; margin; dominance", () => {
    const short = { tokens: 20, accuracy: 0.2 };
    const long = { tokens: 60, accuracy: 0.6 };
    // At 40 tokens the chord is half way: 0.4; at 30, a quarter: 0.3; beyond the ends, the ends' accuracies.
    close([frontAccuracy(short, long, 40), frontAccuracy(long, short, 30), frontAccuracy(short, long, 10), frontAccuracy(short, long, 80)], [0.4, 0.3, 0.2, 0.6], "front");
    close([frontMargin({ tokens: 40, accuracy: 0.5 }, short, long), frontMargin({ tokens: 30, accuracy: 0.25 }, short, long)], [0.1, -0.05], "margins");
    expect(dominated({ tokens: 30, accuracy: 0.15 }, [short, long])).toBe(true); // short is briefer and more accurate
    expect(dominated({ tokens: 30, accuracy: 0.25 }, [short, long])).toBe(false); // above short, briefer than long
    expect(dominated({ tokens: 20, accuracy: 0.2 }, [short, long])).toBe(false); // equal is not dominated
    expect(dominated({ tokens: 70, accuracy: 0.6 }, [short, long])).toBe(true); // as accurate as long, more tokens
  });

  test("one evaluation's standard error: binomial per problem over fixed problems", () => {
    // Problem a: 1 of 2 correct (p = 0.5, p(1-p)/n = 0.125); b: 2 of 2 (0); c: 0 of 4 (0). SE = sqrt(0.125) / 3.
    const recs = [
      { problem_id: "a", correct: true },
      { problem_id: "a", correct: false },
      { problem_id: "b", correct: true },
      { problem_id: "b", correct: true },
      ...[0, 1, 2, 3].map(() => ({ problem_id: "c", correct: false })),
    ];
    const s = evalStandardError(recs);
    close([s.se], [Math.sqrt(0.125) / 3], "eval SE");
    expect([s.problems, s.samples]).toEqual([3, 8]);
    expect(s.perProblem).toEqual([0.5, 1, 0]); // per problem, in the order of the ids
  });

  test("noise budget: a seed x problem fit splits the spread across seeds into evaluation and RL runs", () => {
    // Seeds agree on the mean (0.5 each) but swap which problem they solve: all spread is run x problem + sampling.
    // Residuals +-0.25 -> residual 4 * 0.0625 / 1 = 0.25; sampling p(1-p) n/(n-1) per cell 0, 0, 0.5, 0.5 -> 0.25;
    // interaction 0.25 - 0.25 / 2 = 0.125; evaluation SD sqrt(0.25 / 2); no run spread (seed means equal).
    const a = noiseBudget([[1, 0], [0.5, 0.5]], 2);
    close([a.seedSD, a.evalSD, a.runSD, a.interactionVar, a.sampleVar], [0, Math.sqrt(0.125), 0, 0.125, 0.25], "swapped problems");
    // Additive: seed 1 is 0.5 better on every problem; no residual, the spread is the runs' (sample var of 0.75, 0.25 = 0.125).
    const b = noiseBudget([[1, 0.5], [0.5, 0]], 2);
    close([b.seedSD, b.evalSD, b.runSD, b.interactionVar, b.sampleVar], [Math.sqrt(0.125), 0, Math.sqrt(0.125), 0, 0.25], "additive");
    expect([b.seeds, b.problems, b.n]).toEqual([2, 2, 2]);
    expect(() => noiseBudget([[0.5, 0.5]], 8)).toThrow(/2 seeds/);
    expect(() => noiseBudget([[0.5, 0.5], [0.5]], 8)).toThrow(/same 2 problems/);
    expect(() => noiseBudget([[0.5, 1.5], [0.5, 0.5]], 8)).toThrow(/\[0, 1\]/);
    expect(() => noiseBudget([[0.5, 0.5], [0.5, 0.5]], 1)).toThrow(/n >= 2/);
    // A difference's SE: (0.1^2 + 2 * 0.05 / 400 + 2 * 0.08 / (400 * 8)) / 4 = 0.002575.
    close([differenceSE({ runSD: 0.1, interactionVar: 0.05, sampleVar: 0.08, problems: 400, n: 8, seeds: 4 })], [Math.sqrt(0.002575)], "difference SE");
  });
});

describe("plan, aggregation, table and plot (hand-made evaluations)", () => {
  test("the plan: three arms of equal steps from one base, one evaluation for all", () => {
    const plan = paretoPlan({ preset: "demo", seeds: [1, 2, 3], out: "x", quick: false });
    expect(plan.arms.map((a) => [a.name, a.role])).toEqual([
      ["cosine", "siri"],
      ["const-96", "long"],
      ["const-32", "short"],
    ]);
    expect(plan.arms.map((a) => a.schedule)).toEqual([
      { kind: "cosine", lMax: 96, lMin: 32, period: 12 },
      { kind: "constant", cap: 96 },
      { kind: "constant", cap: 32 },
    ]);
    expect(plan.evaluation).toEqual({ problems: 100000, n: 8, temperature: 0.6, maxTokens: 96 });
    // The wide held-out set (382 problems), the demo's task otherwise.
    expect(plan.base.task).toEqual({ ...DEMO.task, maxOperand: 99, maxRight: 9 });
    expect(plan.base.warmStart).toEqual({ ...DEMO.warmStart, steps: 750 });
    const runs = plan.seeds.flatMap((s) => plan.arms.map((a) => runConfig(plan, "out", s, a)));
    for (const c of runs) {
      expect(c.steps).toBe(24);
      expect(c.model).toBe(resolve("out", "base"));
      expect(c.warmStart.steps).toBe(0);
      expect(c.validation).toEqual({ every: 0, problems: 100000, n: 8, temperature: 0.6, maxTokens: 96 });
      expect(c.task).toEqual(plan.base.task);
    }
    expect(runs.map((c) => c.out)).toContain(join("out", "seed-2", "const-32"));
    expect(paretoPlan({ preset: "demo", seeds: [1], out: "x", quick: false, stair: true }).arms.map((a) => a.name)).toEqual(["cosine", "const-96", "const-32", "stair"]);
    expect(() => paretoPlan({ preset: "demo", seeds: [], out: "x", quick: false })).toThrow(/--seeds/);
    expect(() => paretoPlan({ preset: "demo", seeds: [1, 1], out: "x", quick: false })).toThrow(/repeated/);
    expect(() => paretoPlan({ preset: "siri-1.5b", seeds: [1], out: "x", quick: false })).toThrow(/arith/);
    expect(() => paretoPlan({ preset: "demo", seeds: [1], out: "x", quick: false, n: 0 })).toThrow(/--n/);
    // A rerun ignores fields the trainer gained since the folder was made, and only those.
    expect(onlyKeysOf({ a: 1, b: { c: 2, d: false }, e: [1] }, { a: 0, b: { c: 0 }, e: [] })).toEqual({ a: 1, b: { c: 2 }, e: [1] });
    expect(parseSeeds("1, 2,3")).toEqual([1, 2, 3]);
    expect(() => parseSeeds("1,,2")).toThrow(/--seeds/);
    expect(() => parseSeeds("1,x")).toThrow(/--seeds/);
  });

  test("points: means ± SE across seeds; margins per seed against that seed's baselines", () => {
    const plan = paretoPlan({ preset: "demo", seeds: [1, 2], out: "x", quick: false });
    const ev = (seed: number, arm: string, label: string, step: number, accuracy: number, tokens: number): CheckpointEval => ({ seed, arm, label, step, cap: 0, accuracy, tokens, truncation: 0, evalSE: 0.02, problems: 2, samples: 16, perProblem: [accuracy, accuracy] });
    const evals = [
      ev(1, "cosine", "base", 0, 0.2, 50),
      ev(1, "cosine", "trough-cycle1", 6, 0.5, 40),
      ev(1, "const-96", "base", 0, 0.2, 50), // the same base again: counted once
      ev(1, "const-96", "final", 24, 0.6, 60),
      ev(1, "const-32", "final", 24, 0.2, 20),
      ev(2, "cosine", "base", 0, 0.3, 54),
      ev(2, "cosine", "trough-cycle1", 6, 0.3, 30),
      ev(2, "const-96", "final", 24, 0.5, 50),
      ev(2, "const-32", "final", 24, 0.3, 30),
    ];
    const pts = aggregate(plan, evals);
    expect(pts.map((p) => p.key)).toEqual(["base", "cosine/trough-cycle1", "const-96/final", "const-32/final"]);
    const [base, trough, long, short] = pts;
    close([base.accuracy.mean, base.accuracy.se, base.tokens.mean, base.tokens.se], [0.25, 0.05, 52, 2], "base");
    // Seed 1: front at 40 tokens = 0.4, margin +0.1 (not dominated). Seed 2: front at 30 = short's 0.3, margin 0 (equal: not dominated).
    close([trough.accuracy.mean, trough.accuracy.se, trough.margin!.mean, trough.margin!.se], [0.4, 0.1, 0.05, 0.05], "trough");
    expect(trough.dominatedIn).toBe(0);
    close([long.accuracy.mean, short.tokens.mean, trough.evalSE], [0.55, 25, 0.02], "baselines");
    expect(long.margin).toBeUndefined();

    const table = paretoTable(plan, pts);
    expect(table).toContain("| cosine trough-cycle1 | 6 | 0 | 2 | 40.0 ± 10.0 | 35.0 ± 5.0 | 0.0 ± 0.0 | 2.0 | 5.0 ± 5.0 | 0 of 2 |");
    expect(table).toContain("| base (warm start, before RL) | 0 | 0 | 2 | 25.0 ± 5.0 | 52.0 ± 2.0 |");
    expect(table).toContain("avg@8, temperature 0.6, budget 96 tokens");
    // Noise budget: seeds 0.5 and 0.3 on both problems alike: no residual, the whole SD (0.2 / sqrt(2)) is the runs';
    // sampling variance (0.25 + 0.21) / 2 * 8 / 7 with avg@8 (16 samples over 2 problems).
    expect(table).toContain("| cosine trough-cycle1 | 2 | 14.1 | 0.0 | 14.1 | 0.0000 | 0.2629 |");
    const svg = paretoPlotSvg(plan, pts, "t");
    expect(svg.match(/<circle data-key=/g)?.length).toBe(4);
    expect(svg.match(/class="err"/g)?.length).toBe(8); // vertical and horizontal bar per point
    expect(svg).toContain('class="front"');
    expect(() => paretoPlotSvg(plan, [{ ...trough, tokens: meanSE([NaN].filter(Number.isFinite)) }], "t")).toThrow(/non-finite/);
  });
});

const GPU = await hasGpu();

describe.skipIf(!GPU)("siri experiment pareto --quick (GPU)", () => {
  test(
    "runs every arm and seed from one base, evaluates every checkpoint alike, writes table/plot/json, continues on rerun",
    async () => {
      const gpu = await gpuOrSkip();
      const out = join(ROOT, "quick");
      const opts = { preset: "demo", seeds: [1, 2], out, quick: true, progress: false, log: () => {} };
      const r = await runPareto(gpu, opts);
      const plan = r.plan;
      expect(existsSync(join(out, "base", "config.json"))).toBe(true);
      // Every run: equal steps, the schedule's caps, the base as its model, the same evaluation budget and set.
      const expectedLabels: Record<string, string[]> = { cosine: ["start", "trough-cycle1", "peak-cycle1"], "const-24": ["start", "final"], "const-8": ["start", "final"] };
      for (const seed of plan.seeds) {
        for (const arm of plan.arms) {
          const dir = join(out, `seed-${seed}`, arm.name);
          const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
          expect([cfg.model, cfg.seed, cfg.warmStart.steps]).toEqual([resolve(out, "base"), seed, 0]);
          const m = readMetrics(join(dir, "metrics.jsonl"));
          expect(m.map((x) => x.cap)).toEqual([0, 1, 2, 3].map((t) => capAt(arm.schedule, t)));
          const evs = readEvals(join(dir, "evals.jsonl"));
          expect(evs.map((e) => e.label)).toEqual(expectedLabels[arm.name]);
          for (const e of evs) {
            expect(e.max_tokens).toBe(24);
            const samples = readFileSync(join(dir, "val", e.label, "samples.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
            expect(samples.length).toBe(4 * 2); // 4 held-out problems x avg@2
            expect(new Set(samples.map((s) => s.problem_id)).size).toBe(4);
            // The recorded accuracy and length are those of the samples (per-problem mean, then over problems; mean length).
            const acc = mean([...new Set(samples.map((s) => s.problem_id))].map((id) => mean(samples.filter((s) => s.problem_id === id).map((s) => (s.correct ? 1 : 0)))));
            close([e.accuracy, e.length_mean], [acc, mean(samples.map((s) => s.response_tokens))], `${dir} ${e.label}`);
          }
        }
      }
      // Aggregates: each point's mean and SE are those of the two seeds' recorded values (SE of two = |a - b| / 2).
      const keyOf = (seed: number, arm: string, label: string) => readEvals(join(out, `seed-${seed}`, arm, "evals.jsonl")).find((e) => e.label === label)!;
      expect(r.points.map((p) => p.key)).toEqual(["base", "cosine/trough-cycle1", "cosine/peak-cycle1", "const-24/final", "const-8/final"]);
      for (const p of r.points) {
        const [a, b] = [1, 2].map((s) => keyOf(s, p.role === "base" ? "cosine" : p.arm, p.role === "base" ? "start" : p.label));
        close([p.accuracy.mean, p.accuracy.se, p.tokens.mean, p.tokens.se], [(a.accuracy + b.accuracy) / 2, Math.abs(a.accuracy - b.accuracy) / 2, (a.length_mean + b.length_mean) / 2, Math.abs(a.length_mean - b.length_mean) / 2], p.key);
        expect(r.table).toContain(`| ${p.role === "base" ? "base (warm start, before RL)" : `${p.arm} ${p.label}`} | ${p.step} | ${p.cap} | 2 | ${(p.accuracy.mean * 100).toFixed(1)} ± ${(p.accuracy.se * 100).toFixed(1)} | ${p.tokens.mean.toFixed(1)} ± ${p.tokens.se.toFixed(1)} |`);
      }
      for (const p of r.points.filter((x) => x.role === "siri")) {
        const margins = [1, 2].map((s) => {
          const e = keyOf(s, "cosine", p.label);
          return frontMargin({ tokens: e.length_mean, accuracy: e.accuracy }, ...([keyOf(s, "const-24", "final"), keyOf(s, "const-8", "final")].map((x) => ({ tokens: x.length_mean, accuracy: x.accuracy })) as [never, never]));
        });
        close([p.margin!.mean, p.margin!.se], [mean(margins), Math.abs(margins[0] - margins[1]) / 2], `${p.key} margin`);
      }
      expect(readFileSync(join(out, "pareto.md"), "utf8")).toBe(r.table);
      expect(readFileSync(join(out, "pareto.svg"), "utf8")).toBe(r.svg);
      expect(r.svg.match(/<circle data-key=/g)?.length).toBe(r.points.length);
      expect(JSON.parse(readFileSync(join(out, "pareto.json"), "utf8")).points.length).toBe(r.points.length);

      // A rerun finds everything done: no run starts again, same outputs.
      const logs: string[] = [];
      const again = await runPareto(gpu, { ...opts, log: (s: string) => logs.push(s) });
      expect(logs.some((l) => /RL steps/.test(l))).toBe(false);
      expect(logs.some((l) => /reusing/.test(l))).toBe(true);
      expect(again.table).toBe(r.table);
      // Other settings in the same folder are refused.
      await expect(runPareto(gpu, { ...opts, n: 3 })).rejects.toThrow(/other settings/);
    },
    300_000,
  );
});
