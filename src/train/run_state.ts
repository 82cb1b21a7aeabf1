/**
 * A run's state outside the weights: where it starts (fresh, or resumed from
 * its newest checkpoint with the same settings), the checkpoint policy
 * (every N steps, SIRI-low at each trough, SIRI-high at each peak, at the
 * end, on Ctrl-C). The run lock, Ctrl-C rules and atomic writes are src/run/'s.
 */
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { loadDataset } from "../data/download.ts";
import { makeTinyModel, type TinyPreset } from "../model/tiny.ts";
import { loadTokenizer, type LoadedTokenizer } from "../model/tokenizer.ts";
import { peakSteps, troughSteps } from "../rl/schedule.ts";
import { makeDirAtomically, writeFileAtomic } from "../run/atomic.ts";
import { arithTask, type ArithKind } from "../tasks/arith.ts";
import { datasetTask } from "../tasks/dataset.ts";
import type { Task } from "../tasks/task.ts";
import { checkpointFormat, checkpointName, latestCheckpoint, loadOptimizerState, pruneCheckpoints, readOptimizerState, readTrainerState, saveCheckpoint, type LoadedCheckpoint } from "./checkpoint.ts";
import { modelSource, oldLogpOf, type TrainConfig } from "./config.ts";
import { EVALS_FILE, METRICS_FILE, truncateJsonl } from "./metrics.ts";
import type { TrainModel } from "./model.ts";
import type { Optimizer } from "./optim.ts";
import type { LossScaler } from "./precision.ts";

/** The run folder and the base model (a tiny preset is made inside the run folder once). */
export function baseModel(cfg: TrainConfig): { dir: string; tokenizer: LoadedTokenizer } {
  mkdirSync(join(cfg.out, "checkpoints"), { recursive: true });
  const src = modelSource(cfg);
  let dir: string;
  if ("tiny" in src) {
    dir = join(cfg.out, "base");
    if (!existsSync(join(dir, "config.json"))) makeDirAtomically(dir, (tmp) => makeTinyModel(tmp, { preset: src.tiny as TinyPreset, seed: cfg.seed }));
  } else dir = src.dir;
  return { dir, tokenizer: loadTokenizer(dir) };
}

/** The config's task: the synthetic arithmetic one, or a dataset with its validation problems held out. */
export async function taskFor(cfg: TrainConfig, tokenizer: LoadedTokenizer): Promise<Task> {
  if (cfg.task.kind === "arith") return arithTask(tokenizer, { kinds: cfg.task.kinds as ArithKind[], maxOperand: cfg.task.maxOperand, maxRight: cfg.task.maxRight });
  const d = await loadDataset(cfg.task.dataset, { dir: cfg.task.datasetDir });
  return datasetTask(tokenizer, d.name, d.problems, cfg.validation.every > 0 ? cfg.validation.problems : 0);
}

/**
 * Config fields that must not change on resume (the rest may: steps, out, checkpoints, validation).
 * The policy's old log-probs compare as used ("auto" resolved); a checkpoint from before bounded
 * staleness has no `dist` and no `policy.oldLogp`: it was on-policy, recomputing them.
 */
export function resumeKey(c: TrainConfig): Record<string, unknown> {
  const { steps: _s, out: _o, checkpoint: _c, validation: _v, maxNonFinite: _m, ...rest } = c;
  const dist = rest.dist ?? { staleness: 0 };
  return { ...rest, dist, policy: { ...rest.policy, oldLogp: oldLogpOf({ policy: { ...rest.policy, oldLogp: rest.policy.oldLogp ?? "recompute" }, dist }) } };
}

/** The first field where two JSON values differ, as "path (a vs b)", or null. */
export function firstDifference(a: unknown, b: unknown, path = ""): string | null {
  if (typeof a === "object" && a && typeof b === "object" && b) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
      if (d) return d;
    }
    return null;
  }
  return a === b ? null : `${path || "config"} (${JSON.stringify(a)} vs ${JSON.stringify(b)})`;
}

/** Where a run starts: the checkpoint to resume from (null: from the base model). */
export function findStart(cfg: TrainConfig, resume: boolean, log: (s: string) => void): string | null {
  const from = resume ? latestCheckpoint(cfg.out) : null;
  if (resume && !from) log(`--resume: no checkpoint under ${join(cfg.out, "checkpoints")}; starting from the beginning`);
  if (!resume && latestCheckpoint(cfg.out)) throw new Error(`${cfg.out} already holds checkpoints; pass --resume to continue that run, or pick another --out`);
  return from;
}

export interface RunStart {
  startStep: number;
  nonFinite: number;
  /** A checkpoint taken inside the warm start: continue it at `step` with this optimizer state. */
  warm: { step: number; state: NonNullable<LoadedCheckpoint["optimizer"]> } | null;
  /** The divergence guard's reference weight norm, recorded when RL started. */
  weightNormRef?: number;
}

