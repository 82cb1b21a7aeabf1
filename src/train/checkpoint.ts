/**
 * Checkpoints: a Hugging Face model folder that transformers, vLLM and
 * SGLang load as it is, with the training state in a subfolder that serving
 * tools never read:
 *
 *   <dir>/config.json, generation_config.json, tokenizer files
 *   <dir>/model.safetensors                  (or model-0000i-of-0000N.safetensors
 *                                             + model.safetensors.index.json, shards of <= 5 GB)
 *   <dir>/training_state/trainer_state.json  (step, config, ...)
 *   <dir>/training_state/optimizer.safetensors  (AdamW moments: resume points only)
 *
 * vLLM's and SGLang's loaders read every *.safetensors at the folder's top
 * level (when there is no index): only the model's weights are there.
 *
 * Resume points (step-N) hold f32 master weights and the optimiser state,
 * so a resumed run continues bit for bit. Trough / peak checkpoints (the
 * SIRI-low / SIRI-high models users evaluate and publish) are written in
 * the dtype the base model ships in (bf16 for R1-Distill), without the
 * optimiser state.
 *
 * Weights and moments are read from the GPU and written one tensor at a
 * time; loading reads one tensor at a time. Atomic: everything goes into
 * `<dir>.tmp-<pid>`, each file fsynced, then the folder is renamed into
 * place (the previous one moved aside first and removed after).
 */
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { loadQwen2Config, memoryPlan, qwen2ConfigJson, type Qwen2Config, type TorchDtype } from "../model/config.ts";
import { openCheckpoint, openSafetensors, qwen2WeightSpec, type WeightReader, type WriteDtype } from "../model/safetensors.ts";
import { DEFAULT_SHARD_BYTES, syncDir, TORCH_DTYPE_OF, writeModelWeights, writeSafetensorsStreaming } from "../model/shards.ts";
import { peakSteps, troughSteps } from "../rl/schedule.ts";
import type { TrainConfig } from "./config.ts";
import type { TrainModel } from "./model.ts";
import type { Optimizer } from "./optim.ts";

export const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"];
/** The subfolder with the training state (serving tools read only the top level). */
export const STATE_DIR = "training_state";
const STATE_FILE = "trainer_state.json";
const OPT_FILE = "optimizer.safetensors";

export type ExportDtype = "bf16" | "f16" | "f32";
export const WRITE_DTYPE: Record<ExportDtype, WriteDtype> = { bf16: "BF16", f16: "F16", f32: "F32" };
const OF_TORCH: Record<TorchDtype, WriteDtype> = { float32: "F32", float16: "F16", bfloat16: "BF16" };

/** The dtype a base model ships in, as a safetensors dtype. */
export function shippedDtype(c: Qwen2Config): WriteDtype {
  return OF_TORCH[c.torchDtype];
}

function writeJsonSynced(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2) + "\n");
  const fd = openSync(path, "r");
  fsyncSync(fd);
  closeSync(fd);
}

