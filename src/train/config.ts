/**
 * The trainer's configuration: one typed object, two presets, a config file
 * (JSON or TOML) merged over a preset, then command-line overrides. Every
 * key is checked against the preset's shape so a typo or a wrong type is an
 * error naming the field, never a silently ignored setting.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { SIRI_CYCLES, SIRI_SCHEDULE, validateSchedule, type Schedule } from "../rl/schedule.ts";
import { DEFAULT_OPTIM, type OptimConfig } from "./optim.ts";
import { DEFAULT_POLICY, type OldLogp, type PolicyConfig } from "./step.ts";
import { checkLossScale, DEFAULT_LOSS_SCALE, type LossScaleConfig, type Precision } from "./precision.ts";

export interface TaskConfig {
  /** "arith": the synthetic math task (src/tasks/arith.ts); "dataset": problems from a dataset preset or file. */
  kind: "arith" | "dataset";
  /** Dataset preset name or path (kind "dataset"), e.g. "deepscaler". */
  dataset: string;
  /** Where dataset presets are cached. */
  datasetDir: string;
  /** arith: operands 0..maxOperand, and the problem kinds. */
  maxOperand: number;
  /** arith: the operands after the first are 0..maxRight; null = maxOperand (see arith.ts). */
  maxRight: number | null;
  kinds: string[];
}

export interface DapoConfig {
  /** Drop groups whose rewards are all equal (no gradient) and sample again until the batch is full. */
  dynamicSampling: boolean;
  /** Most generation rounds per step for dynamic sampling (verl's max_num_gen_batches). */
  maxRounds: number;
  /** Mask responses cut at the cap out of the loss instead of scoring them 0. */
  overlongFilter: boolean;
  /** Soft overlong punishment over the last `overlongCache` of the cap (a fraction of L(t)). */
  softOverlong: boolean;
  overlongCache: number;
}

export interface TrainConfig {
  /** The preset this config started from (recorded; a resume with another is refused). */
  preset: string;
  /** A Hugging Face Qwen2 folder, or "tiny:<preset>" to make a small random model in the run folder. */
  model: string;
  task: TaskConfig;
  /** The run folder: metrics.jsonl, plot.svg, checkpoints/. */
  out: string;
  seed: number;
  /** Training steps (one policy update round each). */
  steps: number;
  promptsPerStep: number;
  /** G: rollouts per prompt. */
  groupSize: number;
  /** L(t), the rollout cap per step. */
  schedule: Schedule;
  rollout: {
    temperature: number; // SIRI: 1.0
    topP: number;
    topK: number;
    /** Engine dtype of the rollout model: f32 reads the master weights directly. */
    dtype: "f32" | "f16" | "auto";
    /** Most sequences decoding at once. */
    maxBatch: number;
  };
  optim: OptimConfig;
  /**
   * GRPO + clip-higher; the rollout temperature is taken from `rollout`.
   * oldLogp "auto": "rollout" (the behaviour policy's log-probs) when
   * dist.staleness > 0, else "recompute" (see PolicyConfig.oldLogp).
   */
  policy: Omit<PolicyConfig, "temperature" | "oldLogp"> & { oldLogp: OldLogp | "auto" };
  /**
   * Distributed rollouts (`siri train --broker`). staleness k: 0 = on-policy
   * (every rollout comes from the weights being updated); k > 0 = the next k
   * steps' rollouts are requested before this step's update, so workers
   * generate while the learner trains, and a completion from weights up to k
   * updates old is accepted (src/dist/learner.ts).
   */
  dist: { staleness: number };
  /** GRPO's std normalisation of advantages (false = Dr. GRPO's mean-only). */
  normalizeAdvantages: boolean;
  dapo: DapoConfig;
  /** Supervised warm start before RL (arith task only; 0 = none). */
  warmStart: { steps: number; batchSize: number; lr: number; /** Linear lr warm-up steps (default 0). */ warmupSteps?: number };
  checkpoint: {
    /** A checkpoint every N steps (and at the end, and on Ctrl-C). */
    every: number;
    /** How many step-N checkpoints (resume points, with optimiser state) to keep. */
    keepLast: number;
    /** How many trough/peak checkpoints to keep, newest first (0 = all). */
    keepExtremes: number;
    /** Dtype of the trough/peak checkpoints: "base" = as the base model ships (bf16 for R1-Distill). */
    extremesDtype: "base" | "bf16" | "f16" | "f32";
    /** Largest weight shard in GB (transformers' default 5). */
    maxShardGB: number;
  };
  validation: {
    /** avg@n on held-out problems every N steps, at each trough/peak and at the end; 0 = off. */
    every: number;
    problems: number;
    n: number;
    temperature: number;
    /** Budget per sample; 0 = the schedule's largest cap. */
    maxTokens: number;
  };
  /** Stop after this many non-finite losses in a row (each one's update is skipped). */
  maxNonFinite: number;
  /** Also log metrics as a TensorBoard event file in <out>/tensorboard/ (src/train/tfevents.ts). */
  tensorboard: boolean;
  /** Training arithmetic: "f32", or "f16-mixed" (f16 operands, f32 master weights, dynamic loss scaling; src/train/precision.ts). */
  precision: Precision;
  /** f16-mixed's dynamic loss scale: initial value, clean updates before it doubles. */
  lossScale: LossScaleConfig;
}

