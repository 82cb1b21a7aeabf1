/**
 * Checkpoints: a Hugging Face model folder (config.json, model.safetensors,
 * tokenizer files, generation_config.json) that transformers and vLLM load,
 * plus optimizer.safetensors (AdamW moments) and trainer_state.json for an
 * exact resume.
 *
 * Atomic: everything is written into `<dir>.tmp-<pid>`, each file fsynced,
 * then the folder is renamed into place (the previous one moved aside first
 * and removed after). A crash at any point leaves either the previous
 * checkpoint or the new one, and `latestCheckpoint` ignores leftovers.
 * Weights are saved in f32: they are the master weights, and resuming from
 * anything rounder would not continue the same run.
 */
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { loadQwen2Config, qwen2ConfigJson, type Qwen2Config } from "../model/config.ts";
import { openCheckpoint, openSafetensors, writeSafetensors, type WriteTensor } from "../model/safetensors.ts";
import type { TrainModel } from "./model.ts";
import type { Optimizer } from "./optim.ts";

export const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"];

function writeJsonSynced(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2) + "\n");
  const fd = openSync(path, "r");
  fsyncSync(fd);
  closeSync(fd);
}

function syncDir(path: string): void {
  try {
    const fd = openSync(path, "r");
    fsyncSync(fd);
    closeSync(fd);
  } catch {
    // some filesystems refuse fsync on directories; the renames still order
  }
}

export interface SaveOptions {
  /** Folder with the tokenizer files to copy (the base model's). */
  tokenizerDir: string;
  trainerState: Record<string, unknown>;
}

export async function saveCheckpoint(dir: string, model: TrainModel, opt: Optimizer | null, o: SaveOptions): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const weights = await model.readWeights();
  const tensors: Record<string, WriteTensor> = {};
  for (const p of model.params) tensors[p.name] = { dtype: "F32", shape: p.shape, data: weights.get(p.name)! };
  writeSafetensors(join(tmp, "model.safetensors"), tensors, { format: "pt" });
  writeJsonSynced(join(tmp, "config.json"), { ...qwen2ConfigJson(model.config), torch_dtype: "float32" });
  for (const f of TOKENIZER_FILES) {
    const src = join(o.tokenizerDir, f);
    if (existsSync(src)) copyFileSync(src, join(tmp, f));
  }
  if (opt) {
    const st = await opt.readState();
    const ot: Record<string, WriteTensor> = {};
    model.params.forEach((p, i) => {
      ot[`m.${p.name}`] = { dtype: "F32", shape: p.shape, data: st.m[i] };
      ot[`v.${p.name}`] = { dtype: "F32", shape: p.shape, data: st.v[i] };
    });
    writeSafetensors(join(tmp, "optimizer.safetensors"), ot, { step: String(st.step) });
  }
  writeJsonSynced(join(tmp, "trainer_state.json"), { ...o.trainerState, optimizer_step: opt?.step ?? 0 });
  syncDir(tmp);
  const old = `${dir}.old-${process.pid}`;
  if (existsSync(dir)) renameSync(dir, old);
  renameSync(tmp, dir);
  syncDir(dirname(dir));
  rmSync(old, { recursive: true, force: true });
}

export interface LoadedCheckpoint {
  config: Qwen2Config;
  weights: Map<string, Float32Array>;
  optimizer: { m: Float32Array[]; v: Float32Array[]; step: number } | null;
  trainerState: Record<string, unknown> | null;
}

/** Read a checkpoint (or any HF Qwen2 folder: then optimizer and trainer state are null). */
export function loadCheckpoint(dir: string, paramOrder?: string[]): LoadedCheckpoint {
  const config = loadQwen2Config(join(dir, "config.json"));
  const reader = openCheckpoint(dir);
  const weights = new Map<string, Float32Array>();
  try {
    for (const name of reader.names()) weights.set(name, reader.readF32(name));
  } finally {
    reader.close();
  }
  let optimizer: LoadedCheckpoint["optimizer"] = null;
  const optPath = join(dir, "optimizer.safetensors");
  if (existsSync(optPath) && paramOrder) {
    const r = openSafetensors(optPath);
    try {
      const step = Number(r.metadata.step);
      if (!Number.isInteger(step) || step < 0) throw new Error(`${optPath}: metadata "step" is missing or not an integer`);
      optimizer = {
        m: paramOrder.map((n) => r.readF32(`m.${n}`)),
        v: paramOrder.map((n) => r.readF32(`v.${n}`)),
        step,
      };
    } finally {
      r.close();
    }
  }
  const statePath = join(dir, "trainer_state.json");
  let trainerState: Record<string, unknown> | null = null;
  if (existsSync(statePath)) {
    try {
      trainerState = JSON.parse(readFileSync(statePath, "utf8"));
    } catch (e) {
      throw new Error(`${statePath}: not valid JSON (${(e as Error).message})`);
    }
  }
  return { config, weights, optimizer, trainerState };
}

/** The newest complete checkpoint `step-NNNNNN` under `runDir/checkpoints`, or null. */
export function latestCheckpoint(runDir: string): string | null {
  const root = join(runDir, "checkpoints");
  if (!existsSync(root)) return null;
  const steps = readdirSync(root)
    .filter((n) => /^step-\d+$/.test(n) && existsSync(join(root, n, "trainer_state.json")))
    .sort();
  return steps.length ? join(root, steps[steps.length - 1]) : null;
}

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(6, "0")}`;
}

