/**
 * Writing model weights the way transformers' save_pretrained does, one
 * tensor at a time (never a buffer of the whole model):
 *
 * - one file `model.safetensors` when everything fits one shard, else
 *   `model-00001-of-0000N.safetensors` ... and `model.safetensors.index.json`
 *   = {"metadata": {"total_size": bytes of all tensors}, "weight_map":
 *   {tensor: shard file}} (transformers' sharded-checkpoint index; vLLM,
 *   SGLang and transformers read it);
 * - a shard is closed before the next tensor would push it past
 *   `maxShardBytes` (transformers' default max_shard_size "5GB" = 5e9 bytes);
 *   a tensor larger than that gets a shard of its own.
 *
 * Each file's header is computed from the shapes first, then the tensors are
 * produced, converted and written one by one; files are written to a temp
 * name, fsynced and renamed, so a crash never leaves a half-written file
 * under its real name.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { f32ToF16Bits } from "../kernels/f16.ts";
import { f32ToBf16Bits, type WriteDtype } from "./safetensors.ts";

/** transformers' default max_shard_size, "5GB" (decimal). */
export const DEFAULT_SHARD_BYTES = 5e9;
export const INDEX_FILE = "model.safetensors.index.json";

const BYTES: Record<WriteDtype, number> = { F32: 4, F16: 2, BF16: 2 };

/** config.json's torch_dtype for a stored dtype. */
export const TORCH_DTYPE_OF: Record<WriteDtype, "float32" | "float16" | "bfloat16"> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

export interface TensorSpec {
  name: string;
  shape: number[];
}

/** The values of one tensor, asked for once, in file order. */
export type TensorProducer = (name: string) => Promise<Float32Array> | Float32Array;

function numel(shape: number[]): number {
  return shape.reduce((a, d) => a * d, 1);
}

function toBytes(name: string, data: Float32Array, dtype: WriteDtype, want: number): Uint8Array {
  if (data.length !== want) throw new Error(`safetensors writer: tensor "${name}": ${data.length} values for ${want} elements`);
  const out = dtype === "F32" ? data : dtype === "F16" ? f32ToF16Bits(data) : f32ToBf16Bits(data);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

async function writeFully(fh: FileHandle, b: Uint8Array): Promise<void> {
  for (let done = 0; done < b.byteLength; ) done += (await fh.write(b, done, b.byteLength - done)).bytesWritten;
}

/** fsync a directory (renames inside it are durable); a no-op where the filesystem refuses. */
export function syncDir(path: string): void {
  try {
    const fd = openSync(path, "r");
    fsyncSync(fd);
    closeSync(fd);
  } catch {
    // not every filesystem can fsync a directory; the rename is done
  }
}

/**
 * Write one .safetensors file streaming: header from the shapes, then each
 * tensor produced, converted to `dtype` and written before the next is asked for.
 */
export async function writeSafetensorsStreaming(
  path: string,
  tensors: TensorSpec[],
  produce: TensorProducer,
  dtype: WriteDtype,
  metadata: Record<string, string> = {},
): Promise<void> {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const bytes = numel(t.shape) * BYTES[dtype];
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (new TextEncoder().encode(json).byteLength % 8)) % 8); // data 8-byte aligned
  const jsonBytes = new TextEncoder().encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(jsonBytes.byteLength), true);
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  const fh = await open(tmp, "w");
  let ok = false;
  try {
    for (const part of [len, jsonBytes]) await writeFully(fh, part);
    for (const t of tensors) await writeFully(fh, toBytes(t.name, await produce(t.name), dtype, numel(t.shape)));
    await fh.sync();
    ok = true;
  } catch (e) {
    throw new Error(`${path}: write failed: ${(e as Error).message}`);
  } finally {
    await fh.close();
    if (!ok) rmSync(tmp, { force: true });
  }
  renameSync(tmp, path);
  syncDir(dirname(path));
}

/** Shard assignment: tensors in order, a new shard when the next would exceed `maxShardBytes`. */
export function planShards(tensors: TensorSpec[], dtype: WriteDtype, maxShardBytes = DEFAULT_SHARD_BYTES): TensorSpec[][] {
  if (!(maxShardBytes > 0)) throw new Error(`shards: maxShardBytes must be > 0, got ${maxShardBytes}`);
  const shards: TensorSpec[][] = [];
  let cur: TensorSpec[] = [];
  let size = 0;
  for (const t of tensors) {
    const b = numel(t.shape) * BYTES[dtype];
    if (cur.length && size + b > maxShardBytes) {
      shards.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(t);
    size += b;
  }
  if (cur.length) shards.push(cur);
  return shards;
}

export function shardName(i: number, n: number): string {
  return n === 1 ? "model.safetensors" : `model-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
}

/**
 * Write a model's weights into `dir` as save_pretrained lays them out;
 * returns the files written (shards, then the index when sharded).
 */
export async function writeModelWeights(
  dir: string,
  tensors: TensorSpec[],
  produce: TensorProducer,
  o: { dtype: WriteDtype; maxShardBytes?: number; metadata?: Record<string, string> },
): Promise<string[]> {
  const shards = planShards(tensors, o.dtype, o.maxShardBytes);
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (const [i, shard] of shards.entries()) {
    const name = shardName(i, shards.length);
    await writeSafetensorsStreaming(join(dir, name), shard, produce, o.dtype, { format: "pt", ...o.metadata });
    for (const t of shard) {
      weightMap[t.name] = name;
      total += numel(t.shape) * BYTES[o.dtype];
    }
    files.push(join(dir, name));
  }
  if (shards.length > 1) {
    const index = join(dir, INDEX_FILE);
    const tmp = `${index}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n");
    const fd = openSync(tmp, "r");
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, index);
    files.push(index);
  }
  return files;
}
