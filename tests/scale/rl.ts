// RL steps on a real-shape random checkpoint, and what they must have done.
//
// A random model never answers a problem, so the task's reward is 0 for every
// rollout, every group's advantages are 0 and no gradient flows (grad_norm 0:
// correct, but it tests nothing). The run therefore adds a stated signal, as
// tests/trainer.test.ts does: +1 for every second rollout of a group (by its
// position, after the task's reward), so each group has rewards {0, 1},
// advantages ±0.71 and a real gradient through every layer, the row-part
// embedding / LM head included. Everything else is `siri train`'s path: the
// config is parsed from the same flags by the same code, then `train()`.
//
// checkRlRun then reads the run folder: finite loss and grad_norm > 0 every
// step; the resume point's f32 weights differ from the base's in every
// tensor, by at most what AdamW's bias-corrected step allows (~lr a step),
// and in every real row of the embedding; the padded rows (no gradient:
// masked logits, never gathered) are bit for bit the base's; the checkpoint
// is what transformers / vLLM load (tests/hf_layout.ts).
//
// Run as a script (`bun tests/scale/rl.ts MODEL RUN STEPS [--set ...]`) it
// trains in a process of its own, so its peak memory can be measured alone.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { configFromArgs } from "../../src/commands/train.ts";
import { Gpu } from "../../src/gpu/index.ts";
import type { Qwen2Config } from "../../src/model/config.ts";
import { openCheckpoint, qwen2WeightSpec } from "../../src/model/safetensors.ts";
import { STATE_DIR } from "../../src/train/checkpoint.ts";
import type { TrainConfig } from "../../src/train/config.ts";
import { train, type TrainResult } from "../../src/train/loop.ts";
import { readMetrics, METRICS_FILE, type StepMetrics } from "../../src/train/metrics.ts";
import { servingProblems } from "../hf_layout.ts";

/** +1 for every second rollout of a group: rewards {task, task + 1} in each group, whatever the model says. */
export function positionReward(_step: number, _round: number, _group: number, rewards: number[]): number[] {
  return rewards.map((r, i) => r + (i % 2));
}

/**
 * The --set fields of these runs over the demo preset: short rollouts (2 prompts x 2, caps 16 -> 8), f32 rollouts
 * (the sampler reads the master weights: the mismatch is kernel against kernel),
 * resume points at step 0 and at the end only (each is f32 weights + AdamW moments:
 * 5.9 GB at 0.5B), and a tiny validation.
 */
export function rlSets(steps: number, extra: string[] = []): string[] {
  return [
    "warmStart.steps=0",
    "promptsPerStep=2",
    "groupSize=2",
    'schedule={"kind":"cosine","lMax":16,"lMin":8,"period":2}',
    "rollout.maxBatch=4",
    "rollout.dtype=f32",
    "policy.microBatchTokens=512",
    "validation.problems=2",
    "validation.n=1",
    "validation.maxTokens=8",
    `checkpoint.every=${steps}`,
    "checkpoint.keepLast=1",
    ...extra,
  ];
}

/** The command line of that config: `siri train ...ARGS` (with --plan: its memory and disk plan). */
export function rlArgs(modelDir: string, out: string, steps: number, extra: string[] = []): string[] {
  return ["--preset", "demo", "--model", modelDir, "--out", out, "--steps", String(steps), ...rlSets(steps, extra).flatMap((s) => ["--set", s])];
}

/** The config `siri train` resolves those flags to, by the same code (configFromArgs). */
export function rlConfig(modelDir: string, out: string, steps: number, extra: string[] = []): TrainConfig {
  return configFromArgs({ preset: "demo", model: modelDir, out, steps: String(steps), set: rlSets(steps, extra) });
}

/** `train()` as `siri train` calls it, with positionReward added to the task's reward. */
export function runRl(gpu: Gpu, cfg: TrainConfig, log: (s: string) => void = () => {}): Promise<TrainResult> {
  return train(gpu, cfg, { hooks: { progress: false, rewards: positionReward }, log });
}

export interface RlCheck {
  problems: string[];
  metrics: StepMetrics[];
  /** Largest |w_after - w_base| over all weights, and the bound AdamW allows. */
  maxStep: number;
  stepBound: number;
  changedTensors: number;
  realRowsChanged: number;
  paddedRowsSame: number;
}

/**
 * What `steps` RL steps from the base model in `modelDir` must have left in
 * `run` (see the file's header). `limit`: the tokenizer's id count (rows at and
 * above it are padding). Reads one tensor of each side at a time.
 */
