// The SIRI trainer: config and presets, metrics and plot, and short runs of the loop on a tiny model.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configFromArgs, splitOverrides } from "../src/commands/train.ts";
import { loadModel, sequenceLogits } from "../src/engine/load.ts";
import { QWEN2_1_5B } from "../src/model/config.ts";
import { loadTokenizer } from "../src/model/tokenizer.ts";
import { loadReferenceModel, referenceLogits } from "../src/model/reference.ts";
import { capAt } from "../src/rl/schedule.ts";
import { loadCheckpoint, readTrainerState } from "../src/train/checkpoint.ts";
import { DEMO, modelSource, oldLogpOf, parseOverride, readConfigFile, resolveConfig, SIRI_1_5B, type TrainConfig } from "../src/train/config.ts";
import { cycleRows, cycleTable, metricsSvg, readEvals, readMetrics, STEP_FIELDS, type StepMetrics } from "../src/train/metrics.ts";
import type { Rollout } from "../src/train/step.ts";
import { train } from "../src/train/loop.ts";
import { trainingMemoryPlan } from "../src/train/plan.ts";
import { firstDifference, resumeKey } from "../src/train/run_state.ts";
import { expectClose, gpuOrSkip, hasGpu } from "./helpers.ts";
import { TOL } from "./tolerances.ts";

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-trainer-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));

