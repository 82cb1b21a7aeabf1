/**
 * Dispatch counts by kernel family: what a decode step, a prefill chunk, a
 * training micro-batch and an optimiser step record, and GPU time per family
 * from timestamp queries.
 *
 * Inference steps are counted at any shape (the 1.5B one included) without
 * running them: the real `Qwen2Gpu.recordForward` and sampler record into a
 * counting `Batch` (wrappers validate shapes and bindings, nothing is
 * encoded) over stand-in weight buffers that only carry a size. Training is
 * counted on real tiny models of 2 and 3 layers (the per-layer sequence of
 * kernels does not depend on widths) and extrapolated to L layers, with the
 * LM head's token chunks computed for the target vocabulary; the optimiser
 * step is counted over the target's parameter arena with stand-in buffers.
 */
import { createWorkspace, Qwen2Gpu, type ChunkedMatrix, type DType, type LayerWeights } from "../src/engine/model.ts";
import { KvCache } from "../src/engine/kv_cache.ts";
import { addTally, Batch, type DispatchTally, type Gpu, type KernelTiming } from "../src/gpu/index.ts";
import { loadAdamW } from "../src/kernels/adamw.ts";
import type { AttentionForm } from "../src/kernels/attention.ts";
import { DECODE_STATE } from "../src/kernels/decode.ts";
import { loadSampler } from "../src/kernels/sample.ts";
import type { Qwen2Config } from "../src/model/config.ts";
import { qwen2WeightSpec } from "../src/model/safetensors.ts";
import { planArena } from "../src/train/arena.ts";
import { keepsInternals, logitChunk, packSequences, rowParts, TrainModel } from "../src/train/model.ts";
import { recordOptimizerStep, type OptimChunk } from "../src/train/optim.ts";

/** A buffer that only has a size: enough for the wrappers' binding checks in a counting batch. */
function standIn(bytes: number, label: string): GPUBuffer {
  return { size: bytes, label, destroy() {} } as unknown as GPUBuffer;
}

function standInChunked(gpu: Gpu, rows: number, cols: number, e: number, label: string): ChunkedMatrix {
  const maxRows = Math.max(1, Math.floor(gpu.limits.maxStorageBufferBindingSize / (cols * e)));
  const chunks: ChunkedMatrix["chunks"] = [];
  for (let row0 = 0; row0 < rows; row0 += maxRows) {
    const n = Math.min(maxRows, rows - row0);
    chunks.push({ buffer: standIn(n * cols * e, `${label}[${row0}]`), row0, rows: n });
  }
  return { rows, cols, chunks };
}

export interface InferenceCounts {
  decode: DispatchTally;
  prefill: DispatchTally;
  /** Weight row chunks of the LM head on this adapter (its max storage binding). */
  lmHeadChunks: number;
}

/**
 * Dispatches of one decode step of `batch` sequences (forward + sampling and advance)
 * and of one prefill chunk of `chunk` tokens ending one prompt (forward +
 * sampling its one row), at `config`'s shapes.
 */