/** SIRI on DeepSeek-R1-Distill-Qwen-1.5B with DeepScaleR's data (SIRI.md: the paper's settings). */
export const SIRI_1_5B: TrainConfig = {
  preset: "siri-1.5b",
  model: "models/DeepSeek-R1-Distill-Qwen-1.5B",
  task: { kind: "dataset", dataset: "deepscaler", datasetDir: "datasets/cache", maxOperand: 9, maxRight: null, kinds: ["add", "sub"] },
  out: "runs/siri-1.5b",
  seed: 1,
  steps: SIRI_CYCLES * SIRI_SCHEDULE.period, // three cycles of T = 640
  promptsPerStep: 128,
  groupSize: 8,
  schedule: SIRI_SCHEDULE, // cosine 16384 <-> 8192, starting at L_max
  rollout: { temperature: 1.0, topP: 1, topK: 0, dtype: "auto", maxBatch: 64 },
  optim: { ...DEFAULT_OPTIM, lr: 1e-6, weightDecay: 0.01, maxGradNorm: 1.0 },
  policy: { epsLow: 0.2, epsHigh: 0.28, clipRatioC: 3, tisCap: null, aggregation: "token-mean", miniBatches: 1, epochs: 1, microBatchTokens: 16384 + 1024, oldLogp: "auto" },
  dist: { staleness: 0 },
  normalizeAdvantages: true,
  dapo: { dynamicSampling: false, maxRounds: 3, overlongFilter: false, softOverlong: false, overlongCache: 0.25 },
  warmStart: { steps: 0, batchSize: 32, lr: 1e-3 },
  checkpoint: { every: 20, keepLast: 2, keepExtremes: 0, extremesDtype: "base", maxShardGB: 5 },
  validation: { every: 40, problems: 30, n: 4, temperature: 0.6, maxTokens: 0 },
  maxNonFinite: 3,
  tensorboard: false,
  precision: "f32", // f16-mixed once a GPU run has shown its speed and stability
  lossScale: { ...DEFAULT_LOSS_SCALE },
};

/**
 * The default run: a tiny Qwen2 on the synthetic arith task (add/sub, operands
 * 0..9), a supervised warm start on traces of mixed verbosity, then SIRI with
 * the cosine schedule scaled to the task, two cycles in about 1-2 minutes on
 * the 2-core software adapter (warm start ~40-80 s, RL ~1-2 s a step).
 *
 * Why these numbers (measured, lavapipe, 2 cores):
 * - operands <= 9, not <= 4: with <= 4 only ~30 training tuples exist and the
 *   warm start memorises them (train accuracy 0.84, held-out 0.18 after 300
 *   steps); <= 9 gives 30 held-out problems and held-out greedy 0.27-0.30.
 * - caps 96 <-> 32: the warm-started policy's responses run 14-99 tokens
 *   (median ~40 at temperature 1); 96 lets nearly all finish (truncation
 *   <= 2% at the peak), 32 cuts every counting chain but leaves the
 *   compressed (14-16) and restated (~29) styles (truncation ~0.6-0.8 there).
 * - policy lr 1e-3 with 16 x 8 rollouts: 2e-3 with 8 x 8 collapsed the policy
 *   within a cycle (accuracy 0, lengths running to the cap); 5e-4 barely moved.
 */