describe("config", () => {
  test("presets validate; siri-1.5b carries the paper's settings", () => {
    const c = resolveConfig("siri-1.5b", []);
    expect(c.promptsPerStep).toBe(128);
    expect(c.optim.lr).toBe(1e-6);
    expect([c.policy.epsLow, c.policy.epsHigh]).toEqual([0.2, 0.28]);
    expect(c.rollout.temperature).toBe(1);
    expect(c.schedule).toEqual({ kind: "cosine", lMax: 16384, lMin: 8192, period: 640 });
    expect(c.steps).toBe(3 * 640);
    expect(c.task).toMatchObject({ kind: "dataset", dataset: "deepscaler" });
    expect(resolveConfig("demo", []).model).toBe("tiny:tiny");
    // The preset objects are not changed by resolving.
    expect(SIRI_1_5B.promptsPerStep).toBe(128);
  });

  test("a missing model folder is an error naming it", () => {
    const c = resolveConfig("siri-1.5b", [{ source: "t", values: { model: join(ROOT, "no-such-model") } }]);
    expect(() => modelSource(c)).toThrow(/no-such-model has no config\.json; the siri-1\.5b preset expects a Hugging Face Qwen2 folder/);
  });

  test("`siri train --plan --preset siri-1.5b` without the model folder exits 0, saying where the model goes and how to get it", () => {
    const model = join(ROOT, "not-downloaded");
    const p = Bun.spawnSync([process.execPath, join(import.meta.dir, "../src/cli.ts"), "train", "--plan", "--preset", "siri-1.5b", "--model", model, "--out", join(ROOT, "plan-run")], { stdout: "pipe", stderr: "pipe" });
    const out = p.stdout.toString();
    expect(p.stderr.toString()).not.toContain("    at ");
    expect(p.exitCode).toBe(0);
    expect(out).toContain("memory plan for siri-1.5b");
    expect(out).toContain(`model: ${model} has no config.json`);
    expect(out).toContain(`huggingface-cli download deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --local-dir ${model}`);
    expect(existsSync(join(ROOT, "plan-run"))).toBe(false); // a plan writes nothing
  });

  test("a file and overrides merge over the preset; bad fields are named", () => {
    const toml = join(ROOT, "run.toml");
    writeFileSync(toml, `steps = 7\n[policy]\nepsHigh = 0.3\n[dapo]\ndynamicSampling = true\n[schedule]\nkind = "constant"\ncap = 40\n`);
    const c = resolveConfig("demo", [{ source: "file", values: readConfigFile(toml) }]);
    expect(c.steps).toBe(7);
    expect(c.policy.epsHigh).toBe(0.3);
    expect(c.policy.epsLow).toBe(DEMO.policy.epsLow);
    expect(c.dapo.dynamicSampling).toBe(true);
    expect(c.schedule).toEqual({ kind: "constant", cap: 40 });
    const json = join(ROOT, "run.json");
    writeFileSync(json, JSON.stringify({ policy: { epsHihg: 0.3 } }));
    expect(() => resolveConfig("demo", [{ source: "config file run.json", values: readConfigFile(json) }])).toThrow(/config file run\.json: unknown field "policy\.epsHihg"/);
    expect(() => resolveConfig("demo", [{ source: "flags", values: { steps: "ten" } }])).toThrow(/flags: steps must be a number/);
    expect(() => resolveConfig("demo", [{ source: "flags", values: { groupSize: 1 } }])).toThrow(/groupSize must be an integer >= 2/);
    expect(() => resolveConfig("demo", [{ source: "f", values: { schedule: { kind: "cosine", lMax: 8, lMin: 16, period: 4 } } }])).toThrow(/l_min \(16\) must not exceed l_max \(8\)/);
    expect(() => resolveConfig("nope", [])).toThrow(/unknown preset "nope"/);
    expect(parseOverride("dapo.overlongFilter=true", DEMO)).toEqual({ dapo: { overlongFilter: true } });
    // Dual-clip and truncated IS: a number, or null / false for off (TOML has no null).
    expect(resolveConfig("demo", []).policy).toMatchObject({ clipRatioC: 3, tisCap: null });
    expect(parseOverride("policy.clipRatioC=null", DEMO)).toEqual({ policy: { clipRatioC: null } });
    expect(parseOverride("policy.tisCap=2", DEMO)).toEqual({ policy: { tisCap: 2 } });
    expect(resolveConfig("demo", [{ source: "f", values: { policy: { clipRatioC: false, tisCap: 2 } } }]).policy).toMatchObject({ clipRatioC: null, tisCap: 2 });
    expect(() => parseOverride("policy.tisCap=big", DEMO)).toThrow(/--set: policy\.tisCap must be a number, or null \/ false for off/);
    expect(() => resolveConfig("demo", [{ source: "f", values: { policy: { clipRatioC: "3" } } }])).toThrow(/f: policy\.clipRatioC must be a number, or null/);
    expect(() => resolveConfig("demo", [{ source: "f", values: { policy: { clipRatioC: 1 } } }])).toThrow(/policy\.clipRatioC must be > 1/);
    expect(() => resolveConfig("demo", [{ source: "f", values: { policy: { tisCap: 0.5 } } }])).toThrow(/policy\.tisCap must be >= 1/);
    // The arith task's right operand: null = as the left one, else 1..maxOperand (the experiment's wide variant: 99 and 9).
    expect(resolveConfig("demo", []).task.maxRight).toBeNull();
    expect(parseOverride("task.maxRight=9", DEMO)).toEqual({ task: { maxRight: 9 } });
    expect(resolveConfig("demo", [{ source: "f", values: { task: { maxOperand: 99, maxRight: 9 } } }]).task).toMatchObject({ maxOperand: 99, maxRight: 9 });
    expect(() => resolveConfig("demo", [{ source: "f", values: { task: { maxRight: 10 } } }])).toThrow(/task\.maxRight must be null or an integer in 1\.\.task\.maxOperand/);
    expect(parseOverride("optim.lr=1e-4", DEMO)).toEqual({ optim: { lr: 1e-4 } });
    expect(() => parseOverride("optim.lr=fast", DEMO)).toThrow(/--set optim\.lr: expected a number/);
    expect(() => parseOverride("dapo.overlongFilter=yes", DEMO)).toThrow(/expected true or false/);
    expect(splitOverrides('a.b=1,schedule={"kind":"constant","cap":4},c=x')).toEqual(["a.b=1", 'schedule={"kind":"constant","cap":4}', "c=x"]);
    // Bounded staleness: k >= 0; the ratio's old log-probs follow it ("auto"), truncated IS only against recomputed ones.
    expect([0, 1].map((k) => oldLogpOf(resolveConfig("demo", [{ source: "f", values: { dist: { staleness: k } } }])))).toEqual(["recompute", "rollout"]);
    expect(oldLogpOf(resolveConfig("demo", [{ source: "f", values: { dist: { staleness: 2 }, policy: { oldLogp: "recompute", tisCap: 2 } } }]))).toBe("recompute");
    expect(() => resolveConfig("demo", [{ source: "f", values: { dist: { staleness: 1.5 } } }])).toThrow(/config: dist\.staleness \(--staleness\) must be an integer >= 0/);
    expect(() => resolveConfig("demo", [{ source: "f", values: { policy: { oldLogp: "behaviour" } } }])).toThrow(/policy\.oldLogp must be auto, recompute or rollout/);
    expect(() => resolveConfig("demo", [{ source: "f", values: { dist: { staleness: 1 }, policy: { tisCap: 2 } } }])).toThrow(/policy\.tisCap must be null when the old log-probs are the rollouts' own/);
    // A checkpoint from before bounded staleness (no dist, no policy.oldLogp) resumes under today's defaults, not under staleness 1.
    const { dist: _dist, ...withoutDist } = DEMO;
    const { oldLogp: _oldLogp, ...policyBefore } = DEMO.policy;
    const before = { ...withoutDist, policy: policyBefore } as unknown as TrainConfig;
    expect(firstDifference(resumeKey(before), resumeKey(DEMO))).toBeNull();
    expect(firstDifference(resumeKey(before), resumeKey({ ...DEMO, dist: { staleness: 1 } }))).toBe('policy.oldLogp ("recompute" vs "rollout")');
    expect(configFromArgs({ broker: "redis://h:1", staleness: "2" }).dist.staleness).toBe(2);
    expect(() => configFromArgs({ staleness: "1" })).toThrow(/--staleness: needs --broker/);
    expect(() => configFromArgs({ broker: "redis://h:1", staleness: "-1" })).toThrow(/--staleness: expected an integer >= 0/);
  });

  test("memory plan from the shapes", () => {
    const c = resolveConfig("siri-1.5b", []);
    const plan = trainingMemoryPlan(QWEN2_1_5B, c, "f16");
    const get = (re: RegExp) => plan.find((r) => re.test(r.what))!.bytes;
    const T = c.policy.microBatchTokens;
    const P = 1_777_088_000; // DeepSeek-R1-Distill-Qwen-1.5B (untied head)
    expect(get(/^parameters/)).toBe(4 * P);
    expect(get(/^gradients/)).toBe(4 * P);
    expect(get(/^AdamW/)).toBe(8 * P);
    expect(get(/^layer inputs/)).toBe(T * QWEN2_1_5B.hiddenSize * 4 * (QWEN2_1_5B.numLayers + 1));
    expect(get(/^logits/)).toBe(2 * Math.min(T, 1024) * QWEN2_1_5B.vocabSize * 4);
    // 64 sequences of (512 prompt + 16384) tokens, 28 layers x K,V x 2 kv heads x 128 x f16.
    expect(get(/KV cache/)).toBe(28 * 2 * 2 * 128 * 2 * 64 * (512 + 16384));
  });
});

describe("metrics", () => {
  const row = (step: number, cap: number, len: number, acc: number, phase: string, cycle: number): StepMetrics =>
    ({ ...Object.fromEntries(STEP_FIELDS.map((f) => [f, 0])), step, cap, length_mean: len, accuracy: acc, phase, cycle, skipped: false, mismatch_logp_abs_mean: NaN, mismatch_logp_abs_max: NaN }) as StepMetrics;
  test("per-cycle rows average each phase and pick the validation at its end", () => {
    const rows = [row(0, 100, 80, 0.5, "compression", 0), row(1, 60, 50, 0.7, "compression", 0), row(2, 60, 40, 0.6, "expansion", 0), row(3, 100, 60, 0.8, "expansion", 0)];
    const evals = [{ step: 2, label: "trough-cycle1", cap: 60, accuracy: 0.75, length_mean: 45, truncation_rate: 0, max_tokens: 100 }];
    const c = cycleRows(rows, evals);
    expect(c.map((r) => [r.cycle, r.phase, r.steps, r.cap, r.length_mean])).toEqual([
      [1, "compression", "0-1", 80, 65],
      [1, "expansion", "2-3", 80, 50],
    ]);
    expect(c[0].accuracy).toBeCloseTo(0.6, 12);
    expect(c[0].eval?.label).toBe("trough-cycle1");
    expect(c[1].eval).toBeUndefined();
    expect(cycleTable(rows, evals)).toContain("| 1 | compression | 0-1 | 80.0 | 65.0 | 60.0% | trough-cycle1 | 75.0% | 45.0 |");
    const svg = metricsSvg(rows, evals);
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg.match(/<path /g)!.length).toBe(3); // cap, length, accuracy
    expect(svg).toContain("trough-cycle1: 75.0% at 45.0 tokens");
    expect(svg).not.toContain("|Δ log p|"); // no mismatch figures (NaN): no strip
    // With the rollout/trainer mismatch figures, a strip below: max and mean |Δ log p| on a log axis.
    const mm = rows.map((r, i) => ({ ...r, mismatch_logp_abs_mean: 1e-4 * (i + 1), mismatch_logp_abs_max: 1e-2 * (i + 1) }));
    const withStrip = metricsSvg(mm, evals);
    expect(withStrip.match(/<path /g)!.length).toBe(5);
    expect(withStrip).toContain("rollout vs trainer |Δ log p| per step");
    expect(withStrip).toContain(">1e-4<");
    expect(withStrip).toContain(">1e-1<");
  });
});

