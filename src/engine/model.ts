/**
 * Qwen2ForCausalLM on the GPU: weights, workspace, and one forward pass over
 * a packed batch of tokens that reads and writes the paged KV cache.
 *
 * Dimension legend: T tokens in this forward, H hidden, I intermediate,
 * nh query heads, nkv key/value heads, hd head dim, V vocab, R rows of logits.
 */
import type { Batch, Binding, Gpu } from "../gpu/index.ts";
import { loadAttention } from "../kernels/attention.ts";
import { loadElementwise } from "../kernels/elementwise.ts";
import { loadEmbedding } from "../kernels/embedding.ts";
import { loadMatmul } from "../kernels/matmul.ts";
import { loadRmsNorm } from "../kernels/rmsnorm.ts";
import { loadRope } from "../kernels/rope.ts";
import type { Qwen2Config } from "../model/config.ts";
import type { KvCache } from "./kv_cache.ts";
import type { Dtype } from "../kernels/common.ts";

/** The engine's storage dtype (the kernels' Dtype). */
export type DType = Dtype;

/** Where weights come from: a name → values in the requested dtype. */
export interface WeightSource {
  has(name: string): boolean;
  /** Row-major values; f16 as raw bits. */
  get(name: string, dtype: DType): Float32Array | Uint16Array;
}

export interface LayerWeights {
  ln1: GPUBuffer;
  wq: GPUBuffer;
  bq: GPUBuffer;
  wk: GPUBuffer;
  bk: GPUBuffer;
  wv: GPUBuffer;
  bv: GPUBuffer;
  wo: GPUBuffer;
  ln2: GPUBuffer;
  wg: GPUBuffer;
  wu: GPUBuffer;
  wd: GPUBuffer;
}

/** A [rows, cols] matrix stored as row chunks, each under the binding limit. */
export interface ChunkedMatrix {
  rows: number;
  cols: number;
  chunks: { buffer: GPUBuffer; row0: number; rows: number }[];
}

export interface Qwen2Weights {
  layers: LayerWeights[];
  embed: ChunkedMatrix;
  lmHead: ChunkedMatrix; // the same buffers as embed when tied
  norm: GPUBuffer;
}

type Kernels = {
  mm: Awaited<ReturnType<typeof loadMatmul>>;
  emb: Awaited<ReturnType<typeof loadEmbedding>>;
  norm: Awaited<ReturnType<typeof loadRmsNorm>>;
  rope: Awaited<ReturnType<typeof loadRope>>;
  ew: Awaited<ReturnType<typeof loadElementwise>>;
  attn: Awaited<ReturnType<typeof loadAttention>>;
};

export function elementBytes(dtype: DType): 2 | 4 {
  return dtype === "f16" ? 2 : 4;
}

/** Parameter bytes of the model in `dtype` (tied embeddings counted once). */
export function parameterCount(c: Qwen2Config): number {
  const H = c.hiddenSize;
  const qd = c.numHeads * c.headDim;
  const kvd = c.numKvHeads * c.headDim;
  const perLayer = 2 * H + H * qd + qd + 2 * (H * kvd + kvd) + qd * H + 3 * H * c.intermediateSize;
  return c.numLayers * perLayer + H + c.vocabSize * H * (c.tieWordEmbeddings ? 1 : 2);
}

function uploadChunked(gpu: Gpu, name: string, data: Float32Array | Uint16Array, rows: number, cols: number): ChunkedMatrix {
  const rowBytes = cols * data.BYTES_PER_ELEMENT;
  const maxRows = Math.max(1, Math.floor(gpu.limits.maxStorageBufferBindingSize / rowBytes));
  const chunks: ChunkedMatrix["chunks"] = [];
  for (let row0 = 0; row0 < rows; row0 += maxRows) {
    const n = Math.min(maxRows, rows - row0);
    const view = data.subarray(row0 * cols, (row0 + n) * cols);
    chunks.push({ buffer: gpu.buffer(view, `${name}[${row0}:${row0 + n}]`), row0, rows: n });
  }
  return { rows, cols, chunks };
}