export function checkRlRun(modelDir: string, cfg: TrainConfig, c: Qwen2Config, limit: number): RlCheck {
  const problems: string[] = [];
  const metrics = readMetrics(join(cfg.out, METRICS_FILE));
  if (metrics.length !== cfg.steps) problems.push(`${metrics.length} rows in metrics.jsonl, expected ${cfg.steps}`);
  for (const m of metrics) {
    if (!Number.isFinite(m.loss)) problems.push(`step ${m.step}: loss ${m.loss}`);
    if (!(Number.isFinite(m.grad_norm) && m.grad_norm > 0)) problems.push(`step ${m.step}: grad_norm ${m.grad_norm} (want finite and > 0)`);
    if (m.skipped) problems.push(`step ${m.step}: update skipped`);
    if (!(m.rollouts === cfg.promptsPerStep * cfg.groupSize && m.rollout_tokens > 0)) problems.push(`step ${m.step}: ${m.rollouts} rollouts, ${m.rollout_tokens} tokens`);
  }
  const step = join(cfg.out, "checkpoints", `step-${String(cfg.steps).padStart(6, "0")}`);
  const out: RlCheck = { problems, metrics, maxStep: 0, stepBound: 0, changedTensors: 0, realRowsChanged: 0, paddedRowsSame: 0 };
  if (!existsSync(join(step, "config.json"))) {
    problems.push(`no checkpoint ${step}`);
    return out;
  }
  problems.push(...servingProblems(step, c).map((p) => `${step}: ${p}`));
  const state = readdirSync(join(step, STATE_DIR)).sort().join();
  if (state !== "optimizer.safetensors,trainer_state.json") problems.push(`${step}/${STATE_DIR} holds [${state}]`);

  // AdamW with bias correction moves a weight by lr·|m̂/√v̂| a step: exactly lr·|g|/(|g|+eps) at t = 1,
  // at most 1.0014·lr at t = 2 (β 0.9 / 0.999); no decay here, so a zero gradient moves nothing.
  if (cfg.optim.weightDecay !== 0 || cfg.optim.warmupSteps !== 0) problems.push("checkRlRun expects weightDecay 0 and no lr warm-up (the bounds below)");
  out.stepBound = cfg.steps * cfg.optim.lr * 1.01;
  const base = openCheckpoint(modelDir);
  const after = openCheckpoint(step);
  try {
    for (const s of qwen2WeightSpec(c)) {
      const a = base.readF32(s.name);
      const b = after.readF32(s.name);
      let changed = 0;
      for (let i = 0; i < a.length; i++) {
        const d = Math.abs(b[i] - a[i]);
        if (!(d <= out.stepBound)) problems.push(`${s.name}[${i}] moved ${b[i] - a[i]} (base ${a[i]}, after ${b[i]}); AdamW allows ${out.stepBound}`);
        if (d > 0) changed++;
        if (d > out.maxStep) out.maxStep = d;
        if (problems.length > 20) break;
      }
      if (changed > 0) out.changedTensors++;
      else problems.push(`${s.name}: no element changed`);
      if (s.name !== "model.embed_tokens.weight" && s.name !== "lm_head.weight") continue;
      // Rows of the vocabulary: every real row carries the LM head's gradient (tied or untied head);
      // a padded row has none and must not move.
      const H = c.hiddenSize;
      const rowMoved = (r: number) => {
        for (let j = r * H; j < (r + 1) * H; j++) if (a[j] !== b[j]) return true;
        return false;
      };
      const headRows = s.name === "lm_head.weight" || c.tieWordEmbeddings;
      for (let r = 0; r < c.vocabSize; r++) {
        const moved = rowMoved(r);
        if (r >= limit) {
          if (moved) problems.push(`${s.name}: padded row ${r} moved`);
          else out.paddedRowsSame++;
        } else if (moved) out.realRowsChanged++;
        else if (headRows) problems.push(`${s.name}: real row ${r} did not move (the LM head's gradient reaches every real id)`);
        if (problems.length > 20) break;
      }
    }
  } finally {
    base.close();
    after.close();
  }
  return out;
}

if (import.meta.main) {
  // bun tests/scale/rl.ts MODEL RUN STEPS [extra --set fields...]: train, print the last metrics row as JSON.
  const [modelDir, out, steps, ...extra] = process.argv.slice(2);
  if (!modelDir || !out || !steps) throw new Error("usage: bun tests/scale/rl.ts MODEL_DIR RUN_DIR STEPS [field=value ...]");
  const gpu = await Gpu.open();
  try {
    const r = await runRl(gpu, rlConfig(modelDir, out, Number(steps), extra), (s) => console.error(s));
    console.log(JSON.stringify({ adapter: gpu.adapter.description, stepsDone: r.stepsDone, stopped: r.stopped }));
  } finally {
    gpu.destroy();
  }
}