export const DEMO: TrainConfig = {
  preset: "demo",
  model: "tiny:tiny",
  task: { kind: "arith", dataset: "", datasetDir: "datasets/cache", maxOperand: 9, maxRight: null, kinds: ["add", "sub"] },
  out: "runs/demo",
  seed: 1,
  steps: 24,
  promptsPerStep: 16,
  groupSize: 8,
  schedule: { kind: "cosine", lMax: 96, lMin: 32, period: 12 }, // traces: full 51-99 tokens, without counting ~29-44, compressed 14-16
  rollout: { temperature: 1.0, topP: 1, topK: 0, dtype: "f32", maxBatch: 64 },
  optim: { ...DEFAULT_OPTIM, lr: 1e-3, warmupSteps: 0, weightDecay: 0.0, maxGradNorm: 1.0 },
  policy: { epsLow: 0.2, epsHigh: 0.28, clipRatioC: 3, tisCap: null, aggregation: "token-mean", miniBatches: 1, epochs: 1, microBatchTokens: 2048, oldLogp: "auto" },
  dist: { staleness: 0 },
  normalizeAdvantages: true,
  dapo: { dynamicSampling: false, maxRounds: 3, overlongFilter: false, softOverlong: false, overlongCache: 0.25 },
  warmStart: { steps: 350, batchSize: 16, lr: 3e-3, warmupSteps: 10 }, // ~0.1-0.2 s a step; SFT loss ~6 -> ~0.1-0.2
  checkpoint: { every: 6, keepLast: 2, keepExtremes: 0, extremesDtype: "base", maxShardGB: 5 },
  // Every held-out problem (31 of operands <= 9, add/sub), avg@4 at SIRI's eval temperature 0.6:
  // 124 samples per validation, so one problem moves the figure by ~3 points, not a whole answer's worth.
  validation: { every: 0, problems: 64, n: 4, temperature: 0.6, maxTokens: 0 },
  maxNonFinite: 3,
  tensorboard: false,
  precision: "f32", // f16-mixed once a GPU run has shown its speed and stability
  lossScale: { ...DEFAULT_LOSS_SCALE },
};

export const PRESETS: Readonly<Record<string, TrainConfig>> = { "siri-1.5b": SIRI_1_5B, demo: DEMO };

/**
 * Numeric settings where null means "off" (the dual-clip, truncated IS).
 * TOML has no null, so `false` also means off in a file; `--set` takes null or false.
 */
const NULLABLE_NUMBERS = new Set(["policy.clipRatioC", "policy.tisCap", "task.maxRight"]);

function nullableNumber(v: unknown, path: string, src: string): number | null {
  if (v === null || v === false) return null;
  if (typeof v === "number" && Number.isFinite(v)) return v;
  throw new Error(`${src}: ${path} must be a number, or null / false for off, got ${JSON.stringify(v)}`);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * `over` merged onto `base`, key by key; every key must exist in `base` with
 * the same type. `schedule` is replaced whole (its fields depend on its kind).
 */
function merge(base: unknown, over: unknown, path: string, src: string): unknown {
  if (path === "schedule") {
    if (!isObj(over)) throw new Error(`${src}: ${path} must be a table/object with a "kind", got ${JSON.stringify(over)}`);
    return isObj(base) && !("kind" in over) ? { ...base, ...over } : over;
  }
  if (NULLABLE_NUMBERS.has(path)) return nullableNumber(over, path, src);
  if (isObj(base)) {
    if (!isObj(over)) throw new Error(`${src}: ${path || "the config"} must be a table/object, got ${JSON.stringify(over)}`);
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(over)) {
      const p = path ? `${path}.${k}` : k;
      if (!(k in base)) throw new Error(`${src}: unknown field "${p}" (known: ${Object.keys(base).map((x) => (path ? `${path}.${x}` : x)).join(", ")})`);
      out[k] = merge(base[k], v, p, src);
    }
    return out;
  }
  if (Array.isArray(base)) {
    if (!Array.isArray(over)) throw new Error(`${src}: ${path} must be a list, got ${JSON.stringify(over)}`);
    return over;
  }
  if (typeof over !== typeof base) throw new Error(`${src}: ${path} must be a ${typeof base}, got ${JSON.stringify(over)} (${typeof over})`);
  return over;
}