export function uploadWeights(gpu: Gpu, c: Qwen2Config, src: WeightSource, dtype: DType): Qwen2Weights {
  const up = (name: string) => {
    const data = src.get(name, dtype);
    if (data.byteLength > gpu.limits.maxStorageBufferBindingSize) {
      throw new Error(`tensor ${name} (${data.byteLength} bytes) exceeds the adapter's max storage binding`);
    }
    return gpu.buffer(data, name);
  };
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    layers.push({
      ln1: up(`${p}input_layernorm.weight`),
      wq: up(`${p}self_attn.q_proj.weight`),
      bq: up(`${p}self_attn.q_proj.bias`),
      wk: up(`${p}self_attn.k_proj.weight`),
      bk: up(`${p}self_attn.k_proj.bias`),
      wv: up(`${p}self_attn.v_proj.weight`),
      bv: up(`${p}self_attn.v_proj.bias`),
      wo: up(`${p}self_attn.o_proj.weight`),
      ln2: up(`${p}post_attention_layernorm.weight`),
      wg: up(`${p}mlp.gate_proj.weight`),
      wu: up(`${p}mlp.up_proj.weight`),
      wd: up(`${p}mlp.down_proj.weight`),
    });
  }
  const embed = uploadChunked(gpu, "embed_tokens", src.get("model.embed_tokens.weight", dtype), c.vocabSize, c.hiddenSize);
  const lmHead =
    c.tieWordEmbeddings || !src.has("lm_head.weight")
      ? embed
      : uploadChunked(gpu, "lm_head", src.get("lm_head.weight", dtype), c.vocabSize, c.hiddenSize);
  return { layers, embed, lmHead, norm: up("model.norm.weight") };
}

/**
 * Choices that would otherwise depend on the batch: the flash-decoding chunk
 * length (keys per chunk; default: a heuristic over the batch and cache) and
 * the LM head's matmul path (default: by the number of rows).
 */
export interface ForwardNumerics {
  decodeChunk?: number;
  logitsPath?: "decode" | "prefill";
}

/** Activation buffers for up to `capacity` tokens and `rowCapacity` logit rows. */
export interface Workspace {
  capacity: number;
  rowCapacity: number;
  tokens: GPUBuffer; // u32 [T]
  tokSeq: GPUBuffer; // u32 [T]
  tokPos: GPUBuffer; // u32 [T]
  rowIdx: GPUBuffer; // u32 [R] which tokens get logits
  x: GPUBuffer; // [T, H] residual stream
  h: GPUBuffer; // [T, H] normed
  q: GPUBuffer; // [T, nh*hd]
  k: GPUBuffer; // [T, nkv*hd]
  v: GPUBuffer; // [T, nkv*hd]
  att: GPUBuffer; // [T, nh*hd]
  g: GPUBuffer; // [T, I]
  u: GPUBuffer; // [T, I]
  a: GPUBuffer; // [T, I]
  hsel: GPUBuffer; // [R, H]
  logits: GPUBuffer; // f32 [R, V]
}

