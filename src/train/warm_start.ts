/**
 * The supervised warm start: `steps` SFT steps on the task's warm-start
 * batches (mean NLL of the response tokens), before RL step 0.
 */
import { yieldToEventLoop } from "../gpu/index.ts";
import type { Example } from "../tasks/task.ts";
import type { TrainModel } from "./model.ts";
import type { Optimizer } from "./optim.ts";
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