/** Build `dir` through `<dir>.tmp-<pid>`: `fill` writes into the temp folder, which then replaces `dir` at once. */
export async function writeFolderAtomically(dir: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    await fill(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  syncDir(tmp);
  const old = `${dir}.old-${process.pid}`;
  if (existsSync(dir)) renameSync(dir, old);
  renameSync(tmp, dir);
  syncDir(dirname(dir));
  rmSync(old, { recursive: true, force: true });
}

/** config.json (torch_dtype = the stored dtype) and the tokenizer files of `tokenizerDir`. */
function writeModelSide(dir: string, config: Qwen2Config, dtype: WriteDtype, tokenizerDir: string): void {
  writeJsonSynced(join(dir, "config.json"), { ...qwen2ConfigJson(config), torch_dtype: TORCH_DTYPE_OF[dtype] });
  for (const f of TOKENIZER_FILES) {
    const src = join(tokenizerDir, f);
    if (existsSync(src)) copyFileSync(src, join(dir, f));
  }
}

export interface SaveOptions {
  /** Folder with the tokenizer files to copy (the base model's). */
  tokenizerDir: string;
  trainerState: Record<string, unknown>;
  /** Stored dtype of the weights (default F32: the master weights, what an exact resume needs). */
  dtype?: WriteDtype;
  /** Largest weight shard (default 5e9 bytes, transformers' "5GB"). */
  maxShardBytes?: number;
}

/**
 * Write a checkpoint folder. `opt` given: the optimiser state goes into
 * training_state/ (a resume point; weights must then be F32).
 */
export async function saveCheckpoint(dir: string, model: TrainModel, opt: Optimizer | null, o: SaveOptions): Promise<void> {
  const dtype = o.dtype ?? "F32";
  if (opt && dtype !== "F32") throw new Error(`checkpoint ${dir}: a resume point (with optimiser state) needs f32 weights, not ${dtype}`);
  await writeFolderAtomically(dir, async (tmp) => {
    const byName = model.byName;
    await writeModelWeights(tmp, model.params, (name) => model.readParam(byName.get(name)!), { dtype, maxShardBytes: o.maxShardBytes });
    writeModelSide(tmp, model.config, dtype, o.tokenizerDir);
    const state = join(tmp, STATE_DIR);
    mkdirSync(state);
    if (opt) {
      const index = new Map(model.params.map((p, i) => [p.name, i]));
      const specs = model.params.flatMap((p) => [
        { name: `m.${p.name}`, shape: p.shape },
        { name: `v.${p.name}`, shape: p.shape },
      ]);
      await writeSafetensorsStreaming(join(state, OPT_FILE), specs, (name) => opt.readMoment(index.get(name.slice(2))!, name[0] as "m" | "v"), "F32", { step: String(opt.step) });
    }
    writeJsonSynced(join(state, STATE_FILE), { ...o.trainerState, optimizer_step: opt?.step ?? 0 });
  });
}

/**
 * Rewrite any checkpoint (or HF Qwen2 folder) as a model folder in `dtype`,
 * sharded like save_pretrained, with its config and tokenizer files and
 * without training state; tensor by tensor. `out` must not exist yet.
 */
export async function exportCheckpoint(src: string, out: string, dtype: ExportDtype, maxShardBytes = DEFAULT_SHARD_BYTES): Promise<string[]> {
  if (!(dtype in WRITE_DTYPE)) throw new Error(`export: --dtype must be bf16, f16 or f32, got "${dtype}"`);
  if (existsSync(out)) throw new Error(`export: ${out} already exists; pick a new --out folder`);
  const config = loadQwen2Config(join(src, "config.json"));
  const reader = openCheckpoint(src);
  let files: string[] = [];
  try {
    const specs = qwen2WeightSpec(config).filter((s) => reader.has(s.name));
    await writeFolderAtomically(out, async (tmp) => {
      files = await writeModelWeights(tmp, specs, (name) => reader.readF32(name), { dtype: WRITE_DTYPE[dtype], maxShardBytes, metadata: { producer: "siri export" } });
      writeModelSide(tmp, config, WRITE_DTYPE[dtype], src);
    });
  } finally {
    reader.close();
  }
  return files.map((f) => join(out, f.slice(f.lastIndexOf("/") + 1)));
}

/** A checkpoint's (or HF folder's) config and weights, read one tensor at a time. */
export function openWeights(dir: string): { config: Qwen2Config; reader: WeightReader } {
  return { config: loadQwen2Config(join(dir, "config.json")), reader: openCheckpoint(dir) };
}

/** training_state/<file>, or the top level for checkpoints written before the subfolder. */
function statePath(dir: string, file: string): string | null {
  for (const p of [join(dir, STATE_DIR, file), join(dir, file)]) if (existsSync(p)) return p;
  return null;
}

export function readTrainerState(dir: string): Record<string, unknown> | null {
  const p = statePath(dir, STATE_FILE);
  if (!p) return null;
  try {
    return JSON.parse(readFileSync(p, "utf8"));
  } catch (e) {
    throw new Error(`${p}: not valid JSON (${(e as Error).message})`);
  }
}

/** Open a resume point's optimizer.safetensors; `use` gets the reader and its step. */
function withOptimizerFile<T>(dir: string, use: (r: WeightReader, step: number) => T): T {
  const p = statePath(dir, OPT_FILE);
  if (!p) throw new Error(`${dir}: no ${STATE_DIR}/${OPT_FILE}; only step-N checkpoints are resume points`);
  const r = openSafetensors(p);
  try {
    const step = Number(r.metadata.step);
    if (!Number.isInteger(step) || step < 0) throw new Error(`${p}: metadata "step" is missing or not an integer`);
    return use(r, step);
  } finally {
    r.close();
  }
}

/** Load the optimiser state of a resume point into `opt`, one moment tensor at a time. */
export function loadOptimizerState(dir: string, opt: Optimizer, paramOrder: string[]): void {
  withOptimizerFile(dir, (r, step) => {
    paramOrder.forEach((n, i) => {
      opt.loadMoment(i, "m", r.readF32(`m.${n}`));
      opt.loadMoment(i, "v", r.readF32(`v.${n}`));
    });
    opt.step = step;
  });
}

/** A resume point's optimiser state in memory (m and v per parameter, in `paramOrder`). */
export function readOptimizerState(dir: string, paramOrder: string[]): { m: Float32Array[]; v: Float32Array[]; step: number } {
  return withOptimizerFile(dir, (r, step) => ({ m: paramOrder.map((n) => r.readF32(`m.${n}`)), v: paramOrder.map((n) => r.readF32(`v.${n}`)), step }));
}

export interface LoadedCheckpoint {
  config: Qwen2Config;
  weights: Map<string, Float32Array>;
  optimizer: { m: Float32Array[]; v: Float32Array[]; step: number } | null;
  trainerState: Record<string, unknown> | null;
}

/**
 * Read a whole checkpoint into memory (tests and small models; training
 * reads tensor by tensor with openWeights / loadOptimizerState).
 */
export function loadCheckpoint(dir: string, paramOrder?: string[]): LoadedCheckpoint {
  const { config, reader } = openWeights(dir);
  const weights = new Map<string, Float32Array>();
  try {
    for (const name of reader.names()) weights.set(name, reader.readF32(name));
  } finally {
    reader.close();
  }
  const optimizer = paramOrder && statePath(dir, OPT_FILE) ? readOptimizerState(dir, paramOrder) : null;
  return { config, weights, optimizer, trainerState: readTrainerState(dir) };
}

/** The newest complete checkpoint `step-NNNNNN` under `runDir/checkpoints`, or null. */
export function latestCheckpoint(runDir: string): string | null {
  const root = join(runDir, "checkpoints");
  if (!existsSync(root)) return null;
  const steps = readdirSync(root)
    .filter((n) => /^step-\d+$/.test(n) && statePath(join(root, n), STATE_FILE) !== null)
    .sort();
  return steps.length ? join(root, steps[steps.length - 1]) : null;
}

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(6, "0")}`;
}

// ---------------------------------------------------------------- retention and disk

export interface Retention {
  /** step-N resume points kept (with optimiser state). */
  keepLast: number;
  /** Trough / peak checkpoints kept, newest first; 0 = all. */
  keepExtremes: number;
}

/** Remove the oldest step-N checkpoints beyond keepLast and trough/peak ones beyond keepExtremes. */
export function pruneCheckpoints(root: string, r: Retention): void {
  if (!existsSync(root)) return;
  const names = readdirSync(root);
  const steps = names.filter((n) => /^step-\d+$/.test(n)).sort();
  const extremes = names
    .filter((n) => /^(trough|peak)-cycle\d+$/.test(n))
    .map((n) => ({ n, step: Number(readTrainerState(join(root, n))?.step ?? 0) }))
    .sort((a, b) => a.step - b.step || a.n.localeCompare(b.n))
    .map((x) => x.n);
  const drop = [...steps.slice(0, Math.max(0, steps.length - r.keepLast)), ...(r.keepExtremes > 0 ? extremes.slice(0, Math.max(0, extremes.length - r.keepExtremes)) : [])];
  for (const n of drop) rmSync(join(root, n), { recursive: true, force: true });
}

/**
 * Disk a run's checkpoints take at most: keepLast resume points (f32
 * weights + AdamW m, v) plus one more while the next is written, and the
 * trough / peak checkpoints in their dtype.
 */
export function diskPlan(c: Qwen2Config, o: Retention & { extremes: number; extremesDtype: WriteDtype }): { what: string; bytes: number }[] {
  const P = memoryPlan(c, "float32").params;
  const bytes = { F32: 4, F16: 2, BF16: 2 }[o.extremesDtype];
  const kept = o.keepExtremes > 0 ? Math.min(o.keepExtremes, o.extremes) : o.extremes;
  return [
    { what: `resume points: ${o.keepLast} kept + 1 being written, each f32 weights + AdamW m, v (${((12 * P) / 1e9).toFixed(2)} GB)`, bytes: (o.keepLast + 1) * 12 * P },
    { what: `trough / peak checkpoints: ${kept} of ${o.extremes} kept, ${o.extremesDtype} weights only (${((bytes * P) / 1e9).toFixed(2)} GB each)`, bytes: kept * bytes * P },
  ];
}

/** How a run writes a checkpoint: resume points in f32, trough/peak in `extremesDtype` ("base": as the base model ships). */
export function checkpointFormat(c: TrainConfig["checkpoint"], baseDir: string, resumePoint: boolean): { dtype: WriteDtype; maxShardBytes: number } {
  const maxShardBytes = c.maxShardGB * 1e9;
  if (resumePoint) return { dtype: "F32", maxShardBytes };
  const dtype = c.extremesDtype === "base" ? shippedDtype(loadQwen2Config(join(baseDir, "config.json"))) : WRITE_DTYPE[c.extremesDtype];
  return { dtype, maxShardBytes };
}

/** The disk plan of a run: its retention settings over its schedule's troughs and peaks. */
export function runDiskPlan(model: Qwen2Config, cfg: TrainConfig, baseDir: string | null): { what: string; bytes: number }[] {
  const c = cfg.checkpoint;
  // Without the base folder (a --plan before the download) "base" means the shape's own torch_dtype.
  const extremesDtype = c.extremesDtype !== "base" ? WRITE_DTYPE[c.extremesDtype] : baseDir && existsSync(join(baseDir, "config.json")) ? checkpointFormat(c, baseDir, false).dtype : shippedDtype(model);
  const extremes = troughSteps(cfg.schedule, cfg.steps).length + peakSteps(cfg.schedule, cfg.steps).length;
  return diskPlan(model, { keepLast: c.keepLast, keepExtremes: c.keepExtremes, extremes, extremesDtype });
}