/**
 * Check a resumed run's settings against the checkpoint's and restore the
 * optimizer (or, for a checkpoint taken inside the warm start, hand its
 * state back for the warm-start optimizer); cut metrics.jsonl and
 * evals.jsonl back to the checkpoint's step. A fresh run starts them empty.
 */
export function restoreRun(cfg: TrainConfig, from: string | null, opt: Optimizer, paramNames: string[], log: (s: string) => void, scaler: LossScaler | null = null): RunStart {
  const out = cfg.out;
  let startStep = 0;
  let nonFinite = 0;
  let warm: RunStart["warm"] = null;
  let weightNormRef: number | undefined;
  if (from) {
    const st = readTrainerState(from) ?? {};
    const diff = firstDifference(resumeKey(st.config as TrainConfig), resumeKey(cfg));
    if (diff) throw new Error(`--resume: ${from} was trained with another config: ${diff}; exact resume needs the same settings`);
    if (st.warm_start_step !== undefined) warm = { step: Number(st.warm_start_step), state: readOptimizerState(from, paramNames) };
    else loadOptimizerState(from, opt, paramNames); // one moment tensor at a time
    if (st.weight_norm_ref !== undefined) weightNormRef = Number(st.weight_norm_ref);
    startStep = Number(st.step);
    nonFinite = Number(st.non_finite ?? 0);
    if (scaler && st.loss_scale) scaler.load(st.loss_scale as { scale: number; clean: number }, `${from}: loss_scale`); // f16-mixed
    log(`resumed from ${from} at ${warm ? `warm-start step ${warm.step} of ${cfg.warmStart.steps}` : `step ${startStep}`}`);
    truncateJsonl(join(out, METRICS_FILE), startStep);
    truncateJsonl(join(out, EVALS_FILE), startStep, "step", true);
  } else {
    rmSync(join(out, METRICS_FILE), { force: true });
    rmSync(join(out, EVALS_FILE), { force: true });
  }
  writeFileAtomic(join(out, "config.json"), JSON.stringify(cfg, null, 2) + "\n");
  return { startStep, nonFinite, warm, weightNormRef };
}

/** When to checkpoint (and validate): every N steps, each trough and peak of the schedule, the end. */
export class CheckpointPolicy {
  private readonly troughs: number[];
  private readonly peaks: number[];
  /** The newest step-N checkpoint (what --resume continues from). */
  last: string | null;
  /** Recorded in each checkpoint: the divergence guard's reference weight norm. */
  weightNormRef?: number;

  constructor(
    private readonly cfg: TrainConfig,
    private readonly model: TrainModel,
    private readonly opt: Optimizer,
    private readonly tokenizerDir: string,
    resumedFrom: string | null,
  ) {
    this.troughs = troughSteps(cfg.schedule, cfg.steps);
    this.peaks = peakSteps(cfg.schedule, cfg.steps);
    this.last = resumedFrom;
  }

  /** SIRI-low / SIRI-high checkpoint names due after `stepsDone` steps. */
  extremes(stepsDone: number): string[] {
    const names: string[] = [];
    if (this.troughs.includes(stepsDone)) names.push(`trough-cycle${this.troughs.indexOf(stepsDone) + 1}`);
    if (this.peaks.includes(stepsDone)) names.push(`peak-cycle${this.peaks.indexOf(stepsDone) + 1}`);
    return names;
  }

  /** Whether the periodic step-N checkpoint is due (every N, at the end, or when stopping). */
  stepDue(stepsDone: number, stopping: boolean): boolean {
    return stepsDone % this.cfg.checkpoint.every === 0 || stepsDone === this.cfg.steps || stopping;
  }

  /** `warm`: a checkpoint inside the warm start, with the warm-start optimizer and the step it reached. */
  async save(name: string, step: number, nonFinite: number, warm?: { step: number; opt: Optimizer }): Promise<string> {
    const dir = join(this.cfg.out, "checkpoints", name);
    const cfg = this.cfg;
    // step-N: a resume point (f32 + optimiser state); trough/peak: the model as the base ships, no optimiser state.
    const resumePoint = name.startsWith("step-");
    const state = { step, non_finite: nonFinite, seed: cfg.seed, preset: cfg.preset, config: cfg, weight_norm_ref: this.weightNormRef, warm_start_step: warm?.step, loss_scale: this.model.scaler?.state };
    await saveCheckpoint(dir, this.model, resumePoint ? (warm?.opt ?? this.opt) : null, { tokenizerDir: this.tokenizerDir, trainerState: state, ...checkpointFormat(cfg.checkpoint, this.tokenizerDir, resumePoint) });
    if (resumePoint) this.last = dir;
    pruneCheckpoints(join(cfg.out, "checkpoints"), cfg.checkpoint);
    return dir;
  }

  saveStep(stepsDone: number, nonFinite: number): Promise<string> {
    return this.save(checkpointName(stepsDone), stepsDone, nonFinite);
  }
}
