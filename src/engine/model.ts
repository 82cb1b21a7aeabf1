/**
 * Qwen2ForCausalLM on the GPU: weights, workspace, and one forward pass over
 * a packed batch of tokens that reads and writes the paged KV cache.
 *
 * Dimension legend: T tokens in this forward, H hidden, I intermediate,
 * nh query heads, nkv key/value heads, hd head dim, V vocab, R rows of logits.
 */
import type { Batch, Binding, Gpu } from "../gpu/index.ts";
import { attentionForm, loadAttention, type AttentionForm } from "../kernels/attention.ts";
import { loadEmbedding } from "../kernels/embedding.ts";
import { loadMatmul } from "../kernels/matmul.ts";
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
  /** Rows [row0, row0 + rows) of a matrix, when the source can read a part alone (a checkpoint file can). */
  getRows?(name: string, dtype: DType, row0: number, rows: number): Float32Array | Uint16Array;
}

/**
 * One layer's weights. q/k/v are stored concatenated (rows of q_proj, then
 * k_proj, then v_proj; biases likewise) so the three products are one
 * dispatch; gate and up stay separate (the fused product binds both).
 */
export interface LayerWeights {
  ln1: Binding;
  wqkv: Binding; // [(nh + 2·nkv)·hd, H]
  bqkv: Binding; // [(nh + 2·nkv)·hd]
  wo: Binding;
  ln2: Binding;
  wg: Binding;
  wu: Binding;
  wd: Binding;
}

/** A [rows, cols] matrix stored as row chunks, each under the binding limit. */
export interface ChunkedMatrix {
  rows: number;
  cols: number;
  chunks: { buffer: Binding; row0: number; rows: number }[];
}

export interface Qwen2Weights {
  layers: LayerWeights[];
  embed: ChunkedMatrix;
  lmHead: ChunkedMatrix; // the same buffers as embed when tied
  norm: Binding;
}