export function createWorkspace(gpu: Gpu, c: Qwen2Config, dtype: DType, capacity: number, rowCapacity: number): Workspace {
  const e = elementBytes(dtype);
  const qd = c.numHeads * c.headDim;
  const kvd = c.numKvHeads * c.headDim;
  const buf = (bytes: number, label: string) => {
    if (bytes > gpu.limits.maxStorageBufferBindingSize) {
      throw new Error(
        `workspace buffer ${label} needs ${bytes} bytes (capacity ${capacity} tokens, ${rowCapacity} logit rows), ` +
          `over the adapter's max storage binding ${gpu.limits.maxStorageBufferBindingSize}; use a smaller chunk`,
      );
    }
    return gpu.buffer(bytes, label);
  };
  return {
    capacity,
    rowCapacity,
    tokens: buf(capacity * 4, "ws.tokens"),
    tokSeq: buf(capacity * 4, "ws.tokSeq"),
    tokPos: buf(capacity * 4, "ws.tokPos"),
    rowIdx: buf(rowCapacity * 4, "ws.rowIdx"),
    x: buf(capacity * c.hiddenSize * e, "ws.x"),
    h: buf(capacity * c.hiddenSize * e, "ws.h"),
    q: buf(capacity * qd * e, "ws.q"),
    k: buf(capacity * kvd * e, "ws.k"),
    v: buf(capacity * kvd * e, "ws.v"),
    att: buf(capacity * qd * e, "ws.att"),
    g: buf(capacity * c.intermediateSize * e, "ws.g"),
    u: buf(capacity * c.intermediateSize * e, "ws.u"),
    a: buf(capacity * c.intermediateSize * e, "ws.a"),
    hsel: buf(rowCapacity * c.hiddenSize * e, "ws.hsel"),
    logits: buf(rowCapacity * c.vocabSize * 4, "ws.logits"),
  };
}

export function destroyWorkspace(ws: Workspace): void {
  for (const v of Object.values(ws)) if (typeof v === "object") (v as GPUBuffer).destroy();
}

export class Qwen2Gpu {
  private constructor(
    readonly gpu: Gpu,
    readonly config: Qwen2Config,
    readonly dtype: DType,
    readonly weights: Qwen2Weights,
    private readonly k: Kernels,
  ) {}

  static async create(gpu: Gpu, config: Qwen2Config, src: WeightSource, dtype: DType): Promise<Qwen2Gpu> {
    return Qwen2Gpu.withWeights(gpu, config, dtype, () => uploadWeights(gpu, config, src, dtype));
  }

  /** Build around weight buffers made by `make` (e.g. shared with the trainer). */
  static async withWeights(gpu: Gpu, config: Qwen2Config, dtype: DType, make: () => Qwen2Weights): Promise<Qwen2Gpu> {
    if (dtype === "f16" && !gpu.features.f16) {
      throw new Error(`dtype f16 needs the adapter feature shader-f16, which "${gpu.adapter.description}" lacks`);
    }
    const [mm, emb, norm, rope, ew, attn] = await Promise.all([
      loadMatmul(gpu, dtype),
      loadEmbedding(gpu, dtype),
      loadRmsNorm(gpu, dtype),
      loadRope(gpu, dtype),
      loadElementwise(gpu, dtype),
      loadAttention(gpu, dtype),
    ]);
    return new Qwen2Gpu(gpu, config, dtype, make(), { mm, emb, norm, rope, ew, attn });
  }

