// A diverged run keeps its last good weights: the guard's verdicts from the
// figures, then a forced divergence (learning rate ramping to 1) whose kept
// checkpoint must be finite, never rotated away, and byte-equal to the
// weights of an identical run stopped at that step.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadCheckpoint } from "../src/train/checkpoint.ts";
import { resolveConfig, type TrainConfig } from "../src/train/config.ts";
import { DEFAULT_DIVERGENCE, judge } from "../src/train/divergence.ts";
import { train } from "../src/train/loop.ts";
import { gpuOrSkip, hasGpu } from "./helpers.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-divergence-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));

describe("the verdict from the figures", () => {
  test("non-finite or grown weights, and a gradient spike over the recent median, fail with the real figures; ordinary ones pass", () => {
    expect(judge(20, 19, 0.5, [0.4, 0.6, 0.5])).toBeNull();
    expect(judge(NaN, 19, 0.5, [])!.message).toBe("the weights hold non-finite values (L2 norm NaN; 19.00 when RL started)");
    expect(judge(Infinity, 19, NaN, [])!.what).toBe("weights");
    const grown = judge(200, 19, 0.5, [])!;
    expect([grown.what, grown.value, grown.reference]).toEqual(["weights", 200, 19]);
    expect(grown.message).toBe("the weights' L2 norm 200.0 is 10.53x its 19.00 when RL started (limit 10x)");
    expect(judge(190, 19, 0.5, [])).toBeNull(); // exactly at the limit passes
    const spike = judge(20, 19, 6e3, [0.4, 0.6, 0.5, 0])!;
    expect(spike.message).toBe("the gradient norm 6000 is 1.200e+4x the median 0.5000 of the last 3 steps (limit 10000x)");
    expect(judge(20, 19, 6e3, [0.4, 0.6])).toBeNull(); // too little history for a median
    expect(judge(20, 19, NaN, [0.4, 0.6, 0.5])).toBeNull(); // a skipped update: maxNonFinite's business, weights unchanged
    expect(DEFAULT_DIVERGENCE.maxWeightGrowth).toBe(10);
  });
});

function cfg(out: string, steps: number): TrainConfig {
  return resolveConfig("demo", [
    {
      source: "test",
      values: {
        out,
        model: "tiny:tiny",
        steps,
        promptsPerStep: 2,
        groupSize: 4,
        schedule: { kind: "constant", cap: 8 },
        warmStart: { steps: 0, batchSize: 4, lr: 3e-3 },
        validation: { problems: 2, n: 1 },
        // A checkpoint every step, only the newest kept: rotation as aggressive as it gets.
        checkpoint: { every: 1, keepLast: 1 },
        // lr ramps 0.1, 0.2, ... (warm-up to 1 over 10 steps): fine at first, then the weights blow up.
        optim: { lr: 1, warmupSteps: 10 },
      },
    },
  ]);
}

/** A random tiny model's groups all score 0: alternate 0/1 so updates move the weights. */
const signal = (_s: number, _r: number, _g: number, rewards: number[]) => rewards.map((r, i) => r + (i % 2));

describe.skipIf(!GPU)("a forced divergence", () => {
  test("stops before saving bad weights; the kept checkpoint is finite and byte-equal to an identical run stopped at that step", async () => {
    const gpu = await gpuOrSkip();
    const out = join(ROOT, "diverged");
    const logs: string[] = [];
    let err = "";
    try {
      await train(gpu, cfg(out, 12), { log: (s) => logs.push(s), hooks: { progress: false, rewards: signal } });
    } catch (e) {
      err = (e as Error).message;
    }
    const m = /^stopping at step (\d+): diverged: the weights' L2 norm ([\d.e+]+) is ([\d.e+]+)x its ([\d.e+]+) when RL started \(limit 10x\)\. Nothing was saved from these weights; the last good ones are in (\S+);/.exec(err);
    expect(m ? "matched" : err).toBe("matched");
    const [, stepText, norm, ratio, ref, kept] = m!;
    const step = Number(stepText);
    expect(step).toBeGreaterThanOrEqual(1); // some good steps first
    expect(Number(norm)).toBeGreaterThan(10 * Number(ref));
    expect(Number(ratio)).toBeCloseTo(Number(norm) / Number(ref), 1);
    expect(kept).toBe(join(out, "checkpoints", `step-${String(step).padStart(6, "0")}`));
    // Rotation kept it: nothing newer was written, nothing temporary left.
    expect(readdirSync(join(out, "checkpoints"))).toEqual([`step-${String(step).padStart(6, "0")}`]);
    const w = loadCheckpoint(kept).weights;
    for (const [name, t] of w) expect(t.every(Number.isFinite) ? name : `${name} has non-finite values`).toBe(name);

    // The same run asked for exactly `step` steps ends with the same bytes.
    const straight = join(ROOT, "straight");
    await train(gpu, cfg(straight, step), { log: () => {}, hooks: { progress: false, rewards: signal } });
    const want = loadCheckpoint(join(straight, "checkpoints", `step-${String(step).padStart(6, "0")}`)).weights;
    expect([...w.keys()]).toEqual([...want.keys()]);
    for (const [name, t] of w) expect(Buffer.from(t.buffer, t.byteOffset, t.byteLength).equals(Buffer.from(want.get(name)!.buffer, want.get(name)!.byteOffset, want.get(name)!.byteLength)) ? name : `${name} differs`).toBe(name);
    expect(existsSync(join(out, "run.lock"))).toBe(false);
  }, 240_000);
});
