/**
 * The supervised warm start: `steps` SFT steps on the task's warm-start
 * batches (mean NLL of the response tokens), before RL step 0.
 */
import { formatDuration, progressBar } from "../bench/progress.ts";
import { yieldToEventLoop, type Gpu } from "../gpu/index.ts";
import type { InterruptWatch } from "../run/signals.ts";
import type { Example, Task } from "../tasks/task.ts";
import { checkpointName } from "./checkpoint.ts";
import type { TrainConfig } from "./config.ts";
import type { TrainModel } from "./model.ts";
import { Optimizer } from "./optim.ts";
import type { CheckpointPolicy, RunStart } from "./run_state.ts";
import { sftStep } from "./step.ts";

export interface WarmStartOptions {
  steps: number;
  /** Continue an interrupted warm start here: the batches of the steps before are drawn and dropped (the same ones). Default 0. */
  startStep?: number;
  microBatchTokens?: number;
  /** Called after every step; returning true stops early. */
  onProgress?: (p: { step: number; steps: number; loss: number; gradNorm: number; seconds: number }) => void | boolean | Promise<void | boolean>;
}

export interface WarmStartResult {
  steps: number;
  seconds: number;
  losses: number[];
  tokens: number; // response tokens trained on
}

export async function warmStart(model: TrainModel, opt: Optimizer, batches: Iterator<Example[]>, opts: WarmStartOptions): Promise<WarmStartResult> {
  const { steps } = opts;
  if (!Number.isInteger(steps) || steps < 0) throw new Error(`warmStart: steps must be a non-negative integer, got ${steps}`);
  const t0 = performance.now();
  const losses: number[] = [];
  let tokens = 0;
  const from = opts.startStep ?? 0;
  if (!Number.isInteger(from) || from < 0 || from > steps) throw new Error(`warmStart: startStep must be an integer in 0..${steps}, got ${from}`);
  for (let i = 0; i < from; i++) batches.next();
  for (let step = from; step < steps; step++) {
    const next = batches.next();
    if (next.done) break;
    const seqs = next.value.map((e) => ({ tokens: [...e.prompt, ...e.response], lossFrom: e.prompt.length }));
    const r = await sftStep(model, opt, seqs, opts.microBatchTokens);
    if (!Number.isFinite(r.loss)) throw new Error(`warmStart: step ${step}: loss is ${r.loss}`);
    losses.push(r.loss);
    tokens += r.tokens;
    const stop = await opts.onProgress?.({ step: step + 1, steps, loss: r.loss, gradNorm: r.gradNorm, seconds: (performance.now() - t0) / 1000 });
    if (stop === true) break;
    // An event-loop turn between steps (nothing of ours pending): stderr writes
    // (the progress bar) and signal handlers run. Without it, the default run
    // crashed Bun (segfault) twice at ~320-340 warm-start steps, ~4 min in.
    await yieldToEventLoop(0);
  }
  return { steps: losses.length, seconds: (performance.now() - t0) / 1000, losses, tokens };
}

/**
 * The run's warm start (once, before RL step 0): its own optimizer at the
 * warm-start learning rate, continued from `resume` when a checkpoint was
 * taken inside it. Ctrl-C stops at a step boundary with a step-0 checkpoint
 * holding the warm-start state; returns true then.
 */
export async function runWarmStart(
  gpu: Gpu,
  model: TrainModel,
  cfg: TrainConfig,
  task: Task,
  resume: RunStart["warm"],
  checkpoints: CheckpointPolicy,
  stop: InterruptWatch,
  o: { nonFinite: number; hooks: { progress?: boolean; stopAtWarmStep?: number }; log: (s: string) => void },
): Promise<boolean> {
  if (!task.warmStartBatches) throw new Error(`warmStart.steps = ${cfg.warmStart.steps} but task ${task.name} has no warm-start data`);
  const wopt = await Optimizer.create(gpu, model.params, { ...cfg.optim, lr: cfg.warmStart.lr, warmupSteps: cfg.warmStart.warmupSteps ?? 0 });
  if (resume) wopt.loadState(resume.state);
  const first = resume?.step ?? 0;
  const bar = o.hooks.progress === false ? null : progressBar("warm start", cfg.warmStart.steps, first, { unit: "steps" });
  let reached = first;
  const ws = await warmStart(model, wopt, task.warmStartBatches(cfg.warmStart.batchSize, cfg.seed), {
    steps: cfg.warmStart.steps,
    startStep: first,
    microBatchTokens: cfg.policy.microBatchTokens,
    onProgress: (p) => {
      reached = p.step;
      bar?.tick(1, `loss ${p.loss.toFixed(3)}`);
      if (o.hooks.stopAtWarmStep === p.step) stop.request();
      return stop.requested; // Ctrl-C: stop at this step boundary
    },
  });
  bar?.done();
  o.log(`warm start: ${ws.steps} steps in ${formatDuration(ws.seconds)}, loss ${ws.losses[0]?.toFixed(3)} -> ${ws.losses[ws.losses.length - 1]?.toFixed(3)}`);
  const interrupted = stop.requested && reached < cfg.warmStart.steps;
  if (interrupted) {
    await checkpoints.save(checkpointName(0), 0, o.nonFinite, { step: reached, opt: wopt });
    o.log(`stopped in the warm start after step ${reached} of ${cfg.warmStart.steps}; checkpoint ${checkpoints.last}; continue with --resume`);
  }
  wopt.destroy();
  return interrupted;
}