  /**
   * Record one forward over T packed tokens (ws.tokens/tokSeq/tokPos already
   * written): K/V of every token go into the cache, and the final hidden
   * state of the R rows listed in ws.rowIdx becomes f32 logits [R, V].
   * `mode` picks the attention kernel: "decode" when every sequence has one
   * token here, "prefill" otherwise. `numerics` fixes what would otherwise
   * follow the batch (the engine passes constants, so a sequence's results
   * depend on its own context only).
   */
  recordForward(b: Batch, ws: Workspace, cache: KvCache, T: number, R: number, mode: "prefill" | "decode", numerics: ForwardNumerics = {}): void {
    const c = this.config;
    const { mm, emb, norm, rope, ew, attn } = this.k;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const nh = c.numHeads;
    const nkv = c.numKvHeads;
    const hd = c.headDim;
    if (T > ws.capacity || R > ws.rowCapacity) {
      throw new Error(`forward of ${T} tokens / ${R} logit rows exceeds the workspace (${ws.capacity} / ${ws.rowCapacity})`);
    }
    for (const ch of this.weights.embed.chunks) emb.gather(b, ws.tokens, ch.buffer, ws.x, T, H, ch.row0, ch.rows);
    const bs = cache.cfg.blockSize;
    const mb = cache.maxBlocks;
    const scale = 1 / Math.sqrt(hd);
    
    for (let l = 0; l < c.numLayers; l++) {
      const w = this.weights.layers[l];
      norm.rmsnorm(b, ws.x, w.ln1, ws.h, T, H, c.rmsNormEps);
      mm.matmul(b, ws.h, w.wq, w.bq, ws.q, T, nh * hd, H, { path: mode });
      mm.matmul(b, ws.h, w.wk, w.bk, ws.k, T, nkv * hd, H, { path: mode });
      mm.matmul(b, ws.h, w.wv, w.bv, ws.v, T, nkv * hd, H, { path: mode });
      rope.rope(b, ws.q, ws.tokPos, T, nh, hd, c.ropeTheta);
      rope.rope(b, ws.k, ws.tokPos, T, nkv, hd, c.ropeTheta);
      attn.writeKV(b, ws.k, ws.v, cache.k[l], cache.v[l], cache.blockTable, ws.tokSeq, ws.tokPos, T, nkv, hd, bs, mb);
      if (mode === "decode") attn.decode(b, ws.q, cache.k[l], cache.v[l], cache.blockTable, ws.tokSeq, ws.tokPos, ws.att, T, nh, nkv, hd, bs, mb, scale, numerics.decodeChunk);
      else attn.prefill(b, ws.q, cache.k[l], cache.v[l], cache.blockTable, ws.tokSeq, ws.tokPos, ws.att, T, nh, nkv, hd, bs, mb, scale);
      mm.matmul(b, ws.att, w.wo, null, ws.h, T, H, nh * hd, { path: mode });
      ew.addInPlace(b, ws.x, ws.h, T * H);
      norm.rmsnorm(b, ws.x, w.ln2, ws.h, T, H, c.rmsNormEps);
      mm.matmul(b, ws.h, w.wg, null, ws.g, T, I, H, { path: mode });
      mm.matmul(b, ws.h, w.wu, null, ws.u, T, I, H, { path: mode });
      ew.swiglu(b, ws.g, ws.u, ws.a, T * I);
      mm.matmul(b, ws.a, w.wd, null, ws.h, T, H, I, { path: mode });
      ew.addInPlace(b, ws.x, ws.h, T * H);
    }
    if (R === 0) return;
    norm.rmsnorm(b, ws.x, this.weights.norm, ws.h, T, H, c.rmsNormEps);
    emb.gather(b, ws.rowIdx, ws.h, ws.hsel, R, H, 0, T);
    this.recordLogits(b, ws.hsel, ws.logits, R, numerics.logitsPath);
  }

  /** logits [R, V] f32 = hsel [R, H] · lm_headᵀ, one matmul per weight chunk (`path`: default by R). */
  recordLogits(b: Batch, hsel: Binding, logits: Binding, R: number, path?: "decode" | "prefill"): void {
    const c = this.config;
    for (const ch of this.weights.lmHead.chunks) {
      this.k.mm.matmul(b, hsel, ch.buffer, null, logits, R, ch.rows, c.hiddenSize, {
        ldc: c.vocabSize,
        col0: ch.row0,
        outF32: true,
        path: path ?? (R <= 32 ? "decode" : "prefill"),
      });
    }
  }

  destroy(): void {
    const seen = new Set<GPUBuffer>();
    const kill = (b: GPUBuffer) => {
      if (!seen.has(b)) {
        seen.add(b);
        b.destroy();
      }
    };
    for (const l of this.weights.layers) Object.values(l).forEach(kill);
    for (const ch of [...this.weights.embed.chunks, ...this.weights.lmHead.chunks]) kill(ch.buffer);
    kill(this.weights.norm);
  }
}