export async function countInference(gpu: Gpu, c: Qwen2Config, dtype: DType, batch: number, chunk: number, attention?: AttentionForm): Promise<InferenceCounts> {
  const e = dtype === "f16" ? 2 : 4;
  const H = c.hiddenSize;
  const qkv = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  const embed = standInChunked(gpu, c.vocabSize, H, e, "embed");
  const model = await Qwen2Gpu.withWeights(gpu, c, dtype, () => ({
    layers: Array.from({ length: c.numLayers }, (_, l): LayerWeights => ({
      ln1: standIn(H * e, `ln1.${l}`),
      wqkv: standIn(qkv * H * e, `wqkv.${l}`),
      bqkv: standIn(qkv * e, `bqkv.${l}`),
      wo: standIn(H * c.numHeads * c.headDim * e, `wo.${l}`),
      ln2: standIn(H * e, `ln2.${l}`),
      wg: standIn(c.intermediateSize * H * e, `wg.${l}`),
      wu: standIn(c.intermediateSize * H * e, `wu.${l}`),
      wd: standIn(c.intermediateSize * H * e, `wd.${l}`),
    })),
    embed,
    lmHead: c.tieWordEmbeddings ? embed : standInChunked(gpu, c.vocabSize, H, e, "lm_head"),
    norm: standIn(H * e, "norm"),
  }), attention);
  const ws = createWorkspace(gpu, c, dtype, Math.max(batch, chunk), batch);
  const cache = new KvCache(gpu, {
    numLayers: c.numLayers,
    nKv: c.numKvHeads,
    headDim: c.headDim,
    blockSize: 16,
    numBlocks: 2, // counting only: a binding must hold one block
    maxSeqs: batch,
    maxSeqLen: 4096,
    bytesPerElement: e,
  });
  const sampler = await loadSampler(gpu, { decode: true, gather: dtype });
  const out = gpu.buffer(batch * 4, "count.tokens");
  const lp = gpu.buffer(batch * 4, "count.logp");
  const streams = gpu.buffer(batch * 8, "count.streams");
  const K = 8;
  const advance = { tokens: ws.tokens, pos: ws.tokPos, dec: standIn(4 * batch * (DECODE_STATE + 2 * K), "dec"), K, s: 0, outBase: batch * DECODE_STATE };
  // As the engine records them: a decode step's LM head reads the residual stream, its sampler advances the rows.
  const step = (T: number, R: number, mode: "decode" | "prefill") => {
    const b = Batch.counting(gpu.limits.maxComputeWorkgroupsPerDimension);
    // A decode step after a window's first: its input embeddings came from the last step's sampler
    // where the embedding is one binding (Engine: DecodeWindow), else from the gather.
    const oneChunk = model.weights.embed.chunks.length === 1;
    const decode = mode === "decode";
    model.recordForward(b, ws, cache, T, R, mode, { logitsPath: batch <= 32 ? "decode" : "prefill" }, { rowsAreTokens: decode, embedded: decode && oneChunk });
    const embed = oneChunk ? { table: model.weights.embed.chunks[0].buffer, x: ws.x, H: c.hiddenSize } : undefined;
    sampler.sample(b, ws.logits, out, lp, R, c.vocabSize, { temperature: 0.6, topK: 0, topP: 0.95, seed: 1 }, streams, decode ? { ...advance, embed } : undefined);
    return b.byFamily;
  };
  const counts = { decode: step(batch, batch, "decode"), prefill: step(chunk, 1, "prefill"), lmHeadChunks: model.weights.lmHead.chunks.length };
  for (const buf of [out, lp, streams]) buf.destroy();
  cache.destroy();
  return counts;
}

/** Random small values for every tensor of `c` (counting only; the values do not matter). */
function values(c: Qwen2Config): Map<string, Float32Array> {
  return new Map(qwen2WeightSpec(c).map((s) => [s.name, new Float32Array(s.shape.reduce((a, b) => a * b, 1)).fill(0.01)]));
}

async function countMicroBatch(gpu: Gpu, c: Qwen2Config, T: number, keep: boolean, logitRows?: number): Promise<DispatchTally> {
  const model = await TrainModel.create(gpu, c, values(c), { logitRows, keepActivationBytes: keep ? Infinity : 0 });
  const seq = Array.from({ length: T }, (_, i) => (i * 7 + 1) % c.vocabSize);
  const mb = packSequences([{ tokens: seq, lossFrom: 1 }]);
  const b = Batch.counting(gpu.limits.maxComputeWorkgroupsPerDimension);
  model.recordForward(b, mb);
  model.recordBackward(b, T);
  model.destroy();
  return b.byFamily;
}

/** a + k·b per family (counts of zero dropped). */
function combine(a: DispatchTally, b: DispatchTally, k: number): DispatchTally {
  const out: DispatchTally = new Map(a);
  for (const [f, n] of b) out.set(f, (out.get(f) ?? 0) + k * n);
  for (const [f, n] of out) if (n === 0) out.delete(f);
  return out;
}

export interface TrainCounts {
  /** Forward + backward of one micro-batch of T tokens at L layers (the loss kernel not included). */
  microBatch: DispatchTally;
  /** Gradient norm + AdamW over every parameter of the target config. */
  optimizer: DispatchTally;
  /** Per layer (width-independent). */
  perLayer: DispatchTally;
}