/** A few-second run: 2 prompts x 4 rollouts per step, caps of a few tokens, 4 held-out problems. */
function tiny(out: string, over: Record<string, unknown> = {}): TrainConfig {
  return resolveConfig("demo", [
    {
      source: "test",
      values: {
        out,
        model: "tiny:tiny",
        steps: 4,
        promptsPerStep: 2,
        groupSize: 4,
        schedule: { kind: "cosine", lMax: 16, lMin: 8, period: 4 },
        warmStart: { steps: 0, batchSize: 4, lr: 3e-3 },
        validation: { problems: 4 },
        checkpoint: { every: 2, keepLast: 2 },
        optim: { lr: 3e-3 },
        ...over,
      },
    },
  ]);
}

const quiet = { log: () => {} };

/**
 * A random tiny model never answers correctly, so every group's rewards are
 * equal and the gradient is zero; this adds 0/1 by position in the group so
 * updates really move the weights (the task's reward still comes first).
 */
const signal = (_step: number, _round: number, _group: number, rewards: number[]) => rewards.map((r, i) => r + (i % 2));

async function weightsOf(dir: string): Promise<Map<string, Float32Array>> {
  return loadCheckpoint(dir).weights;
}

function sameBytes(a: Map<string, Float32Array>, b: Map<string, Float32Array>): boolean {
  if (a.size !== b.size) return false;
  for (const [n, w] of a) if (!Buffer.from(w.buffer, w.byteOffset, w.byteLength).equals(Buffer.from(b.get(n)!.buffer, b.get(n)!.byteOffset, b.get(n)!.byteLength))) return false;
  return true;
}

