/**
 * The SIRI trainer. One flat loop, read top to bottom:
 *
 *   sample prompts → G rollouts each, capped at L(t) → length-capped reward
 *   → [DAPO: soft overlong punishment, dynamic sampling, overlong filter]
 *   → group advantages → policy update (GRPO + clip-higher, no KL)
 *   → rollout model sync → metrics → checkpoints (every N, trough, peak)
 *
 * Kept from GRPO/DAPO: group-relative advantages with std normalisation,
 * clip-higher (0.2 / 0.28), token-mean loss aggregation. Dropped: the KL
 * term and the reference model (SIRI and DAPO train without them). DAPO's
 * sample-level options are each a named config switch, off by default.
 *
 * Exact resume: every random choice of step t (the prompts drawn, the
 * rollouts' sampling seed, the mini-batch shuffle) is a function of
 * (seed, t) only, and a fresh engine per step restarts its sampler's step
 * counter, so a run resumed from the checkpoint after step t draws exactly
 * what an uninterrupted run would, and the weights match bit for bit.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runBench, type BenchCompletion, type CompletionSource } from "../bench/run.ts";
import { formatDuration, progressBar } from "../bench/progress.ts";
import { loadDataset } from "../data/download.ts";
import { DEEPSCALER_INSTRUCTION, renderPrompt } from "../data/prompt.ts";
import type { Problem } from "../data/load.ts";
import { Engine } from "../engine/generate.ts";
import { elementBytes } from "../engine/model.ts";
import { GpuDeviceLostError, yieldToEventLoop, type Gpu } from "../gpu/index.ts";
import { gradeResponse } from "../grade/index.ts";
import { loadQwen2Config, memoryPlan, QWEN2_1_5B, type Qwen2Config } from "../model/config.ts";
import { loadReferenceModel } from "../model/reference.ts";
import { makeTinyModel, type TinyPreset } from "../model/tiny.ts";
import { decodeRollout, loadTokenizer, vocabLimit, type LoadedTokenizer } from "../model/tokenizer.ts";
import { groupAdvantages } from "../rl/advantages.ts";
import { addSoftOverlongPenalty, dynamicSample, overlongFilterWeights } from "../rl/dapo.ts";
import { capAt, capRange, cycleAt, peakSteps, phaseAt, troughSteps } from "../rl/schedule.ts";
import { lrAt } from "../kernels/adamw.ts";
import { enumerateProblems, makeProblems, promptText, reward as arithReward, warmStart, type ArithKind } from "../tasks/arith.ts";
import { checkpointName, latestCheckpoint, loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { modelSource, type TrainConfig } from "./config.ts";
import { appendJsonl, cycleTable, EVALS_FILE, median, METRICS_FILE, metricsSvg, readEvals, readMetrics, truncateJsonl, type EvalRecord, type StepMetrics } from "./metrics.ts";
import { TrainModel } from "./model.ts";
import { Optimizer } from "./optim.ts";
import { rolloutModel } from "./rollout_model.ts";
import { policyStepMetrics, policyUpdate, skippedUpdate, type Rollout } from "./step.ts";

// ---------------------------------------------------------------- the task

export interface TaskProblem {
  id: string;
  problem: string;
  answer: string;
}

/**
 * What the trainer needs of a task: problems with gold answers (training
 * draws a function of the seed only; validation held out), the prompt text,
 * the reward of a response, and optionally a supervised warm start.
 */
export interface Task {
  name: string;
  sample(n: number, seed: number): TaskProblem[];
  validation(n: number): TaskProblem[];
  /** The chat-rendered prompt, ending where the response starts. */
  prompt(p: TaskProblem): string;
  /** Reward of a response's text (special tokens dropped); `truncated`: cut at the cap. */
  reward(text: string, gold: string, truncated: boolean): { reward: number; correct: boolean };
  warmStart?(model: TrainModel, opt: Optimizer, o: { steps: number; batchSize: number; seed: number; microBatchTokens: number; onStep: (step: number, loss: number) => void }): Promise<{ losses: number[] }>;
}

