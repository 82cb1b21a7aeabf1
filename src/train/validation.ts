/**
 * Validation: avg@n on the task's held-out problems through the bench
 * harness (samples.jsonl, summary, report under `<out>/val/<label>`), on the
 * run's rollout engine; one line of evals.jsonl per validation.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { runBench, type BenchCompletion, type CompletionSource } from "../bench/run.ts";
import type { Problem } from "../data/load.ts";
import { Engine } from "../engine/generate.ts";
import { Qwen2Gpu } from "../engine/model.ts";
import { sizeEngine } from "../engine/size.ts";
import type { Gpu } from "../gpu/index.ts";
import { decodeRollout, vocabLimit, type LoadedTokenizer } from "../model/tokenizer.ts";
import { capAt } from "../rl/schedule.ts";
import type { Task, TaskProblem } from "../tasks/task.ts";
import type { TrainConfig } from "./config.ts";
import { appendJsonl, EVALS_FILE, type EvalRecord } from "./metrics.ts";
import type { TrainModel } from "./model.ts";
import { rolloutBudget } from "./plan.ts";

export interface Validator {
  /** Validate the current policy after `stepsDone` steps; `label` names the folder and the evals.jsonl line. */
  (label: string, stepsDone: number): Promise<EvalRecord>;
}

export function validator(cfg: TrainConfig, task: Task, tokenizer: LoadedTokenizer, engine: Engine, stop: number[], log: (s: string) => void): Validator {
  const budget = cfg.validation.maxTokens || rolloutBudget(cfg);
  const problems: Problem[] = task.validation(cfg.validation.problems).map((p, i) => ({ id: `${i}:${p.id}`, problem: p.problem, answer: p.answer, meta: { prompt: p } }));
  const source: CompletionSource = async function* (requests, sampling) {
    const prompts = requests.map((r) => tokenizer.encode(task.prompt(r.problem.meta.prompt as TaskProblem)));
    const reqs = requests.map((r, i) => ({ id: r.id, key: r.key, prompt: prompts[i], maxTokens: r.maxTokens, stop }));
    for await (const c of engine.generate(reqs, sampling)) {
      const r: BenchCompletion = { id: c.id as number, text: decodeRollout(tokenizer, c.tokens, log), promptTokens: c.prompt.length, responseTokens: c.tokens.length, stopReason: c.stopReason, maxTokens: budget };
      yield r;
    }
  };
  return async (label, stepsDone) => {
    const dir = join(cfg.out, "val", label);
    rmSync(dir, { recursive: true, force: true });
    const res = await runBench(
      { datasets: [{ name: task.name, problems }], n: cfg.validation.n, maxTokens: budget, afterThink: true, out: dir, model: cfg.model, temperature: cfg.validation.temperature, topP: 1, topK: 0, seed: cfg.seed },
      source,
      { progress: false },
    );
    const s = res.summary.overall;
    const rec: EvalRecord = { step: stepsDone, label, cap: capAt(cfg.schedule, Math.max(0, stepsDone - 1)), accuracy: s.pass_at_1, length_mean: s.mean_response_tokens, truncation_rate: s.truncation_rate, max_tokens: budget };
    appendJsonl(join(cfg.out, EVALS_FILE), rec);
    log(`validation ${label} (after ${stepsDone} steps): avg@${cfg.validation.n} ${(rec.accuracy * 100).toFixed(1)}%, mean length ${rec.length_mean.toFixed(1)}, truncated ${(rec.truncation_rate * 100).toFixed(1)}%`);
    return rec;
  };
}

export interface EvalOptions {
  /** Most new tokens per response (the rollout cap). */
  cap: number;
  temperature?: number; // default 0 (greedy)
  seed?: number;
  maxBatch?: number; // default 64
}

export interface EvalResult {
  accuracy: number;
  meanLength: number;
  truncation: number; // fraction stopped at the cap
  responses: { id: string; text: string; length: number; correct: boolean; truncated: boolean }[];
}

/**
 * One response per problem from f32 weights (a TrainModel, or weights read
 * from one) on an engine of its own, graded by the task's reward under the cap.
 */
export async function evaluate(gpu: Gpu, model: TrainModel | { config: TrainModel["config"]; weights: Map<string, Float32Array> }, tokenizer: LoadedTokenizer, task: Task, problems: TaskProblem[], opts: EvalOptions): Promise<EvalResult> {
  const config = model.config;
  const weights = "weights" in model ? model.weights : await model.readWeights();
  const src = {
    has: (name: string) => weights.has(name),
    get: (name: string) => {
      const w = weights.get(name);
      if (!w) throw new Error(`evaluate: no weight ${name}`);
      return w;
    },
  };
  const prompts = problems.map((p) => tokenizer.encode(task.prompt(p)));
  const promptTokens = Math.max(1, ...prompts.map((p) => p.length));
  const qm = await Qwen2Gpu.create(gpu, config, src, "f32");
  const engine = await Engine.create(qm, sizeEngine(config, "f32", gpu.limits.maxStorageBufferBindingSize, { what: "evaluate", maxBatch: Math.min(opts.maxBatch ?? 64, problems.length), promptTokens, newTokens: opts.cap, vocabLimit: vocabLimit(config.vocabSize, tokenizer) }));
  const stop = tokenizer.eosTokenIds;
  const out: EvalResult["responses"] = new Array(problems.length);
  try {
    const reqs = problems.map((p, i) => ({ id: i, prompt: prompts[i], maxTokens: opts.cap, stop }));
    for await (const c of engine.generate(reqs, { temperature: opts.temperature ?? 0, topP: 1, topK: 0, seed: opts.seed ?? 0 })) {
      const i = c.id as number;
      const r = task.reward({ tokens: c.tokens, finished: c.stopReason === "stop" }, problems[i].answer, opts.cap);
      out[i] = { id: problems[i].id, text: tokenizer.decodeKnown(c.tokens, { skipSpecialTokens: true }).text, length: c.tokens.length, correct: r.correct, truncated: c.stopReason === "length" };
    }
  } finally {
    engine.destroy();
    qm.destroy();
  }
  const n = Math.max(out.length, 1);
  return {
    accuracy: out.filter((r) => r.correct).length / n,
    meanLength: out.reduce((a, r) => a + r.length, 0) / n,
    truncation: out.filter((r) => r.truncated).length / n,
    responses: out,
  };
}
