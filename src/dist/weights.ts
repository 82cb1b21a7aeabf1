/**
 * Versioned rollout weights on storage the learner and its workers share:
 * <root>/v<version>/{config.json, model.safetensors}. The tensors are the
 * learner's rollout engine's own (f16 bits or f32 values), so a worker's
 * engine holds the very same numbers.
 *
 * Two kinds of root. A folder (a shared filesystem): each version folder is
 * written whole under a temporary name and renamed into place. An S3 URL
 * s3://BUCKET/PREFIX (machines with no shared filesystem; src/dist/s3.ts):
 * the version is written to a local temporary folder, then uploaded to
 * PREFIX/v<version>/ weights first, config.json next, and last a small
 * marker, complete.json, naming each file's size and a fresh id. A worker
 * reads a version only through its marker (none: incomplete, not loaded),
 * downloads it to a local cache folder (temporary name + rename, sizes
 * checked against the marker) and loads it from there as from a folder.
 * Either way a worker never reads half a version.
 */
import { randomUUID } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Gpu } from "../gpu/index.ts";
import { loadQwen2Config } from "../model/config.ts";
import { checkQwen2Weights, openCheckpoint, writeSafetensors } from "../model/safetensors.ts";
import { weightSource } from "../engine/load.ts";
import { Qwen2Gpu, type DType } from "../engine/model.ts";
import { makeDirAtomically } from "../run/atomic.ts";
import type { RolloutModel } from "../train/rollout_model.ts";
import { isS3Url, parseS3Url, s3Call, s3Child, s3Client, s3Folders, s3Keys, type S3Place } from "./s3.ts";

/** Check a weights root before a run starts: an S3 URL must parse, and the credentials be set. */
export function checkWeightsRoot(root: string): void {
  if (isS3Url(root)) s3Client(parseS3Url(root));
}

/** The marker an S3 version is complete with (written last). */
export const MARKER = "complete.json";
/** The files of a version, in upload order (the marker after them). */
const FILES = ["model.safetensors", "config.json"];

const versionName = (version: number) => `v${String(version).padStart(6, "0")}`;

export function versionDir(root: string, version: number): string {
  if (isS3Url(root)) return s3Child(parseS3Url(root), versionName(version)).url;
  return resolve(join(root, versionName(version)));
}

export interface VersionTensor {
  name: string;
  shape: number[];
  data: Float32Array | Uint16Array;
}

/** Write version `version` of the rollout weights under `root` (a folder or s3://BUCKET/PREFIX); keep the newest `keep` versions. */
export async function writeRolloutWeights(root: string, version: number, roll: RolloutModel, configJson: string, keep = 2): Promise<string> {
  return writeWeightsVersion(root, version, await roll.read(), roll.model.dtype === "f16" ? "F16" : "F32", configJson, keep);
}

/** The same from the tensors themselves; returns the version's folder or URL (what the learner announces). */
export async function writeWeightsVersion(root: string, version: number, tensors: VersionTensor[], dtype: "F16" | "F32", configJson: string, keep = 2): Promise<string> {
  const fill = (tmp: string) => {
    mkdirSync(tmp, { recursive: true });
    copyFileSync(configJson, join(tmp, "config.json"));
    writeSafetensors(join(tmp, "model.safetensors"), Object.fromEntries(tensors.map((t) => [t.name, { dtype, shape: t.shape, data: t.data }])), { producer: "siri train --broker", version: String(version) });
  };
  if (isS3Url(root)) return putVersion(parseS3Url(root), version, fill, keep);
  const dir = versionDir(root, version);
  mkdirSync(root, { recursive: true });
  makeDirAtomically(dir, fill);
  for (const n of prunable(existsSync(root) ? readdirSync(root) : [], version, keep)) rmSync(join(root, n), { recursive: true, force: true });
  return dir;
}