type Kernels = {
  mm: Awaited<ReturnType<typeof loadMatmul>>;
  emb: Awaited<ReturnType<typeof loadEmbedding>>;
  rope: Awaited<ReturnType<typeof loadRope>>;
  attn: Awaited<ReturnType<typeof loadAttention>>;
  /** The attention form; "rows" (CPU adapters) decodes with RoPE, cache write and attention in one dispatch. */
  form: AttentionForm;
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

/**
 * A [rows, cols] matrix in row parts under the max storage binding. Read a
 * part at a time where the source can (the host then holds one part, not the
 * whole 151936-row embedding and its conversions), else sliced from one read.
 */
function uploadChunked(gpu: Gpu, src: WeightSource, tensor: string, name: string, dtype: DType, rows: number, cols: number): ChunkedMatrix {
  const rowBytes = cols * (dtype === "f16" ? 2 : 4);
  const maxRows = Math.max(1, Math.floor(gpu.limits.maxStorageBufferBindingSize / rowBytes));
  const whole = src.getRows ? null : src.get(tensor, dtype);
  const chunks: ChunkedMatrix["chunks"] = [];
  for (let row0 = 0; row0 < rows; row0 += maxRows) {
    const n = Math.min(maxRows, rows - row0);
    const part = whole ? whole.subarray(row0 * cols, (row0 + n) * cols) : src.getRows!(tensor, dtype, row0, n);
    chunks.push({ buffer: gpu.buffer(part, `${name}[${row0}:${row0 + n}]`), row0, rows: n });
  }
  return { rows, cols, chunks };
}

/** The names of the tensors stored concatenated in `wqkv` / `bqkv`, in order. */
export function qkvNames(layer: number, kind: "weight" | "bias"): string[] {
  return ["q_proj", "k_proj", "v_proj"].map((n) => `model.layers.${layer}.self_attn.${n}.${kind}`);
}

export function uploadWeights(gpu: Gpu, c: Qwen2Config, src: WeightSource, dtype: DType): Qwen2Weights {
  const upData = (name: string, data: Float32Array | Uint16Array) => {
    if (data.byteLength > gpu.limits.maxStorageBufferBindingSize) {
      throw new Error(`tensor ${name} (${data.byteLength} bytes) exceeds the adapter's max storage binding`);
    }
    return gpu.buffer(data, name);
  };
  const up = (name: string) => upData(name, src.get(name, dtype));
  const cat = (names: string[], label: string) => {
    const parts = names.map((n) => src.get(n, dtype));
    const out = dtype === "f16" ? new Uint16Array(parts.reduce((a, p) => a + p.length, 0)) : new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return upData(label, out);
  };
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    layers.push({
      ln1: up(`${p}input_layernorm.weight`),
      wqkv: cat(qkvNames(i, "weight"), `${p}self_attn.qkv_proj.weight`),
      bqkv: cat(qkvNames(i, "bias"), `${p}self_attn.qkv_proj.bias`),
      wo: up(`${p}self_attn.o_proj.weight`),
      ln2: up(`${p}post_attention_layernorm.weight`),
      wg: up(`${p}mlp.gate_proj.weight`),
      wu: up(`${p}mlp.up_proj.weight`),
      wd: up(`${p}mlp.down_proj.weight`),
    });
  }
  const embed = uploadChunked(gpu, src, "model.embed_tokens.weight", "embed_tokens", dtype, c.vocabSize, c.hiddenSize);
  const lmHead =
    c.tieWordEmbeddings || !src.has("lm_head.weight")
      ? embed
      : uploadChunked(gpu, src, "lm_head.weight", "lm_head", dtype, c.vocabSize, c.hiddenSize);
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
  qkv: GPUBuffer; // [T, (nh + 2·nkv)·hd] the fused q/k/v product
  q: GPUBuffer; // [T, nh*hd] rotated q
  att: GPUBuffer; // [T, nh*hd]
  a: GPUBuffer; // [T, I] silu(gate)·up
  hsel: GPUBuffer; // [R, H] residual rows that get logits
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
    qkv: buf(capacity * (qd + 2 * kvd) * e, "ws.qkv"),
    q: buf(capacity * qd * e, "ws.q"),
    att: buf(capacity * qd * e, "ws.att"),
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
  /** `attention` overrides the adapter's attention form (e.g. to count a hardware GPU's dispatches here). */
  static async withWeights(gpu: Gpu, config: Qwen2Config, dtype: DType, make: () => Qwen2Weights, attention?: AttentionForm): Promise<Qwen2Gpu> {
    if (dtype === "f16" && !gpu.features.f16) {
      throw new Error(`dtype f16 needs the adapter feature shader-f16, which "${gpu.adapter.description}" lacks`);
    }
    const form = attention ?? attentionForm(gpu);
    const [mm, emb, rope, attn] = await Promise.all([
      loadMatmul(gpu, dtype),
      loadEmbedding(gpu, dtype),
      loadRope(gpu, dtype),
      loadAttention(gpu, dtype, form),
    ]);
    return new Qwen2Gpu(gpu, config, dtype, make(), { mm, emb, rope, attn, form });
  }

  /**
   * Record one forward over T packed tokens (ws.tokens/tokSeq/tokPos already
   * written): K/V of every token go into the cache, and the final hidden
   * state of the R rows listed in ws.rowIdx becomes f32 logits [R, V].
   * `mode` picks the attention kernel: "decode" when every sequence has one
   * token here, "prefill" otherwise. `numerics` fixes what would otherwise
   * follow the batch (the engine passes constants, so a sequence's results
   * depend on its own context only). `rows.rowsAreTokens`: the R = T rows
   * are the tokens in order (every decode step), so the LM head reads the
   * residual stream itself and ws.rowIdx is not read: one dispatch fewer.
   * `rows.embedded`: ws.x already holds the tokens' embeddings (the decode
   * sampler wrote them, Sampler.sample's `advance.embed`): no gather.
   */
  recordForward(b: Batch, ws: Workspace, cache: KvCache, T: number, R: number, mode: "prefill" | "decode", numerics: ForwardNumerics = {}, rows: { rowsAreTokens?: boolean; embedded?: boolean } = {}): void {
    const c = this.config;
    const { mm, emb, rope, attn, form } = this.k;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const nh = c.numHeads;
    const nkv = c.numKvHeads;
    const hd = c.headDim;
    if (T > ws.capacity || R > ws.rowCapacity) {
      throw new Error(`forward of ${T} tokens / ${R} logit rows exceeds the workspace (${ws.capacity} / ${ws.rowCapacity})`);
    }
    if (!rows.embedded) for (const ch of this.weights.embed.chunks) emb.gather(b, ws.tokens, ch.buffer, ws.x, T, H, ch.row0, ch.rows);
    const bs = cache.cfg.blockSize;
    const mb = cache.maxBlocks;
    const scale = 1 / Math.sqrt(hd);
    
    // Seven dispatches per layer (decode; six on CPU adapters): norm folded
    // into the q/k/v and gate/up products, RoPE + cache write in one pass (on
    // CPU adapters with the one-pass attention too), the residual adds in
    // the o_proj and down_proj epilogues, SwiGLU in the gate/up epilogue.
    const eps = c.rmsNormEps;
    const qkvN = (nh + 2 * nkv) * hd;
    const ropeShape = { T, nh, nKv: nkv, hd, theta: c.ropeTheta, blockSize: bs, maxBlocks: mb };
    for (let l = 0; l < c.numLayers; l++) {
      const w = this.weights.layers[l];
      mm.matmul(b, ws.x, w.wqkv, w.bqkv, ws.qkv, T, qkvN, H, { path: mode, norm: { gain: w.ln1, eps } });
      const io = { qkv: ws.qkv, kcache: cache.k[l], vcache: cache.v[l], blockTable: cache.blockTable, tokSeq: ws.tokSeq, tokPos: ws.tokPos };
      if (mode === "decode" && form === "rows") {
        rope.ropeKvAttend(b, { ...io, out: ws.att }, ropeShape, scale);
      } else {
        rope.ropeKv(b, { ...io, q: ws.q }, ropeShape);
        if (mode === "decode") attn.decode(b, ws.q, cache.k[l], cache.v[l], cache.blockTable, ws.tokSeq, ws.tokPos, ws.att, T, nh, nkv, hd, bs, mb, scale, numerics.decodeChunk);
        else attn.prefill(b, ws.q, cache.k[l], cache.v[l], cache.blockTable, ws.tokSeq, ws.tokPos, ws.att, T, nh, nkv, hd, bs, mb, scale);
      }
      mm.matmul(b, ws.att, w.wo, null, ws.x, T, H, nh * hd, { path: mode, residual: true });
      mm.matmul(b, ws.x, w.wg, null, ws.a, T, I, H, { path: mode, norm: { gain: w.ln2, eps }, up: w.wu });
      mm.matmul(b, ws.a, w.wd, null, ws.x, T, H, I, { path: mode, residual: true });
    }
    if (R === 0) return;
    if (rows.rowsAreTokens) {
      if (R !== T) throw new Error(`forward: rowsAreTokens needs one logit row per token, got R ${R} for T ${T}`);
      this.recordLogits(b, ws.x, ws.logits, R, numerics.logitsPath);
      return;
    }
    // The rows that need logits first, then the final norm in the LM head's prologue.
    emb.gather(b, ws.rowIdx, ws.x, ws.hsel, R, H, 0, T);
    this.recordLogits(b, ws.hsel, ws.logits, R, numerics.logitsPath);
  }

  /** logits [R, V] f32 = rmsnorm(x [R, H]) · lm_headᵀ, one matmul per weight chunk (`path`: default by R). */
  recordLogits(b: Batch, x: Binding, logits: Binding, R: number, path?: "decode" | "prefill"): void {
    const c = this.config;
    for (const ch of this.weights.lmHead.chunks) {
      this.k.mm.matmul(b, x, ch.buffer, null, logits, R, ch.rows, c.hiddenSize, {
        ldc: c.vocabSize,
        col0: ch.row0,
        outF32: true,
        path: path ?? (R <= 32 ? "decode" : "prefill"),
        norm: { gain: this.weights.norm, eps: c.rmsNormEps },
      });
    }
  }

  destroy(): void {
    const seen = new Set<GPUBuffer>();
    const kill = (x: Binding) => {
      const b = "buffer" in x ? x.buffer : x;
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