/**
 * Training counts for `target` (e.g. the 1.5B config): per-layer and fixed
 * parts measured on `tiny` with 2 and 3 layers, extrapolated to
 * target.numLayers; LM-head chunks for target's vocabulary added.
 */
export async function countTraining(gpu: Gpu, tiny: Qwen2Config, target: Qwen2Config, T: number): Promise<TrainCounts> {
  // The target keeps every layer's internals (no recompute) only where they fit TrainModel's budget.
  const keep = keepsInternals(target, T);
  const two = await countMicroBatch(gpu, { ...tiny, numLayers: 2 }, T, keep);
  const three = await countMicroBatch(gpu, { ...tiny, numLayers: 3 }, T, keep);
  const perLayer = combine(three, two, -1);
  const base = combine(two, perLayer, target.numLayers - 2);
  // LM-head token chunks: dispatches with n chunks, g(n); one chunk is special (the backward reuses its logits).
  const layers2 = { ...tiny, numLayers: 2 };
  const g1 = await countMicroBatch(gpu, layers2, 128, keep);
  const g2 = await countMicroBatch(gpu, layers2, 128, keep, 64);
  const perChunk = combine(await countMicroBatch(gpu, layers2, 192, keep, 64), g2, -1);
  const g = (n: number) => (n === 1 ? g1 : combine(g2, perChunk, n - 2));
  const chunksTiny = Math.ceil(T / logitChunk(T, tiny.vocabSize, gpu.limits.maxStorageBufferBindingSize));
  const chunksTarget = Math.ceil(T / logitChunk(T, target.vocabSize, gpu.limits.maxStorageBufferBindingSize));
  const microBatch = combine(combine(base, g(chunksTiny), -1), g(chunksTarget), 1);
  return { microBatch, optimizer: (await countOptimizer(gpu, target)).tally, perLayer };
}

export interface OptimizerCounts {
  tally: DispatchTally;
  /** Tensors, their row parts (embedding / LM head split at the max storage binding) and arena chunks. */
  tensors: number;
  parts: number;
  chunks: number;
}

/**
 * Dispatches of one optimiser step (gradient norm + clip + AdamW) over every
 * parameter of `c`, through the trainer's own recording (recordOptimizerStep)
 * over stand-in arena chunks laid out as TrainModel lays them out.
 */
export async function countOptimizer(gpu: Gpu, c: Qwen2Config): Promise<OptimizerCounts> {
  const limit = gpu.limits.maxStorageBufferBindingSize;
  const specs = qwen2WeightSpec(c);
  const sizes = specs.flatMap((s) => rowParts(s.shape, limit).map((p) => p.size));
  const plan = planArena(sizes, limit, gpu.limits.minStorageBufferOffsetAlignment);
  const chunks: OptimChunk[] = plan.chunkElems.map((n, k) => ({
    value: standIn(n * 4, `params#${k}`),
    grad: standIn(n * 4, `grads#${k}`),
    m: standIn(n * 4, `m#${k}`),
    v: standIn(n * 4, `v#${k}`),
    elems: n,
  }));
  const adam = await loadAdamW(gpu);
  const b = Batch.counting(gpu.limits.maxComputeWorkgroupsPerDimension);
  const opts = { lr: 1e-6, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 };
  recordOptimizerStep(b, adam, chunks, standIn(16, "norm"), opts, 1);
  return { tally: b.byFamily, tensors: specs.length, parts: sizes.length, chunks: chunks.length };
}

export function total(t: DispatchTally): number {
  let n = 0;
  for (const v of t.values()) n += v;
  return n;
}

/** "matmul.gemv 5, rope.rope_kv 1, ..." sorted by count. */
export function formatTally(t: DispatchTally): string {
  return [...t].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(", ");
}

/** GPU milliseconds per kernel family from timestamp queries, largest first. */
export function timeByFamily(timings: KernelTiming[]): [string, number, number][] {
  const m = new Map<string, [number, number]>();
  for (const t of timings) {
    const [ms, n] = m.get(t.family) ?? [0, 0];
    m.set(t.family, [ms + t.ms, n + 1]);
  }
  return [...m].map(([k, [ms, n]]): [string, number, number] => [k, ms, n]).sort((a, b) => b[1] - a[1]);
}

export { addTally };
