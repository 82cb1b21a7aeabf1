/**
 * Open a Hugging Face Qwen2 checkpoint folder onto the GPU: config, weights
 * (checked against the config before anything is uploaded), tokenizer.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Gpu } from "../gpu/index.ts";
import { loadQwen2Config, type Qwen2Config } from "../model/config.ts";
import { checkQwen2Weights, openCheckpoint, type WeightReader } from "../model/safetensors.ts";
import { loadTokenizer, type LoadedTokenizer } from "../model/tokenizer.ts";
import { KvCache } from "./kv_cache.ts";
import { createWorkspace, destroyWorkspace, Qwen2Gpu, type DType, type WeightSource } from "./model.ts";

export interface LoadedModel {
  dir: string;
  config: Qwen2Config;
  tokenizer: LoadedTokenizer;
  model: Qwen2Gpu;
}

/** Host bytes read from a checkpoint between two full collections while loading. */
const COLLECT_EVERY_BYTES = 64 << 20;

/**
 * Weights read from a checkpoint file. Each read is a fresh host copy that is
 * garbage once uploaded, but the collector sees only small wrappers around
 * that array memory and leaves gigabytes resident (1.5B f16: 7.4 GiB after
 * loading a 3.55 GB checkpoint); so before reading on, once 64 MiB have been
 * read since the last one, a blocking full collection frees what was uploaded.
 */
export function weightSource(reader: WeightReader): WeightSource {
  let unreleased = 0;
  const read = <T extends Float32Array | Uint16Array>(f: () => T): T => {
    if (unreleased >= COLLECT_EVERY_BYTES) {
      Bun.gc(true);
      unreleased = 0;
    }
    const out = f();
    unreleased += out.byteLength;
    return out;
  };
  return {
    has: (name) => reader.has(name),
    get: (name, dtype) => read(() => (dtype === "f16" ? reader.readF16Bits(name) : reader.readF32(name))),
    getRows: (name, dtype, row0, rows) => read(() => reader.readRows(name, dtype, row0, rows)),
  };
}

/** Pick f16 where the adapter has it, unless asked otherwise. */
export function defaultDtype(gpu: Gpu, asked?: string): DType {
  if (asked === "f32" || asked === "f16") return asked;
  if (asked) throw new Error(`--dtype: expected f32 or f16, got "${asked}"`);
  return gpu.features.f16 ? "f16" : "f32";
}

export async function loadModel(gpu: Gpu, dir: string, dtype: DType): Promise<LoadedModel> {
  const cfgPath = join(dir, "config.json");
  if (!existsSync(cfgPath)) throw new Error(`${dir}: no config.json; is this a Hugging Face model folder?`);
  const config = loadQwen2Config(cfgPath);
  const reader = openCheckpoint(dir);
  try {
    checkQwen2Weights(config, reader);
    const tokenizer = loadTokenizer(dir);
    const model = await Qwen2Gpu.create(gpu, config, weightSource(reader), dtype);
    Bun.gc(true); // the last reads' host copies, uploaded by now
    return { dir, config, tokenizer, model };
  } finally {
    reader.close();
  }
}

/**
 * Full-vocabulary logits at every position of one sequence, [T, V] f32,
 * computed in prefill chunks of `chunk` tokens through a one-slot cache
 * (`rowsAreTokens`: the LM head reads the residual stream directly, as in
 * decode, instead of gathered rows; the same values).
 */
export async function sequenceLogits(m: Qwen2Gpu, tokens: number[], chunk = 64, rowsAreTokens = false): Promise<Float32Array> {
  const gpu = m.gpu;
  const c = m.config;
  const T = tokens.length;
  tokens.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new Error(`token ${i} = ${t} is outside the vocabulary 0..${c.vocabSize - 1}`);
  });
  const rowCap = Math.max(1, Math.min(chunk, Math.floor(gpu.limits.maxStorageBufferBindingSize / (c.vocabSize * 4))));
  const step = Math.min(chunk, rowCap);
  const cache = new KvCache(gpu, {
    numLayers: c.numLayers,
    nKv: c.numKvHeads,
    headDim: c.headDim,
    blockSize: 16,
    numBlocks: Math.ceil(T / 16),
    maxSeqs: 1,
    maxSeqLen: Math.ceil(T / 16) * 16,
    bytesPerElement: m.dtype === "f16" ? 2 : 4,
  });
  const ws = createWorkspace(gpu, c, m.dtype, step, step);
  const out = new Float32Array(T * c.vocabSize);
  try {
    cache.admit(T);
    cache.sync();
    for (let s = 0; s < T; s += step) {
      const n = Math.min(step, T - s);
      gpu.write(ws.tokens, new Uint32Array(tokens.slice(s, s + n)));
      gpu.write(ws.tokSeq, new Uint32Array(n));
      gpu.write(ws.tokPos, Uint32Array.from({ length: n }, (_, i) => s + i));
      gpu.write(ws.rowIdx, Uint32Array.from({ length: n }, (_, i) => i));
      const b = gpu.batch();
      m.recordForward(b, ws, cache, n, n, "prefill", {}, { rowsAreTokens });
      b.submit();
      out.set(await gpu.readF32(ws.logits, n * c.vocabSize), s * c.vocabSize);
    }
  } finally {
    destroyWorkspace(ws);
    cache.destroy();
  }
  return out;
}