/** The synthetic arithmetic task of src/tasks/arith.ts (train/test split by operand tuple). */
export function arithTask(tokenizer: LoadedTokenizer, c: TrainConfig["task"]): Task {
  const opts = { kinds: c.kinds as ArithKind[], maxOperand: c.maxOperand };
  return {
    name: "arith",
    sample: (n, seed) => makeProblems(n, seed, { ...opts, split: "train" }),
    // The held-out split itself, each problem once (no draws with replacement), up to n.
    validation: (n) => enumerateProblems({ ...opts, split: "test" }).slice(0, n),
    prompt: (p) => promptText(p, tokenizer),
    reward: (text, gold, truncated) => arithReward(text, gold, truncated),
    warmStart: (model, opt, o) =>
      warmStart(model, opt, tokenizer, {
        steps: o.steps,
        batchSize: o.batchSize,
        seed: o.seed,
        task: opts,
        microBatchTokens: o.microBatchTokens,
        onProgress: (p) => o.onStep(p.step, p.loss),
      }),
  };
}

/**
 * Problems from a dataset (DeepScaleR for the paper's run): the prompt is
 * DeepScaleR's instruction in the model's chat template; the reward is 1 for
 * a closed `</think>` followed by a correct last `\boxed{}`. The last
 * `holdOut` problems are kept for validation.
 */
export function datasetTask(tokenizer: LoadedTokenizer, name: string, problems: Problem[], holdOut: number): Task {
  if (!tokenizer.chatTemplate) throw new Error(`task ${name}: the model's tokenizer_config.json has no chat_template`);
  if (problems.length <= holdOut) throw new Error(`task ${name}: ${problems.length} problems leave none for training after holding out ${holdOut} for validation`);
  const train = problems.slice(0, problems.length - holdOut);
  const val = problems.slice(problems.length - holdOut);
  const special = { bos_token: tokenizer.bosToken, eos_token: tokenizer.eosToken, pad_token: tokenizer.padToken };
  return {
    name,
    sample: (n, seed) => {
      const rand = mulberry(seed);
      return Array.from({ length: n }, () => train[Math.floor(rand() * train.length)]);
    },
    validation: (n) => val.slice(0, n),
    prompt: (p) => renderPrompt(p.problem, tokenizer.chatTemplate!, special, { instruction: DEEPSCALER_INSTRUCTION }),
    reward: (text, gold) => {
      const correct = text.includes("</think>") && gradeResponse(text, gold, { afterThink: true }).correct;
      return { reward: correct ? 1 : 0, correct };
    },
  };
}

// ---------------------------------------------------------------- seeds