/** Upload a version (weights, config, then the marker), then delete the versions `prunable` names. */
async function putVersion(root: S3Place, version: number, fill: (tmp: string) => void, keep: number): Promise<string> {
  const c = s3Client(root);
  const v = s3Child(root, versionName(version));
  const local = mkdtempSync(join(tmpdir(), "siri-upload-"));
  try {
    fill(join(local, "v"));
    // A version rewritten in place (a resumed run counts from 0 again): it is incomplete from the first byte changed.
    await s3Call("deleting", `${v.url}/${MARKER}`, () => c.delete(`${v.prefix}/${MARKER}`));
    const files: Record<string, number> = {};
    for (const f of FILES) {
      const path = join(local, "v", f);
      files[f] = statSync(path).size;
      await s3Call("uploading", `${v.url}/${f}`, () => c.write(`${v.prefix}/${f}`, Bun.file(path)));
    }
    const marker = { version, id: randomUUID(), files };
    await s3Call("uploading", `${v.url}/${MARKER}`, () => c.write(`${v.prefix}/${MARKER}`, JSON.stringify(marker), { type: "application/json" }));
  } finally {
    rmSync(local, { recursive: true, force: true });
  }
  for (const n of prunable(await s3Folders(c, root), version, keep)) {
    const old = s3Child(root, n);
    // The marker first: a version being deleted is incomplete, never half there.
    await s3Call("deleting", `${old.url}/${MARKER}`, () => c.delete(`${old.prefix}/${MARKER}`));
    for (const k of await s3Keys(c, old)) await s3Call("deleting", `s3://${root.bucket}/${k}`, () => c.delete(k));
  }
  return v.url;
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

/** A worker's default cache for downloaded versions: one folder per worker (each keeps only its newest). */
export function defaultCacheDir(worker: string): string {
  return join(tmpdir(), "siri-weights-cache", worker.replace(/[^\w.-]/g, "_"));
}

interface Marker {
  version: number;
  id: string;
  files: Record<string, number>;
}

function checkMarker(url: string, x: unknown): Marker {
  const m = x as Marker;
  const bad = (why: string) => new Error(`${url}: ${why}`);
  if (typeof m !== "object" || m === null) throw bad("not a JSON object");
  if (!Number.isInteger(m.version) || m.version < 0) throw bad("version: expected an integer >= 0");
  if (typeof m.id !== "string" || !/^[\w-]+$/.test(m.id)) throw bad("id: expected letters, digits, - or _");
  if (typeof m.files !== "object" || m.files === null) throw bad("files: expected {name: size}");
  for (const f of FILES) if (!Number.isInteger(m.files[f]) || m.files[f] < 0) throw bad(`files.${f}: expected its size in bytes`);
  return { version: m.version, id: m.id, files: Object.fromEntries(FILES.map((f) => [f, m.files[f]])) };
}

/**
 * Where to load announced weights from: a folder as announced, or an S3
 * version downloaded into `cacheDir` (once; other cached versions removed).
 * A version without its marker is refused as incomplete.
 */
export async function localWeights(dir: string, cacheDir: string): Promise<string> {
  if (!isS3Url(dir)) return dir;
  const v = parseS3Url(dir);
  const c = s3Client(v);
  const markerUrl = `${v.url}/${MARKER}`;
  const mf = c.file(`${v.prefix}/${MARKER}`);
  if (!(await s3Call("looking for", markerUrl, () => mf.exists()))) throw new Error(`${v.url}: incomplete version: no ${MARKER} (the learner uploads it after the weights: still uploading, stopped part-way, or deleted)`);
  let marker: Marker;
  try {
    marker = checkMarker(markerUrl, JSON.parse(await s3Call("reading", markerUrl, () => mf.text())));
  } catch (e) {
    throw e instanceof SyntaxError ? new Error(`${markerUrl}: not JSON: ${e.message}`) : e;
  }
  const name = `${v.prefix.split("/").pop()}-${marker.id}`;
  const target = join(cacheDir, name);
  if (!existsSync(target)) {
    mkdirSync(cacheDir, { recursive: true });
    const tmp = `${target}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp);
    try {
      for (const f of FILES) {
        const path = join(tmp, f);
        await s3Call("downloading", `${v.url}/${f}`, () => Bun.write(path, c.file(`${v.prefix}/${f}`)));
        const size = statSync(path).size;
        if (size !== marker.files[f]) throw new Error(`${v.url}/${f}: ${size} bytes, ${MARKER} says ${marker.files[f]} (rewritten while downloading?)`);
      }
      writeFileSync(join(tmp, MARKER), JSON.stringify(marker));
      renameSync(tmp, target);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }
  // Older downloads (this worker holds one version at a time).
  for (const n of readdirSync(cacheDir)) if (n !== name && /^v\d+-[\w-]+$/.test(n)) rmSync(join(cacheDir, n), { recursive: true, force: true });
  return target;
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