/** Read a JSON or TOML config file (by extension) as a plain object. */
export function readConfigFile(path: string): Record<string, unknown> {
  if (!existsSync(path)) throw new Error(`config file ${path} does not exist`);
  const text = readFileSync(path, "utf8");
  let v: unknown;
  try {
    v = path.endsWith(".toml") ? parseToml(text) : JSON.parse(text);
  } catch (e) {
    throw new Error(`config file ${path}: not valid ${path.endsWith(".toml") ? "TOML" : "JSON"} (${(e as Error).message})`);
  }
  if (!isObj(v)) throw new Error(`config file ${path}: expected a table/object at the top level`);
  return v;
}

/** Parse one `key.path=value` override; the value's type follows the field's current type. */
export function parseOverride(spec: string, current: TrainConfig): Record<string, unknown> {
  const eq = spec.indexOf("=");
  if (eq <= 0) throw new Error(`--set: expected "field.path=value", got "${spec}"`);
  const path = spec.slice(0, eq).trim().split(".");
  const raw = spec.slice(eq + 1).trim();
  let cur: unknown = current;
  for (const k of path) {
    if (!isObj(cur) || !(k in cur)) throw new Error(`--set: unknown field "${path.join(".")}"`);
    cur = cur[k];
  }
  let value: unknown;
  const key = path.join(".");
  if (NULLABLE_NUMBERS.has(key)) value = nullableNumber(raw === "null" || raw === "false" ? null : raw === "" ? NaN : Number(raw), key, "--set");
  else if (typeof cur === "number") {
    value = Number(raw);
    if (raw === "" || !Number.isFinite(value)) throw new Error(`--set ${path.join(".")}: expected a number, got "${raw}"`);
  } else if (typeof cur === "boolean") {
    if (raw !== "true" && raw !== "false") throw new Error(`--set ${path.join(".")}: expected true or false, got "${raw}"`);
    value = raw === "true";
  } else if (typeof cur === "string") value = raw;
  else {
    try {
      value = JSON.parse(raw);
    } catch {
      throw new Error(`--set ${path.join(".")}: expected JSON for a ${Array.isArray(cur) ? "list" : "table"}, got "${raw}"`);
    }
  }
  const out: Record<string, unknown> = {};
  let o = out;
  path.forEach((k, i) => {
    if (i === path.length - 1) o[k] = value;
    else o = o[k] = {} as Record<string, unknown>;
  });
  return out;
}

/** The preset, then the file (if any), then each override object, validated. */
export function resolveConfig(preset: string, layers: { source: string; values: Record<string, unknown> }[]): TrainConfig {
  const base = PRESETS[preset];
  if (!base) throw new Error(`--preset: unknown preset "${preset}" (known: ${Object.keys(PRESETS).join(", ")})`);
  let cfg: TrainConfig = structuredClone(base);
  for (const l of layers) cfg = merge(cfg, l.values, "", l.source) as TrainConfig;
  return validateConfig(cfg);
}

/** A value as the user wrote it: NaN and ±Infinity by name (JSON.stringify would say null). */
function shown(v: unknown): string {
  return typeof v === "number" && !Number.isFinite(v) ? String(v) : JSON.stringify(v);
}

function need(ok: boolean, field: string, what: string, got: unknown): void {
  if (!ok) throw new Error(`config: ${field} ${what}, got ${shown(got)}`);
}

/**
 * Every number in the config must be finite: TOML's `inf`/`nan` and JSON's
 * 1e999 parse as numbers and would pass a "> 0" check, then fail (or
 * diverge) only after the GPU started and a checkpoint was written.
 */
function allFinite(v: unknown, path: string): void {
  if (typeof v === "number") need(Number.isFinite(v), path, "must be a finite number", v);
  else if (Array.isArray(v)) v.forEach((x, i) => allFinite(x, `${path}[${i}]`));
  else if (typeof v === "object" && v !== null) for (const [k, x] of Object.entries(v)) allFinite(x, path ? `${path}.${k}` : k);
}

const posInt = (v: number) => Number.isInteger(v) && v >= 1;
const nonNegInt = (v: number) => Number.isInteger(v) && v >= 0;