/** A u32 from (seed, step, salt): every random choice of a step is a function of these only. */
export function stepSeed(seed: number, step: number, salt: number): number {
  let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(step + 1, 0xc2b2ae35) ^ Math.imul(salt + 7, 0x27d4eb2f);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

function mulberry(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- memory plan

export interface PlanRow {
  what: string;
  bytes: number;
}

/**
 * Device memory of a run, computed from the shapes: f32 master weights,
 * gradients and AdamW moments; activations at `microBatchTokens` tokens (the
 * layer inputs x_l for every layer, one layer's internals and their
 * gradients, one token chunk of logits and their gradient); the f16 rollout copy; the
 * rollout engine's KV cache at the largest cap.
 */
export function trainingMemoryPlan(c: Qwen2Config, cfg: TrainConfig, rolloutDtype: "f32" | "f16", promptTokens = 512): PlanRow[] {
  const P = memoryPlan(c, "float32").params;
  const T = cfg.policy.microBatchTokens;
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  const layer = 4 * T * (2 * (2 * q + 2 * kv + 3 * I + 2 * H) + c.numHeads + 3 * H);
  const maxSeq = promptTokens + capRange(cfg.schedule).max;
  const seqs = Math.min(cfg.rollout.maxBatch, cfg.promptsPerStep * cfg.groupSize);
  const kvBytes = c.numLayers * 2 * kv * (rolloutDtype === "f16" ? 2 : 4) * seqs * maxSeq;
  return [
    { what: `parameters (${(P / 1e6).toFixed(2)} M, f32 master weights)`, bytes: 4 * P },
    { what: "gradients (f32)", bytes: 4 * P },
    { what: "AdamW moments m, v (f32)", bytes: 8 * P },
    { what: `layer inputs x_l, l = 0..${c.numLayers} (T = ${T} tokens)`, bytes: 4 * T * H * (c.numLayers + 1) },
    { what: "one layer's internals and their gradients (recomputed per layer)", bytes: layer },
    // The LM head runs over token chunks of at most 1024 rows (TrainModel's logitChunk).
    { what: `logits and their gradient (one chunk: ${Math.min(T, 1024)} x V = ${c.vocabSize}, f32)`, bytes: 2 * 4 * Math.min(T, 1024) * c.vocabSize },
    { what: "rollout weights (f16 copy)", bytes: rolloutDtype === "f16" ? 2 * P : 0 },
    { what: `rollout KV cache (${seqs} seqs x ${maxSeq} tokens, ${rolloutDtype})`, bytes: kvBytes },
  ];
}

export function formatPlan(rows: PlanRow[], title: string): string {
  const gib = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(2)} MiB`);
  const total = rows.reduce((a, r) => a + r.bytes, 0);
  return [title, ...rows.filter((r) => r.bytes > 0).map((r) => `  ${gib(r.bytes).padStart(12)}  ${r.what}`), `  ${gib(total).padStart(12)}  total`].join("\n");
}

// ---------------------------------------------------------------- the run

export interface TrainHooks {
  /** Change a step's rewards before anything uses them (tests: inject NaN, force equal groups). */
  rewards?: (step: number, round: number, group: number, rewards: number[], lengths: number[]) => number[];
  /** Change a step's advantages before the update (tests: a non-finite loss). */
  advantages?: (step: number, adv: Float32Array) => Float32Array;
  /** See the rollouts that go into the update. */
  rollouts?: (step: number, rollouts: Rollout[], cap: number) => void;
  /** Act as if Ctrl-C came during this step (0-based). */
  stopAtStep?: number;
  /** Progress bar on stderr (default true). */
  progress?: boolean;
}

export interface TrainResult {
  stepsDone: number;
  stopped: "done" | "interrupted";
  lastCheckpoint: string | null;
  metrics: StepMetrics[];
  evals: EvalRecord[];
  table: string;
}

interface Group {
  problem: TaskProblem;
  prompt: number[];
  responses: number[][];
  /** The sampler's log-prob of each response token. */
  logprobs: number[][];
  finished: boolean[];
  rewards: number[];
  correct: boolean[];
}

/** Sort checkpoint names step-N; keep the newest `keep`. */
function pruneCheckpoints(root: string, keep: number): void {
  if (!existsSync(root)) return;
  const steps = readdirSync(root).filter((n) => /^step-\d+$/.test(n)).sort();
  for (const n of steps.slice(0, Math.max(0, steps.length - keep))) rmSync(join(root, n), { recursive: true, force: true });
}

/** Config fields that must not change on resume (the rest may: steps, out, checkpoints, validation). */
function resumeKey(c: TrainConfig): Record<string, unknown> {
  const { steps: _s, out: _o, checkpoint: _c, validation: _v, maxNonFinite: _m, ...rest } = c;
  return rest;
}

function firstDifference(a: unknown, b: unknown, path = ""): string | null {
  if (typeof a === "object" && a && typeof b === "object" && b) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
      if (d) return d;
    }
    return null;
  }
  return a === b ? null : `${path || "config"} (${JSON.stringify(a)} vs ${JSON.stringify(b)})`;
}

export async function train(gpu: Gpu, cfg: TrainConfig, o: { resume?: boolean; hooks?: TrainHooks; log?: (s: string) => void } = {}): Promise<TrainResult> {
  const log = o.log ?? ((s: string) => console.log(s));
  const hooks = o.hooks ?? {};
  const out = cfg.out;
  const ckRoot = join(out, "checkpoints");
  mkdirSync(ckRoot, { recursive: true });

  // ---- model, tokenizer, task
  const src = modelSource(cfg);
  let baseDir: string;
  if ("tiny" in src) {
    baseDir = join(out, "base");
    if (!existsSync(join(baseDir, "config.json"))) makeTinyModel(baseDir, { preset: src.tiny as TinyPreset, seed: cfg.seed });
  } else baseDir = src.dir;
  const tokenizer = loadTokenizer(baseDir);
  let task: Task;
  if (cfg.task.kind === "arith") task = arithTask(tokenizer, cfg.task);
  else {
    const d = await loadDataset(cfg.task.dataset, { dir: cfg.task.datasetDir });
    task = datasetTask(tokenizer, d.name, d.problems, cfg.validation.every > 0 ? cfg.validation.problems : 0);
  }
  const stop = [...new Set(tokenizer.eosTokenIds)];
  if (!stop.length) throw new Error(`${baseDir}: the tokenizer has no EOS token; rollouts could never finish before the cap`);

  // ---- resume or start
  const resumeFrom = o.resume ? latestCheckpoint(out) : null;
  if (o.resume && !resumeFrom) log(`--resume: no checkpoint under ${ckRoot}; starting from the beginning`);
  if (!o.resume && latestCheckpoint(out)) throw new Error(`${out} already holds checkpoints; pass --resume to continue that run, or pick another --out`);
  const base = resumeFrom ? loadCheckpoint(resumeFrom) : loadReferenceModel(baseDir);
  // The sampler and the trainer's log-probs both see only the ids the tokenizer has (padded vocabulary).
  const limit = vocabLimit(base.config.vocabSize, tokenizer);
  const model = await TrainModel.create(gpu, base.config, base.weights, { vocabLimit: limit });
  const names = model.params.map((p) => p.name);
  const opt = await Optimizer.create(gpu, model.params, cfg.optim);
  let startStep = 0;
  let nonFinite = 0;
  if (resumeFrom) {
    const ck = loadCheckpoint(resumeFrom, names);
    const st = ck.trainerState ?? {};
    const diff = firstDifference(resumeKey(st.config as TrainConfig), resumeKey(cfg));
    if (diff) throw new Error(`--resume: ${resumeFrom} was trained with another config: ${diff}; exact resume needs the same settings`);
    if (!ck.optimizer) throw new Error(`--resume: ${resumeFrom} has no optimizer.safetensors`);
    opt.loadState(ck.optimizer);
    startStep = Number(st.step);
    nonFinite = Number(st.non_finite ?? 0);
    log(`resumed from ${resumeFrom} at step ${startStep}`);
    truncateJsonl(join(out, METRICS_FILE), startStep);
    truncateJsonl(join(out, EVALS_FILE), startStep, "step", true);
  } else {
    rmSync(join(out, METRICS_FILE), { force: true });
    rmSync(join(out, EVALS_FILE), { force: true });
  }
  writeFileSync(join(out, "config.json"), JSON.stringify(cfg, null, 2) + "\n");

  const dtype = cfg.rollout.dtype === "auto" ? (gpu.features.f16 ? "f16" : "f32") : cfg.rollout.dtype;
  log(formatPlan(trainingMemoryPlan(model.config, cfg, dtype), `memory plan (${cfg.preset}, ${base.config.numLayers} layers, hidden ${base.config.hiddenSize}, vocab ${base.config.vocabSize}):`));

  let lastCheckpoint: string | null = resumeFrom;
  const save = async (name: string, step: number) => {
    const dir = join(ckRoot, name);
    await saveCheckpoint(dir, model, opt, { tokenizerDir: baseDir, trainerState: { step, non_finite: nonFinite, seed: cfg.seed, preset: cfg.preset, config: cfg } });
    if (name.startsWith("step-")) {
      lastCheckpoint = dir;
      pruneCheckpoints(ckRoot, cfg.checkpoint.keepLast);
    }
    return dir;
  };

  const roll = await rolloutModel(gpu, model, dtype);
  const troughList = troughSteps(cfg.schedule, cfg.steps);
  const peakList = peakSteps(cfg.schedule, cfg.steps);
  const troughs = new Set(troughList);
  const peaks = new Set(peakList);
  const valBudget = cfg.validation.maxTokens || capRange(cfg.schedule).max;
  const valProblems: Problem[] = task.validation(cfg.validation.problems).map((p, i) => ({ id: `${i}:${p.id}`, problem: p.problem, answer: p.answer, meta: { prompt: p } }));

  // Validation: avg@n through the bench harness, prompts rendered by the task.
  const validate = async (label: string, stepsDone: number) => {
    const source: CompletionSource = async function* (requests, sampling) {
      const prompts = requests.map((r) => tokenizer.encode(task.prompt(r.problem.meta.prompt as TaskProblem)));
      const engine = await makeEngine(prompts, Math.max(...requests.map((r) => r.maxTokens)), requests.length);
      try {
        for await (const c of engine.generate(requests.map((r, i) => ({ id: r.id, prompt: prompts[i], maxTokens: r.maxTokens, stop })), sampling)) {
          const r: BenchCompletion = { id: c.id as number, text: decodeRollout(tokenizer, c.tokens, log), promptTokens: c.prompt.length, responseTokens: c.tokens.length, stopReason: c.stopReason, maxTokens: valBudget };
          yield r;
        }
      } finally {
        engine.destroy();
      }
    };
    const dir = join(out, "val", label);
    rmSync(dir, { recursive: true, force: true });
    const res = await runBench(
      { datasets: [{ name: task.name, problems: valProblems }], n: cfg.validation.n, maxTokens: valBudget, afterThink: true, out: dir, model: cfg.model, temperature: cfg.validation.temperature, topP: 1, topK: 0, seed: cfg.seed },
      source,
      { progress: false },
    );
    const s = res.summary.overall;
    const rec: EvalRecord = { step: stepsDone, label, cap: capAt(cfg.schedule, Math.max(0, stepsDone - 1)), accuracy: s.pass_at_1, length_mean: s.mean_response_tokens, truncation_rate: s.truncation_rate, max_tokens: valBudget };
    appendJsonl(join(out, EVALS_FILE), rec);
    log(`validation ${label} (after ${stepsDone} steps): avg@${cfg.validation.n} ${(rec.accuracy * 100).toFixed(1)}%, mean length ${rec.length_mean.toFixed(1)}, truncated ${(rec.truncation_rate * 100).toFixed(1)}%`);
  };

  // A fresh engine per generation round: KV cache sized to this round, and its sampler's step counter restarts (exact resume).
  const makeEngine = (prompts: number[][], cap: number, n: number) => {
    const blockSize = 16;
    const maxSeqLen = Math.ceil((Math.max(...prompts.map((p) => p.length)) + cap) / blockSize) * blockSize;
    if (maxSeqLen > model.config.maxPositions) throw new Error(`rollouts: prompt + cap = ${maxSeqLen} tokens exceeds the model's ${model.config.maxPositions} positions; lower the schedule's l_max`);
    const maxBatch = Math.max(1, Math.min(cfg.rollout.maxBatch, n));
    const perToken = model.config.numKvHeads * model.config.headDim * elementBytes(roll.model.dtype);
    const bindingTokens = Math.floor(gpu.limits.maxStorageBufferBindingSize / perToken / blockSize) * blockSize;
    const cacheTokens = Math.min(maxBatch * maxSeqLen, bindingTokens);
    if (cacheTokens < maxSeqLen) throw new Error(`rollouts: one sequence of ${maxSeqLen} tokens does not fit a KV cache binding (${bindingTokens} tokens); lower the cap`);
    return Engine.create(roll.model, { maxBatch, maxSeqLen, cacheTokens, blockSize, prefillChunk: 512, vocabLimit: limit });
  };

  // ---- Ctrl-C: finish the step, checkpoint, stop (a second Ctrl-C quits at once)
  let stopRequested = false;
  const onSigint = () => {
    if (stopRequested) {
      log("\nsecond Ctrl-C: quitting without a checkpoint");
      process.exit(130);
    }
    stopRequested = true;
    log("\nCtrl-C: finishing this step, then checkpointing (Ctrl-C again to quit at once)");
  };
  process.on("SIGINT", onSigint);

  const metricsPath = join(out, METRICS_FILE);
  let stepsDone = startStep;
  let stopped: TrainResult["stopped"] = "done";
  try {
    // ---- supervised warm start (once, before RL step 0)
    if (startStep === 0 && !resumeFrom && cfg.warmStart.steps > 0) {
      if (!task.warmStart) throw new Error(`warmStart.steps = ${cfg.warmStart.steps} but task ${task.name} has no warm-start data`);
      const wopt = await Optimizer.create(gpu, model.params, { ...cfg.optim, lr: cfg.warmStart.lr, warmupSteps: cfg.warmStart.warmupSteps ?? 0 });
      const bar = hooks.progress === false ? null : progressBar("warm start", cfg.warmStart.steps, 0, { unit: "steps" });
      const t0 = performance.now();
      const ws = await task.warmStart(model, wopt, { steps: cfg.warmStart.steps, batchSize: cfg.warmStart.batchSize, seed: cfg.seed, microBatchTokens: cfg.policy.microBatchTokens, onStep: (_s, loss) => bar?.tick(1, `loss ${loss.toFixed(3)}`) });
      bar?.done();
      wopt.destroy();
      log(`warm start: ${ws.losses.length} steps in ${formatDuration((performance.now() - t0) / 1000)}, loss ${ws.losses[0]?.toFixed(3)} -> ${ws.losses[ws.losses.length - 1]?.toFixed(3)}`);
      await roll.sync();
    }
    if (startStep === 0) {
      if (cfg.validation.every > 0 || cfg.task.kind === "arith") await validate("start", 0);
      await save(checkpointName(0), 0);
    }

    const bar = hooks.progress === false ? null : progressBar("SIRI", cfg.steps, startStep, { unit: "steps" });
    for (let step = startStep; step < cfg.steps; step++) {
      const t0 = performance.now();
      // ---- L(t) and this step's prompts
      const cap = capAt(cfg.schedule, step);
      let genTokens = 0;
      let genSeconds = 0;
      const sampleGroups = async (round: number, missing: number): Promise<Group[]> => {
        const problems = task.sample(round === 0 ? cfg.promptsPerStep : Math.max(missing, 1), stepSeed(cfg.seed, step, 100 + round));
        const prompts = problems.map((p) => tokenizer.encode(task.prompt(p)));
        const G = cfg.groupSize;
        const reqs = problems.flatMap((_, i) => Array.from({ length: G }, (_, g) => ({ id: i * G + g, prompt: prompts[i], maxTokens: cap, stop })));
        const done = new Map<number, { tokens: number[]; logprobs: number[]; finished: boolean }>();
        const tg = performance.now();
        const engine = await makeEngine(prompts, cap, reqs.length);
        try {
          // ---- G rollouts per prompt through the batched, paged KV cache
          for await (const c of engine.generate(reqs, { temperature: cfg.rollout.temperature, topP: cfg.rollout.topP, topK: cfg.rollout.topK, seed: stepSeed(cfg.seed, step, 200 + round) })) {
            done.set(c.id as number, { tokens: c.tokens, logprobs: c.logprobs, finished: c.stopReason === "stop" });
            genTokens += c.tokens.length;
          }
        } finally {
          engine.destroy();
        }
        genSeconds += (performance.now() - tg) / 1000;
        return problems.map((problem, i) => {
          const rs = Array.from({ length: G }, (_, g) => done.get(i * G + g)!);
          // ---- length-capped reward: the engine stopped each response at L(t); a cut one has no answer and scores 0
          const scored = rs.map((r) => task.reward(decodeRollout(tokenizer, r.tokens, log), problem.answer, !r.finished));
          let rewards = scored.map((s) => s.reward);
          if (cfg.dapo.softOverlong) rewards = Array.from(addSoftOverlongPenalty(rewards, rs.map((r) => r.tokens.length), cap, Math.max(1, Math.round(cfg.dapo.overlongCache * cap))));
          if (hooks.rewards) rewards = hooks.rewards(step, round, i, rewards.slice(), rs.map((r) => r.tokens.length));
          return { problem, prompt: prompts[i], responses: rs.map((r) => r.tokens), logprobs: rs.map((r) => r.logprobs), finished: rs.map((r) => r.finished), rewards, correct: scored.map((s) => s.correct) };
        });
      };
      // ---- DAPO dynamic sampling: keep only groups with unequal rewards, sample more until the batch is full
      let groups: Group[];
      let dropped = 0;
      let rounds = 1;
      if (cfg.dapo.dynamicSampling) {
        const ds = await dynamicSample(sampleGroups, { batchGroups: cfg.promptsPerStep, maxRounds: cfg.dapo.maxRounds, rewardsOf: (g) => g.rewards.map((r) => (Number.isFinite(r) ? r : 0)) });
        groups = ds.groups;
        dropped = ds.dropped;
        rounds = ds.rounds;
        if (!ds.full) log(`step ${step}: dynamic sampling kept ${groups.length} of ${cfg.promptsPerStep} groups after ${rounds} rounds; training on those`);
      } else groups = await sampleGroups(0, cfg.promptsPerStep);

      // ---- group advantages (+ DAPO overlong filter as per-response weights)
      const rewards = groups.flatMap((g) => g.rewards);
      const lengths = groups.flatMap((g) => g.responses.map((r) => r.length));
      const finished = groups.flatMap((g) => g.finished);
      const correct = groups.flatMap((g) => g.correct);
      const finiteRewards = rewards.every((r) => Number.isFinite(r));
      let adv = finiteRewards && groups.length ? groupAdvantages(rewards, groups.map((g) => g.responses.length), { normalizeStd: cfg.normalizeAdvantages }) : new Float32Array(rewards.length).fill(NaN);
      if (hooks.advantages) adv = hooks.advantages(step, adv);
      const truncated = finished.map((f) => !f);
      const weights = cfg.dapo.overlongFilter ? overlongFilterWeights(truncated) : new Float32Array(rewards.length).fill(1);
      const rollouts: Rollout[] = groups.flatMap((g) => g.responses.map((response, k) => ({ prompt: g.prompt, response, rolloutLogp: g.logprobs[k], advantage: 0 })));
      rollouts.forEach((r, i) => {
        r.advantage = adv[i];
        r.weight = weights[i];
      });
      hooks.rollouts?.(step, rollouts, cap);

      // ---- policy update (GRPO + clip-higher); a non-finite loss or gradient skips it
      let stats = skippedUpdate();
      if (!finiteRewards) log(`step ${step}: non-finite reward (${rewards.find((r) => !Number.isFinite(r))}); update skipped`);
      else if (rollouts.length) stats = await policyUpdate(model, opt, rollouts, { ...cfg.policy, temperature: cfg.rollout.temperature }, stepSeed(cfg.seed, step, 300) % 1_000_000);
      const bad = !finiteRewards || !Number.isFinite(stats.loss) || stats.skipped > 0;
      if (bad) {
        nonFinite++;
        if (finiteRewards) log(`step ${step}: non-finite loss ${stats.loss} / gradient norm ${stats.gradNorm}; ${stats.skipped} update(s) skipped (${nonFinite} in a row)`);
      } else nonFinite = 0;
      // ---- the rollout model follows the trainer's weights
      await roll.sync();

      // ---- metrics
      const m: StepMetrics = {
        step,
        cycle: cycleAt(cfg.schedule, step),
        phase: phaseAt(cfg.schedule, step),
        cap,
        reward_mean: rewards.reduce((a, r) => a + r, 0) / Math.max(rewards.length, 1),
        accuracy: correct.filter(Boolean).length / Math.max(correct.length, 1),
        length_mean: lengths.reduce((a, l) => a + l, 0) / Math.max(lengths.length, 1),
        length_max: Math.max(0, ...lengths),
        length_median: median(lengths),
        truncation_rate: truncated.filter(Boolean).length / Math.max(truncated.length, 1),
        clip_frac_low: stats.clipFracLow,
        clip_frac_high: stats.clipFracHigh,
        ...policyStepMetrics(stats),
        entropy: stats.entropy,
        grad_norm: stats.gradNorm,
        approx_kl: stats.approxKl,
        loss: stats.loss,
        lr: lrAt(Math.max(opt.step, 1), { lr: cfg.optim.lr, warmupSteps: cfg.optim.warmupSteps }),
        rollouts: rollouts.length,
        groups_dropped: dropped,
        rounds,
        rollout_tokens: genTokens,
        rollout_tokens_per_s: genSeconds > 0 ? genTokens / genSeconds : 0,
        step_time_s: (performance.now() - t0) / 1000,
        skipped: bad,
        non_finite: nonFinite,
      };
      appendJsonl(metricsPath, m);
      stepsDone = step + 1;
      bar?.tick(1, `cap ${cap} len ${m.length_mean.toFixed(1)} acc ${(m.accuracy * 100).toFixed(0)}%`);
      if (nonFinite >= cfg.maxNonFinite) {
        await save(checkpointName(stepsDone), stepsDone);
        throw new Error(`stopping: ${nonFinite} non-finite losses in a row (maxNonFinite = ${cfg.maxNonFinite}); the last good weights are in ${lastCheckpoint} (updates with non-finite losses were skipped); lower optim.lr or check the rewards`);
      }

      // ---- checkpoints: SIRI-low at each trough, SIRI-high at each peak, every N steps, at the end, on Ctrl-C
      if (hooks.stopAtStep === step) stopRequested = true;
      const extremes: string[] = [];
      if (troughs.has(stepsDone)) extremes.push(`trough-cycle${troughList.indexOf(stepsDone) + 1}`);
      if (peaks.has(stepsDone)) extremes.push(`peak-cycle${peakList.indexOf(stepsDone) + 1}`);
      for (const name of extremes) {
        await validate(name, stepsDone);
        await save(name, stepsDone);
      }
      if (cfg.validation.every > 0 && stepsDone % cfg.validation.every === 0 && !extremes.length && stepsDone < cfg.steps) await validate(checkpointName(stepsDone), stepsDone);
      if (stepsDone % cfg.checkpoint.every === 0 || stepsDone === cfg.steps || stopRequested) await save(checkpointName(stepsDone), stepsDone);
      if (stopRequested) {
        stopped = "interrupted";
        log(`stopped after step ${stepsDone} of ${cfg.steps}; checkpoint ${lastCheckpoint}; continue with --resume`);
        break;
      }
      await yieldToEventLoop(0); // let a Ctrl-C handler run between steps
    }
    bar?.done();
    if (stopped === "done" && (cfg.validation.every > 0 || cfg.task.kind === "arith") && !troughs.has(cfg.steps) && !peaks.has(cfg.steps)) await validate("final", stepsDone);
  } catch (e) {
    if (e instanceof GpuDeviceLostError) {
      throw new Error(`GPU device lost after ${stepsDone} steps (${e.message}); the last checkpoint ${lastCheckpoint ?? "(none)"} is intact; continue with --resume`);
    }
    throw e;
  } finally {
    process.off("SIGINT", onSigint);
    roll.destroy();
    opt.destroy();
    model.destroy();
  }

  // ---- the plot and the per-cycle table
  const metrics = readMetrics(metricsPath);
  const evals = readEvals(join(out, EVALS_FILE));
  writeFileSync(join(out, "plot.svg"), metricsSvg(metrics, evals, `SIRI ${cfg.preset}: cap, mean length, accuracy`));
  const table = cycleTable(metrics, evals);
  writeFileSync(join(out, "cycles.md"), table);
  return { stepsDone, stopped, lastCheckpoint, metrics, evals, table };
}

/** The plan for a config without opening a GPU (the shape from the folder, the tiny preset, or the 1.5B default). */
export function planFor(cfg: TrainConfig): { config: Qwen2Config; note: string } {
  if (cfg.model.startsWith("tiny:")) {
    const dir = join(cfg.out, "base");
    if (!existsSync(join(dir, "config.json"))) makeTinyModel(dir, { preset: (cfg.model.slice(5) || "tiny") as TinyPreset, seed: cfg.seed });
    return { config: loadReferenceModel(dir).config, note: cfg.model };
  }
  if (existsSync(join(cfg.model, "config.json"))) return { config: loadQwen2Config(join(cfg.model, "config.json")), note: cfg.model };
  return { config: QWEN2_1_5B, note: `DeepSeek-R1-Distill-Qwen-1.5B's shape (${cfg.model} not found)` };
}