describe.skipIf(!GPU)("training runs", () => {
  test("end to end: caps follow the schedule, every metric field, checkpoints at trough and peak, plot and table", async () => {
    const gpu = await gpuOrSkip();
    const out = join(ROOT, "e2e");
    const cfg = tiny(out, { warmStart: { steps: 2, batchSize: 4, lr: 3e-3 } });
    const r = await train(gpu, cfg, { ...quiet, hooks: { progress: false, rewards: signal } });
    expect(r.stopped).toBe("done");
    const rows = readMetrics(join(out, "metrics.jsonl"));
    expect(rows.map((m) => m.step)).toEqual([0, 1, 2, 3]);
    for (const m of rows) {
      for (const f of STEP_FIELDS) expect(m[f] === undefined ? `${f} missing at step ${m.step}` : "ok").toBe("ok");
      expect(m.cap).toBe(capAt(cfg.schedule, m.step));
      expect(m.length_max).toBeLessThanOrEqual(m.cap);
      expect(m.length_mean).toBeGreaterThan(0);
      expect(m.rollouts).toBe(8);
      expect(m.skipped).toBe(false);
      expect(Number.isFinite(m.loss) && Number.isFinite(m.grad_norm) && m.grad_norm > 0).toBe(true);
      expect(m.rollout_tokens_per_s).toBeGreaterThan(0);
      expect(m.step_time_s).toBeGreaterThan(0);
      expect(m.truncation_rate).toBeGreaterThanOrEqual(0);
      expect(m.truncation_rate).toBeLessThanOrEqual(1);
      // The sampler's and the trainer's log-probs of the same tokens (f32 both here): close, not identical kernels.
      expect(m.mismatch_logp_abs_max).toBeGreaterThanOrEqual(m.mismatch_logp_abs_mean);
      expect(m.mismatch_logp_abs_max).toBeLessThan(1e-3);
      expect(m.mismatch_ratio_max).toBeGreaterThanOrEqual(1);
      expect(m.mismatch_ratio_min).toBeLessThanOrEqual(1);
      expect(m.tis_weight_mean).toBe(1); // truncated IS off by default
      expect(m.pg_clipfrac).toBeCloseTo(m.clip_frac_low + m.clip_frac_high, 12);
    }
    expect(rows.map((m) => m.cap)).toEqual([16, 12, 8, 12]);
    expect(rows.map((m) => m.phase)).toEqual(["compression", "compression", "expansion", "expansion"]);
    const ck = join(out, "checkpoints");
    for (const n of ["step-000004", "trough-cycle1", "peak-cycle1"]) expect(existsSync(join(ck, n, "model.safetensors")) ? n : `${n} missing`).toBe(n);
    expect(existsSync(join(ck, "step-000000"))).toBe(false); // pruned: keepLast 2 keeps step-2 and step-4
    expect(existsSync(join(ck, "step-000002"))).toBe(true);
    expect(JSON.parse(readFileSync(join(ck, "trough-cycle1", "training_state", "trainer_state.json"), "utf8")).step).toBe(2);
    // Resume state only where resuming needs it: step-N has the optimiser, trough/peak do not; nothing but the model at the top.
    expect(existsSync(join(ck, "step-000004", "training_state", "optimizer.safetensors"))).toBe(true);
    expect(existsSync(join(ck, "trough-cycle1", "training_state", "optimizer.safetensors"))).toBe(false);
    for (const n of ["step-000004", "trough-cycle1", "peak-cycle1"]) expect(readdirSync(join(ck, n)).filter((f) => f.endsWith(".safetensors"))).toEqual(["model.safetensors"]);
    expect(r.evals.map((e) => e.label)).toEqual(["start", "trough-cycle1", "peak-cycle1"]);
    expect(readFileSync(join(out, "plot.svg"), "utf8")).toContain("<path ");
    expect(r.table).toContain("| 1 | compression | 0-1 | 14.0 |");
    // The trough checkpoint is the weights after step 2, distinct from the final ones.
    expect(sameBytes(await weightsOf(join(ck, "trough-cycle1")), await weightsOf(join(ck, "step-000002")))).toBe(true);
    expect(sameBytes(await weightsOf(join(ck, "trough-cycle1")), await weightsOf(join(ck, "step-000004")))).toBe(false);

    // The checkpoint is a Hugging Face folder: the engine's loader and the CPU reference agree on it.
    const dir = join(ck, "step-000004");
    const ref = loadReferenceModel(dir);
    const m = await loadModel(gpu, dir, "f32");
    const tokens = m.tokenizer.encode("Compute 3+4.");
    expectClose(await sequenceLogits(m.model, tokens), referenceLogits(ref.weights, ref.config, tokens), TOL.model_logits_f32.atol, TOL.model_logits_f32.rtol, "logits of the trained checkpoint");
    m.model.destroy();
  }, 180_000);

  test("stop (Ctrl-C) and resume gives byte-identical weights to an uninterrupted run", async () => {
    const gpu = await gpuOrSkip();
    const over = { steps: 3, warmStart: { steps: 1, batchSize: 4, lr: 3e-3 }, checkpoint: { every: 10, keepLast: 2 } };
    const a = tiny(join(ROOT, "straight"), over);
    await train(gpu, a, { ...quiet, hooks: { progress: false, rewards: signal } });
    const b = tiny(join(ROOT, "resumed"), over);
    const first = await train(gpu, b, { ...quiet, hooks: { progress: false, rewards: signal, stopAtStep: 0 } });
    expect(first.stopped).toBe("interrupted");
    expect(first.stepsDone).toBe(1);
    expect(first.lastCheckpoint).toBe(join(b.out, "checkpoints", "step-000001"));
    await expect(train(gpu, b, quiet)).rejects.toThrow(/already holds checkpoints; pass --resume/);
    const second = await train(gpu, b, { ...quiet, resume: true, hooks: { progress: false, rewards: signal } });
    expect(second.stepsDone).toBe(3);
    const wa = await weightsOf(join(a.out, "checkpoints", "step-000003"));
    const wb = await weightsOf(join(b.out, "checkpoints", "step-000003"));
    expect(sameBytes(wa, wb)).toBe(true);
    expect(sameBytes(wb, await weightsOf(join(b.out, "checkpoints", "step-000001")))).toBe(false); // the resumed steps did train
    // The resumed run logged each step once, with the same rollouts as the uninterrupted one.
    const ma = readMetrics(join(a.out, "metrics.jsonl"));
    const mb = readMetrics(join(b.out, "metrics.jsonl"));
    expect(mb.map((m) => m.step)).toEqual([0, 1, 2]);
    expect(mb.map((m) => [m.cap, m.rollout_tokens, m.reward_mean, m.loss])).toEqual(ma.map((m) => [m.cap, m.rollout_tokens, m.reward_mean, m.loss]));
    // A changed setting is refused on resume.
    const c = tiny(b.out, { ...over, steps: 4, optim: { lr: 1e-2 } });
    await expect(train(gpu, c, { ...quiet, resume: true })).rejects.toThrow(/trained with another config: optim\.lr/);
  }, 240_000);

  test("f16-mixed: stop and resume restores the loss scale and gives the bytes of an uninterrupted run", async () => {
    const gpu = await gpuOrSkip();
    // growthInterval 1: the scale doubles after every clean update, so a resume that lost it would end lower.
    const over = { steps: 2, precision: "f16-mixed", lossScale: { init: 1024, growthInterval: 1 }, checkpoint: { every: 10, keepLast: 2 } };
    const a = tiny(join(ROOT, "mixed-straight"), over);
    await train(gpu, a, { ...quiet, hooks: { progress: false, rewards: signal } });
    const b = tiny(join(ROOT, "mixed-resumed"), over);
    const first = await train(gpu, b, { ...quiet, hooks: { progress: false, rewards: signal, stopAtStep: 0 } });
    expect(first.stepsDone).toBe(1);
    const state = (dir: string, step: string) => JSON.parse(readFileSync(join(dir, "checkpoints", step, "training_state", "trainer_state.json"), "utf8"));
    expect(state(b.out, "step-000001").loss_scale).toEqual({ scale: 2048, clean: 0 });
    await train(gpu, b, { ...quiet, resume: true, hooks: { progress: false, rewards: signal } });
    expect(state(a.out, "step-000002").loss_scale).toEqual({ scale: 4096, clean: 0 });
    expect(state(b.out, "step-000002").loss_scale).toEqual({ scale: 4096, clean: 0 });
    expect(sameBytes(await weightsOf(join(a.out, "checkpoints", "step-000002")), await weightsOf(join(b.out, "checkpoints", "step-000002")))).toBe(true);
  }, 240_000);

  test("Ctrl-C in the warm start: a checkpoint at that warm-start step; --resume finishes it with the bytes of an uninterrupted run", async () => {
    const gpu = await gpuOrSkip();
    const over = { steps: 1, schedule: { kind: "constant", cap: 8 }, warmStart: { steps: 4, batchSize: 2, lr: 3e-3, warmupSteps: 2 }, checkpoint: { every: 10, keepLast: 2 } };
    const a = tiny(join(ROOT, "warm-straight"), over);
    await train(gpu, a, { ...quiet, hooks: { progress: false, rewards: signal } });
    const b = tiny(join(ROOT, "warm-resumed"), over);
    const first = await train(gpu, b, { ...quiet, hooks: { progress: false, rewards: signal, stopAtWarmStep: 2 } });
    expect([first.stopped, first.stepsDone, first.lastCheckpoint]).toEqual(["interrupted", 0, join(b.out, "checkpoints", "step-000000")]);
    const st = readTrainerState(join(b.out, "checkpoints", "step-000000"))!;
    expect([st.step, st.warm_start_step]).toEqual([0, 2]);
    const logs: string[] = [];
    await train(gpu, b, { log: (s) => logs.push(s), resume: true, hooks: { progress: false, rewards: signal } });
    expect(logs.some((l) => /at warm-start step 2 of 4/.test(l) )).toBe(true);
    expect(logs.some((l) => /^warm start: 2 steps in/.test(l))).toBe(true);
    expect(sameBytes(await weightsOf(join(a.out, "checkpoints", "step-000001")), await weightsOf(join(b.out, "checkpoints", "step-000001")))).toBe(true);
    expect(readEvals(join(b.out, "evals.jsonl")).map((e) => e.label)).toEqual(readEvals(join(a.out, "evals.jsonl")).map((e) => e.label));
  }, 240_000);

  test("resuming from the step-0 checkpoint does not redo the start validation or its record", async () => {
    const gpu = await gpuOrSkip();
    const cfg = tiny(join(ROOT, "step0"), { steps: 1, schedule: { kind: "constant", cap: 8 }, checkpoint: { every: 10, keepLast: 3 } });
    await train(gpu, cfg, { ...quiet, hooks: { progress: false, rewards: signal } });
    // As if killed right after the step-0 checkpoint: only it remains.
    rmSync(join(cfg.out, "checkpoints", "step-000001"), { recursive: true });
    const logs: string[] = [];
    await train(gpu, cfg, { log: (s) => logs.push(s), resume: true, hooks: { progress: false, rewards: signal } });
    expect(logs.some((l) => /^validation start/.test(l))).toBe(false);
    expect(readEvals(join(cfg.out, "evals.jsonl")).map((e) => e.label)).toEqual(["start", "final"]);
    expect(readMetrics(join(cfg.out, "metrics.jsonl")).map((m) => m.step)).toEqual([0]);
  }, 240_000);

  test("DAPO options: dynamic sampling drops equal-reward groups, overlong filter masks cut responses, soft punishment", async () => {
    const gpu = await gpuOrSkip();
    const cap = 6;
    const cfg = tiny(join(ROOT, "dapo"), {
      steps: 2,
      schedule: { kind: "constant", cap },
      dapo: { dynamicSampling: true, maxRounds: 3, overlongFilter: true, softOverlong: true, overlongCache: 0.5 },
    });
    const seen: { step: number; round: number; group: number; before: number[]; lengths: number[] }[] = [];
    const trained: { step: number; lengths: number[]; weights: number[]; adv: number[] }[] = [];
    let eos: number[] | null = null; // the run makes its tiny model (and tokenizer) in out/base
    const finishedOf: boolean[][] = [];
    await train(gpu, cfg, {
      ...quiet,
      hooks: {
        progress: false,
        // Round 0: group 0's rewards all equal (no signal: dropped), group 1 varied; later rounds varied.
        rewards: (step, round, group, rewards, lengths) => {
          seen.push({ step, round, group, before: rewards.slice(), lengths });
          return round === 0 && group === 0 ? rewards.map(() => 0.5) : rewards.map((_, i) => (i % 2 ? 1 : 0));
        },
        rollouts: (step, rs) => {
          trained.push({ step, lengths: rs.map((r) => r.response.length), weights: rs.map((r) => r.weight ?? 1), adv: rs.map((r) => r.advantage) });
          eos ??= loadTokenizer(join(cfg.out, "base")).eosTokenIds;
          finishedOf.push(rs.map((r) => r.response.length < cap || eos!.includes(r.response[r.response.length - 1])));
        },
      },
    });
    const rows = readMetrics(join(cfg.out, "metrics.jsonl"));
    for (const m of rows) {
      expect(m.rounds).toBe(2);
      expect(m.groups_dropped).toBe(1);
      expect(m.rollouts).toBe(8);
    }
    // Round 1 sampled only the one missing group.
    expect(seen.filter((s) => s.step === 0).map((s) => [s.round, s.group])).toEqual([[0, 0], [0, 1], [1, 0]]);
    // Soft overlong punishment with L_cache = 3 of cap 6: 0 up to 3 tokens, then (3 - len) / 3; no answer fits in 6 tokens, so correctness is 0.
    for (const s of seen) s.lengths.forEach((len, i) => expect(s.before[i]).toBeCloseTo(len <= 3 ? 0 : (3 - len) / 3, 6));
    // Overlong filter: exactly the responses cut at the cap (no EOS) carry weight 0.
    trained.forEach((t, k) => t.weights.forEach((w, i) => expect(w).toBe(finishedOf[k][i] ? 1 : 0)));
    expect(trained.some((t) => t.weights.includes(0))).toBe(true);
    // Advantages of the kept groups: rewards 0,1,0,1 → ±0.866 (unbiased std 0.577).
    for (const t of trained) for (const a of t.adv) expect(Math.abs(a)).toBeCloseTo(0.5 / Math.sqrt(1 / 3), 4);
  }, 180_000);

  test("f16 rollouts: the mismatch grows past f32's, and truncated IS weights the loss by min(pi_old / pi_rollout, C)", async () => {
    const gpu = await gpuOrSkip();
    if (!gpu.features.f16) throw new Error("this adapter has no shader-f16; the f16 rollout path cannot be tested");
    const over = { steps: 2, rollout: { ...DEMO.rollout, dtype: "f16" }, schedule: { kind: "constant", cap: 8 } };
    const seen: Rollout[][] = [];
    const r16 = await train(gpu, tiny(join(ROOT, "tis"), { ...over, policy: { ...DEMO.policy, tisCap: 1.001 } }), {
      ...quiet,
      hooks: { progress: false, rewards: signal, rollouts: (_s, rs) => seen.push(rs) },
    });
    const r32 = await train(gpu, tiny(join(ROOT, "f32-mismatch"), { ...over, rollout: { ...DEMO.rollout, dtype: "f32" } }), { ...quiet, hooks: { progress: false, rewards: signal } });
    for (const [a, b] of r16.metrics.map((m, i) => [m, r32.metrics[i]])) {
      expect(a.mismatch_logp_abs_mean).toBeGreaterThan(b.mismatch_logp_abs_mean); // f16 weights and activations vs f32
      expect(a.mismatch_logp_abs_max).toBeLessThan(0.5);
      expect(b.tis_weight_mean).toBe(1);
      // A cap just above 1 truncates every token the trainer finds likelier than the sampler did:
      // the mean weight is below 1.001 and, with weights under 1 elsewhere, differs from 1.
      expect(a.tis_weight_mean).toBeLessThan(1.001);
      expect(a.tis_weight_mean).not.toBe(1);
    }
    // Every rollout carried the sampler's log-prob of each of its tokens.
    for (const rs of seen) for (const r of rs) expect(r.rolloutLogp?.length).toBe(r.response.length);
  }, 180_000);

  test("bounded staleness without a broker is an error naming dist.staleness, before any step", async () => {
    const gpu = await gpuOrSkip();
    const out = join(ROOT, "stale-local");
    await expect(train(gpu, tiny(out, { dist: { staleness: 1 } }), { ...quiet, hooks: { progress: false } })).rejects.toThrow(/dist\.staleness \(--staleness\) is 1, but rollouts are generated in this process/);
    expect(existsSync(join(out, "metrics.jsonl"))).toBe(false);
  });

  test("non-finite rewards or losses skip the update, are logged, and stop the run after maxNonFinite in a row", async () => {
    const gpu = await gpuOrSkip();
    const cfg = tiny(join(ROOT, "nan"), { steps: 5, maxNonFinite: 2, checkpoint: { every: 1, keepLast: 5 }, schedule: { kind: "constant", cap: 8 } });
    const logs: string[] = [];
    const run = train(gpu, cfg, {
      log: (s) => logs.push(s),
      hooks: {
        progress: false,
        rewards: (step, round, group, rewards) => (step === 1 && group === 0 ? rewards.map((r, i) => (i === 0 ? NaN : r)) : signal(step, round, group, rewards)),
        advantages: (step, adv) => (step === 2 ? adv.map((a, i) => (i === 3 ? Infinity : a)) : adv),
      },
    });
    await expect(run).rejects.toThrow(/stopping: 2 non-finite losses in a row \(maxNonFinite = 2\)/);
    const rows = readMetrics(join(cfg.out, "metrics.jsonl"));
    expect(rows.map((m) => [m.step, m.skipped, m.non_finite])).toEqual([
      [0, false, 0],
      [1, true, 1],
      [2, true, 2],
    ]);
    expect(rows[1].reward_mean as unknown).toBe("NaN"); // kept visible in the JSON, not null
    expect(logs.some((l) => /step 1: non-finite reward \(NaN\); update skipped/.test(l))).toBe(true);
    // The real figures of the skipped update (its gradient norm is the non-finite one, not an average of none).
    expect(logs.some((l) => /step 2: loss \S+, worst gradient norm (NaN|-?Infinity); 1 of 1 update\(s\) skipped/.test(l))).toBe(true);
    // Skipped updates leave the weights alone: after steps 1 and 2 they equal those after step 0.
    const ck = join(cfg.out, "checkpoints");
    expect(sameBytes(await weightsOf(join(ck, "step-000001")), await weightsOf(join(ck, "step-000003")))).toBe(true);
    expect(sameBytes(await weightsOf(join(ck, "step-000000")), await weightsOf(join(ck, "step-000001")))).toBe(false);
  }, 180_000);
});