/** Throws an error naming the field when a value is out of range. */
export function validateConfig(c: TrainConfig): TrainConfig {
  allFinite(c, "");
  need(c.model.length > 0, "model", "must be a model folder or tiny:<preset>", c.model);
  need(["arith", "dataset"].includes(c.task.kind), "task.kind", "must be arith or dataset", c.task.kind);
  if (c.task.kind === "dataset") need(c.task.dataset.length > 0, "task.dataset", "must name a dataset preset or file", c.task.dataset);
  need(posInt(c.task.maxOperand), "task.maxOperand", "must be an integer >= 1", c.task.maxOperand);
  need(c.task.maxRight === null || (posInt(c.task.maxRight) && c.task.maxRight <= c.task.maxOperand), "task.maxRight", "must be null or an integer in 1..task.maxOperand", c.task.maxRight);
  need(c.out.length > 0, "out", "must be a folder", c.out);
  need(Number.isInteger(c.seed) && c.seed >= 0 && c.seed < 2 ** 31, "seed", "must be an integer in 0..2^31-1", c.seed);
  need(posInt(c.steps), "steps", "must be an integer >= 1", c.steps);
  need(posInt(c.promptsPerStep), "promptsPerStep", "must be an integer >= 1", c.promptsPerStep);
  need(Number.isInteger(c.groupSize) && c.groupSize >= 2, "groupSize", "must be an integer >= 2 (GRPO compares responses within a group)", c.groupSize);
  try {
    validateSchedule(c.schedule);
  } catch (e) {
    throw new Error(`config: ${(e as Error).message}`);
  }
  need(c.rollout.temperature > 0, "rollout.temperature", "must be > 0 (the policy's log-probs are of softmax(logits / τ))", c.rollout.temperature);
  need(c.rollout.topP > 0 && c.rollout.topP <= 1, "rollout.topP", "must be in (0, 1]", c.rollout.topP);
  need(nonNegInt(c.rollout.topK), "rollout.topK", "must be an integer >= 0", c.rollout.topK);
  need(["f32", "f16", "auto"].includes(c.rollout.dtype), "rollout.dtype", "must be f32, f16 or auto", c.rollout.dtype);
  need(posInt(c.rollout.maxBatch), "rollout.maxBatch", "must be an integer >= 1", c.rollout.maxBatch);
  need(c.optim.lr > 0 && c.optim.lr <= 1, "optim.lr", "must be in (0, 1]", c.optim.lr);
  need(c.optim.beta1 >= 0 && c.optim.beta1 < 1, "optim.beta1", "must be in [0, 1)", c.optim.beta1);
  need(c.optim.beta2 >= 0 && c.optim.beta2 < 1, "optim.beta2", "must be in [0, 1)", c.optim.beta2);
  need(c.optim.eps > 0, "optim.eps", "must be > 0", c.optim.eps);
  need(c.optim.weightDecay >= 0, "optim.weightDecay", "must be >= 0", c.optim.weightDecay);
  need(nonNegInt(c.optim.warmupSteps), "optim.warmupSteps", "must be an integer >= 0", c.optim.warmupSteps);
  need(c.optim.maxGradNorm > 0, "optim.maxGradNorm", "must be > 0", c.optim.maxGradNorm);
  need(c.policy.epsLow > 0 && c.policy.epsLow < 1, "policy.epsLow", "must be in (0, 1)", c.policy.epsLow);
  need(c.policy.epsHigh > 0, "policy.epsHigh", "must be > 0", c.policy.epsHigh);
  need(c.policy.clipRatioC === null || c.policy.clipRatioC > 1, "policy.clipRatioC", "must be > 1 (the dual-clip bound -A·c for negative advantages; verl's 3), or null for off", c.policy.clipRatioC);
  need(c.policy.tisCap === null || c.policy.tisCap >= 1, "policy.tisCap", "must be >= 1 (the truncated-IS weight cap), or null for off", c.policy.tisCap);
  need(["token-mean", "seq-mean-token-mean"].includes(c.policy.aggregation), "policy.aggregation", "must be token-mean or seq-mean-token-mean", c.policy.aggregation);
  need(posInt(c.policy.miniBatches), "policy.miniBatches", "must be an integer >= 1", c.policy.miniBatches);
  need(posInt(c.policy.epochs), "policy.epochs", "must be an integer >= 1", c.policy.epochs);
  need(posInt(c.policy.microBatchTokens), "policy.microBatchTokens", "must be an integer >= 1", c.policy.microBatchTokens);
  need(["auto", "recompute", "rollout"].includes(c.policy.oldLogp), "policy.oldLogp", "must be auto, recompute or rollout", c.policy.oldLogp);
  need(nonNegInt(c.dist.staleness), "dist.staleness", "(--staleness) must be an integer >= 0 (0 = on-policy)", c.dist.staleness);
  need(c.policy.tisCap === null || oldLogpOf(c) === "recompute", "policy.tisCap", 'must be null when the old log-probs are the rollouts\' own (policy.oldLogp "rollout", or "auto" with dist.staleness > 0): the IS weight pi_old / pi_rollout is then 1', c.policy.tisCap);
  need(posInt(c.dapo.maxRounds), "dapo.maxRounds", "must be an integer >= 1", c.dapo.maxRounds);
  need(c.dapo.overlongCache > 0 && c.dapo.overlongCache <= 1, "dapo.overlongCache", "must be a fraction of the cap in (0, 1]", c.dapo.overlongCache);
  need(nonNegInt(c.warmStart.steps), "warmStart.steps", "must be an integer >= 0", c.warmStart.steps);
  if (c.warmStart.steps > 0) need(c.task.kind === "arith", "warmStart.steps", "must be 0 unless task.kind is arith (only the synthetic task has traces)", c.warmStart.steps);
  need(posInt(c.warmStart.batchSize), "warmStart.batchSize", "must be an integer >= 1", c.warmStart.batchSize);
  need(c.warmStart.lr > 0 && c.warmStart.lr <= 1, "warmStart.lr", "must be in (0, 1]", c.warmStart.lr);
  need(c.warmStart.warmupSteps === undefined || nonNegInt(c.warmStart.warmupSteps), "warmStart.warmupSteps", "must be an integer >= 0", c.warmStart.warmupSteps);
  need(posInt(c.checkpoint.every), "checkpoint.every", "must be an integer >= 1", c.checkpoint.every);
  need(posInt(c.checkpoint.keepLast), "checkpoint.keepLast", "must be an integer >= 1", c.checkpoint.keepLast);
  need(nonNegInt(c.checkpoint.keepExtremes), "checkpoint.keepExtremes", "must be an integer >= 0 (0 = keep all)", c.checkpoint.keepExtremes);
  need(["base", "bf16", "f16", "f32"].includes(c.checkpoint.extremesDtype), "checkpoint.extremesDtype", "must be base, bf16, f16 or f32", c.checkpoint.extremesDtype);
  need(c.checkpoint.maxShardGB > 0, "checkpoint.maxShardGB", "must be > 0", c.checkpoint.maxShardGB);
  need(nonNegInt(c.validation.every), "validation.every", "must be an integer >= 0 (0 = off)", c.validation.every);
  need(posInt(c.validation.problems), "validation.problems", "must be an integer >= 1", c.validation.problems);
  need(posInt(c.validation.n), "validation.n", "must be an integer >= 1", c.validation.n);
  need(c.validation.temperature >= 0, "validation.temperature", "must be >= 0 (0 = greedy)", c.validation.temperature);
  need(nonNegInt(c.validation.maxTokens), "validation.maxTokens", "must be an integer >= 0 (0 = the largest cap)", c.validation.maxTokens);
  need(posInt(c.maxNonFinite), "maxNonFinite", "must be an integer >= 1", c.maxNonFinite);
  need(["f32", "f16-mixed"].includes(c.precision), "precision", "must be f32 or f16-mixed", c.precision);
  checkLossScale(c.lossScale, "lossScale");
  return c;
}

/** The policy's reference log-probs as the run uses them ("auto" resolved by dist.staleness). */
export function oldLogpOf(c: Pick<TrainConfig, "policy" | "dist">): OldLogp {
  return c.policy.oldLogp === "auto" ? (c.dist.staleness > 0 ? "rollout" : "recompute") : c.policy.oldLogp;
}

/** Where the model comes from: a generated tiny model, or a folder that must hold a Hugging Face checkpoint. */
export function modelSource(c: TrainConfig): { tiny: string } | { dir: string } {
  if (c.model.startsWith("tiny:")) return { tiny: c.model.slice(5) || "tiny" };
  const missing = modelMissing(c);
  if (missing) throw new Error(missing);
  return { dir: c.model };
}

/** Null when the model is there (or tiny); otherwise where it is expected and how to get it. */
export function modelMissing(c: TrainConfig): string | null {
  if (c.model.startsWith("tiny:") || existsSync(join(c.model, "config.json"))) return null;
  return (
    `model: ${c.model} has no config.json; the ${c.preset} preset expects a Hugging Face Qwen2 folder there ` +
    `(get it with: huggingface-cli download deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --local-dir ${c.model} ; ~3.5 GB), or set --model DIR`
  );
}
