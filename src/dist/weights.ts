/**
 * Versioned rollout weights on storage the learner and its workers share:
 * <dir>/v<version>/{config.json, model.safetensors}, each folder written
 * whole under a temporary name and renamed into place (a worker never sees
 * half a version). The tensors are the learner's rollout engine's own (f16
 * bits or f32 values), so a worker's engine holds the very same numbers.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Gpu } from "../gpu/index.ts";
import { loadQwen2Config } from "../model/config.ts";
import { checkQwen2Weights, openCheckpoint, writeSafetensors } from "../model/safetensors.ts";
import { weightSource } from "../engine/load.ts";
import { Qwen2Gpu, type DType } from "../engine/model.ts";
import { makeDirAtomically } from "../run/atomic.ts";
import type { RolloutModel } from "../train/rollout_model.ts";

export function versionDir(root: string, version: number): string {
  return resolve(join(root, `v${String(version).padStart(6, "0")}`));
}

/** Write version `version` of the rollout weights under `root`; keep the newest `keep` versions. */
export async function writeRolloutWeights(root: string, version: number, roll: RolloutModel, configJson: string, keep = 2): Promise<string> {
  const tensors = await roll.read();
  const dir = versionDir(root, version);
  const dtype = roll.model.dtype === "f16" ? "F16" : "F32";
  mkdirSync(root, { recursive: true });
  makeDirAtomically(dir, (tmp) => {
    mkdirSync(tmp, { recursive: true });
    copyFileSync(configJson, join(tmp, "config.json"));
    writeSafetensors(join(tmp, "model.safetensors"), Object.fromEntries(tensors.map((t) => [t.name, { dtype, shape: t.shape, data: t.data }])), { producer: "siri train --broker", version: String(version) });
  });
  for (const n of prunable(existsSync(root) ? readdirSync(root) : [], version, keep)) rmSync(join(root, n), { recursive: true, force: true });
  return dir;
}

/**
 * The version folders to delete once `version` is written: all but the newest
 * `keep` up to it, and any numbered past it (left by an earlier run in the
 * same folder, which a resumed run, counting from 0 again, must not keep in
 * place of its own).
 */
export function prunable(names: string[], version: number, keep: number): string[] {
  return names.filter((n) => /^v\d+$/.test(n)).filter((n) => {
    const v = Number(n.slice(1));
    return v > version || v <= version - keep;
  });
}

/** A version's weights onto the GPU (checked against its config first). */
export async function loadRolloutWeights(gpu: Gpu, dir: string, dtype: DType): Promise<Qwen2Gpu> {
  const config = loadQwen2Config(join(dir, "config.json"));
  const reader = openCheckpoint(dir);
  try {
    checkQwen2Weights(config, reader);
    return await Qwen2Gpu.create(gpu, config, weightSource(reader), dtype);
  } finally {
    reader.close();
  }
}
